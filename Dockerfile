# The yichuang image: the gateway (yichuang), the department adapter (yichuang-adapter) and the
# simulated department systems (yichuang-sim), with the default configuration under
# /opt/yichuang/config. Build it with any OCI builder from the repository's root:
#
#   docker build -t yichuang:0.1.0 .          # or: podman build / buildah bud / kaniko
#
# The Helm chart (helm/yichuang) runs each binary with its own arguments; without arguments the
# container runs the gateway on the shipped config/gateway.toml (SQLite under /var/lib/yichuang).

# --- build ------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
# Nothing to install: build.rs compiles the protocol buffers with protox (Rust, no protoc).
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/yichuang target/release/yichuang-adapter target/release/yichuang-sim /out/

# --- run --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# tini runs as PID 1: it passes SIGTERM on (the gateway drains on it) and reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 yichuang \
 && useradd --system --uid 10001 --gid yichuang --home-dir /var/lib/yichuang --shell /usr/sbin/nologin yichuang \
 && mkdir -p /var/lib/yichuang \
 && chown yichuang:yichuang /var/lib/yichuang
COPY --from=build /out/ /usr/local/bin/
COPY config/ /opt/yichuang/config/
WORKDIR /opt/yichuang
# Inside a container every port listens on all interfaces; data (SQLite, a clerk's worklist)
# goes to the one writable directory.
# The gateway starts only with its TLS material (YICHUANG_TLS_CERT, YICHUANG_TLS_KEY,
# YICHUANG_TLS_CLIENT_CA, default /etc/yichuang/tls/) and, with the relay on, the departments'
# broker users listed: mount them (the Helm chart does; docs/security.md).
ENV YICHUANG_LISTEN=0.0.0.0:50051 \
    YICHUANG_ADMIN_LISTEN=0.0.0.0:50052 \
    YICHUANG_METRICS_LISTEN=0.0.0.0:9464 \
    YICHUANG_ADAPTER_LISTEN=0.0.0.0:9180 \
    YICHUANG_ADAPTER_CALLBACKS_LISTEN=0.0.0.0:9181 \
    YICHUANG_DATA=/var/lib/yichuang
USER 10001:10001
# gRPC for windows and the platform, gRPC internal (admin, reflection), Prometheus metrics, the
# adapter's health and metrics, the adapter's signed callbacks.
EXPOSE 50051 50052 9464 9180 9181
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["yichuang", "serve", "--config", "config/gateway.toml"]
