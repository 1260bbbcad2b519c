"""PyTorch on an NVIDIA GPU: the GPU peer of `rivulet bench --device gpu`.

One JSON line per measurement on stdout, with the keys of ../shared/peers
(`peer`, `mode`, `id`, `param`, `median_ms`, ...) and the `id`/`param`
strings `rivulet bench` prints, so the rows pair up. Modes: `eager`,
`graph` (the whole step captured once as a CUDA graph and replayed, as
PyTorch's whole-network capture recipe does) and `compile` (torch.compile).

Timing follows `rivulet bench` on a GPU: warm-up, then samples of `inner`
calls each followed by `torch.cuda.synchronize()`; B5/B6 time one training
step per sample, its loss read on the host. The data come from the peers'
`common.py` (copied beside this script for the device machine).

argv: workload ids (default: B1 B2 B3 B4 B5 B6 B7 B8).
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common as C  # noqa: E402

PEER = "torch"
DEV = torch.device("cuda")


def sync():
    torch.cuda.synchronize()


def gpu_bench(fn, budget_s=2.0, min_reps=5, max_reps=30, per=1):
    """`rivulet bench`'s auto_bench: the device is waited for after the
    warm-up, the calibration call and each timed inner loop."""
    t0 = time.perf_counter()
    fn()
    sync()
    first_ms = (time.perf_counter() - t0) * 1e3
    k, t0 = 1, time.perf_counter()
    while k < 3 or time.perf_counter() - t0 < 0.3:
        fn()
        k += 1
    sync()
    t = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t, 1e-7)
    inner = max(1, int(math.ceil(5e-3 / one)))
    reps = int(max(min_reps, min(max_reps, budget_s / (one * inner))))
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter_ns() - t) / 1e6 / inner / per)
    med, lo, hi = C._stats(samples)
    return dict(median_ms=med, min_ms=lo, max_ms=hi, reps=reps, inner=inner, first_call_ms=first_ms / per)


def cuda(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEV)


def total(t):
    return float(t.double().sum())


def b1():
    for n in (128, 512, 1024, 2048, 4096):
        a, b = (cuda(m) for m in C.b1_mats(n))
        for tf32, param in ((False, f"n={n}"), (True, f"n={n} tf32")):
            if tf32 and n != 4096:
                continue

            def body(a=a, b=b, tf32=tf32, param=param, n=n):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                try:
                    t = gpu_bench(lambda: a @ b, budget_s=3.0 if n >= 1024 else 2.0)
                    C.record(PEER, "eager", "B1", param, t, check=total(a @ b),
                             impl="cuBLAS sgemm" if not tf32 else "cuBLAS, TensorFloat-32")
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = False
            C.guarded(PEER, "eager", "B1", param, body)


def b2_fn(x):
    return torch.tanh(x * 1.5 + 0.5) * torch.sigmoid(x) - x * x


def b2_b4(want):
    x = cuda(C.b2_x())
    if want("B2"):
        C.guarded(PEER, "eager", "B2", "4096x4096", lambda: C.record(
            PEER, "eager", "B2", "4096x4096", gpu_bench(lambda: b2_fn(x), budget_s=3.0), check=total(b2_fn(x))))
        compiled = torch.compile(b2_fn)
        C.guarded(PEER, "compile", "B2", "4096x4096", lambda: C.record(
            PEER, "compile", "B2", "4096x4096", gpu_bench(lambda: compiled(x), budget_s=3.0),
            check=total(compiled(x))))
    if want("B3"):
        C.guarded(PEER, "eager", "B3", "sum all 4096x4096", lambda: C.record(
            PEER, "eager", "B3", "sum all 4096x4096", gpu_bench(lambda: x.sum()), check=total(x.sum())))
        C.guarded(PEER, "eager", "B3", "mean axis=1 4096x4096", lambda: C.record(
            PEER, "eager", "B3", "mean axis=1 4096x4096", gpu_bench(lambda: x.mean(1)), check=total(x.mean(1))))
    if want("B4"):
        x4 = cuda(C.b4_x())
        C.guarded(PEER, "eager", "B4", "4096x1024 axis=-1", lambda: C.record(
            PEER, "eager", "B4", "4096x1024 axis=-1", gpu_bench(lambda: torch.softmax(x4, -1)),
            check=total(torch.softmax(x4, -1)[:, 0])))


def mlp(p, x):
    h = torch.relu(x @ p[0] + p[1])
    h = torch.relu(h @ p[2] + p[3])
    return h @ p[4] + p[5]


def cnn(p, x):
    """x NHWC; weights OIHW; the dense layer reads the NHWC flattening, as the
    other peers' models do."""
    h = x.permute(0, 3, 1, 2)
    h = F.max_pool2d(torch.relu(F.conv2d(h, p[0], p[1], padding=1)), 2)
    h = F.max_pool2d(torch.relu(F.conv2d(h, p[2], p[3], padding=1)), 2)
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
    return h @ p[4] + p[5]


