#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU, from the repository root,
# after scripts/gpu/prepare.sh built .gpu/ on a build machine. Sections, in
# the order given (default: tests bench peers):
#   tests  the device matrix, the TensorFlow reference suite and the
#          convolution tests on /gpu:0 (the suite runs every device it finds),
#          `rivulet devices`, and the demo with automatic placement vs the CPU
#   bench  `rivulet bench --json --device gpu` B1-B8, then B5-B7 again
#          without CUDA graph replay (RIVULET_CUDA_GRAPHS=0)
#   peers  PyTorch (bench/peers_gpu.py) and JAX (the peers' jax_bench.py) on
#          the GPU, then bench/gpu_report.py pairs the rows and checks the targets
#   auto   a broad part of the suite with the GPU as the default device
#   lt     cuBLASLt's ReLU epilogue (RIVULET_CUBLASLT=relu): the device
#          matrix (does its 'dense layer with NaN' case keep NaN?) and B5,
#          against the default (bias epilogue only) and no cuBLASLt at all
# Output: $OUT (default /tmp/rivulet-gpu): log.txt, *.jsonl, report.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/rivulet-gpu}
mkdir -p "$OUT"
G=.gpu
[ -f $G/rivulet.gz ] && [ -f $G/suite.gz ] || { echo "run scripts/gpu/prepare.sh first (and carry .gpu)" >&2; exit 1; }
for f in rivulet suite; do
    [ -x $G/$f ] || { gunzip -kf $G/$f.gz && chmod +x $G/$f; }
done
built=$(cat $G/built_at)
if [ "$built" != "$PWD" ] && [ ! -e "$built" ]; then
    mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
say() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }
# run LIMIT_S CMD...: the command's output into the log; its status said.
run() {
    local limit=$1; shift
    say "$*"
    timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1
    local rc=$?
    say "exit $rc"
    return $rc
}
sections=("$@"); [ ${#sections[@]} -eq 0 ] && sections=(tests bench peers)
for s in "${sections[@]}"; do
    case $s in
    tests)
        nvidia-smi -L >>"$OUT/log.txt" 2>&1
        run 30 $G/rivulet devices
        (cd crates/rivulet && run 240 ../../$G/suite devices:: tf_reference:: conv:: --test-threads=8)
        grep -E "^test .*(FAILED|ok|ignored)$|test result|skipped" "$OUT/log.txt" | grep -v " ok$" | tail -40
        run 120 $G/rivulet demo --quiet
        run 120 $G/rivulet demo --quiet --device cpu
        run 120 $G/rivulet demo --quiet --model cnn --epochs 30
        grep -E "accuracy|^error" "$OUT/log.txt" | tail -6
        ;;
    bench)
        say "rivulet bench --json --device gpu"
        timeout 300 $G/rivulet bench --json --device gpu B1 B2 B3 B4 B5 B6 B7 B8 >"$OUT/rivulet.jsonl" 2>>"$OUT/log.txt"
        say "exit $? ($(grep -c '^{' "$OUT/rivulet.jsonl") rows)"
        # The graph-mode rows again without CUDA graph replay, for the ratio.
        say "rivulet bench B5 B6 B7 with RIVULET_CUDA_GRAPHS=0"
        RIVULET_CUDA_GRAPHS=0 timeout 120 $G/rivulet bench --json --device gpu B5 B6 B7 >"$OUT/stepwise.json" 2>>"$OUT/log.txt"
        say "exit $?"
        grep -h '"graph"' "$OUT/rivulet.jsonl" "$OUT/stepwise.json" | tee -a "$OUT/log.txt"
        ;;
    peers)
        say "PyTorch on the GPU"
        timeout 240 python3 $G/peers/peers_gpu.py >"$OUT/torch.jsonl" 2>>"$OUT/log.txt"
        say "exit $?"
        say "JAX on the GPU"
        timeout 240 python3 $G/peers/jax_bench.py B1 B2 B3 B4 B5 B6 B7 B8 >"$OUT/jax.jsonl" 2>>"$OUT/log.txt"
        say "exit $?"
        python3 bench/gpu_report.py "$OUT"/*.jsonl | tee "$OUT/report.md"
        ;;
    auto)
        # User code unchanged: the GPU is the default device here.
        (cd crates/rivulet && run 300 ../../$G/suite training:: examples:: control_flow:: graph_session:: sim:: --test-threads=8)
        grep -E "^test .*FAILED$|test result" "$OUT/log.txt" | tail -30
        ;;
    lt)
        (cd crates/rivulet && RIVULET_CUBLASLT=relu run 240 ../../$G/suite every_op_agrees_on_the_gpu_in_both_modes)
        grep -E "dense layer|test result" "$OUT/log.txt" | tail -8
        for mode in 1 relu 0; do
            say "rivulet bench B5 with RIVULET_CUBLASLT=$mode"
            RIVULET_CUBLASLT=$mode timeout 120 $G/rivulet bench --json --device gpu B5 >"$OUT/lt-$mode.json" 2>>"$OUT/log.txt"
            say "exit $?"
            grep -h '"graph"' "$OUT/lt-$mode.json" | tee -a "$OUT/log.txt"
        done
        ;;
    *) echo "unknown section $s (tests, bench, peers, auto, lt)" >&2 ;;
    esac
done
