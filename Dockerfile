# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/ingest.rs && echo 'fn main() {}' > benches/orders.rs \
    && echo 'fn main() {}' > benches/auth.rs \
    && cargo build --release --locked --bin erp-sync
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin erp-sync

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home erp-sync
COPY --from=build /src/target/release/erp-sync /usr/local/bin/erp-sync
USER erp-sync
ENV PORT=3000 APP_ENV=production
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/erp-sync"]
CMD ["serve"]
