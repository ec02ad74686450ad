# The signalbox binary in a small runtime image. Build: docker build -t signalbox .
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product signalbox --static-swift-stdlib \
 && cp "$(swift build -c release --show-bin-path)/signalbox" /usr/local/bin/signalbox

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/signalbox signalbox \
 && mkdir -p /var/lib/signalbox && chown signalbox /var/lib/signalbox
COPY --from=build /usr/local/bin/signalbox /usr/local/bin/signalbox
USER signalbox
WORKDIR /var/lib/signalbox
ENTRYPOINT ["signalbox"]
