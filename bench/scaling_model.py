#!/usr/bin/env python3
"""The alpha-beta cost model of docs/SCALING.md: projected B5 and B6 step
times and scaling efficiency at 8, 64 and 512 workers on 10/100/400 Gb/s
networks, with ring and tree all-reduce.

Inputs (measured on this machine, see SCALING.md): the single-process step
times of B5 and B6 (`rivulet bench B5 B6`), their gradient sizes, and the
fraction of the step that the backward pass after the first gradient bucket
takes (what overlap can hide). Prints the markdown tables of SCALING.md.

    python3 bench/scaling_model.py --b5-ms 6.0 --b6-ms 30.0

Each cell: step time without / with overlap (the part of the all-reduce
longer than `--hidden` of the step stays exposed), and the efficiency
(one worker's step time over the step time) of each. B5's second column
assumes overlap hides communication behind 30% of the step (`--hidden-b5`),
an upper bound; B6's gradients fit in one bucket, so nothing overlaps.
"""
import argparse
import math

# Per-message latency (alpha, seconds) and inverse bandwidth (beta, s/byte).
NETWORKS = {
    "10 Gb/s Ethernet (TCP)": (30e-6, 8 / 10e9),
    "100 Gb/s InfiniBand/RoCE": (2e-6, 8 / 100e9),
    "400 Gb/s InfiniBand NDR": (1.5e-6, 8 / 400e9),
}
# Floats per model: B5 784-512-512-10 MLP, B6 the two-convolution CNN.
# Gradient buckets per step with the default bucket sizes (first 1 MB, then 25 MB).
BUCKETS = {"B5": 2, "B6": 1}
PARAMS = {
    "B5": 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10,
    "B6": 3 * 3 * 1 * 32 + 32 + 3 * 3 * 32 * 64 + 64 + 7 * 7 * 64 * 10 + 10,
}


def ring(n_bytes, p, alpha, beta):
    """Ring all-reduce: reduce-scatter then all-gather, 2(p-1) steps of n/p bytes."""
    if p == 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * n_bytes * beta


def tree(n_bytes, p, alpha, beta):
    """Binomial-tree reduce to a root, then broadcast: 2 log2(p) steps of n bytes."""
    if p == 1:
        return 0.0
    return 2 * math.ceil(math.log2(p)) * (alpha + n_bytes * beta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--b5-ms", type=float, required=True, help="single-process B5 step (batch 128), ms")
    ap.add_argument("--b6-ms", type=float, required=True, help="single-process B6 step (batch 64), ms")
    ap.add_argument("--hidden-b5", type=float, default=0.3,
                    help="B5: share of a step after its first bucket is ready (overlap can hide communication there)")
    ap.add_argument("--call-us", type=float, default=9.0,
                    help="Rivulet's own cost per collective call (op dispatch, hand-off to the MPI thread), us")
    a = ap.parse_args()
    steps = {"B5": a.b5_ms * 1e-3, "B6": a.b6_ms * 1e-3}
    workers = [8, 64, 512]
    for model in ("B5", "B6"):
        n = PARAMS[model] * 4
        t = steps[model]
        print(f"\n**{model}** ({PARAMS[model]:,} parameters, {n / 1e6:.2f} MB of f32 gradients; "
              f"one worker {t * 1e3:.2f} ms per step; each worker keeps the benchmark's batch)\n")
        print("| network | all-reduce | " + " | ".join(f"{p} workers" for p in workers) + " |")
        print("|---|---|" + "---|" * len(workers))
        for net, (alpha, beta) in NETWORKS.items():
            for name, f in (("ring", ring), ("tree", tree)):
                cells = []
                for p in workers:
                    # Each bucket is one all-reduce of its share of the bytes.
                    k = BUCKETS[model]
                    comm = k * (f(n / k, p, alpha, beta) + a.call_us * 1e-6)
                    plain = t + comm
                    # B6's gradients fit one bucket, ready only at the end of the backward pass.
                    hidden = a.hidden_b5 if model == "B5" else 0.0
                    overlapped = t + max(0.0, comm - hidden * t)
                    cells.append(f"{plain * 1e3:.2f} / {overlapped * 1e3:.2f} ms ({t / plain:.0%} / {t / overlapped:.0%})")
                print(f"| {net} | {name} | " + " | ".join(cells) + " |")
        # Where it stops scaling: the first power of two at which efficiency without overlap falls below 50%.
        for net, (alpha, beta) in NETWORKS.items():
            for name, f in (("ring", ring), ("tree", tree)):
                k = BUCKETS[model]
                half = next((p for p in (2 ** e for e in range(1, 21))
                             if t / (t + k * (f(n / k, p, alpha, beta) + a.call_us * 1e-6)) < 0.5), None)
                print(f"- {net}, {name}: " + (f"below 50% efficiency (no overlap) from {half:,} workers"
                                                  if half else "above 50% efficiency up to 2^20 workers"))


if __name__ == "__main__":
    main()