def cnn_init():
    w1, b1, w2, b2, w3, b3 = C.cnn_params()
    return [np.transpose(w1, (3, 2, 0, 1)), b1, np.transpose(w2, (3, 2, 0, 1)), b2, w3, b3]


def train(wid, param, model, init, data, warmup, reps):
    """Eager steps, then the whole step (forward, backward, Adam) captured as
    one CUDA graph and replayed with the batch copied into its inputs."""
    xs_np, ys_np = data
    xs = [cuda(v) for v in xs_np]
    ys = [cuda(v.astype(np.int64)) for v in ys_np]

    def params():
        return [cuda(v).requires_grad_(True) for v in init]

    def evaluator(p):
        def ev():
            with torch.no_grad():
                return float(np.mean([C.sparse_ce(model(p, xs[k]).cpu().numpy(), ys_np[k])
                                      for k in range(C.N_BATCHES)]))
        return ev

    def eager():
        p = params()
        opt = torch.optim.Adam(p, lr=1e-3)

        def run(i):
            k = i % C.N_BATCHES
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(p, xs[k]), ys[k])
            loss.backward()
            opt.step()
            return float(loss)
        timing, extra = C.train_bench(run, warmup, reps, evaluator(p))
        C.record(PEER, "eager", wid, param, timing, **extra)

    def graph():
        p = params()
        opt = torch.optim.Adam(p, lr=1e-3, capturable=True)
        sx, sy = xs[0].clone(), ys[0].clone()

        def step():
            loss = F.cross_entropy(model(p, sx), sy)
            loss.backward()
            opt.step()
            return loss
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            static_loss = step()

        def run(i):
            k = i % C.N_BATCHES
            sx.copy_(xs[k])
            sy.copy_(ys[k])
            g.replay()
            return float(static_loss)
        timing, extra = C.train_bench(run, warmup, reps, evaluator(p))
        C.record(PEER, "graph", wid, param, timing, impl="whole step captured as one CUDA graph", **extra)

    C.guarded(PEER, "eager", wid, param, eager)
    C.guarded(PEER, "graph", wid, param, graph)


def b7():
    param = "1024x1024, 200 steps/call"
    u0 = cuda(C.b7_u0())

    def steps():
        u = u0
        for _ in range(200):
            lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
            u = u + 0.2 * F.pad(lap, (1, 1, 1, 1))
        return u
    C.guarded(PEER, "eager", "B7", param, lambda: C.record(
        PEER, "eager", "B7", param, gpu_bench(steps, budget_s=4.0, min_reps=5, max_reps=15, per=200),
        check=total(steps())))


def b8():
    param = "eager: a = a + 1"

    def loop():
        a = torch.tensor(1.0, device=DEV)
        for _ in range(10_000):
            a = a + 1
        return a
    C.guarded(PEER, "eager", "B8", param, lambda: C.record(
        PEER, "eager", "B8", param, gpu_bench(loop, min_reps=5, max_reps=15, per=10_000),
        check=float(loop())))


def main():
    if not torch.cuda.is_available():
        print("no CUDA device for PyTorch", file=sys.stderr)
        sys.exit(1)
    C.meta(PEER, versions={"torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__},
           device=torch.cuda.get_device_name(0))
    only = set(sys.argv[1:])

    def want(w):
        return not only or w in only

    if want("B1"):
        b1()
    b2_b4(want)
    if want("B5"):
        train("B5", "784-512-512-10, batch 128, Adam", mlp, C.mlp_params(), C.mlp_data(), 20, 200)
    if want("B6"):
        train("B6", "CNN 64x28x28x1, Adam", cnn, cnn_init(), C.cnn_data(), 5, 50)
    if want("B7"):
        b7()
    if want("B8"):
        b8()


if __name__ == "__main__":
    main()
