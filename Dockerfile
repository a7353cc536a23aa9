# Build: the same toolchain the project is developed with.
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything Package.swift declares must be here, or SwiftPM refuses the whole
# package before building anything: loadtest/Sources holds the CZlib and
# LoadTest targets (only the gateway is built, but every target's folder is
# checked). scripts/check_docker.py builds from exactly what these lines copy.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
COPY loadtest/Sources ./loadtest/Sources
RUN swift build -c release --product gateway --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/gateway" out/gateway

# Run: only the C libraries the binary links, and curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 zlib1g curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 gateway \
    && mkdir -p /var/cache/gateway && chown gateway /var/cache/gateway
COPY --from=build /src/out/gateway /usr/local/bin/gateway
USER gateway
ENV HOST=0.0.0.0 PORT=8080 CACHE_DIR=/var/cache/gateway
EXPOSE 8080
VOLUME /var/cache/gateway
ENTRYPOINT ["/usr/local/bin/gateway"]
