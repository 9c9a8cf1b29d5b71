#!/usr/bin/env bash
# Checks the Helm chart charts/kube-dss against real tools and a real kube-apiserver:
#   1. helm lint --strict and helm template for each value set below;
#   2. the rendered RBAC has no wildcard, and the namespaced install renders no ClusterRole or
#      ClusterRoleBinding at all (so none can grant Secrets);
#   3. on the local control plane (hack/cluster.sh; reused when this checkout's is up, else started and
#      stopped again afterwards unless KEEP_CLUSTER=1): applies crds/ and each rendering with server-side apply, each
#      into fresh namespaces, then asks the apiserver what the operator's ServiceAccount may do
#      (kubectl auth can-i --as) and exercises the finalizer and status patches as that account;
#   4. removes what it created.
# Exits non-zero on any failure and prints a summary.
#
#   hack/chart-check.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
chart=charts/kube-dss
bin="$(hack/build-tools.sh | tail -n1)"
helm="$bin/helm"
kubectl_bin="$bin/kubectl"

tmp="$(mktemp -d)"
suffix="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
pass=0
failures=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# Value sets: name -> helm arguments. "lint-only" sets render objects whose CRDs the bare apiserver
# lacks (ServiceMonitor, PrometheusRule) and are linted and rendered but not applied.
sets=(default namespaced emulator-ha extras)
declare -A set_args=(
  [default]=""
  [namespaced]="--set watchNamespaces={team-a} --set leaderElection.enabled=false"
  [emulator-ha]="--set emulator.enabled=true --set replicaCount=2 --set grafanaDashboard.enabled=true --set grafanaDashboard.folder=Data --set grafanaDashboard.annotations.owner=data-platform"
  [extras]="--set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set prometheusRule.labels.release=kube-prometheus-stack --set prometheusRule.ruleLabels.team=data --set prometheusRule.ruleLabels.severity=page --set networkPolicy.enabled=true --set networkPolicy.apiServerCIDRs={10.0.0.1/32} --set networkPolicy.dssCIDRs={10.20.0.0/16} --set defaultConnection.url=https://dss.example.com:11200 --set defaultConnection.apiKeySecret.name=dss-api-key --set defaultConnection.caSecret.name=dss-ca --set connectionPolicy.requireHttps=true --set connectionPolicy.refuseInsecureConnections=true"
)
declare -A applied=([default]=1 [namespaced]=1 [emulator-ha]=1)

# --- 1. lint and template ----------------------------------------------------------------------------
for s in "${sets[@]}"; do
  # shellcheck disable=SC2086 # set_args holds several words on purpose
  if "$helm" lint --strict "$chart" ${set_args[$s]} >"$tmp/lint-$s.log" 2>&1; then
    ok "helm lint ($s)"
  else
    fail "helm lint ($s)"; cat "$tmp/lint-$s.log"
  fi
done

# Namespaces of the cluster checks. Unique per run: this control plane has no namespace controller, so a
# deleted namespace may linger as Terminating.
declare -A rel ns
for s in "${sets[@]}"; do
  rel[$s]="kube-dss-chk-$s"
  ns[$s]="kdss-chk-$s-$suffix"
done
team_a="kdss-chk-team-a-$suffix"
team_b="kdss-chk-team-b-$suffix"

for s in "${sets[@]}"; do
  args="${set_args[$s]}"
  # The namespaced set watches a namespace of this run, named like team-a.
  [ "$s" = namespaced ] && args="--set watchNamespaces={$team_a} --set leaderElection.enabled=false"
  # The emulator-ha set puts its dashboard where a Grafana sidecar would watch: another namespace.
  [ "$s" = emulator-ha ] && args="$args --set grafanaDashboard.namespace=$team_b"
  # shellcheck disable=SC2086
  if "$helm" template "${rel[$s]}" "$chart" -n "${ns[$s]}" $args >"$tmp/$s.yaml" 2>"$tmp/template-$s.log"; then
    ok "helm template ($s): $(grep -c '^kind:' "$tmp/$s.yaml") objects"
  else
    fail "helm template ($s)"; cat "$tmp/template-$s.log"
  fi
  # No wildcard in any RBAC rule: a quoted "*" or a bare * list item anywhere in the rendering.
  if grep -nE '"\*"|'"'"'\*'"'"'|^[[:space:]]*-[[:space:]]+\*[[:space:]]*$|\[[[:space:]]*\*' "$tmp/$s.yaml"; then
    fail "rendered manifests ($s) contain a wildcard"
  else
    ok "no wildcard in the rendered manifests ($s)"
  fi
