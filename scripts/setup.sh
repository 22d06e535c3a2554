#!/usr/bin/env bash
# Install everything dsopack needs on Debian 12 / Ubuntu, then build and run the
# bundled digits example. Safe to run again: it skips what is already there.
#
#   bash scripts/setup.sh            # install + demo
#   bash scripts/setup.sh --no-demo  # install only (CI)
#   bash scripts/setup.sh --cross    # also the aarch64 cross toolchain, qemu-user and the
#                                    # arm64 dev libraries (docs/edge.md; tests/test_edge.py)
# Options combine: bash scripts/setup.sh --no-demo --cross
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential pkg-config python3-dev python3-venv
              libzstd-dev libyaml-dev libxxhash-dev libsodium-dev libopenblas-dev
              libxnnpack-dev libpthreadpool-dev   # the xnnpack backend (packager/backends/xnnpack.py)
              clang-14 libclang-rt-14-dev)   # clang: libFuzzer and sanitizers (tests/test_fuzz.py)
VENV=${DSOPACK_VENV:-.venv}
CROSS_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
                libzstd-dev:arm64 libyaml-dev:arm64 libxxhash-dev:arm64 libsodium-dev:arm64
                libopenblas-dev:arm64)
# Not libxnnpack-dev:arm64: Debian 12's libxnnpack0 and libpthreadpool0 are not Multi-Arch: same, so
# installing the :arm64 ones REMOVES the amd64 ones (docs/edge.md: cross-building the xnnpack backend).
demo=1
cross=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --cross) cross=1 ;;
    *) echo "setup: unknown option '$arg' (known: --no-demo, --cross)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
wanted=("${APT_PACKAGES[@]}")
if [ $cross -eq 1 ]; then
  wanted+=("${CROSS_PACKAGES[@]}")
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    step "adding the arm64 architecture (Debian multiarch) for the :arm64 dev libraries"
    $sudo dpkg --add-architecture arm64
  fi
fi
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
step "installing dsopack (compiles the C runtime into the Python loader)"
log=$(mktemp)
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=64" wheel && "$VENV/bin/python" -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
  cat "$log"; echo "setup: pip install failed (output above)" >&2; exit 1
fi
rm -f "$log"

step "building the C runtime: runtime_c/build/{libdpk.so,libdpk.a,dpk-run}"
make -s -C runtime_c
if [ $cross -eq 1 ]; then
  step "cross-building the C runtime for aarch64: runtime_c/build/aarch64/{libdpk.so,libdpk.a,dpk-run}"
  make -s -C runtime_c CC=aarch64-linux-gnu-gcc
fi

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
