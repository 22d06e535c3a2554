#!/usr/bin/env bash
# Install everything dsopack needs on Debian 12 / Ubuntu, then build and run the
# bundled digits example. Safe to run again: it skips what is already there.
#
#   bash scripts/setup.sh            # install + demo
#   bash scripts/setup.sh --no-demo  # install only (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential pkg-config python3-dev python3-venv
              libzstd-dev libyaml-dev libxxhash-dev libopenblas-dev)
VENV=${DSOPACK_VENV:-.venv}
demo=1
[ "${1:-}" = "--no-demo" ] && demo=0

step() { printf '\n==> %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing system packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
step "installing dsopack (compiles the C runtime into the Python loader)"
log=$(mktemp)
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed (output above)" >&2; exit 1
fi
rm -f "$log"

step "building the C runtime: runtime_c/build/{libdpk.so,libdpk.a,dpk-run}"
make -s -C runtime_c

[ $demo -eq 1 ] || exit 0
mkdir -p out
step "dsopack build manifests/digits_mlp.yaml -o out/digits.so"
"$VENV/bin/dsopack" build manifests/digits_mlp.yaml -o out/digits.so
step "dsopack run out/digits.so x=manifests/digits_sample.npy   (Python loader)"
"$VENV/bin/dsopack" run out/digits.so x=manifests/digits_sample.npy --repeat 1000
step "dpk-run out/digits.so x=manifests/digits_sample.npy   (C only, no Python)"
runtime_c/build/dpk-run out/digits.so x=manifests/digits_sample.npy -o out/probs.npy
echo
echo "Done. Activate the environment with: source $VENV/bin/activate"
