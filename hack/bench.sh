#!/usr/bin/env bash
# `make bench`: the operator benchmark (benches/operator/) on a fresh local control plane of its own
# (state in .local/bench, thrown away at the end unless KEEP_CLUSTER=1), with the release build of the
# operator. Prints a table; figures go to target/bench/results.{json,md}. Then, when the scale
# scenario ran, draws its curve (hack/plot-bench.py, matplotlib in a virtualenv kept in
# ${KUBE_DSS_CACHE:-~/.cache/kube-dss}/venv-bench, pinned by hack/bench-requirements.txt) into
# docs/benchmarks-scale.png (BENCH_PLOT to write it elsewhere). Not part of `make test`: it takes
# over an hour on a 2-core machine and reports figures rather than asserting timings.
#
#   hack/bench.sh                                            # every scenario at full size
#   SCENARIOS=burst,queued BURST_BUILDS=100 hack/bench.sh    # a quick look
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export KUBE_DSS_LOCAL="${KUBE_DSS_LOCAL:-$root/.local/bench}"
scenarios="${SCENARIOS:-ceiling,burst,queued,idle,restart,scale,tenants}"
plot="${BENCH_PLOT:-$root/docs/benchmarks-scale.png}"
python="${PYTHON:-python3}"
cache_root="${KUBE_DSS_CACHE:-$HOME/.cache/kube-dss}"
venv="$cache_root/venv-bench"

wants_scale() { [[ ",$scenarios," == *,scale,* ]]; }

# The plot's virtualenv is made first: a missing python should stop the run before an hour of
# measuring, not after.
if wants_scale; then
  command -v "$python" >/dev/null || { echo "bench: $python is required to draw the scale curve" >&2; exit 1; }
  stamp="$venv/.requirements.sha256"
  want="$(sha256sum hack/bench-requirements.txt | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bench: preparing $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache_root"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r hack/bench-requirements.txt
    echo "$want" > "$stamp"
  fi
fi

mkdir -p "$KUBE_DSS_LOCAL"
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'hack/cluster.sh down' EXIT; fi
hack/cluster.sh down >/dev/null 2>&1 || true
hack/cluster.sh up >/dev/null
SCENARIOS="$scenarios" cargo bench --locked --bench operator

if wants_scale; then
  "$venv/bin/python" hack/plot-bench.py target/bench/results.json "$plot"
fi
