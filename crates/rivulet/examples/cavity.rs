//! The lid-driven cavity: incompressible Navier–Stokes in the unit square,
//! the lid (y = 1) sliding right at speed 1, run to steady state and
//! compared with the benchmark of Ghia, Ghia & Shin (1982), *High-Re
//! solutions for incompressible flow using the Navier-Stokes equations and
//! a multigrid method*, J. Comput. Phys. 48, 387–411 (Tables I and II).
//!
//! The scheme, in vorticity–stream function form on an `n`×`n` grid
//! (walls included): each step solves `-∇²ψ = ω` inside the walls exactly
//! by the sine transform (`sim::poisson_dirichlet_sine`, ψ = 0 on the
//! walls), sets the wall vorticity by Thom's formula (`ω_wall = -2ψ₁/h²`,
//! minus `2U/h` on the lid), and advances `ω_t + u·∇ω = ∇²ω / Re` with
//! central differences and an explicit Euler step. Steady state is when
//! `max |∂ω/∂t|` falls below a tolerance. The whole march is one
//! `while_loop`, traced into one graph.
//!
//! `cargo run --release --example cavity`

use rivulet::ops;
use rivulet::sim::poisson_dirichlet_sine;
use rivulet::{function, Axes, Result, Tensor, WhileOptions};

/// Ghia et al.'s vertical centerline (x = 0.5): y and u at Re = 100, 400, 1000 (Table I).
pub const GHIA_Y: [f64; 17] = [
    1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813, 0.1719, 0.1016, 0.0703, 0.0625,
    0.0547, 0.0,
];
pub const GHIA_U: [(f64, [f64; 17]); 3] = [
    (
        100.0,
        [
            1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.21090, -0.15662,
            -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0,
        ],
    ),
    (
        400.0,
        [
            1.0, 0.75837, 0.68439, 0.61756, 0.55892, 0.29093, 0.16256, 0.02135, -0.11477, -0.17119, -0.32726, -0.24299,
            -0.14612, -0.10338, -0.09266, -0.08186, 0.0,
        ],
    ),
    (
        1000.0,
        [
            1.0, 0.65928, 0.57492, 0.51117, 0.46604, 0.33304, 0.18719, 0.05702, -0.06080, -0.10648, -0.27805, -0.38289,
            -0.29730, -0.22220, -0.20196, -0.18109, 0.0,
        ],
    ),
];
/// Ghia et al.'s horizontal centerline (y = 0.5): x and v at Re = 100, 400, 1000 (Table II).
pub const GHIA_X: [f64; 17] = [
    1.0, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5, 0.2344, 0.2266, 0.1563, 0.0938, 0.0781, 0.0703,
    0.0625, 0.0,
];
pub const GHIA_V: [(f64, [f64; 17]); 3] = [
    (
        100.0,
        [
            0.0, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454, 0.17527, 0.17507,
            0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.0,
        ],
    ),
    (
        400.0,
        [
            0.0, -0.12146, -0.15663, -0.19254, -0.22847, -0.23827, -0.44993, -0.38598, 0.05186, 0.30174, 0.30203,
            0.28124, 0.22965, 0.20920, 0.19713, 0.18360, 0.0,
        ],
    ),
    (
        1000.0,
        [
            0.0, -0.21388, -0.27669, -0.33714, -0.39188, -0.51550, -0.42665, -0.31966, 0.02526, 0.32235, 0.33075,
            0.37095, 0.32627, 0.30353, 0.29012, 0.27485, 0.0,
        ],
    ),
];

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct CavitySetup {
    /// Grid points per side, walls included (odd, so that a grid line is the centerline).
    pub n: usize,
    /// The Reynolds number `U L / ν` (lid speed 1, side 1).
    pub re: f64,
    /// Stop after this many steps even if not steady.
    pub max_steps: u64,
    /// Steady when `max |∂ω/∂t|` is below this.
    pub tolerance: f64,
}

impl CavitySetup {
    /// The time step: 0.9 of the explicit scheme's limits, diffusive
    /// (`h² Re / 4`) and advective (`2 / (Re U²)`).
    pub fn dt(&self) -> f64 {
        let h = 1.0 / (self.n - 1) as f64;
        0.9 * (h * h * self.re / 4.0).min(2.0 / self.re)
    }
}

/// A finished run.
pub struct CavityRun {
    pub setup: CavitySetup,
    /// Steps taken, and whether the last one met the tolerance.
    pub steps: u64,
    pub steady: bool,
    /// `max |∂ω/∂t|` at the last step.
    pub residual: f64,
    /// Fields on the whole `n`×`n` grid (rows along y, columns along x):
    /// stream function, vorticity (walls by Thom's formula), velocities.
    pub psi: Vec<f64>,
    pub omega: Vec<f64>,
    pub u: Vec<f64>,
    pub v: Vec<f64>,
    /// Seconds spent marching to steady state.
    pub seconds: f64,
}

