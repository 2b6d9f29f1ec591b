# The hallmark-ca image that the Helm chart (helm/hallmark) runs:
#   docker build -t registry.example/hallmark-ca:0.1.0 .
# Runtime: distroless cc (glibc, no shell, no package manager), user 10001. The chart needs no
# shell: the data dir is mounted, and its probe is `hallmark-ca probe`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hallmark-ca --bin hallmark-ca \
 && mkdir -p /out/var/lib/hallmark

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/hallmark-ca /usr/local/bin/hallmark-ca
# The default data dir, writable by the CA's user (the chart mounts its own there).
COPY --from=build --chown=10001:10001 /out/var/lib/hallmark /var/lib/hallmark
USER 10001:10001
EXPOSE 9443 9080
ENTRYPOINT ["/usr/local/bin/hallmark-ca"]
CMD ["serve", "--data-dir", "/var/lib/hallmark", "--grpc-listen", "0.0.0.0:9443", "--http-listen", "0.0.0.0:9080"]
