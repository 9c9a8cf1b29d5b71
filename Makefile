# kube-dss developer commands. The two that matter: `make demo` and `make test`.
.PHONY: help demo demo-down test bench chaos tools cluster cluster-down crds conformance chart-check gitops-check rules-check build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## local control plane + DSS emulator + operator + two example builds you can watch
	hack/demo.sh up

demo-down: ## stop the demo's emulator and operator (the control plane stays; see cluster-down)
	hack/demo.sh down

test: ## everything: lints, unit, integration (real apiserver), conformance, chart, GitOps checks
	hack/test.sh

bench: ## operator benchmark (ceiling, burst, queued, idle, restart, scale curve, tenants) on its own control plane; figures in target/bench/, plot in docs/
	hack/bench.sh

chaos: ## the long chaos soak (CHAOS_SECONDS, default 600): faults, kills, restarts, then invariants
	hack/chaos.sh

build: ## build the kube-dss binary
	cargo build --locked --bin kube-dss

tools: ## build etcd, kube-apiserver, kubectl, helm, prometheus and promtool from pinned source (cached)
	hack/build-tools.sh
	hack/build-tools.sh prometheus

cluster: ## start (or reuse) the local control plane; kubeconfig at .local/kubeconfig
	hack/cluster.sh up

cluster-down: ## stop the local control plane and remove its state
	hack/cluster.sh down

crds: ## regenerate crds/ from the Rust types
	cargo run --quiet --locked --bin kube-dss -- crds > crds/kube-dss.dev.yaml

conformance: ## the official Python client against the emulator
	hack/conformance.sh

chart-check: ## helm lint/template, apply to the real apiserver, RBAC checks
	hack/chart-check.sh

gitops-check: ## kstatus, Argo CD health and resource action tests
	hack/gitops-check.sh

rules-check: ## promtool check rules and test rules on the chart's alerts
	hack/rules-check.sh
