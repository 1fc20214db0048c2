# docker buildx bake: the four agent images from one shared base.
#
#   docker buildx bake                     # all four, for PLATFORMS
#   docker buildx bake tunnel --load       # one, into the local engine
#   REGISTRY=ghcr.io/me TAG=1.2.3 docker buildx bake --push
#   docker buildx bake --print             # the resolved build definition
#   REVISION=$(git rev-parse HEAD) BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     docker buildx bake                   # labels, and the http-api's /version, say both
#
# Each service Dockerfile starts from two named contexts, `builder` and `runtime`, which
# are the stages of docker/base.Dockerfile built once by the base-* targets below.

variable "REGISTRY" {
  default = "ghcr.io/pipeopshq"
}

variable "TAG" {
  default = "dev"
}

variable "PLATFORMS" {
  default = "linux/amd64,linux/arm64"
}

variable "VERSION" {
  default = "0.1.0"
}

variable "REVISION" {
  default = "unknown"
}

variable "BUILD_DATE" {
  default = "unknown"
}

variable "PYTHON_IMAGE" {
  default = "python:3.11-slim-bookworm"
}

group "default" {
  targets = ["registrar", "tunnel", "gateway", "http-api"]
}

# Shared by every target: the repository root as context, platforms, args, labels.
target "_common" {
  context   = "."
  platforms = split(",", PLATFORMS)
  args = {
    PYTHON_IMAGE = PYTHON_IMAGE
    VERSION      = VERSION
    REVISION     = REVISION
    BUILD_DATE   = BUILD_DATE
  }
  labels = {
    "org.opencontainers.image.source"   = "https://github.com/PipeOpsHQ/pipeops-agent"
    "org.opencontainers.image.version"  = VERSION
    "org.opencontainers.image.revision" = REVISION
    "org.opencontainers.image.created"  = BUILD_DATE
  }
}

target "base-builder" {
  inherits   = ["_common"]
  dockerfile = "docker/base.Dockerfile"
  target     = "builder"
}

target "base-runtime" {
  inherits   = ["_common"]
  dockerfile = "docker/base.Dockerfile"
  target     = "runtime"
}

# What the four service targets share on top of _common: the base stages.
target "_service" {
  inherits = ["_common"]
  contexts = {
    builder = "target:base-builder"
    runtime = "target:base-runtime"
  }
}

target "registrar" {
  inherits   = ["_service"]
  dockerfile = "services/registrar/Dockerfile"
  tags       = ["${REGISTRY}/pipeops-registrar:${TAG}"]
}

target "tunnel" {
  inherits   = ["_service"]
  dockerfile = "services/tunnel/Dockerfile"
  tags       = ["${REGISTRY}/pipeops-tunnel:${TAG}"]
}

target "gateway" {
  inherits   = ["_service"]
  dockerfile = "services/gateway/Dockerfile"
  tags       = ["${REGISTRY}/pipeops-gateway:${TAG}"]
}

target "http-api" {
  inherits   = ["_service"]
  dockerfile = "services/http-api/Dockerfile"
  tags       = ["${REGISTRY}/pipeops-http-api:${TAG}"]
}
