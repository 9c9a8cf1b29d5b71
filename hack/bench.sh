#!/usr/bin/env bash
# `make bench`: the operator benchmark (benches/operator.rs) on a fresh local control plane of its own
# (state in .local/bench, thrown away at the end unless KEEP_CLUSTER=1), with the release build of the
# operator. Prints a table; figures go to target/bench/results.{json,md}. Not part of `make test`:
# it takes 10-20 minutes on a 2-core machine and reports figures rather than asserting timings.
#
#   hack/bench.sh                                   # ceiling, burst, idle + restart at full size
#   SCENARIOS=burst BURST_BUILDS=200 hack/bench.sh  # a quick look
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export KUBE_DSS_LOCAL="${KUBE_DSS_LOCAL:-$root/.local/bench}"
mkdir -p "$KUBE_DSS_LOCAL"
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'hack/cluster.sh down' EXIT; fi
hack/cluster.sh down >/dev/null 2>&1 || true
hack/cluster.sh up >/dev/null
cargo bench --locked --bench operator
