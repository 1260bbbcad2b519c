#!/usr/bin/env bash
# Build, on this machine, what the GPU check runs on a GPU machine (which has
# no Rust toolchain): the release `rivulet` binary and the integration test
# suite, stripped and compressed into .gpu/ (ignored by git), with the peers'
# benchmark scripts beside them. Then, on the GPU machine, from the
# repository root:  bash scripts/gpu/run.sh [tests] [bench] [peers] [auto]
#
# The suite is the test-profile build `scripts/test.sh` makes (with
# RIVULET_FEATURES, e.g. rivulet/mpi: Open MPI is opened at run time, so the
# binary runs where it is missing). RIVULET_CARGO overrides the cargo command;
# PEERS_DIR is the peers' folder (default ../shared/peers).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${RIVULET_CARGO:-cargo}
FEATURES=()
[ -n "${RIVULET_FEATURES:-}" ] && FEATURES=(--features "$RIVULET_FEATURES")
PEERS_DIR=${PEERS_DIR:-../shared/peers}
mkdir -p .gpu/peers

$CARGO build --release -p rivulet-cli "${FEATURES[@]}"
suite=$($CARGO test -p rivulet "${FEATURES[@]}" --test suite --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "suite":
        print(m["executable"])')
[ -n "$suite" ] || { echo "no suite binary" >&2; exit 1; }

strip -o .gpu/rivulet target/release/rivulet
strip -o .gpu/suite "$suite"
gzip -f -1 .gpu/rivulet .gpu/suite
# The tests find their data under the crate path they were built at.
pwd > .gpu/built_at
cp bench/peers_gpu.py bench/gpu_report.py .gpu/peers/
cp "$PEERS_DIR/common.py" "$PEERS_DIR/jax_bench.py" .gpu/peers/
du -sh .gpu
echo "ready: carry .gpu, then run: bash scripts/gpu/run.sh tests bench peers"
