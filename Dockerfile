# aurore's image: a release build in Rust's image, run from debian:bookworm-slim as a non-root user.
#   docker build -t aurore .        (docker-compose.yml builds it as aurore:latest)
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libsasl2-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY benches benches
COPY integration-tests integration-tests
RUN cargo build --release --locked --bin aurore && cp target/release/aurore /usr/local/bin/aurore

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 libsasl2-2 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home aurore
COPY --from=build /usr/local/bin/aurore /usr/local/bin/aurore
USER aurore
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/health/ready || exit 1
ENTRYPOINT ["aurore"]
CMD ["run"]
