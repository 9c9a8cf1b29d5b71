#!/usr/bin/env bash
# Checks what GitOps tools make of kube-dss objects, with the tools' own logic:
#   - kstatus (sigs.k8s.io/cli-utils, what Flux health checks and `kpt live status` use) and Argo CD
#     health with the shipped scripts of deploy/argocd/resource_customizations, against expectations;
#   - the tests of that tree (health_test.yaml, actions/action_test.yaml: discovery and resource
#     actions), run as argo-cd's util/lua tests run them;
#   - that deploy/argocd/argocd-cm-patch.yaml carries exactly those scripts, parsed as Argo CD parses it;
#   - the harness's own tests (hack/gitops-health, `go test`): Argo CD's Lua environment and result
#     handling, and that a wrong script or expectation fails.
#
#   hack/gitops-check.sh [DIR...]     default: tests/gitops
#
# Each DIR holds objects (*.yaml, *.yml, *.json: single objects, multi-document YAML or Lists, e.g.
# `kubectl get dsb NAME -o json > DIR/NAME.json`) and an expected.tsv with one line per object:
#   name<TAB>kstatus<TAB>argocd
# Every object needs a line and every line an object. Exits non-zero on any mismatch.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tool="$(hack/build-gitops-health.sh | tail -n1)"
tree=deploy/argocd/resource_customizations
scripts=(--customizations "$tree")
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# The harness itself: Argo CD's Lua environment, and that its test runner fails what it must.
(cd hack/gitops-health && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" go test -mod=readonly -count=1 ./... >"$tmp/gotest" 2>&1) \
  || { cat "$tmp/gotest"; fail "hack/gitops-health: go test"; }

# The ConfigMap snippet users apply must carry the scripts tested here, byte for byte.
hack/gen-argocd-cm.sh --check || fail "deploy/argocd/argocd-cm-patch.yaml is not generated from $tree"
"$tool" argocd-cm deploy/argocd/argocd-cm-patch.yaml "$tree" || fail "deploy/argocd/argocd-cm-patch.yaml"

# health_test.yaml and actions/action_test.yaml of every kind.
"$tool" customizations "$tree" || fail "$tree: resource_customizations tests"

checked=0
for dir in "${@:-tests/gitops}"; do
  [ -f "$dir/expected.tsv" ] || { fail "$dir: no expected.tsv"; continue; }
  files=()
  while IFS= read -r f; do files+=("$f"); done < <(find "$dir" -maxdepth 1 -type f \
    \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) | sort)
  [ "${#files[@]}" -gt 0 ] || { fail "$dir: no object files"; continue; }

  "$tool" kstatus "${files[@]}" > "$tmp/kstatus" || fail "$dir: kstatus evaluation failed"
  "$tool" argocd "${scripts[@]}" "${files[@]}" > "$tmp/argocd" || fail "$dir: Argo CD evaluation failed"

  # name -> result, and the list of names found.
  declare -A ks=() ac=() km=() am=() expected=()
  while IFS=$'\t' read -r name st msg; do
    [ -z "${ks[$name]+x}" ] || fail "$dir: object name $name appears twice"
    ks[$name]="$st"; km[$name]="$msg"
  done < "$tmp/kstatus"
  while IFS=$'\t' read -r name st msg; do ac[$name]="$st"; am[$name]="$msg"; done < "$tmp/argocd"

  while IFS=$'\t' read -r name want_ks want_ac; do
    case "$name" in ''|'#'*) continue ;; esac
    expected[$name]=1
    checked=$((checked + 1))
    if [ -z "${ks[$name]+x}" ]; then fail "$dir: $name is in expected.tsv but in no object file"; continue; fi
    got_ac="${ac[$name]:-<no script>}"
    if [ "${ks[$name]}" = "$want_ks" ] && [ "$got_ac" = "$want_ac" ]; then
      printf 'ok   %-32s kstatus=%-10s argocd=%s\n' "$name" "${ks[$name]}" "$got_ac"
    else
      fail "$(printf '%-32s kstatus=%s (want %s: %s) argocd=%s (want %s: %s)' "$name" \
        "${ks[$name]}" "$want_ks" "${km[$name]}" "$got_ac" "$want_ac" "${am[$name]:-}")"
    fi
  done < "$dir/expected.tsv"
  for name in "${!ks[@]}"; do
    [ -n "${expected[$name]+x}" ] || fail "$dir: $name has no line in expected.tsv (kstatus=${ks[$name]} argocd=${ac[$name]:-<no script>})"
  done
  unset ks ac km am expected
done

echo "gitops-check: $checked objects checked, $failures failure(s)"
[ "$failures" -eq 0 ]