done
if grep -qE '^kind: Cluster(Role|RoleBinding)$' "$tmp/namespaced.yaml"; then
  fail "the namespaced install renders a ClusterRole/ClusterRoleBinding"
else
  ok "the namespaced install renders no ClusterRole/ClusterRoleBinding"
fi
# Leader election is on by default (also with one replica); off, there is no Lease RBAC and the one pod
# is replaced with strategy Recreate.
if grep -q 'coordination.k8s.io' "$tmp/namespaced.yaml"; then fail "namespaced: Lease RBAC without leader election"
else ok "namespaced: no Lease RBAC (leaderElection.enabled=false)"; fi
grep -A1 'name: LEADER_ELECTION' "$tmp/namespaced.yaml" | grep -q '"false"' && grep -q 'type: Recreate' "$tmp/namespaced.yaml" \
  && ok "namespaced: leader election off, strategy Recreate" \
  || fail "namespaced: leader election not off or strategy not Recreate"
for s in default emulator-ha; do
  grep -q 'coordination.k8s.io' "$tmp/$s.yaml" && grep -A1 'name: LEADER_ELECTION' "$tmp/$s.yaml" | grep -q '"true"' \
    && grep -q 'type: RollingUpdate' "$tmp/$s.yaml" \
    && ok "$s: leader election on, Lease Role, RollingUpdate" \
    || fail "$s: leader election, Lease Role or RollingUpdate missing"
done
# The PrometheusRule carries the rule file's alerts unchanged but for the extra labels, which do not
# replace an alert's own (severity), and promtool accepts its rules.
promtool="$(hack/build-tools.sh prometheus | tail -n1)/promtool"
awk '/^kind: PrometheusRule$/{on=1} on && /^---/{on=0} on' "$tmp/extras.yaml" \
  | sed -n '/^spec:$/,$p' | sed '1d; s/^  //' >"$tmp/rendered-rules.yaml"
alerts="$(grep -c '^  - alert:' "$chart/rules/kube-dss.rules.yaml")"
if "$promtool" check rules "$tmp/rendered-rules.yaml" >"$tmp/promtool.log" 2>&1 \
  && [ "$(grep -c '^  - alert:' "$tmp/rendered-rules.yaml")" = "$alerts" ] \
  && [ "$(grep -c '^      team: data$' "$tmp/rendered-rules.yaml")" = "$alerts" ] \
  && ! grep -q 'severity: page' "$tmp/rendered-rules.yaml"; then
  ok "extras: the PrometheusRule holds the $alerts alerts, valid for promtool, with ruleLabels added"
else
  fail "extras: the rendered PrometheusRule"; cat "$tmp/promtool.log"
fi
# prometheusRule.labels go on the object itself (what a Prometheus's ruleSelector matches), beside the
# chart's labels, and on no alert.
awk '/^kind: PrometheusRule$/{on=1} on && /^---/{on=0} on' "$tmp/extras.yaml" \
  | sed -n '/^metadata:$/,/^spec:$/p' >"$tmp/rule-metadata.yaml"
if grep -qx '    release: kube-prometheus-stack' "$tmp/rule-metadata.yaml" \
  && grep -qx '    app.kubernetes.io/name: kube-dss' "$tmp/rule-metadata.yaml" \
  && ! grep -q 'kube-prometheus-stack' "$tmp/rendered-rules.yaml"; then
  ok "extras: prometheusRule.labels are on the PrometheusRule object"
