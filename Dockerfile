# SPDX-License-Identifier: MIT
#
# tinytown-bridge container image. Two stages: a Debian bookworm build stage
# with the compilers and -dev packages, and a bookworm-slim runtime stage with
# only the shared libraries the binary links, so the image ships no compiler,
# headers or build tree. Debian 12 is the platform the project is built and
# tested on (librdkafka 2.0.2, libmicrohttpd 0.9.75), so the image runs the
# same library versions the test suite ran against.
#
#   docker build -t tinytown-bridge .
#   docker run --rm -e TT_BRIDGE_REDIS_URL=redis://redis:6379 \
#       -e TT_BRIDGE_KAFKA_BROKERS=kafka:9092 -p 127.0.0.1:9464:9464 tinytown-bridge
#
# docker-compose.yml runs it together with Redis and Kafka.

FROM debian:bookworm AS build

# The build dependencies named in meson.build, plus python3 (meson itself and
# scripts/embed-lua.py, which embeds the Lua scripts at build time).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gcc libc6-dev meson ninja-build pkg-config python3 \
        libhiredis-dev librdkafka-dev libjansson-dev libconfig-dev libmicrohttpd-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# Tests need cmocka and services the image does not have; they run in CI.
RUN meson setup build --buildtype=release -Dtests=false \
    && ninja -C build \
    && ./build/tinytown-bridge --version


FROM debian:bookworm-slim

# Runtime libraries only (the packages behind the -dev ones above);
# ca-certificates so librdkafka can verify brokers reached over TLS
# (security.protocol=ssl or sasl_ssl, as managed Kafka services require), and
# the bridge a managed Redis (rediss:// with no redis.tls_ca_file).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libhiredis0.14 librdkafka1 libjansson4 libconfig9 libmicrohttpd12 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so orchestrators that require runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tinytown

COPY --from=build /src/build/tinytown-bridge /usr/local/bin/tinytown-bridge
COPY conf/tinytown-bridge.conf /etc/tinytown-bridge/tinytown-bridge.conf

# The HTTP endpoint is off unless configured; a container needs it for its
# health check, on all interfaces so the port can be published.
ENV TT_BRIDGE_HTTP_LISTEN=0.0.0.0:9464
EXPOSE 9464

USER 10001:10001

# The probe uses bash's /dev/tcp rather than curl: bash is already in the
# slim image while curl is not, and adding curl would add a TLS stack, its
# libraries and their security updates to an image that needs none of them
# for one local HTTP GET. /healthz answers "HTTP/1.1 200 OK" while the
# process serves; grep's exit status is the verdict. The port is the one set
# above; a different TT_BRIDGE_HTTP_LISTEN needs its own HEALTHCHECK.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["tinytown-bridge"]
CMD ["--config", "/etc/tinytown-bridge/tinytown-bridge.conf"]
