# syntax=docker/dockerfile:1
# sandserve's container image, as deploy/kubernetes runs it. Two stages:
# - build: the pinned Rust toolchain (rust-toolchain.toml, with wasm32-wasip2 for the
#   built-in generic handler), the engines from their pinned PyPI wheels
#   (scripts/setup-engines.sh, scripts/requirements-engines.txt), `cargo build --release`;
# - runtime: Debian slim with the binary and the engine libraries only (no compiler, no
#   Python), run as the unprivileged user 10001.
# Build: docker build -t sandserve:0.1.0 .   (docs/operations.md)

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/setup-engines.sh \
 && cargo build --release --locked -p sandserve-host --bin sandserve
# Only the engine libraries, where `engines_dir` looks for them
# (<engines_dir>/venv/lib/python*/site-packages/{onnxruntime,openvino}).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN site="$(echo .engines/venv/lib/python3*/site-packages)" \
 && mkdir -p /out/engines/venv/lib/python3/site-packages \
 && cp -a "$site/onnxruntime" "$site/openvino" /out/engines/venv/lib/python3/site-packages/ \
 && cp target/release/sandserve /out/sandserve

FROM debian:bookworm-slim AS runtime
# Security updates of the base image come with each rebuild, hence no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 sandserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sandserve \
 && mkdir -p /var/lib/sandserve /etc/sandserve \
 && chown 10001:10001 /var/lib/sandserve
COPY --from=build /out/sandserve /usr/local/bin/sandserve
COPY --from=build /out/engines /opt/sandserve/engines
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/sandserve"]
CMD ["serve", "--config", "/etc/sandserve/sandserve.toml"]
