# syntax=docker/dockerfile:1
# The `zilla` gateway as a container image.
#
#   docker build -t zilla-rs .                        # every component (the default features)
#   docker build --build-arg FEATURES="binding-tcp,binding-http" \
#                --build-arg DEFAULT_FEATURES=false -t zilla-rs:http .   # a custom distribution
#   docker run -v $PWD/zilla.yaml:/etc/zilla/zilla.yaml -p 7114:7114 zilla-rs
#
# The config is read from /etc/zilla/zilla.yaml and reloaded when it changes; the engine
# directory (ready, metrics, info) is /var/run/zilla.

FROM rust:1.95-bookworm AS build
ARG FEATURES=""
ARG DEFAULT_FEATURES=true
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    flags="--profile production --locked -p zilla --bin zilla"; \
    if [ "$DEFAULT_FEATURES" = "false" ]; then flags="$flags --no-default-features"; fi; \
    if [ -n "$FEATURES" ]; then flags="$flags --features $FEATURES"; fi; \
    cargo build $flags; \
    install -D -m 0755 target/production/zilla /out/zilla

FROM debian:bookworm-slim
# ca-certificates: `trustcacerts` and JWKS/registry origins over https use the system store.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin zilla \
    && install -d -o zilla -g zilla /var/run/zilla /etc/zilla
COPY --from=build /out/zilla /usr/local/bin/zilla
USER 10001:10001
# `ready` exists once every listener is bound (and is removed on a clean exit); `metrics` is
# rewritten every second by the running engine, so a stale one means a stuck process.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD test -f /var/run/zilla/ready \
        && test -n "$(find /var/run/zilla/metrics -newermt '-30 seconds' 2>/dev/null)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/zilla"]
CMD ["start", "-c", "/etc/zilla/zilla.yaml", "-P", "zilla.engine.directory=/var/run/zilla"]
