"""B1 (matmul) side by side with NumPy, in alternating rounds, with ratios pair by pair.

    python3 bench/b1_pairs.py [--rounds R] [--old PATH] [--new PATH] [--levels L,...]
                              [--python PEERS_PYTHON]

Each round runs the peers' `numpy_bench.py B1`, then `rivulet bench B1 --json` for the new
binary (default target/release/rivulet) and, with --old, for a second binary, once per SIMD
level in --levels (`native`, or a `RIVULET_SIMD` value such as `avx2`, so that both x86 paths
are measured in one run); it prints each pair's NumPy-median / Rivulet-median (>= 0.9 is #11's
target) and the median over rounds. The peers' virtualenv comes from ../shared/peers/setup.sh
(PEERS_VENV).
"""
import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def medians(cmd, simd=None):
    env = dict(os.environ)
    env.pop("RIVULET_SIMD", None)
    if simd not in (None, "native"):
        env["RIVULET_SIMD"] = simd
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    rows = {}
    for line in out.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("id") == "B1":
            rows[(row["param"], row.get("mode"))] = row["median_ms"]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--new", default="target/release/rivulet")
    ap.add_argument("--old")
    ap.add_argument("--levels", default="native", help="comma-separated: native, avx512, avx2, scalar")
    venv = os.environ.get("PEERS_VENV", os.path.expanduser("~/.cache/rivulet-peers/venv"))
    ap.add_argument("--python", default=os.path.join(venv, "bin", "python"))
    args = ap.parse_args()
    paths = {"new": args.new, **({"old": args.old} if args.old else {})}
    levels = args.levels.split(",")
    binaries = {
        (name if len(levels) == 1 else f"{name}@{level}"): (path, level)
        for name, path in paths.items()
        for level in levels
    }
    blas = subprocess.run(
        [args.python, "-c", "import numpy, threadpoolctl; print([(i['internal_api'], i.get('architecture')) "
         "for i in threadpoolctl.threadpool_info()])"],
        capture_output=True, text=True).stdout.strip()
    print(f"numpy's BLAS (library, kernels): {blas}")
    ratios = {}
    for r in range(args.rounds):
        numpy = medians([args.python, "../shared/peers/numpy_bench.py", "B1"])
        ours = {name: medians([path, "bench", "B1", "--json"], level) for name, (path, level) in binaries.items()}
        for (param, mode), _ in sorted(ours[next(iter(binaries))].items()):
            base = numpy.get((param, "default"))
            if base is None:
                continue
            for name in binaries:
                ms = ours[name][(param, mode)]
                ratios.setdefault((param, mode, name), []).append(base / ms)
                print(f"round {r} {param} {mode} {name}: numpy {base:.3f} ms, rivulet {ms:.3f} ms, ratio {base / ms:.2f}")
    for (param, mode, name), v in sorted(ratios.items()):
        print(f"{param} {mode} {name}: median numpy/rivulet {statistics.median(v):.2f} over {[round(x, 2) for x in v]}")


if __name__ == "__main__":
    main()