else
  fail "extras: prometheusRule.labels are not on the PrometheusRule object"; cat "$tmp/rule-metadata.yaml"
fi
if "$helm" template x "$chart" --set replicaCount=2 --set leaderElection.enabled=false >"$tmp/refused.log" 2>&1; then
  fail "replicaCount=2 without leader election renders"
elif grep -q 'needs leader election' "$tmp/refused.log"; then
  ok "replicaCount=2 without leader election is refused with a clear message"
else
  fail "replicaCount=2 without leader election fails without the expected message"; cat "$tmp/refused.log"
fi
for flag in REQUIRE_HTTPS REFUSE_INSECURE_CONNECTIONS; do
  grep -A1 "name: $flag" "$tmp/extras.yaml" | grep -q '"true"' && ok "extras: $flag passed" || fail "extras: $flag not passed"
done
if "$helm" template x "$chart" --set emulator.enabled=true --set connectionPolicy.requireHttps=true >"$tmp/refused-http.log" 2>&1; then
  fail "connectionPolicy.requireHttps with the http emulator sandbox renders"
elif grep -q 'requireHttps refuses' "$tmp/refused-http.log"; then
  ok "connectionPolicy.requireHttps with the http emulator sandbox is refused with a clear message"
else
  fail "connectionPolicy.requireHttps with the emulator fails without the expected message"; cat "$tmp/refused-http.log"
fi

# --- 2. the cluster ----------------------------------------------------------------------------------
# Reuse a healthy local control plane of this checkout, else start one. Not through `cluster.sh status`:
# while a cluster runs, cluster.sh's lock is held by the etcd and kube-apiserver it started (they
# inherit its lock fd), so every later cluster.sh call waits forever. See the teardown in cleanup.
local_dir="${KUBE_DSS_LOCAL:-$repo/.local}"
export KUBECONFIG="$local_dir/kubeconfig"
started_cluster=0
if ! { [ -f "$KUBECONFIG" ] && "$kubectl_bin" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; }; then
  started_cluster=1
  timeout 600 hack/cluster.sh up >/dev/null \
    || { echo "chart-check: hack/cluster.sh up failed or timed out (a stale cluster holding its lock?)" >&2; exit 1; }
fi
k() { "$kubectl_bin" "$@"; }

