#!/usr/bin/env bash
# The tests: `cargo test --workspace`, with the `mpi` feature (multi-worker
# training, tested under `mpirun -np 2` and `-np 4`) where Open MPI and
# libclang are installed or can be (Debian packages: libopenmpi-dev,
# openmpi-bin, libclang-dev). Without them the MPI tests are skipped, saying
# so, and everything else runs; RIVULET_REQUIRE_MPI=1 (CI) makes that an
# error instead. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${RIVULET_CARGO:-cargo}
# The suite pins the CPU's kernels bit for bit, so it runs with the CPU as
# the default device even where a GPU is found (the GPU tests place their
# ops on it by name); set RIVULET_DEFAULT_DEVICE to run it elsewhere.
export RIVULET_DEFAULT_DEVICE=${RIVULET_DEFAULT_DEVICE:-/cpu:0}

have_mpi() {
    command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 \
        && { ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -q libclang; }
}

if ! have_mpi && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    if [ -z "$SUDO" ] || sudo -n true 2>/dev/null; then
        echo "installing Open MPI and libclang for the multi-worker tests" >&2
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev >/dev/null || true
    fi
fi

# NVRTC, which compiles the CUDA kernels, needs no GPU: with it the tests
# compile every kernel template and generated kernel for sm_90. Where the
# system has none, NVIDIA's pip wheel is fetched once into target/nvrtc.
# Without it those tests skip, saying so; RIVULET_REQUIRE_NVRTC=1 (CI) makes
# that an error. RIVULET_NVRTC=off leaves it out.
NVRTC_DIR="$PWD/target/nvrtc"
if [ "${RIVULET_NVRTC:-}" != "off" ] && ! ldconfig -p 2>/dev/null | grep -q libnvrtc; then
    if [ ! -e "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ] && command -v python3 >/dev/null 2>&1; then
        echo "fetching NVRTC (pip wheel nvidia-cuda-nvrtc) to compile the CUDA kernels in the tests" >&2
        rm -rf "$NVRTC_DIR.tmp" && mkdir -p "$NVRTC_DIR.tmp"
        if python3 -m pip download --quiet --no-deps -d "$NVRTC_DIR.tmp" "nvidia-cuda-nvrtc==13.0.*" \
            && python3 -m zipfile -e "$NVRTC_DIR.tmp"/*.whl "$NVRTC_DIR.tmp/x"; then
            rm -rf "$NVRTC_DIR" && mv "$NVRTC_DIR.tmp/x" "$NVRTC_DIR"
        fi
        rm -rf "$NVRTC_DIR.tmp"
    fi
    if [ -e "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ]; then
        export LD_LIBRARY_PATH="$NVRTC_DIR/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        echo "NVRTC not found: the CUDA kernel compile tests will say they are skipped" >&2
    fi
fi

if have_mpi; then
    export RIVULET_FEATURES="rivulet/mpi"
    exec $CARGO test --workspace --features "$RIVULET_FEATURES" "$@"
fi
if [ "${RIVULET_REQUIRE_MPI:-0}" = "1" ]; then
    echo "RIVULET_REQUIRE_MPI=1, but Open MPI or libclang is missing and could not be installed" >&2
    exit 1
fi
echo "Open MPI not found: testing without the mpi feature (the MPI tests will say they are skipped)" >&2
exec $CARGO test --workspace "$@"