/// One explicit Euler step of the interior vorticity `w` (`m`×`m`, m = n - 2):
/// the next vorticity and `max |∂ω/∂t|`.
fn step(w: &Tensor, m: usize, h: f64, re: f64, dt: f64) -> Result<(Tensor, Tensor)> {
    let mi = m as i64;
    let psi = poisson_dirichlet_sine(w, &[h, h], 0.0)?;
    let thom = -2.0 / (h * h);
    let bottom = ops::mul(&ops::slice(&psi, &[0, 0], &[1, mi])?, thom)?;
    let top = ops::sub(&ops::mul(&ops::slice(&psi, &[m - 1, 0], &[1, mi])?, thom)?, 2.0 / h)?;
    let left = ops::mul(&ops::slice(&psi, &[0, 0], &[mi, 1])?, thom)?;
    let right = ops::mul(&ops::slice(&psi, &[0, m - 1], &[mi, 1])?, thom)?;
    // Each interior point's neighbours: from inside, or the wall's value.
    let north = |x: &Tensor, wall: &Tensor| ops::concat(&[&ops::slice(x, &[1, 0], &[mi - 1, mi])?, wall], 0);
    let south = |x: &Tensor, wall: &Tensor| ops::concat(&[wall, &ops::slice(x, &[0, 0], &[mi - 1, mi])?], 0);
    let east = |x: &Tensor, wall: &Tensor| ops::concat(&[&ops::slice(x, &[0, 1], &[mi, mi - 1])?, wall], 1);
    let west = |x: &Tensor, wall: &Tensor| ops::concat(&[wall, &ops::slice(x, &[0, 0], &[mi, mi - 1])?], 1);
    let (w_n, w_s, w_e, w_w) = (north(w, &top)?, south(w, &bottom)?, east(w, &right)?, west(w, &left)?);
    let zero_row = ops::zeros_like(&bottom)?;
    let zero_col = ops::zeros_like(&left)?;
    let (p_n, p_s) = (north(&psi, &zero_row)?, south(&psi, &zero_row)?);
    let (p_e, p_w) = (east(&psi, &zero_col)?, west(&psi, &zero_col)?);
    let half = 0.5 / h;
    // u = ∂ψ/∂y, v = -∂ψ/∂x; the rate -u ∂ω/∂x - v ∂ω/∂y + ∇²ω / Re.
    let u = ops::mul(&ops::sub(&p_n, &p_s)?, half)?;
    let v = ops::mul(&ops::sub(&p_w, &p_e)?, half)?;
    let advection = ops::add(
        &ops::mul(&u, &ops::mul(&ops::sub(&w_e, &w_w)?, half)?)?,
        &ops::mul(&v, &ops::mul(&ops::sub(&w_n, &w_s)?, half)?)?,
    )?;
    let neighbours = ops::add_n(&[&w_n, &w_s, &w_e, &w_w])?;
    let laplacian = ops::mul(&ops::sub(&neighbours, &ops::mul(w, 4.0)?)?, 1.0 / (h * h))?;
    let rate = ops::sub(&ops::mul(&laplacian, 1.0 / re)?, &advection)?;
    let residual = ops::max(&ops::abs(&rate)?, Axes::All, false)?;
    Ok((ops::add(w, &ops::mul(&rate, dt)?)?, residual))
}

