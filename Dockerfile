# syntax=docker/dockerfile:1
#
# introspectd container image.
#   docker build -t introspectd:0.1.0 .
# Needs BuildKit (the default builder since Docker 23) for the cache mounts, which keep
# the cargo registry and the target directory between builds, so a source change only
# recompiles this crate. protoc comes from the protoc-bin-vendored build dependency.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=introspectd-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=introspectd-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=introspectd-target,target=/src/target \
    cargo build --release --locked --bin introspectd \
 && install -D -m 0755 target/release/introspectd /out/introspectd

# glibc and libgcc only; the binary links aws-lc statically. The :nonroot tag runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/introspectd /usr/local/bin/introspectd
USER 65532:65532
# 50051: gRPC (introspection, revocation, health, reflection); 8080: HTTP (/metrics, /healthz, /readyz, /oauth2/*)
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/introspectd"]
CMD ["serve", "--config", "/etc/introspectd/config.toml"]
