"""Pair `rivulet bench --json --device gpu` rows with the GPU peers' rows
(bench/peers_gpu.py for PyTorch, the peers' jax_bench.py for JAX) by `id`
and `param`, and check issue 14's targets.

usage: python3 bench/gpu_report.py FILE.jsonl [FILE.jsonl ...]  (markdown on stdout)
"""
import json
import sys

COLUMNS = [("rivulet", "eager"), ("rivulet", "graph"), ("torch", "eager"), ("torch", "graph"),
           ("torch", "compile"), ("jax", "jit"), ("jax", "eager")]


def load(paths):
    rows = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("id") in (None, "meta") or r.get("median_ms") is None:
                    continue
                rows.setdefault((r["id"], r["param"]), {})[(r["peer"], r["mode"])] = r
    return rows


def cell(r):
    if r is None:
        return "—"
    fig, unit = r.get("figure"), r.get("unit") or ""
    if unit in ("GFLOP/s", "GB/s"):
        return f"{r['median_ms']:.4g} ms ({fig:.0f} {unit})"
    if r["id"] == "B8":
        return f"{fig:.3g} µs"
    return f"{r['median_ms']:.4g} ms"


def main():
    rows = load(sys.argv[1:])
    order = sorted(rows, key=lambda k: (int(k[0][1:]), k[1]))
    print("| id | param | " + " | ".join(f"{p} {m}" for p, m in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for key in order:
        r = rows[key]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |")

    def ms(id_, param, peer, mode):
        r = rows.get((id_, param), {}).get((peer, mode))
        return None if r is None else r["median_ms"]

    print("\nIssue 14's targets:")
    checks = []
    for n in (2048, 4096):
        riv, ref = ms("B1", f"n={n}", "rivulet", "eager"), ms("B1", f"n={n}", "torch", "eager")
        if riv and ref:
            checks.append((f"B1 n={n}: {ref / riv:.3f}x cuBLAS sgemm (PyTorch)", ref / riv >= 0.95))
    b2 = ms("B2", "4096x4096", "rivulet", "graph")
    if b2:
        gbs = 8.0 * 4096 * 4096 / (b2 * 1e-3) / 1e9
        checks.append((f"B2 graph: {gbs:.0f} GB/s effective (target 1800)", gbs >= 1800))
    p5 = "784-512-512-10, batch 128, Adam"
    b5, torch5, jax5 = (ms("B5", p5, "rivulet", "graph"), ms("B5", p5, "torch", "graph"), ms("B5", p5, "jax", "jit"))
    if b5:
        checks.append((f"B5 graph: {b5:.3f} ms/step (target 0.24; PyTorch CUDA graph {torch5}, JAX jit {jax5})",
                       b5 <= 0.24))
    p7 = "1024x1024, 200 steps/call"
    b7, jax7 = ms("B7", p7, "rivulet", "graph"), ms("B7", p7, "jax", "jit")
    if b7 and jax7:
        checks.append((f"B7 graph: {b7:.4f} ms/step vs JAX jit {jax7:.4f}", b7 <= jax7))
    b8, torch8 = ms("B8", "eager: a = a + 1", "rivulet", "eager"), ms("B8", "eager: a = a + 1", "torch", "eager")
    if b8:
        checks.append((f"B8 eager: {b8 * 1e3:.2f} µs/op (target 5; PyTorch {torch8 and torch8 * 1e3})", b8 * 1e3 <= 5))
    for text, ok in checks:
        print(f"- {'met' if ok else 'NOT met'}: {text}")


if __name__ == "__main__":
    main()
