#!/usr/bin/env bash
# Builds hack/gitops-health (kstatus and Argo CD health evaluation, see its main.go) into a cache outside
# the repository, keyed by its sources:
#   ${KUBE_DSS_CACHE:-~/.cache/kube-dss}/gitops-health-<hash>/gitops-health
# where <hash> covers go.sum, go.mod and main.go, so a dependency or code change rebuilds and an
# unchanged tree reuses the binary. Prints the binary's path on its last line of stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/hack/gitops-health"
cache_root="${KUBE_DSS_CACHE:-$HOME/.cache/kube-dss}"
hash="$(cat "$src/go.sum" "$src/go.mod" "$src"/*.go | sha256sum | cut -c1-16)"
dir="$cache_root/gitops-health-$hash"
bin="$dir/gitops-health"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-gitops-health: Go is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$dir"
echo "build-gitops-health: building into $dir" >&2
# -mod=readonly: the committed go.mod/go.sum are the truth; a missing entry is an error, not a silent edit.
(cd "$src" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" \
  go build -mod=readonly -trimpath -ldflags="-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
