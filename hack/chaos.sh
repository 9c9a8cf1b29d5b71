#!/usr/bin/env bash
# `make chaos`: the long chaos soak (tests/chaos.rs) on the local control plane. It restarts the
# kube-apiserver, so it runs alone. CHAOS_SECONDS sets the length of the fault phase (default 600 here;
# `make test` runs a short one); the DSS outage lasts CHAOS_OUTAGE_SECONDS (default 60 in long runs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=0
hack/cluster.sh status 2>/dev/null || started=1
hack/cluster.sh up >/dev/null
if [ "$started" = 1 ]; then trap 'hack/cluster.sh down' EXIT; fi
CHAOS_SECONDS="${CHAOS_SECONDS:-600}" cargo test --locked --test chaos -- --nocapture
