# syntax=docker/dockerfile:1
#
# introspectd container image.
#   docker build -t introspectd:0.1.0 .
# Needs BuildKit (the default builder since Docker 23) for the cache mounts, which keep
# the cargo registry and the target directory between builds, so a source change only
# recompiles this crate. protoc comes from the protoc-bin-vendored build dependency.
#
# Both bases are pinned by digest (each an OCI image index, so every platform builds the
# same bytes). To bump one: `docker buildx imagetools inspect rust:1.95-bookworm` (or
# gcr.io/distroless/cc-debian12:nonroot) prints the index digest ("Digest:"); put it
# below, and for the runtime also in the org.opencontainers.image.base.digest label. A
# build argument overrides either without editing the file:
#   docker build --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest> .
#
# Dev mode in a container, as the non-root user, its key and store on the volume:
#   docker run --rm -p 50051:50051 -p 8080:8080 introspectd:0.1.0 \
#     dev --grpc-addr 0.0.0.0:50051 --http-addr 0.0.0.0:8080

ARG BUILDER_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=introspectd-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=introspectd-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=introspectd-target,target=/src/target \
    cargo build --release --locked --bin introspectd \
 && install -D -m 0755 target/release/introspectd /out/introspectd \
 && install -d -m 0750 /out/state

# glibc and libgcc only; the binary links aws-lc statically. The :nonroot tag runs as 65532.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="introspectd" \
      org.opencontainers.image.description="Token introspection beside your services: JWT and opaque access tokens verified in microseconds, revocation-aware, over gRPC and HTTP (RFC 7662/7009)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot" \
      org.opencontainers.image.base.digest="sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f"
COPY --from=builder /out/introspectd /usr/local/bin/introspectd
# A directory the non-root user owns, for dev mode's ./data and an embedded store.
COPY --from=builder --chown=65532:65532 /out/state /var/lib/introspectd
WORKDIR /var/lib/introspectd
VOLUME /var/lib/introspectd
USER 65532:65532
# 50051: gRPC (introspection, revocation, health, reflection); 8080: HTTP (/metrics, /healthz, /readyz, /oauth2/*)
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/introspectd"]
CMD ["serve", "--config", "/etc/introspectd/config.toml"]
