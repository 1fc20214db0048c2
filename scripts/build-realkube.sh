#!/usr/bin/env bash
# Build the real control plane the tests run against into .tools/bin, from the Go module
# proxy: kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok). The wrapper modules live in
# dev/realkube/go/{kube,etcd,kwok} (go.mod written by scripts/realkube_gomod.py, go.sum
# committed). Go >= 1.26 is required.
#
# Idempotent and keyed by version: each module's stamp holds the hash of its go.mod, go.sum
# and main sources; when the stamp matches and the binaries exist, nothing is built.
# The builds run under `nice -n 19` with CGO_ENABLED=0; a cold build takes tens of minutes.
# Usage: scripts/build-realkube.sh [kube|etcd|kwok ...]   (run by `make setup`)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
STAMPS="$ROOT/.tools/stamps"
GO_DIR="$ROOT/dev/realkube/go"
mkdir -p "$BIN" "$STAMPS"

command -v go >/dev/null || {
    echo "build-realkube: 'go' (>= 1.26) is required to build the real control plane" >&2
    exit 1
}
go_version="$(go env GOVERSION)"
if [[ ! "$go_version" =~ ^go1\.(2[6-9]|[3-9][0-9]) ]]; then
    echo "build-realkube: Go >= 1.26 is required, found $go_version" >&2
    exit 1
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

module_version() {  # the version the wrapper module requires of $2
    (cd "$GO_DIR/$1" && go list -m -f '{{.Version}}' "$2")
}

stamp_of() {  # a key for module $1: its version pin and inputs
    (cd "$GO_DIR/$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "$go_version") \
        | sha256sum | cut -c1-16
}

build() {  # build <module> <version-package> <binaries...> -- <packages...>
    local name="$1" versioned="$2"; shift 2
    local binaries=() packages=()
    while [[ "$1" != "--" ]]; do binaries+=("$1"); shift; done
    shift; packages=("$@")
    local version key stamp
    version="$(module_version "$name" "$versioned")"
    key="$(stamp_of "$name")"
    stamp="$STAMPS/realkube-$name-$version-$key"
    local missing=0
    for binary in "${binaries[@]}"; do [[ -x "$BIN/$binary" ]] || missing=1; done
    if [[ "$name" == kwok && ! -f "$ROOT/.tools/share/kwok/pod-ready.yaml" ]]; then missing=1; fi
    if [[ -f "$stamp" && $missing == 0 ]]; then
        echo "build-realkube: $name $version already built (${binaries[*]})"
        return
    fi
    echo "build-realkube: building $name $version (${binaries[*]}); a cold build takes minutes"
    local start=$SECONDS out
    out="$(mktemp -d "$BIN/.build-XXXXXX")"
    local ldflags="-s -w"
    if [[ "$name" == kube ]]; then
        local major minor
        major="$(echo "$version" | cut -d. -f1 | tr -d v)"
        minor="$(echo "$version" | cut -d. -f2)"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major"
            ldflags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
            ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
        done
    fi
    (cd "$GO_DIR/$name" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/" \
        "${packages[@]}")
    for binary in "${binaries[@]}"; do mv -f "$out/$binary" "$BIN/$binary"; done
    rm -rf "$out"
    if [[ "$name" == kwok ]]; then  # the stages kwok plays, from the same module version
        local src share="$ROOT/.tools/share/kwok"
        src="$(cd "$GO_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
        rm -rf "$share" && mkdir -p "$share"
        cp "$src"/node/fast/node-initialize.yaml \
           "$src"/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           "$src"/pod/fast/pod-ready.yaml "$src"/pod/fast/pod-complete.yaml \
           "$src"/pod/fast/pod-delete.yaml "$share/"
        chmod u+w "$share"/*.yaml
    fi
    rm -f "$STAMPS/realkube-$name-"*
    touch "$stamp"
    echo "build-realkube: built $name $version in $((SECONDS - start)) s"
}

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(etcd kwok kube)
for name in "${wanted[@]}"; do
    case "$name" in
        etcd) build etcd go.etcd.io/etcd/server/v3 etcd -- . ;;
        kwok) build kwok sigs.k8s.io/kwok kwok -- sigs.k8s.io/kwok/cmd/kwok ;;
        kube) build kube k8s.io/kubernetes kube-apiserver kube-controller-manager \
                  kube-scheduler -- k8s.io/kubernetes/cmd/kube-apiserver \
                  k8s.io/kubernetes/cmd/kube-controller-manager \
                  k8s.io/kubernetes/cmd/kube-scheduler ;;
        *) echo "build-realkube: unknown module '$name' (kube, etcd, kwok)" >&2; exit 2 ;;
    esac
done
