#!/usr/bin/env bash
# Issue 19's serving benchmark, in one run: the demo's digits model behind
# `rivulet serve` (batching off, then on) and behind a minimal Python HTTP
# server calling TensorFlow (bench/peers/serve_tf.py), each measured by
# `rivulet loadtest` at 1, 8 and 64 concurrent clients.
#
#   PEERS_VENV=/path/to/venv bash bench/serve.sh [SECONDS_PER_POINT]
#
# Needs a release build (`cargo build --release -p rivulet-cli`) and the
# peers' virtualenv (../shared/peers/setup.sh). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_POINT=${1:-10}
RIVULET=${RIVULET:-target/release/rivulet}
PY=${PEERS_VENV:-$HOME/.cache/rivulet-peers/venv}/bin/python
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

"$RIVULET" demo --quiet --export "$TMP/digits" >/dev/null
BODY="$TMP/digits/1/assets/example_request.json"
# One instance per request, as a client asking about one image.
"$PY" -c "import json,sys; r=json.load(open('$BODY')); json.dump({'instances': r['instances'][:1]}, open('$TMP/one.json','w'))"

wait_for() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no server at $1" >&2; exit 1; }

measure() { # name url
    for c in 1 8 64; do
        "$RIVULET" loadtest "$2" --body "@$TMP/one.json" --concurrency "$c" --requests 1000000 --duration 1 >/dev/null
        printf '%s\t' "$1"
        "$RIVULET" loadtest "$2" --body "@$TMP/one.json" --concurrency "$c" --requests 100000000 --duration "$SECONDS_PER_POINT" --json
    done
}

for batching in off on; do
    flags=(); [ "$batching" = on ] && flags=(--enable_batching --max_batch_size 64 --batch_timeout_micros 500)
    "$RIVULET" serve --host 127.0.0.1 --port 8501 --model_name digits --model_base_path "$TMP/digits" "${flags[@]}" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_for http://127.0.0.1:8501/v1/models/digits
    measure "rivulet-batching-$batching" http://127.0.0.1:8501/v1/models/digits:predict
    kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

"$PY" bench/peers/serve_tf.py "$TMP/digits/1" --port 8502 >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
    curl -s -o /dev/null -X POST -d @"$TMP/one.json" http://127.0.0.1:8502/v1/models/digits:predict && break; sleep 0.2
done
measure "python-tensorflow" http://127.0.0.1:8502/v1/models/digits:predict
