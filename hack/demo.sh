#!/usr/bin/env bash
# `make demo`: the local control plane, the DSS emulator (examples/emulator.yaml on 127.0.0.1:11200),
# the operator watching namespace kube-dss-demo, the two example builds of examples/demo/, and one
# ScenarioRun of examples/demo/scenariorun.yaml.
# Shows the builds' status changing until one Succeeded and one Failed, then the scenario run with its
# steps, then the schedule of examples/demo/schedule.yaml (every 15 s) creating builds, each with its
# slot's partition, and `kube-dss schedules run` building a slot by hand. It ends with the kubectl plugin
# at work: `kubectl dss status`, `logs` and `logs --activity` of the failed build, `rerun` of the other,
# and `abort` of a long backfill build.
# `make demo-down` stops the emulator and the operator.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
demo="$root/.local/demo"
ns=kube-dss-demo
mkdir -p "$demo"

stop() {
  for p in operator emulator; do
    if [ -f "$demo/$p.pid" ] && kill -0 "$(cat "$demo/$p.pid")" 2>/dev/null; then
      kill "$(cat "$demo/$p.pid")" 2>/dev/null || true
    fi
    rm -f "$demo/$p.pid"
  done
}

if [ "${1:-up}" = down ]; then
  stop
  echo "demo: emulator and operator stopped (make cluster-down stops the control plane)"
  exit 0
fi

echo "demo: building kube-dss"
cargo build --quiet --locked --bin kube-dss
bin="$root/target/debug/kube-dss"
echo "demo: starting the control plane (the first run builds it from source: ~10 min)"
export KUBECONFIG
KUBECONFIG="$(hack/cluster.sh up | tail -n1)"
kubectl="$(cat "$root/.local/cluster/bin")/kubectl"
"$kubectl" apply --server-side --force-conflicts -f crds/ >/dev/null
"$kubectl" wait --for=condition=Established --timeout=60s crd/datasetbuilds.kube-dss.dev crd/dssconnections.kube-dss.dev crd/datasetbuildschedules.kube-dss.dev crd/scenarioruns.kube-dss.dev >/dev/null

stop
echo "demo: starting the DSS emulator on http://127.0.0.1:11200 (log: $demo/emulator.log)"
"$bin" emulator --listen 127.0.0.1:11200 --config examples/emulator.yaml >"$demo/emulator.log" 2>&1 &
echo $! > "$demo/emulator.pid"
for _ in $(seq 1 50); do grep -q listening "$demo/emulator.log" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$demo/emulator.log" || { echo "demo: the emulator did not start:"; cat "$demo/emulator.log"; exit 1; }

"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
# A fresh demo: earlier schedules, builds and scenario runs are removed while the operator still runs
# their finalizers (a ScenarioRun left from an earlier demo would not fire again).
echo "demo: starting the operator for namespace $ns (log: $demo/operator.log)"
"$bin" controller --namespace "$ns" --admin-addr 127.0.0.1:18080 >"$demo/operator.log" 2>&1 &
echo $! > "$demo/operator.pid"
for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:18080/readyz 2>/dev/null && break; sleep 0.2; done
"$kubectl" -n "$ns" delete dsbs --all --wait=true --timeout=60s >/dev/null 2>&1 || true
"$kubectl" -n "$ns" delete dsb --all --wait=true --timeout=60s >/dev/null 2>&1 || true
"$kubectl" -n "$ns" delete scr --all --wait=true --timeout=60s >/dev/null 2>&1 || true

echo "demo: applying examples/demo/connection.yaml and examples/demo/builds.yaml"
"$kubectl" -n "$ns" apply -f examples/demo/connection.yaml
"$kubectl" -n "$ns" apply -f examples/demo/builds.yaml
echo
echo "demo: watching the builds (kubectl -n $ns get dsb -o wide)"
for _ in $(seq 1 60); do
  out="$("$kubectl" -n "$ns" get dsb -o wide)"
  echo "$out"; echo
  phases="$("$kubectl" -n "$ns" get dsb -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')"
  if [ "$(echo "$phases" | grep -cE '^(Succeeded|Failed|Aborted)$')" = 2 ]; then break; fi
  sleep 2
done
"$kubectl" -n "$ns" wait --for=condition=Succeeded dsb/orders-clean --timeout=60s
echo
echo "demo: applying examples/demo/scenariorun.yaml: one run of the NIGHTLY_REFRESH scenario"
"$kubectl" -n "$ns" apply -f examples/demo/scenariorun.yaml
"$kubectl" -n "$ns" wait --for=condition=Succeeded scr/nightly-refresh --timeout=120s || true
"$kubectl" -n "$ns" get scr nightly-refresh -o wide
"$kubectl" -n "$ns" get scr nightly-refresh \
  -o 'custom-columns=STEP:.status.steps[*].name,OUTCOME:.status.steps[*].outcome,JOBS:.status.steps[*].jobIds'
