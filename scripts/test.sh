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
