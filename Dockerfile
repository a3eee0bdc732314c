# cratedock: a static binary (musl) on an empty image, run as a non-root user.
#
#   docker build -t cratedock .
#   docker run -p 8080:8080 -v cratedock-data:/var/lib/cratedock cratedock
#
# The image's configuration is /etc/cratedock/cratedock.toml: the embedded default (a crates.io
# mirror and the private registry `internal`) with `listen = "0.0.0.0:8080"`,
# `data_dir = "/var/lib/cratedock"`, JSON logs and `auth_required = true` on every registry,
# since a container is reached from other hosts. A file mounted there instead is used as
# written, so it must say these itself:
#   docker run ... -v "$PWD/cratedock.toml:/etc/cratedock/cratedock.toml:ro" cratedock
# (start from the image's: docker cp "$(docker create cratedock):/etc/cratedock/cratedock.toml" .)
# Environment variables still override the file when you pass them, e.g.
#   -e CRATEDOCK__LOG__LEVEL=debug -e CRATEDOCK__SERVER__PUBLIC_URL=https://cratedock.corp.example
#
# Stopping: cratedock answers 503 on /health/ready for server.shutdown_delay_ms (2 s), then waits
# up to server.shutdown_grace_ms (30 s) for requests in flight: 32 s with the defaults. Docker's
# own stop timeout (10 s) is shorter and kills cratedock mid-drain, so give it more:
# `docker stop --time 40`, `docker run --stop-timeout 40`, or `stop_grace_period: 40s` in compose.
#
# The first admin's token is written to the data volume; the image has no shell, so use its
# cratedock in place:
#   docker exec CONTAINER cratedock admin --token-file /var/lib/cratedock/admin-token user list

# Pinned on purpose: a new Rust or Alpine release changes the build. Update this pin
# deliberately (and check rust-version in Cargo.toml), not by accident of a floating tag.
FROM rust:1.95-alpine3.22 AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src

# Dependencies in their own layer, rebuilt only when Cargo.toml or Cargo.lock change: build
# them against stub targets (every target Cargo.toml declares must exist), then drop the stubs
# and cratedock's own artefacts so the real sources below are compiled afresh.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_paths.rs \
 && cargo build --release --locked --bin cratedock \
 && rm -rf src benches \
      target/release/.fingerprint/cratedock-* \
      target/release/deps/cratedock-* \
      target/release/deps/libcratedock-*

COPY src src
COPY config config
COPY benches benches
RUN cargo build --release --locked --bin cratedock \
 && mkdir -p /out/var/lib/cratedock /out/etc/cratedock \
 && cp target/release/cratedock /out/cratedock

# The image's configuration: the default file with what a container needs. Each change is
# checked, so a reworded default fails the build instead of shipping unchanged.
RUN f=/out/etc/cratedock/cratedock.toml \
 && cp config/default.toml "$f" \
 && sed -i 's|^listen = "127\.0\.0\.1:8080"$|listen = "0.0.0.0:8080"|' "$f" \
 && grep -q '^listen = "0\.0\.0\.0:8080"$' "$f" \
 && sed -i 's|^data_dir = "\./cratedock-data"$|data_dir = "/var/lib/cratedock"|' "$f" \
 && grep -q '^data_dir = "/var/lib/cratedock"$' "$f" \
 && sed -i 's|^format = "human"$|format = "json"|' "$f" \
 && grep -q '^format = "json"$' "$f" \
 && sed -i 's|^auth_required = false$|auth_required = true|' "$f" \
 && grep -q '^auth_required = true$' "$f" \
 && ! grep '^[[:space:]]*auth_required' "$f" | grep -qv '^auth_required = true$' \
 && /out/cratedock config check "$f"

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/cratedock /usr/local/bin/cratedock
COPY --from=build --chown=10001:10001 /out/var/lib/cratedock /var/lib/cratedock
COPY --from=build /out/etc/cratedock /etc/cratedock
USER 10001:10001
VOLUME ["/var/lib/cratedock"]
# 8080: plain HTTP. 8443: HTTPS, on only when the configuration has a [server.tls] section with
# listen = "0.0.0.0:8443", cert_file and key_file (mount those files too).
EXPOSE 8080 8443
# `cratedock health` reads the plain listener's address from the same file (loopback for
# 0.0.0.0) and never goes through an HTTP_PROXY.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/cratedock", "health", "--config", "/etc/cratedock/cratedock.toml"]
ENTRYPOINT ["/usr/local/bin/cratedock"]
CMD ["serve", "--config", "/etc/cratedock/cratedock.toml"]
