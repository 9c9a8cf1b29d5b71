#!/usr/bin/env bash
# A real local control plane for tests and the demo: etcd + kube-apiserver (built from pinned source by
# hack/build-tools.sh) on free loopback ports, RBAC authorization on, an admin token and a kubeconfig.
#
#   hack/cluster.sh up      start it (idempotent: a healthy running one is reused); prints the kubeconfig
#   hack/cluster.sh down    stop it and remove its state
#   hack/cluster.sh status  exit 0 when it is up and healthy
#   hack/cluster.sh restart-apiserver   restart only kube-apiserver (same ports and data)
#
# State lives in $KUBE_DSS_LOCAL (default: <repo>/.local): cluster/{etcd,certs,logs,pids}, kubeconfig.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
local_dir="${KUBE_DSS_LOCAL:-$repo/.local}"
state="$local_dir/cluster"
kubeconfig="$local_dir/kubeconfig"
mkdir -p "$state"

log() { echo "cluster: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

healthy() {
  [ -f "$state/apiserver.port" ] && [ -f "$state/certs/admin.token" ] || return 1
  pid_alive "$state/pids/etcd" && pid_alive "$state/pids/kube-apiserver" || return 1
  curl -fsS --max-time 2 --cacert "$state/certs/ca.crt" \
    -H "Authorization: Bearer $(cat "$state/certs/admin.token")" \
    "https://127.0.0.1:$(cat "$state/apiserver.port")/readyz" >/dev/null 2>&1
}

stop_pid() { # pidfile
  if pid_alive "$1"; then
    local pid; pid="$(cat "$1")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

make_certs() {
  local c="$state/certs"
  [ -f "$c/ca.crt" ] && return 0
  mkdir -p "$c"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kube-dss-local-ca" \
    -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$c/apiserver.key" -out "$c/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' > "$c/san.ext"
  openssl x509 -req -in "$c/apiserver.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
    -days 3650 -extfile "$c/san.ext" -out "$c/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
  python3 -c 'import secrets; print(secrets.token_hex(24))' > "$c/admin.token"
  printf '%s,kube-dss-admin,kube-dss-admin,"system:masters"\n' "$(cat "$c/admin.token")" > "$c/tokens.csv"
  chmod 600 "$c"/*.key "$c/admin.token" "$c/tokens.csv"
}

write_kubeconfig() {
  local port; port="$(cat "$state/apiserver.port")"
  cat > "$kubeconfig.tmp" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: kube-dss-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $state/certs/ca.crt
users:
- name: kube-dss-admin
  user:
    token: $(cat "$state/certs/admin.token")
contexts:
- name: kube-dss-local
  context: {cluster: kube-dss-local, user: kube-dss-admin, namespace: default}
current-context: kube-dss-local
KCFG
  chmod 600 "$kubeconfig.tmp"
  mv "$kubeconfig.tmp" "$kubeconfig"
}

start_etcd() {
  local port peer; port="$(cat "$state/etcd.port")"; peer="$(free_port)"
  mkdir -p "$state/logs" "$state/pids"
  "$bin/etcd" --name kube-dss --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "kube-dss=http://127.0.0.1:$peer" --listen-metrics-urls "" \
    --quota-backend-bytes 4294967296 --unsafe-no-fsync \
    >>"$state/logs/etcd.log" 2>&1 9>&- &
  echo $! > "$state/pids/etcd"
  for _ in $(seq 1 100); do
    curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    pid_alive "$state/pids/etcd" || break
    sleep 0.1
  done
  log "etcd did not become healthy; see $state/logs/etcd.log"; tail -20 "$state/logs/etcd.log" >&2; return 1
}

start_apiserver() {
  local port etcd c; port="$(cat "$state/apiserver.port")"; etcd="$(cat "$state/etcd.port")"; c="$state/certs"
  "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$c/apiserver.crt" --tls-private-key-file "$c/apiserver.key" \
    --client-ca-file "$c/ca.crt" --token-auth-file "$c/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$c/sa.pub" --service-account-signing-key-file "$c/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --enable-priority-and-fairness=false \
    --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
    --v 1 >>"$state/logs/kube-apiserver.log" 2>&1 9>&- &
  echo $! > "$state/pids/kube-apiserver"
  for _ in $(seq 1 600); do
    healthy && return 0
    pid_alive "$state/pids/kube-apiserver" || break
    sleep 0.1
  done
  log "kube-apiserver did not become ready; see $state/logs/kube-apiserver.log"
  tail -30 "$state/logs/kube-apiserver.log" >&2
  return 1
}

up() {
  if healthy; then
    write_kubeconfig
    log "reusing the running control plane"
    echo "$kubeconfig"
    return 0
  fi
  bin="$("$repo/hack/build-tools.sh" | tail -n1)"
  stop_pid "$state/pids/kube-apiserver"; stop_pid "$state/pids/etcd"
  rm -rf "$state/etcd"
  make_certs
  free_port > "$state/etcd.port"
  free_port > "$state/apiserver.port"
  echo "$bin" > "$state/bin"
  start_etcd
  start_apiserver
  write_kubeconfig
  log "kube-apiserver https://127.0.0.1:$(cat "$state/apiserver.port") (etcd 127.0.0.1:$(cat "$state/etcd.port")), logs in $state/logs"
  log "kubeconfig: $kubeconfig   (export KUBECONFIG=$kubeconfig)"
  echo "$kubeconfig"
}

down() {
  stop_pid "$state/pids/kube-apiserver"
  stop_pid "$state/pids/etcd"
  rm -rf "$state" "$kubeconfig"
  log "stopped"
}

restart_apiserver() {
  bin="$(cat "$state/bin")"
  stop_pid "$state/pids/kube-apiserver"
  start_apiserver
}

# One caller at a time: tests in parallel processes may all ask for the cluster.
exec 9>"$local_dir/.cluster.lock"
flock 9
case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) healthy ;;
  restart-apiserver) restart_apiserver ;;
  *) echo "usage: $0 up|down|status|restart-apiserver" >&2; exit 64 ;;
esac
