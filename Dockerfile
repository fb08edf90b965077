# syntax=docker/dockerfile:1
#
# quorate's operator image: the `quorate` binary at /opt/quorate/bin/quorate (member Pods of
# restores run it from this image as an init container, so the path is fixed) on distroless's
# glibc base, running as the non-root user 65532.
#
#   docker build -t registry.example/quorate:0.1.0 .
#
# The builder and runtime are both Debian 12 (bookworm), so the binary's glibc matches.

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The operator alone: without the `sandbox` feature the testbed (control plane, node agent,
# ZooKeeper harness) is not compiled in.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin quorate \
    && install -D -m 0755 target/release/quorate /out/opt/quorate/bin/quorate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/opt/quorate/bin/quorate /opt/quorate/bin/quorate
USER 65532:65532
ENTRYPOINT ["/opt/quorate/bin/quorate"]
CMD ["run"]
