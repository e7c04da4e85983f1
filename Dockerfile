# syntax=docker/dockerfile:1
# edge's image: one static (musl) binary on an empty base, run as a non-root user by default.
# The userspace data plane (Fargate) needs no privilege; an eBPF task definition runs the same
# image as root with the capabilities that mode needs.
#
# Two ways to fill it, on one runtime stage:
# - with network (CI): `docker build .` compiles the binary in the `build` stage (the default,
#   last target);
# - offline (`cargo xtask image`, buildah): the binary is built on the host and copied from a
#   context holding only it: `--target local`.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
# The eBPF object needs a nightly with rust-src and bpf-linker; `cargo xtask setup build` adds
# rust-src and builds bpf-linker against that nightly's LLVM, and needs the nightly itself.
WORKDIR /src
COPY . .
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl \
 && rustup toolchain install nightly --profile minimal --component rust-src \
 && cargo xtask setup build \
 && CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked --target x86_64-unknown-linux-musl -p edge-agent \
 && cp target/x86_64-unknown-linux-musl/release/edge-agent /edge-agent

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="edge-agent" \
      org.opencontainers.image.description="Load-balancer agent for AWS ECS: eBPF L4 steering on EC2, a userspace proxy on Fargate" \
      org.opencontainers.image.source="https://github.com/edge-lb/edge" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# nobody:nogroup by number: the image has no /etc/passwd.
USER 65534:65534
EXPOSE 8080 9901
# The admin API's /readyz, asked by the binary itself: the image has no shell and no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 CMD ["/edge-agent", "health"]
ENTRYPOINT ["/edge-agent"]
CMD ["run"]

FROM runtime AS local
COPY edge-agent /edge-agent

FROM runtime AS image
COPY --from=build /edge-agent /edge-agent
