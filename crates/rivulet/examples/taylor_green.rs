//! The 2-D Taylor–Green vortex in an incompressible Navier–Stokes solver,
//! checked against its analytic decay and refined over three grids to
//! measure the scheme's order of accuracy.
//!
//! On the periodic square [0, 2π)² the flow
//! `u = sin x cos y F(t)`, `v = -cos x sin y F(t)`, `F = exp(-2νt)` solves
//! the equations exactly. The solver is the method of lines with a
//! projection: the velocity's rate `-(u·∇)u + ν∇²u` (central differences
//! and the 5-point laplacian) is projected onto divergence-free fields by
//! an FFT Poisson solve (`sim::poisson_periodic`), and RK4 advances it
//! (`sim::integrate`, one `while_loop` traced into one graph). The error
//! is second order in the grid spacing; RK4's is negligible beside it.
//!
//! `cargo run --release --example taylor_green`

use rivulet::ops::{self, grid, Boundary};
use rivulet::sim::{integrate, poisson_periodic, Method};
use rivulet::{function, Axes, Result, Tensor, WhileOptions};
use std::f64::consts::PI;

/// The viscosity ν.
pub const NU: f64 = 0.05;
/// The time every run reaches.
pub const T_END: f64 = 2.0;

/// One run on one grid.
#[derive(Clone, Debug)]
pub struct TaylorGreenRun {
    /// Grid points per side.
    pub n: usize,
    /// RK4 steps to `T_END`.
    pub steps: u64,
    /// The largest velocity error at `T_END`, relative to the analytic amplitude `F(T_END)`.
    pub error: f64,
    /// The kinetic energy at `T_END` over the analytic one (`exp(-4νT)` of the initial).
    pub energy_ratio: f64,
    /// The largest divergence of the final velocity (central differences), relative to `F/h`.
    pub divergence: f64,
    /// The vorticity `∂v/∂x - ∂u/∂y` at `T_END`, rows along y.
    pub vorticity: Tensor,
}

/// The analytic velocity at time `t`, `[2, n, n]`: component 0 is `v` (the
/// y-velocity), 1 is `u`; each field's rows run along y and columns along x.
pub fn exact(n: usize, t: f64) -> Result<Tensor> {
    let h = 2.0 * PI / n as f64;
    let decay = (-2.0 * NU * t).exp();
    let mut data = vec![0.0; 2 * n * n];
    for i in 0..n {
        for j in 0..n {
            let (y, x) = (i as f64 * h, j as f64 * h);
            data[i * n + j] = -x.cos() * y.sin() * decay;
            data[n * n + i * n + j] = x.sin() * y.cos() * decay;
        }
    }
    Tensor::from_vec(data, vec![2, n, n])
}

/// The projected rate of the velocity `s` (`[2, n, n]`, components along
/// y then x): advection and diffusion, minus the gradient that makes the
/// result divergence free.
pub fn rate(s: &Tensor, h: f64, nu: f64) -> Result<Tensor> {
    let spacing = [h, h];
    // g[c, i, j, k] = ∂s_c/∂x_k (k = 0: y, 1: x); w[i, j, k] = s_k.
    let g = grid::gradient(s, &spacing, Boundary::Periodic)?;
    let w = ops::transpose(s, &[1, 2, 0])?;
    let advection = ops::sum(&ops::mul(&g, &ops::expand_dims(&w, 0)?)?, Axes::from(-1), false)?;
    let r = ops::sub(&ops::mul(&grid::laplacian(s, &spacing, Boundary::Periodic)?, nu)?, &advection)?;
    // ∇²φ = ∇·r, then r - ∇φ has (to second order) no divergence.
    let div = grid::divergence(&ops::transpose(&r, &[1, 2, 0])?, &spacing, Boundary::Periodic)?;
    let phi = poisson_periodic(&ops::neg(&div)?, &spacing)?;
    let grad_phi = ops::transpose(&grid::gradient(&phi, &spacing, Boundary::Periodic)?, &[2, 0, 1])?;
    ops::sub(&r, &grad_phi)
}

/// Run on an `n`×`n` grid for `steps` RK4 steps to `T_END`.
pub fn run(n: usize, steps: u64) -> Result<TaylorGreenRun> {
    let h = 2.0 * PI / n as f64;
    let dt = T_END / steps as f64;
    let solve = function(move |args: &[Tensor]| {
        let f = |_: &Tensor, s: &Tensor| rate(s, h, NU);
        Ok(vec![integrate(f, &args[0], 0.0, dt, steps, Method::Rk4, &WhileOptions::default())?])
    });
    let s0 = exact(n, 0.0)?;
    let s = solve.call(&[&s0])?.remove(0);
    let want = exact(n, T_END)?;
    let amplitude = (-2.0 * NU * T_END).exp();
    let got = s.to_vec::<f64>()?;
    let error = got.iter().zip(want.to_vec::<f64>()?).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / amplitude;
    let energy = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let energy_ratio = energy(&got) / energy(&s0.to_vec::<f64>()?) / (amplitude * amplitude);
    let spacing = [h, h];
    let div = grid::divergence(&ops::transpose(&s, &[1, 2, 0])?, &spacing, Boundary::Periodic)?;
    let divergence = ops::max(&ops::abs(&div)?, Axes::All, false)?.to_scalar::<f64>()? * h / amplitude;
    // ω = ∂v/∂x - ∂u/∂y: g[c, i, j, k] = ∂s_c/∂x_k with s_0 = v, s_1 = u, x_0 = y, x_1 = x.
    let g = grid::gradient(&s, &spacing, Boundary::Periodic)?;
    let parts = ops::unstack(&ops::reshape(&ops::transpose(&g, &[0, 3, 1, 2])?, &[4, n as i64, n as i64])?, 0)?;
    let vorticity = ops::sub(&parts[1], &parts[2])?;
    Ok(TaylorGreenRun { n, steps, error, energy_ratio, divergence, vorticity })
}

/// The runs on `n/4`, `n/2` and `n` points per side, with `steps/4`,
/// `steps/2` and `steps` steps (dt ∝ h), and the observed orders
/// `log2(e_{n/2} / e_n)` between neighbours.
pub fn convergence(n: usize, steps: u64) -> Result<(Vec<TaylorGreenRun>, Vec<f64>)> {
    let runs = [4, 2, 1].iter().map(|&k| run(n / k, steps / k as u64)).collect::<Result<Vec<_>>>()?;
    let orders = runs.windows(2).map(|w| (w[0].error / w[1].error).log2()).collect();
    Ok((runs, orders))
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let (runs, orders) = convergence(128, 256)?;
    for r in &runs {
        println!(
            "taylor-green {0}x{0}, {1} RK4 steps to t = {T_END}: max error {2:.3e} (relative), energy ratio {3:.6}",
            r.n, r.steps, r.error, r.energy_ratio
        );
    }
    println!("observed orders: {orders:.3?}");
    Ok(())
}
