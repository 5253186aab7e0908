# SPDX-License-Identifier: MIT
"""A throwaway certificate authority for TLS tests, made with the openssl CLI.

TestCA(dir) writes a self-signed CA (ca.pem, ca.key) into dir; issue() signs
a certificate for a server or a client. Server certificates carry
subjectAltName=IP:127.0.0.1 because the servers listen on loopback and
clients verify host names (librdkafka does by default since 2.0). Keys are
unencrypted PKCS#8 PEM (what Kafka's PEM keystores read), unless a password
is asked for: then the key is PKCS#8 encrypted with AES-256.

expired=True signs a certificate whose validity ended a day before it
began (openssl x509 -days -1): every verifier rejects it as expired.
keystore() joins a key and its certificate into one PEM file, the form of a
Kafka `ssl.keystore.type=PEM` keystore.
"""
import os
import shutil
import subprocess

OPENSSL_TIMEOUT = 60


def _openssl(*args, cwd):
    exe = shutil.which("openssl")
    if not exe:
        raise RuntimeError("openssl not found: install Debian's openssl package")
    p = subprocess.run([exe] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=OPENSSL_TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], p.stderr.decode("utf-8", "replace")))
    return p


class TestCA:
    """A CA in its own directory; every file it writes lives there."""

    def __init__(self, directory, name="ttb-test-ca"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.name = name
        self.ca_pem = os.path.join(directory, name + ".pem")
        self.ca_key = os.path.join(directory, name + ".key")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                 "-subj", "/CN=" + name, "-keyout", self.ca_key, "-out", self.ca_pem,
                 cwd=directory)

    def issue(self, name, server=True, expired=False, key_password=None):
        """Signs a certificate for `name`; returns (cert_path, key_path)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write("extendedKeyUsage=%s\n" % ("serverAuth,clientAuth" if server else "clientAuth"))
            if server:
                f.write("subjectAltName=IP:127.0.0.1\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                 "-keyout", key, "-out", csr, cwd=self.dir)
        _openssl("x509", "-req", "-sha256", "-in", csr, "-CA", self.ca_pem, "-CAkey", self.ca_key,
                 "-CAcreateserial", "-days", "-1" if expired else "2", "-extfile", ext,
                 "-out", cert, cwd=self.dir)
        if key_password is not None:
            plain = key + ".plain"
            os.replace(key, plain)
            _openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", plain, "-out", key,
                     "-passout", "pass:" + key_password, cwd=self.dir)
            os.remove(plain)
        return cert, key

    def keystore(self, cert, key):
        """One PEM file holding `key` then `cert` (a Kafka PEM keystore)."""
        path = os.path.splitext(cert)[0] + ".keystore.pem"
        with open(path, "w") as out:
            for part in (key, cert):
                with open(part) as f:
                    out.write(f.read())
        return path
