# cratedock: a static binary (musl) on an empty image, run as a non-root user.
#
#   docker build -t cratedock .
#   docker run -p 8080:8080 -v cratedock-data:/var/lib/cratedock \
#     -v "$PWD/cratedock.toml:/etc/cratedock/cratedock.toml:ro" cratedock
#
# Without a mounted config the image runs the embedded default (a crates.io mirror and the
# private registry `internal`) with `auth_required = true` on both, since a container is reached
# from other hosts. The first admin's token is written to the data volume; the image has no
# shell, so use its cratedock in place:
#   docker exec CONTAINER cratedock admin --token-file /var/lib/cratedock/admin-token user list

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY benches benches
RUN cargo build --release --locked --bin cratedock \
 && mkdir -p /out/var/lib/cratedock /out/etc/cratedock \
 && cp target/release/cratedock /out/cratedock \
 && sed 's/^auth_required = false$/auth_required = true/' config/default.toml \
      > /out/etc/cratedock/cratedock.toml \
 && ! grep -q '^auth_required = false$' /out/etc/cratedock/cratedock.toml

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/cratedock /usr/local/bin/cratedock
COPY --from=build --chown=10001:10001 /out/var/lib/cratedock /var/lib/cratedock
COPY --from=build /out/etc/cratedock /etc/cratedock
USER 10001:10001
ENV CRATEDOCK__SERVER__LISTEN=0.0.0.0:8080 \
    CRATEDOCK__STORAGE__DATA_DIR=/var/lib/cratedock \
    CRATEDOCK__LOG__FORMAT=json
VOLUME ["/var/lib/cratedock"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/cratedock", "health", "--url", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["/usr/local/bin/cratedock"]
CMD ["serve", "--config", "/etc/cratedock/cratedock.toml"]