/// March from rest to steady state (or `max_steps`).
pub fn solve(setup: &CavitySetup) -> Result<CavityRun> {
    let CavitySetup { n, re, max_steps, tolerance } = setup.clone();
    if n < 5 || n % 2 == 0 || !(re > 0.0 && re.is_finite()) || tolerance.is_nan() || tolerance <= 0.0 {
        return Err(rivulet::Error::new(rivulet::ErrorKind::InvalidArgument, format!(
            "the cavity needs an odd n >= 5, a positive finite Re and tolerance, got n = {n}, Re = {re}, tolerance = {tolerance}"
        )));
    }
    let (m, h, dt) = (n - 2, 1.0 / (n - 1) as f64, setup.dt());
    let march = function(move |args: &[Tensor]| {
        let options = WhileOptions::default().maximum_iterations(max_steps);
        let (steps, w, residual) = rivulet::while_loop(
            |(_, _, r): &(Tensor, Tensor, Tensor)| ops::greater_equal(r, tolerance),
            |(i, w, _): &(Tensor, Tensor, Tensor)| {
                let (next, residual) = step(w, m, h, re, dt)?;
                Ok((ops::add(i, 1i64)?, next, residual))
            },
            (Tensor::scalar(0i64), args[0].clone(), Tensor::scalar(f64::INFINITY)),
            &options,
        )?;
        let psi = poisson_dirichlet_sine(&w, &[h, h], 0.0)?;
        Ok(vec![steps, w, residual, psi])
    });
    let w0 = Tensor::from_vec(vec![0.0f64; m * m], vec![m, m])?;
    let start = std::time::Instant::now();
    let out = march.call(&[&w0])?;
    let steps = out[0].to_scalar::<i64>()? as u64;
    let interior_w = out[1].to_vec::<f64>()?;
    let residual = out[2].to_scalar::<f64>()?;
    let interior_psi = out[3].to_vec::<f64>()?;
    let seconds = start.elapsed().as_secs_f64();
    // The whole grid, on the host: ψ = 0 on the walls; u = ∂ψ/∂y, v = -∂ψ/∂x inside, the wall velocities on them.
    let mut psi = vec![0.0; n * n];
    let mut omega = vec![0.0; n * n];
    for i in 0..m {
        for j in 0..m {
            psi[(i + 1) * n + j + 1] = interior_psi[i * m + j];
            omega[(i + 1) * n + j + 1] = interior_w[i * m + j];
        }
    }
    let (mut u, mut v) = (vec![0.0; n * n], vec![0.0; n * n]);
    let thom = -2.0 / (h * h);
    for k in 1..n - 1 {
        omega[k] = thom * psi[n + k];
        omega[(n - 1) * n + k] = thom * psi[(n - 2) * n + k] - 2.0 / h;
        omega[k * n] = thom * psi[k * n + 1];
        omega[k * n + n - 1] = thom * psi[k * n + n - 2];
    }
    for i in 0..n {
        for j in 0..n {
            let at = i * n + j;
            if i == n - 1 {
                u[at] = 1.0;
            } else if i > 0 && j > 0 && j < n - 1 {
                u[at] = (psi[at + n] - psi[at - n]) * 0.5 / h;
                v[at] = (psi[at - 1] - psi[at + 1]) * 0.5 / h;
            }
        }
    }
    Ok(CavityRun { setup: setup.clone(), steps, steady: residual < tolerance, residual, psi, omega, u, v, seconds })
}

impl CavityRun {
    /// `(y, u)` along the vertical centerline x = 0.5, bottom to top.
    pub fn u_centerline(&self) -> Vec<(f64, f64)> {
        let n = self.setup.n;
        (0..n).map(|i| (i as f64 / (n - 1) as f64, self.u[i * n + (n - 1) / 2])).collect()
    }

    /// `(x, v)` along the horizontal centerline y = 0.5, left to right.
    pub fn v_centerline(&self) -> Vec<(f64, f64)> {
        let n = self.setup.n;
        (0..n).map(|j| (j as f64 / (n - 1) as f64, self.v[(n - 1) / 2 * n + j])).collect()
    }

    /// The largest deviations `(u, v)` from Ghia et al.'s centerline values
    /// at this Reynolds number (linear interpolation between grid points),
    /// or `None` when they did not tabulate it.
    pub fn ghia_deviation(&self) -> Option<(f64, f64)> {
        let u_ref = GHIA_U.iter().find(|(re, _)| *re == self.setup.re)?.1;
        let v_ref = GHIA_V.iter().find(|(re, _)| *re == self.setup.re)?.1;
        let at = |line: &[(f64, f64)], s: f64| {
            let n = line.len() - 1;
            let k = ((s * n as f64).floor() as usize).min(n - 1);
            let f = s * n as f64 - k as f64;
            line[k].1 * (1.0 - f) + line[k + 1].1 * f
        };
        let (ul, vl) = (self.u_centerline(), self.v_centerline());
        let du = GHIA_Y.iter().zip(u_ref).map(|(y, u)| (at(&ul, *y) - u).abs()).fold(0.0, f64::max);
        let dv = GHIA_X.iter().zip(v_ref).map(|(x, v)| (at(&vl, *x) - v).abs()).fold(0.0, f64::max);
        Some((du, dv))
    }
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let arg = |k: usize, default: f64| std::env::args().nth(k).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, re, tolerance) = (arg(1, 65.0) as usize, arg(2, 100.0), arg(3, 1e-3));
    let run = solve(&CavitySetup { n, re, max_steps: 1_000_000, tolerance })?;
    let (du, dv) = run.ghia_deviation().unwrap_or((f64::NAN, f64::NAN));
    println!(
        "cavity Re {re} on {n}x{n}: {} steps in {:.2} s (steady: {}, max |dω/dt| {:.1e}); largest deviation from Ghia et al.: u {du:.4}, v {dv:.4}",
        run.steps, run.seconds, run.steady, run.residual
    );
    Ok(())
}