cleanup() {
  set +e
  for s in "${!applied[@]}"; do
    [ -f "$tmp/$s.yaml" ] && k delete -f "$tmp/$s.yaml" --ignore-not-found --wait=false >/dev/null 2>&1
  done
  for n in "${ns[@]}" "$team_a" "$team_b"; do
    k get ns "$n" >/dev/null 2>&1 || continue
    k delete dsb --all -n "$n" --wait=false >/dev/null 2>&1
    k delete ns "$n" --wait=false >/dev/null 2>&1
    # No namespace controller runs here: finish the deletion ourselves once the contents are gone.
    k get ns "$n" -o json 2>/dev/null | sed 's/"kubernetes"//' \
      | k replace --raw "/api/v1/namespaces/$n/finalize" -f - >/dev/null 2>&1
  done
  if [ "$started_cluster" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    # Stop the two processes this run started (by their pid files; the apiserver first, as cluster.sh
    # does, with SIGKILL after 5 s), which releases cluster.sh's lock; then cluster.sh removes the state.
    for p in kube-apiserver etcd; do
      pidfile="$local_dir/cluster/pids/$p"
      [ -f "$pidfile" ] || continue
      pid="$(cat "$pidfile")"
      kill "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null
    done
    timeout 60 hack/cluster.sh down >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if k apply --server-side -f crds/ >"$tmp/crds.log" 2>&1 \
  && k wait --for=condition=Established --timeout=60s crd/datasetbuilds.kube-dss.dev crd/dssconnections.kube-dss.dev crd/datasetbuildschedules.kube-dss.dev crd/scenarioruns.kube-dss.dev >/dev/null; then
  ok "CRDs applied server-side and Established"
else
  fail "CRDs could not be applied"; cat "$tmp/crds.log"
fi

for n in "${ns[default]}" "${ns[namespaced]}" "${ns[emulator-ha]}" "$team_a" "$team_b"; do
  k create namespace "$n" >/dev/null
done

for s in default namespaced emulator-ha; do
  if k apply --server-side --field-manager=chart-check -f "$tmp/$s.yaml" >"$tmp/apply-$s.log" 2>&1; then
    ok "server-side apply ($s): $(wc -l <"$tmp/apply-$s.log") objects"
  else
    fail "server-side apply ($s)"; cat "$tmp/apply-$s.log"
  fi
done

# The dashboard ConfigMap the Grafana sidecar reads holds the chart's JSON byte for byte, in the
# namespace grafanaDashboard.namespace names (not the release's), with the sidecar label, the folder
# and grafanaDashboard.annotations.
dashboard_cm="${rel[emulator-ha]}-dashboard"
if k get configmap "$dashboard_cm" -n "$team_b" -o jsonpath='{.data.kube-dss\.json}' >"$tmp/dashboard.json" \
  && diff <(cat "$chart/dashboards/kube-dss.json") <(cat "$tmp/dashboard.json"; echo) >/dev/null \
  && [ "$(k get configmap "$dashboard_cm" -n "$team_b" -o jsonpath='{.metadata.labels.grafana_dashboard}/{.metadata.annotations.grafana_folder}/{.metadata.annotations.owner}')" = 1/Data/data-platform ] \
  && ! k get configmap "$dashboard_cm" -n "${ns[emulator-ha]}" >/dev/null 2>&1; then
  ok "emulator-ha: the dashboard ConfigMap in grafanaDashboard.namespace holds dashboards/kube-dss.json, with the sidecar label, folder and annotations"
else
  fail "emulator-ha: the dashboard ConfigMap"
fi

# What the apiserver stored: again no wildcard, and no cluster-wide grant from the namespaced release.
rules="$(k get clusterroles,roles -A -l "app.kubernetes.io/part-of=kube-dss" \
  -o go-template='{{range .items}}{{.kind}}/{{.metadata.name}}: {{range .rules}}{{.apiGroups}}{{.resources}}{{.verbs}}{{.resourceNames}} {{end}}{{"\n"}}{{end}}')"
if grep -q '\*' <<<"$rules"; then fail "stored RBAC has a wildcard: $(grep '\*' <<<"$rules")"
else ok "stored RBAC has no wildcard ($(wc -l <<<"$rules") roles)"; fi
if [ -z "$(k get clusterroles,clusterrolebindings -l "app.kubernetes.io/instance=${rel[namespaced]}" -o name)" ]; then
  ok "namespaced: no ClusterRole/ClusterRoleBinding stored"
else
  fail "namespaced: a ClusterRole/ClusterRoleBinding was stored"
fi

# --- 3. effective permissions ------------------------------------------------------------------------
# can SET EXPECT VERB RESOURCE [kubectl flags...]: asks as the set's ServiceAccount.
can() {
  local s="$1" want="$2"; shift 2
  local as="system:serviceaccount:${ns[$s]}:${rel[$s]}" got
  got="$(k auth can-i "$@" --as="$as" 2>/dev/null || true)"
  if [ "$got" = "$want" ]; then ok "$s: can-i $* -> $got"; else fail "$s: can-i $* -> ${got:-error} (want $want)"; fi
}

for s in default namespaced emulator-ha; do
  # Where this set's operator works: the watched namespace, or any namespace for a cluster-wide install.
  w="$team_a"
  [ "$s" = namespaced ] || w="$team_b"
  can "$s" yes get secrets -n "$w"
  can "$s" no list secrets -n "$w"
  can "$s" no watch secrets -n "$w"
  can "$s" no list secrets --all-namespaces
  can "$s" no create secrets -n "$w"
  can "$s" yes list datasetbuilds.kube-dss.dev -n "$w"
  can "$s" yes watch datasetbuilds.kube-dss.dev -n "$w"
  can "$s" yes patch datasetbuilds.kube-dss.dev -n "$w"
  can "$s" yes patch datasetbuilds.kube-dss.dev --subresource=status -n "$w"
  can "$s" yes patch dssconnections.kube-dss.dev --subresource=status -n "$w"
  # A schedule's builds: created per slot, deleted beyond the history limits. Never rewritten.
  can "$s" yes create datasetbuilds.kube-dss.dev -n "$w"
  can "$s" yes delete datasetbuilds.kube-dss.dev -n "$w"
  can "$s" no deletecollection datasetbuilds.kube-dss.dev -n "$w"
  can "$s" no update datasetbuilds.kube-dss.dev -n "$w"
  can "$s" yes list datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" yes watch datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" yes patch datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" yes patch datasetbuildschedules.kube-dss.dev --subresource=status -n "$w"
  can "$s" no create datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" no update datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" no delete datasetbuildschedules.kube-dss.dev -n "$w"
  can "$s" yes list scenarioruns.kube-dss.dev -n "$w"
  can "$s" yes watch scenarioruns.kube-dss.dev -n "$w"
  can "$s" yes patch scenarioruns.kube-dss.dev -n "$w"
  can "$s" yes patch scenarioruns.kube-dss.dev --subresource=status -n "$w"
  can "$s" no create scenarioruns.kube-dss.dev -n "$w"
  can "$s" no update scenarioruns.kube-dss.dev -n "$w"
  can "$s" no delete scenarioruns.kube-dss.dev -n "$w"
  can "$s" no patch dssconnections.kube-dss.dev -n "$w"
  can "$s" yes create events.events.k8s.io -n "$w"
  can "$s" no create customresourcedefinitions.apiextensions.k8s.io
  can "$s" no get configmaps -n "$w"
done
can namespaced no get secrets -n "$team_b"
can namespaced no list datasetbuilds.kube-dss.dev --all-namespaces
can namespaced no get secrets -n "${ns[namespaced]}"
can namespaced no create leases.coordination.k8s.io -n "${ns[namespaced]}"
can default yes update "leases.coordination.k8s.io/${rel[default]}" -n "${ns[default]}"
can emulator-ha yes create leases.coordination.k8s.io -n "${ns[emulator-ha]}"
can emulator-ha yes update "leases.coordination.k8s.io/${rel[emulator-ha]}" -n "${ns[emulator-ha]}"
can emulator-ha yes get "leases.coordination.k8s.io/${rel[emulator-ha]}" -n "${ns[emulator-ha]}"
can emulator-ha no update leases.coordination.k8s.io/kube-controller-manager -n "${ns[emulator-ha]}"
can emulator-ha no delete "leases.coordination.k8s.io/${rel[emulator-ha]}" -n "${ns[emulator-ha]}"
can emulator-ha no create leases.coordination.k8s.io -n "$team_a"

# The operator's own writes, done for real as its ServiceAccount: finalizer add and remove by JSON patch,
# and a server-side apply of status through the status subresource (what the operator does; kubectl
# patch --subresource would also need get on datasetbuilds/status, which the operator does not have).
as_ns="system:serviceaccount:${ns[namespaced]}:${rel[namespaced]}"
cat >"$tmp/dsb.yaml" <<EOF
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuild
metadata: {name: chart-check, namespace: $team_a}
spec:
  projectKey: SANDBOX
  outputs: [{id: cat_train_hdfs, type: DATASET}]
EOF
cat >"$tmp/dsb-status.yaml" <<EOF
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuild
metadata: {name: chart-check, namespace: $team_a}
status: {observedGeneration: 1, phase: Pending}
EOF
if k apply --server-side -f "$tmp/dsb.yaml" >/dev/null \
  && k patch dsb chart-check -n "$team_a" --as="$as_ns" --type=json \
       -p '[{"op":"add","path":"/metadata/finalizers","value":["kube-dss.dev/abort-job"]}]' >/dev/null \
  && k apply --server-side --field-manager=kube-dss --subresource=status --as="$as_ns" -f "$tmp/dsb-status.yaml" >/dev/null \
  && [ "$(k get dsb chart-check -n "$team_a" -o jsonpath='{.status.phase}')" = Pending ] \
  && k patch dsb chart-check -n "$team_a" --as="$as_ns" --type=json \
       -p '[{"op":"test","path":"/metadata/finalizers/0","value":"kube-dss.dev/abort-job"},{"op":"remove","path":"/metadata/finalizers/0"}]' >/dev/null; then
  ok "namespaced: the ServiceAccount adds and removes the finalizer and applies the status of a real DatasetBuild"
else
  fail "namespaced: finalizer or status write as the ServiceAccount failed"
fi
if k get dsb chart-check -n "$team_a" -o yaml | k replace --as="$as_ns" -f - >/dev/null 2>&1; then
  fail "namespaced: the ServiceAccount could update (rewrite) a DatasetBuild"
else
  ok "namespaced: the ServiceAccount cannot update (rewrite) a DatasetBuild"
fi

# A schedule's writes, as the ServiceAccount: its finalizer, its status, the build of a slot, and the
# deletion of a build (history limits, Replace).
cat >"$tmp/dsbs.yaml" <<EOF
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuildSchedule
metadata: {name: chart-check, namespace: $team_a}
spec:
  schedule: "0 2 * * *"
  suspend: true
  buildTemplate: {spec: {projectKey: SANDBOX, outputs: [{id: cat_train_hdfs}]}}
EOF
cat >"$tmp/dsbs-status.yaml" <<EOF
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuildSchedule
metadata: {name: chart-check, namespace: $team_a}
status: {observedGeneration: 1, activeCount: 0}
EOF
cat >"$tmp/dsb-slot.yaml" <<EOF
apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuild
metadata:
  name: chart-check-29931900
  namespace: $team_a
  labels: {kube-dss.dev/schedule: chart-check, kube-dss.dev/slot: "1795914000"}
spec:
  projectKey: SANDBOX
  outputs: [{id: cat_train_hdfs}]
EOF
if k apply --server-side -f "$tmp/dsbs.yaml" >/dev/null \
  && k patch dsbs chart-check -n "$team_a" --as="$as_ns" --type=json \
       -p '[{"op":"add","path":"/metadata/finalizers","value":["kube-dss.dev/delete-builds"]}]' >/dev/null \
  && k apply --server-side --field-manager=kube-dss --subresource=status --as="$as_ns" -f "$tmp/dsbs-status.yaml" >/dev/null \
  && [ "$(k get dsbs chart-check -n "$team_a" -o jsonpath='{.status.activeCount}')" = 0 ] \
  && k create --as="$as_ns" -f "$tmp/dsb-slot.yaml" >/dev/null \
  && k delete dsb chart-check-29931900 -n "$team_a" --as="$as_ns" >/dev/null \
  && k delete dsb chart-check -n "$team_a" --as="$as_ns" >/dev/null \
  && k patch dsbs chart-check -n "$team_a" --as="$as_ns" --type=json \
       -p '[{"op":"test","path":"/metadata/finalizers/0","value":"kube-dss.dev/delete-builds"},{"op":"remove","path":"/metadata/finalizers/0"}]' >/dev/null; then
  ok "namespaced: the ServiceAccount writes a schedule's finalizer and status, creates a slot's build and deletes builds"
else
  fail "namespaced: a schedule's writes as the ServiceAccount failed"
fi
if k delete dsbs chart-check -n "$team_a" --as="$as_ns" >/dev/null 2>&1; then
  fail "namespaced: the ServiceAccount could delete a DatasetBuildSchedule"
else
  ok "namespaced: the ServiceAccount cannot delete a DatasetBuildSchedule"
fi
k delete dsbs chart-check -n "$team_a" >/dev/null 2>&1 || true

echo
echo "chart-check: $pass passed, $failures failed"
[ "$failures" -eq 0 ]
