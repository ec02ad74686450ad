# The signalbox binary in a small, non-root runtime image. Build: docker build -t signalbox .
# The build image's Swift must be at least every dependency's swift-tools-version:
# Deploy/check-swift-image.py checks it against the dependencies a fresh resolve picks (CI runs it).
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Package.resolved is not committed: it is made here, in a layer kept until Package.swift changes.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product signalbox --static-swift-stdlib \
 && install -D "$(swift build -c release --show-bin-path)/signalbox" /usr/local/bin/signalbox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 signalbox \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/signalbox --shell /usr/sbin/nologin signalbox \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/signalbox
COPY --from=build /usr/local/bin/signalbox /usr/local/bin/signalbox
USER 10001:10001
WORKDIR /var/lib/signalbox
# The embedded ledger, the settlement spool and key files: keep them on a volume.
VOLUME ["/var/lib/signalbox"]
EXPOSE 8080 7946/udp 7946/tcp
ENTRYPOINT ["signalbox"]
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/var/lib/signalbox"]
