#!/usr/bin/env bash
# Checks the chart's alert rules with promtool (built from the pinned Prometheus module by
# hack/build-tools.sh prometheus): `promtool check rules` on charts/kube-dss/rules/*.yaml, then
# `promtool test rules` on tests/prometheus/*_test.yaml (input series, the alerts they must fire,
# with their labels and annotation text). tests/prometheus.rs runs the same expressions against a
# real Prometheus scraping the operator.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
promtool="$(hack/build-tools.sh prometheus | tail -n1)/promtool"
"$promtool" check rules charts/kube-dss/rules/*.yaml
"$promtool" test rules tests/prometheus/*_test.yaml
