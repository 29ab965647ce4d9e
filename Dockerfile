# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/ingest.rs && echo 'fn main() {}' > benches/orders.rs \
    && echo 'fn main() {}' > benches/reconciliation.rs \
    && echo 'fn main() {}' > benches/auth.rs \
    && cargo build --release --locked --bin erp-sync
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin erp-sync

FROM debian:bookworm-slim
# curl serves the HEALTHCHECK below.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home erp-sync
COPY --from=build /src/target/release/erp-sync /usr/local/bin/erp-sync
USER erp-sync
ENV PORT=3000 APP_ENV=production
EXPOSE 3000
# The service drains on SIGTERM (stops taking connections, finishes in-flight requests and
# jobs); give `docker stop -t` / compose's stop_grace_period enough time for it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS --max-time 3 "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
# The commit the image was built from (scripts/build-and-tag.sh sets it). Declared last: a
# changed ARG invalidates the cache of every RUN after it.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="erp-sync" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENTRYPOINT ["/usr/local/bin/erp-sync"]
CMD ["serve"]