echo
echo "demo: applying examples/demo/schedule.yaml: a build of orders_by_day every 15 seconds"
"$kubectl" -n "$ns" apply -f examples/demo/schedule.yaml
for _ in $(seq 1 12); do
  sleep 4
  echo; "$kubectl" -n "$ns" get dsbs orders-every-15s
  "$kubectl" -n "$ns" get dsb -l kube-dss.dev/schedule=orders-every-15s \
    -o 'custom-columns=BUILD:.metadata.name,SLOT:.metadata.annotations.kube-dss\.dev/scheduled-time,PARTITION:.spec.outputs[0].partition,PHASE:.status.phase'
  [ "$("$kubectl" -n "$ns" get dsb -l kube-dss.dev/schedule=orders-every-15s -o name | wc -l)" -ge 3 ] && break
done
echo
echo "demo: kube-dss schedules run: the build of a given slot now (its partition is that slot's day)"
"$bin" schedules run orders-every-15s -n "$ns" --slot 2026-11-12T02:00:00+01:00 || true
"$kubectl" -n "$ns" patch dsbs orders-every-15s --type merge -p '{"spec":{"suspend":true}}' >/dev/null
echo "demo: schedule suspended (kubectl -n $ns patch dsbs orders-every-15s --type merge -p '{\"spec\":{\"suspend\":false}}' resumes it)"
echo
echo "demo: the schedule's events:"
"$kubectl" -n "$ns" get events --field-selector involvedObject.name=orders-every-15s \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | cut -c1-160
echo
# kubectl dss: the same binary on PATH as kubectl-dss, which kubectl runs as its plugin.
mkdir -p "$demo/bin"
ln -sf "$bin" "$demo/bin/kubectl-dss"
export PATH="$demo/bin:$PATH"
dss() { echo "\$ kubectl dss $*"; "$kubectl" dss "$@"; echo; }
# wait_status BUILD JSONPATH WANT: waits until the build's JSONPATH reads WANT, at most a minute.
wait_status() {
  local build="$1" path="$2" want="$3"
  for _ in $(seq 1 120); do
    [ "$("$kubectl" -n "$ns" get dsb "$build" -o jsonpath="$path")" = "$want" ] && return 0
    sleep 0.5
  done
  echo "demo: $build did not reach $want"; return 1
}
echo "demo: kubectl dss (the kube-dss binary installed as kubectl-dss on PATH)"
echo
dss status customers-scored -n "$ns"
dss logs customers-scored -n "$ns"
dss logs customers-scored -n "$ns" --activity compute_customers_scored_NP
dss rerun orders-clean -n "$ns"
stamp="$("$kubectl" -n "$ns" get dsb orders-clean -o jsonpath='{.metadata.annotations.kube-dss\.dev/rerun}')"
wait_status orders-clean '{.status.lastHandledRerunAnnotation}/{.status.phase}' "$stamp/Succeeded"
dss status orders-clean -n "$ns"
echo "demo: a backfill of a week of orders_by_day (seven 3-second activities), aborted while it runs"
"$kubectl" -n "$ns" apply -f - <<'YAML'
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuild
metadata: {name: orders-backfill}
spec:
  connectionRef: {name: dss}
  projectKey: ANALYTICS
  outputs:
  - id: orders_by_day
    partition: "2026-11-01,2026-11-02,2026-11-03,2026-11-04,2026-11-05,2026-11-06,2026-11-07"
YAML
wait_status orders-backfill '{.status.phase}' Running
dss abort orders-backfill -n "$ns"
wait_status orders-backfill '{.status.phase}' Aborted
dss status orders-backfill -n "$ns"
cat <<MSG

demo: done. Explore with:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n $ns get dsb,dsbs,scr,dssconn
  export PATH=$demo/bin:\$PATH                      # kubectl dss
  kubectl dss status orders-clean -n $ns
  kubectl dss rerun orders-clean -n $ns              # or change spec.rerunToken: build again
  kubectl dss logs orders-clean -n $ns --activity compute_orders_clean_NP
  $bin jobs --url http://127.0.0.1:11200 --api-key demo-operator-key list --project ANALYTICS
  curl -s http://127.0.0.1:18080/metrics | grep kube_dss_
Stop with: make demo-down && make cluster-down
MSG
