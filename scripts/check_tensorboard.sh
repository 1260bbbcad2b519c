#!/usr/bin/env bash
# Checks that TensorBoard itself reads Rivulet's event files: writes logs
# with the `tensorboard_logs` example and `rivulet demo --logdir`, then reads
# them with TensorBoard's EventAccumulator (check_tensorboard.py) in a
# throwaway virtualenv (the `tensorboard` package from PyPI; no TensorFlow).
#
# Both programs are the test-profile builds that `cargo test --workspace`
# makes (the example, and the CLI binary its integration tests run): the
# `--no-run` below is a no-op after the tests, and builds them otherwise.
# (`cargo run -p rivulet-cli` would resolve features without the
# dev-dependencies and rebuild the library.) RIVULET_CARGO overrides the
# cargo command (e.g. "flock /tmp/cargo.lock cargo"); RIVULET_FEATURES
# names the features the tests were built with (CI: rivulet/mpi).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${RIVULET_CARGO:-cargo}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if ! python3 -m venv "$TMP/venv" >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$TMP/venv"
    python3 -m venv "$TMP/venv"
fi
"$TMP/venv/bin/pip" install --quiet --disable-pip-version-check tensorboard
"$TMP/venv/bin/python" -c 'import tensorboard; print("tensorboard", tensorboard.__version__)'

DEMO_EPOCHS=2
# The features the tests were built with (scripts/test.sh sets them).
$CARGO test --quiet --workspace ${RIVULET_FEATURES:+--features "$RIVULET_FEATURES"} --no-run
BIN="${CARGO_TARGET_DIR:-target}/debug"
"$BIN/examples/tensorboard_logs" "$TMP/logs" "$TMP/expected.json"
"$BIN/rivulet" demo --quiet --epochs "$DEMO_EPOCHS" --logdir "$TMP/demo"
"$TMP/venv/bin/python" scripts/check_tensorboard.py "$TMP/logs" "$TMP/expected.json" "$TMP/demo" "$DEMO_EPOCHS"
