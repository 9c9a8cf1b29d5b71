#!/usr/bin/env bash
# Runs the conformance suite: the official DSS Python client (dataiku-api-client, pinned in
# tests/conformance/requirements.txt) against `kube-dss emulator`. The virtualenv lives outside
# the repository, in ${KUBE_DSS_CACHE:-~/.cache/kube-dss}/venv-conformance, and is reused while
# the requirements file is unchanged. Extra arguments go to pytest (e.g. -k abort -x).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
suite="$root/tests/conformance"
cache_root="${KUBE_DSS_CACHE:-$HOME/.cache/kube-dss}"
venv="$cache_root/venv-conformance"
python="${PYTHON:-python3}"

command -v "$python" >/dev/null || { echo "conformance: $python is required" >&2; exit 1; }

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$suite/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "conformance: preparing $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache_root"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$suite/requirements.txt"
  echo "$want" > "$stamp"
fi

if [ -z "${KUBE_DSS_BIN:-}" ]; then
  # cargo only rebuilds when sources changed.
  (cd "$root" && cargo build --quiet --bin kube-dss)
  export KUBE_DSS_BIN="$root/target/debug/kube-dss"
fi

cd "$suite"
# -p no:cacheprovider keeps pytest from writing .pytest_cache into the repository.
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
