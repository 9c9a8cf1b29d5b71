#!/usr/bin/env bash
# Checks what GitOps tools make of DatasetBuild and DSSConnection objects against expectations:
# kstatus (sigs.k8s.io/cli-utils, what Flux health checks and `kpt live status` use) and Argo CD with the
# shipped deploy/argocd/*.lua, run the way Argo CD runs them (see hack/gitops-health/main.go).
#
#   hack/gitops-check.sh [DIR...]     default: tests/gitops
#
# Each DIR holds objects (*.yaml, *.yml, *.json: single objects, multi-document YAML or Lists, e.g.
# `kubectl get dsb NAME -o json > DIR/NAME.json`) and an expected.tsv with one line per object:
#   name<TAB>kstatus<TAB>argocd
# Every object needs a line and every line an object. Also checks that argocd-cm-patch.yaml embeds
# the current scripts and that the harness really lacks Lua's standard libraries, as Argo CD does.
# Exits non-zero on any mismatch.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tool="$(hack/build-gitops-health.sh | tail -n1)"
scripts=(--script "kube-dss.dev/DatasetBuild=deploy/argocd/health.lua"
         --script "kube-dss.dev/DSSConnection=deploy/argocd/dssconnection-health.lua")
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# The ConfigMap snippet users apply must carry the scripts tested here.
hack/gen-argocd-cm.sh --check || fail "deploy/argocd/argocd-cm-patch.yaml is not generated from the .lua files"

# The harness must be as strict as Argo CD: without useOpenLibs there is no string library.
printf 'return {status = string.lower("HEALTHY")}\n' > "$tmp/uses-string.lua"
if "$tool" argocd --script "$tmp/uses-string.lua" tests/gitops/datasetbuild-new.yaml >/dev/null 2>&1; then
  fail "harness: a script calling string.lower ran; Argo CD would reject it"
fi

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
