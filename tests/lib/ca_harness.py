# SPDX-License-Identifier: MIT
"""A throwaway certificate authority for TLS tests, made with the openssl CLI.

    ca = TestCA()                                  # a fresh CA in a temp dir
    cert, key = ca.issue("redis", san="IP:127.0.0.1")
    ...
    ca.remove()

Keys are P-256 (fast to make); certificates carry subjectAltName and may be
used as server and as client certificates. Nothing here is secret: the
directory is removed by remove() (or at exit).
"""
import atexit
import os
import shutil
import subprocess
import tempfile

_live = set()


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


class TestCA:
    """A self-signed CA; `ca_file` is its certificate (PEM)."""

    def __init__(self, name="ttb test CA"):
        base = os.environ.get("TMPDIR") or "/tmp"
        self.dir = tempfile.mkdtemp(prefix="ttb-ca-", dir=base)
        _live.add(self)
        self.ca_file = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.ca_key,
                 "-out", self.ca_file, "-days", "2", "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self._serial = 1

    def issue(self, name, san="IP:127.0.0.1"):
        """A certificate for `name` signed by this CA: (cert path, key path)."""
        cert = os.path.join(self.dir, name + ".pem")
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n" % san)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + name, cwd=self.dir)
        self._serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_file, "-CAkey", self.ca_key,
                 "-set_serial", str(self._serial), "-days", "1", "-extfile", ext,
                 "-out", cert, cwd=self.dir)
        return cert, key

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)


@atexit.register
def _remove_forgotten():
    for ca in list(_live):
        ca.remove()
