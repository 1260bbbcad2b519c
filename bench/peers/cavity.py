"""The lid-driven cavity in NumPy, the same scheme as `rivulet simulate cavity`
(crates/rivulet/examples/cavity.rs), for the steady-state race of issue 16.

Vorticity-stream function form on an n x n grid (walls included): each step
solves -lap(psi) = omega inside the walls by the type-I sine transform (one
real FFT of the odd extension per transform), sets the wall vorticity by
Thom's formula, and takes an explicit Euler step of
omega_t + u . grad(omega) = lap(omega) / Re with central differences, until
max |d omega / dt| < tolerance. Same time step, same stopping rule.

    python bench/peers/cavity.py --re 100 --n 129

Not run by CI (it needs NumPy); prints one JSON line.
"""

import argparse
import json
import time

import numpy as np

GHIA_Y = [1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813, 0.1719, 0.1016,
          0.0703, 0.0625, 0.0547, 0.0]
GHIA_U100 = [1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.21090, -0.15662,
             -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0]


def sine_transform(x):
    """Type-I DST over both axes: rfft2 of the odd extension is -4 S."""
    m0, m1 = x.shape
    ext = np.zeros((2 * m0 + 2, 2 * m1 + 2))
    ext[1:m0 + 1, 1:m1 + 1] = x
    ext[m0 + 2:, 1:m1 + 1] = -x[::-1, :]
    ext[1:m0 + 1, m1 + 2:] = -x[:, ::-1]
    ext[m0 + 2:, m1 + 2:] = x[::-1, ::-1]
    return -0.25 * np.fft.rfft2(ext).real[1:m0 + 1, 1:m1 + 1]


def solve(n, re, tolerance, max_steps):
    m, h = n - 2, 1.0 / (n - 1)
    dt = 0.9 * min(h * h * re / 4.0, 2.0 / re)
    k = np.arange(1, m + 1)
    s = (2.0 / h * np.sin(np.pi * k / (2 * (m + 1)))) ** 2
    inverse = (2.0 / (m + 1)) ** 2 / (s[:, None] + s[None, :])
    thom, half = -2.0 / (h * h), 0.5 / h
    w = np.zeros((m, m))
    big_w = np.zeros((m + 2, m + 2))
    big_p = np.zeros((m + 2, m + 2))
    residual, steps = np.inf, 0
    while residual >= tolerance and steps < max_steps:
        psi = sine_transform(sine_transform(w) * inverse)
        big_p[1:-1, 1:-1] = psi
        big_w[1:-1, 1:-1] = w
        big_w[0, 1:-1] = thom * psi[0]
        big_w[-1, 1:-1] = thom * psi[-1] - 2.0 / h
        big_w[1:-1, 0] = thom * psi[:, 0]
        big_w[1:-1, -1] = thom * psi[:, -1]
        u = (big_p[2:, 1:-1] - big_p[:-2, 1:-1]) * half
        v = (big_p[1:-1, :-2] - big_p[1:-1, 2:]) * half
        north, south = big_w[2:, 1:-1], big_w[:-2, 1:-1]
        east, west = big_w[1:-1, 2:], big_w[1:-1, :-2]
        rate = (north + south + east + west - 4.0 * w) / (h * h * re) - u * (east - west) * half - v * (north - south) * half
        residual = np.abs(rate).max()
        w = w + dt * rate
        steps += 1
    psi = sine_transform(sine_transform(w) * inverse)
    return steps, residual, psi, h


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--re", type=float, default=100.0)
    p.add_argument("--n", type=int, default=129)
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--max-steps", type=int, default=1_000_000)
    a = p.parse_args()
    start = time.perf_counter()
    steps, residual, psi, h = solve(a.n, a.re, a.tolerance, a.max_steps)
    seconds = time.perf_counter() - start
    row = {"id": "cavity", "param": f"re={a.re:g},n={a.n}", "impl": "numpy", "steps": steps,
           "residual": float(residual), "seconds": seconds}
    if a.re == 100:
        # u on the vertical centerline x = 0.5 against Ghia et al. (1982), linear interpolation.
        n, c = a.n, (a.n - 3) // 2
        line = np.concatenate([[0.0], (np.pad(psi, 1)[2:, c + 1] - np.pad(psi, 1)[:-2, c + 1])[:] * 0.5 / h, [1.0]])
        ys = np.linspace(0.0, 1.0, n)
        row["u_deviation"] = float(np.max(np.abs(np.interp(GHIA_Y, ys, line) - np.array(GHIA_U100))))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
