#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl and helm from pinned upstream source (hack/versions.env) through
# the Go module proxy, into a cache outside the repository:
#   ${KUBE_DSS_CACHE:-~/.cache/kube-dss}/<k8s>-<etcd>-<helm>/bin
# Only the first run on a machine pays the build; later runs print the directory and exit.
# Prints the bin directory on its last line of stdout.
#
#   hack/build-tools.sh              etcd, kube-apiserver, kubectl, helm
#   hack/build-tools.sh prometheus   prometheus and promtool, into
#                                    ${KUBE_DSS_CACHE:-~/.cache/kube-dss}/prometheus-<version>/bin
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${KUBE_DSS_CACHE:-$HOME/.cache/kube-dss}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

# A throwaway module that requires one upstream module; used to build binaries from modules that
# cannot be `go install`ed directly.
new_module() { # dir module version
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init kube-dss.local/build >/dev/null 2>&1 && go mod edit -require="$2@$3")
}

# Prometheus and promtool for the alert rule tests (promtool test rules) and the test that runs every
# dashboard and alert query against a real server. Built without the web UI's assets (the API is all
# the tests use) and with only the file and HTTP service discoveries (tag remove_all_sd): the cloud
# SDKs of the others are most of the build time and none of them is used here.
build_prometheus() {
  local v="$PROMETHEUS_MODULE_VERSION"
  local pdir="$cache_root/prometheus-$v"
  local pbin="$pdir/bin"
  if [ -x "$pbin/prometheus" ] && [ -x "$pbin/promtool" ]; then
    echo "$pbin"
    return 0
  fi
  command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
  local start m release
  start=$(date +%s)
  m="$pdir/src"
  # Module v0.3XX.Y is release 3.XX.Y; the version string is what `prometheus --version` shows.
  release="$(echo "$v" | sed -n 's/^v0\.3\([0-9][0-9]\)\.\([0-9]*\)$/3.\1.\2/p' | sed 's/^3\.0*\([0-9]\)/3.\1/')"
  echo "build-tools: building prometheus and promtool ${release:-$v} (module $v)" >&2
  mkdir -p "$pbin"
  new_module "$m" github.com/prometheus/prometheus "$v"
  (cd "$m" && go get "github.com/prometheus/prometheus/cmd/prometheus@$v" "github.com/prometheus/prometheus/cmd/promtool@$v"
   go build -tags netgo,remove_all_sd -trimpath \
     -ldflags="-s -w -X github.com/prometheus/common/version.Version=${release:-$v}" \
     -o "$pbin/" github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
  echo "build-tools: built prometheus and promtool in $(( $(date +%s) - start ))s into $pbin" >&2
  echo "$pbin"
}

case "${1:-}" in
  "") ;;
  prometheus) build_prometheus; exit 0 ;;
  *) echo "usage: hack/build-tools.sh [prometheus]" >&2; exit 2 ;;
esac

dir="$cache_root/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
bin="$dir/bin"
tools=(etcd kube-apiserver kubectl helm)

have_all() {
  for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
}

if have_all; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$bin" "$dir/src"
start=$(date +%s)

if [ ! -x "$bin/etcd" ]; then
  echo "build-tools: building etcd $ETCD_VERSION" >&2
  m="$dir/src/etcd"
  new_module "$m" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (cd "$m" && printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
   go mod tidy && go build -trimpath -ldflags="-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin/etcd.tmp" "$bin/etcd"
fi

if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kubectl" ]; then
  echo "build-tools: building kube-apiserver and kubectl $KUBERNETES_VERSION" >&2
  m="$dir/src/kubernetes"
  new_module "$m" k8s.io/kubernetes "$KUBERNETES_VERSION"
  # k8s.io/kubernetes points its staging modules at ./staging with replace directives, which a
  # dependent module ignores. Replace each of them with its published v0.X.Y twin, taking the list
  # from the module's own go.mod.
  gomod="$(cd "$m" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  replaces=()
  while read -r mod; do
    replaces+=("-replace=$mod=$mod@$staging_version")
  done < <(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#\1#p' "$gomod")
  [ "${#replaces[@]}" -gt 0 ] || { echo "build-tools: no staging replaces found in $gomod" >&2; exit 1; }
  (cd "$m" && go mod edit "${replaces[@]}"
   printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > tools.go
   go mod tidy
   go build -trimpath -ldflags="-s -w" -o "$bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
fi

if [ ! -x "$bin/helm" ]; then
  echo "build-tools: building helm $HELM_VERSION" >&2
  m="$dir/src/helm"
  new_module "$m" helm.sh/helm/v3 "$HELM_VERSION"
  # `go get` of the main package records every module it needs (go.sum included).
  (cd "$m" && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" && go build -trimpath -ldflags="-s -w" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$bin/helm.tmp" "$bin/helm"
fi

have_all
echo "build-tools: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
