#!/usr/bin/env bash
# Install everything dsopack needs on Debian 12 / Ubuntu, then build and run the
# bundled digits example. Safe to run again: it skips what is already there.
#
#   bash scripts/setup.sh            # install + demo
#   bash scripts/setup.sh --no-demo  # install only (CI)
#   bash scripts/setup.sh --cross    # also the aarch64 cross toolchain, qemu-user, the arm64 dev
#                                    # libraries and XNNPACK (docs/edge.md; tests/test_edge.py)
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
                libopenblas-dev:arm64
                libcpuinfo0:arm64 libgcc-s1:arm64)   # what the arm64 libXNNPACK.so.0 needs (Multi-Arch: same)
# The arm64 XNNPACK, unpacked by hand into ARM64_XNNPACK_DIR, never installed by dpkg: Debian 12's
# libxnnpack0 and libpthreadpool0 are not Multi-Arch: same, so installing the :arm64 ones REMOVES the
# amd64 ones. Their headers are the amd64 -dev packages' (APT_PACKAGES), the same version.
ARM64_XNNPACK=(libxnnpack0 libxnnpack-dev libpthreadpool0 libpthreadpool-dev)
# The aarch64 cross ld searches this directory (its SEARCH_DIR); the aarch64 ld.so under qemu does not (the
# x86-64 ldconfig leaves arm64 libraries out of /etc/ld.so.cache): run with
# qemu-aarch64 -L / -E LD_LIBRARY_PATH=/usr/local/lib/aarch64-linux-gnu (docs/edge.md).
ARM64_XNNPACK_DIR=/usr/local/lib/aarch64-linux-gnu
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

# The ARM64_XNNPACK packages for arm64, each the version of the installed amd64 one (so the headers in
# /usr/include are theirs), unpacked with dpkg-deb -x (dpkg does not know them) and their libraries copied to
# ARM64_XNNPACK_DIR. A stamp there names the versions: a second run with the same versions does nothing.
arm64_xnnpack() {
  local dir=$ARM64_XNNPACK_DIR pins=() pkg version deb header
  local stamp=$dir/.dsopack-arm64-xnnpack
  for pkg in "${ARM64_XNNPACK[@]}"; do
    version=$(dpkg-query -W -f='${Version}' "$pkg") \
      || { echo "setup: $pkg is not installed (APT_PACKAGES installs the amd64 one)" >&2; exit 1; }
    pins+=("$pkg:arm64=$version")
  done
  if [ "$(cat "$stamp" 2>/dev/null)" = "${pins[*]}" ] && [ -e "$dir/libXNNPACK.so" ] \
     && [ -e "$dir/libpthreadpool.so" ]; then
    return 0
  fi
  step "unpacking the arm64 XNNPACK into $dir without dpkg (not Multi-Arch: same): ${pins[*]}"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! (cd "$work" && apt-get download -q "${pins[@]}") >"$work/download.log" 2>&1; then
    $sudo apt-get update -qq  # the arm64 package lists may be older than the installed amd64 packages
    if ! (cd "$work" && apt-get download -q "${pins[@]}") >"$work/download.log" 2>&1; then
      cat "$work/download.log"; echo "setup: apt-get download ${pins[*]} failed (output above)" >&2; exit 1
    fi
  fi
  for deb in "$work"/*.deb; do
    if [ "$(dpkg-deb -f "$deb" Architecture)" != arm64 ]; then
      echo "setup: $deb is not an arm64 package" >&2; exit 1
    fi
    dpkg-deb -x "$deb" "$work/root"
  done
  for header in xnnpack.h pthreadpool.h; do
    if ! cmp -s "$work/root/usr/include/$header" "/usr/include/$header"; then
      echo "setup: the arm64 packages' $header differs from /usr/include/$header (the amd64 one's)" >&2; exit 1
    fi
  done
  $sudo mkdir -p "$dir"
  $sudo cp -a "$work/root/usr/lib/aarch64-linux-gnu/." "$dir/"
  echo "${pins[*]}" | $sudo tee "$stamp" >/dev/null
  rm -rf "$work"
  trap - EXIT
}
[ $cross -eq 0 ] || arm64_xnnpack

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  python3 -m venv "$VENV"
fi
# [serve]: PyTriton (bundles tritonserver, 55 MB) and tritonclient, for `dsopack serve` and tests/test_serve.py
# [ray]: Ray Serve (~340 MB), for loader/ray_serve.py, tests/test_ray_serve.py and benchmarks/ray_memory.py
step "installing dsopack with its test, serve and ray extras (compiles the C runtime into the Python loader)"
log=$(mktemp)
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=64" wheel && "$VENV/bin/python" -m pip install -q -e '.[test,serve,ray]'; } >"$log" 2>&1; then
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
