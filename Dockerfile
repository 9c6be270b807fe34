# Multi-stage build of dualwrite-proxy, dualwrite-backfill and dualwrite-validator.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dualwrite-proxy -p dualwrite-backfill -p dualwrite-validator \
 && strip target/release/dualwrite-proxy target/release/dualwrite-backfill target/release/dualwrite-validator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/dualwrite --create-home dualwrite
COPY --from=build /src/target/release/dualwrite-proxy /src/target/release/dualwrite-backfill /src/target/release/dualwrite-validator /usr/local/bin/
USER dualwrite
WORKDIR /var/lib/dualwrite
EXPOSE 6432 9187
ENTRYPOINT ["dualwrite-proxy"]
CMD ["run", "--config", "/etc/dualwrite/proxy.toml"]
