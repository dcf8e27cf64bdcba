# syntax=docker/dockerfile:1.7
#
# chat-server with its web UI, as a small non-root image.
#   docker build -t chat-server .
#   docker run -p 8080:8080 -p 4433:4433/udp -v chat-data:/data chat-server
# docker-compose.yml runs two of these behind a load balancer, with PostgreSQL and Redis.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# --- The web UI: built here from its sources (not the committed web/dist). ---
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/web
# Dependencies first, so source edits reuse this layer.
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- The server binary, with the web UI built above inside it. The registry and target
# directory live in BuildKit caches, so rebuilding after a source change compiles only
# the workspace's own crates. ---
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY chat-proto chat-proto
COPY chat-api chat-api
COPY chat-crypto chat-crypto
COPY chat-server chat-server
COPY chat-sdk chat-sdk
COPY examples examples
COPY --from=web /src/web/dist web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p chat-server --features postgres,cluster,s3 \
    && install -D target/dist/chat-server /out/chat-server

# --- Runtime: Debian slim, no compiler, no shell tools beyond bash. ---
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin chat \
    && install -d -o chat -g chat -m 0700 /data
COPY --from=build /out/chat-server /usr/local/bin/chat-server
ENV CHAT_HTTP_ADDR=0.0.0.0:8080 \
    CHAT_QUIC_ADDR=0.0.0.0:4433 \
    CHAT_DATA_DIR=/data \
    CHAT_LOG_FORMAT=json
USER chat
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080/tcp 4433/udp
# Ready = serving HTTP and taking writes (GET /readyz answers 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chat-server"]
