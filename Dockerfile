# syntax=docker/dockerfile:1
#
# The outflow image: one static binary on a distroless base, for every
# subcommand (serve, migrate, featureserver, apikey, …). docker-compose.yml
# runs it; cmd/outflow/compose_test.go checks this file's shape.
#
#   docker build -t outflow --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm outflow version

# ---------------------------------------------------------------- build --
# Keep the Go minor version in step with the go directive of go.mod (the test
# checks).
FROM golang:1.26-bookworm AS build
WORKDIR /src

# Modules first, so editing the source does not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .
# VERSION is what `outflow version` and the webhook user-agent report; empty
# falls back to the module version, or "dev".
ARG VERSION=""
# Static (no cgo, so no libc), reproducible paths, no debug info.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
        -ldflags="-s -w -X main.version=${VERSION}" \
        -o /out/outflow ./cmd/outflow

# -------------------------------------------------------------- runtime --
# distroless static: CA certificates (webhooks over https, Kafka TLS) and
# tzdata, but no shell or package manager. Its nonroot user is 65532; USER is
# numeric so Kubernetes' runAsNonRoot can verify it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outflow /outflow
USER 65532:65532
# 8080 REST, /metrics, /healthz, /readyz; 9090 gRPC; 8090 `outflow featureserver`.
EXPOSE 8080 9090 8090
ENTRYPOINT ["/outflow"]
CMD ["serve"]
