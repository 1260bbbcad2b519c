//! The Poisson equation `-∇²u = f` on a regular grid.

use super::cg::{conjugate_gradient, CgOptions, CgSolution};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, grid::laplacian, Boundary, Ctx};
use crate::tensor::{DType, UNKNOWN};

/// Solve `-∇²u = f` on the grid of `f` (its last `spacing.len()` axes)
/// with the Dirichlet value `boundary` one spacing outside the grid on
/// every side, by conjugate gradients on the 5-point (7-point) stencil,
/// which is symmetric positive definite there. Second-order accurate.
#[track_caller]
pub fn poisson_dirichlet(f: &Tensor, spacing: &[f64], boundary: f64, options: &CgOptions) -> Result<CgSolution> {
    if !boundary.is_finite() {
        bail!(invalid, "poisson_dirichlet needs a finite boundary value, got {boundary}");
    }
    let rhs = lifted(f, spacing, boundary)?;
    let minus_lap = |u: &Tensor| ops::neg(&laplacian(u, spacing, Boundary::Dirichlet(0.0))?);
    conjugate_gradient(minus_lap, &rhs, None, options)
}

/// `f` with the Dirichlet value's pull on the edge points moved into it, so
/// that the problem left has a zero boundary: with the stencil `L_b` under
/// boundary `b`, `-L_b u = f` is `-L_0 u = f + L_b 0`.
fn lifted(f: &Tensor, spacing: &[f64], boundary: f64) -> Result<Tensor> {
    if boundary == 0.0 {
        return Ok(f.clone());
    }
    ops::add(f, &laplacian(&ops::zeros_like(f)?, spacing, Boundary::Dirichlet(boundary))?)
}

/// Solve `-∇²u = f` on the grid of `f` (its last `spacing.len()` axes, 1
/// to 3, batched over the others) with the Dirichlet value `boundary` one
/// spacing outside the grid on every side, directly, in `O(n log n)`: the
/// discrete sine transform diagonalizes the same stencil
/// [`poisson_dirichlet`] iterates with, so this is its exact solution
/// (to rounding) at the cost of two FFTs. f32 or f64; differentiable.
#[track_caller]
pub fn poisson_dirichlet_sine(f: &Tensor, spacing: &[f64], boundary: f64) -> Result<Tensor> {
    let dims = checked_grid("poisson_dirichlet_sine", f, spacing)?;
    if !boundary.is_finite() {
        bail!(invalid, "poisson_dirichlet_sine needs a finite boundary value, got {boundary}");
    }
    let rank = spacing.len();
    // The stencil's eigenvalues λ(k) = Σ_d (2/h_d)² sin²(π k_d / (2 (n_d + 1))), k_d = 1..=n_d,
    // and the inverse transform's scale Π_d 2 / (n_d + 1), both folded into one divisor.
    let count: usize = dims.iter().product();
    let scale: f64 = dims.iter().map(|&n| 2.0 / (n + 1) as f64).product();
    let mut inverse = Vec::with_capacity(count);
    for flat in 0..count {
        let (mut rest, mut lambda) = (flat, 0.0);
        for d in (0..rank).rev() {
            let k = rest % dims[d] + 1;
            rest /= dims[d];
            let s = (std::f64::consts::PI * k as f64 / (2 * (dims[d] + 1)) as f64).sin() * 2.0 / spacing[d];
            lambda += s * s;
        }
        inverse.push(scale / lambda);
    }
    let inverse = ops::cast(&ops::constant(Ctx::of(f), Tensor::from_vec(inverse, dims.clone())?)?, f.dtype())?;
    let spectrum = sine_transform(&lifted(f, spacing, boundary)?, rank)?;
    sine_transform(&ops::mul(&spectrum, &inverse)?, rank)
}

/// The type-I discrete sine transform over the last `rank` axes,
/// `S[k] = Σ_j x[j] Π_d sin(π (j_d + 1)(k_d + 1) / (n_d + 1))`, which is
/// its own inverse up to the factor `Π_d 2 / (n_d + 1)`. By one real FFT
/// of the odd extension `[0, x, 0, -reverse(x)]` along every axis, whose
/// spectrum is `(-2i)^rank S`.
fn sine_transform(x: &Tensor, rank: usize) -> Result<Tensor> {
    let r = x.rank();
    let mut ext = x.clone();
    for axis in r - rank..r {
        let mut edge = vec![-1i64; r];
        edge[axis] = 1;
        let zero = ops::zeros_like(&ops::slice(&ext, &vec![0; r], &edge)?)?;
        ext = ops::concat(&[&zero, &ext, &zero, &ops::neg(&ops::reverse(&ext, &[axis as i64])?)?], axis as i64)?;
    }
    let spectrum = match rank {
        1 => ops::rfft(&ext, None)?,
        2 => ops::rfft2(&ext, None)?,
        _ => ops::rfft3(&ext, None)?,
    };
    // (-2i)^rank: -2i, -4, 8i.
    let (part, factor) = match rank {
        1 => (ops::imag(&spectrum)?, -0.5),
        2 => (ops::real(&spectrum)?, -0.25),
        _ => (ops::imag(&spectrum)?, 0.125),
    };
    let mut begin = vec![0; r];
    let mut size = vec![-1i64; r];
    for axis in r - rank..r {
        begin[axis] = 1;
        size[axis] = x.shape()[axis] as i64;
    }
    ops::mul(&ops::slice(&part, &begin, &size)?, factor)
}

/// Check a Poisson problem's field against its spacings; the grid's lengths.
fn checked_grid(name: &str, f: &Tensor, spacing: &[f64]) -> Result<Vec<usize>> {
    let rank = spacing.len();
    if !(1..=3).contains(&rank) {
        bail!(invalid, "{name} solves on 1 to 3 axes, got {rank} spacings");
    }
    if spacing.iter().any(|h| !h.is_finite() || *h <= 0.0) {
        bail!(invalid, "{name} needs positive finite spacings, got {spacing:?}");
    }
    if !matches!(f.dtype(), DType::F32 | DType::F64) {
        bail!(dtype, "{name} needs an f32 or f64 field, got {}", f.dtype());
    }
    if f.rank() < rank {
        bail!(shape, "{name} needs a field of rank >= {rank}, got shape {}", f.shape());
    }
    let dims = f.shape()[f.rank() - rank..].to_vec();
    if dims.iter().any(|&d| d == UNKNOWN || d == 0) {
        bail!(shape, "{name} needs known, nonzero grid lengths, got shape {}", f.shape());
    }
    Ok(dims)
}

/// Solve `-∇²u = f` on a periodic grid (the last `spacing.len()` axes of
/// `f`, 1 to 3, batched over the others) by FFT, in `O(n log n)`: each
/// Fourier mode is divided by the eigenvalue of the same 3-point (5-, 7-)
/// stencil `grid::laplacian` applies with `Boundary::Periodic`, so that
/// `-laplacian(u) = f - mean(f)` holds to rounding. The mean of `f` (the
/// zero mode, which a periodic problem cannot balance) is dropped and `u`
/// has mean zero. f32 or f64; differentiable.
#[track_caller]
pub fn poisson_periodic(f: &Tensor, spacing: &[f64]) -> Result<Tensor> {
    let dims = checked_grid("poisson_periodic", f, spacing)?;
    let rank = spacing.len();
    // 1/λ over the half spectrum (rfft's layout), 0 for the zero mode:
    // λ(k) = Σ_d (2/h_d)² sin²(π k_d / n_d).
    let mut half = dims.clone();
    half[rank - 1] = dims[rank - 1] / 2 + 1;
    let count: usize = half.iter().product();
    let mut inverse = Vec::with_capacity(count);
    for flat in 0..count {
        let (mut rest, mut lambda) = (flat, 0.0);
        for d in (0..rank).rev() {
            let k = rest % half[d];
            rest /= half[d];
            let s = (std::f64::consts::PI * k as f64 / dims[d] as f64).sin() * 2.0 / spacing[d];
            lambda += s * s;
        }
        inverse.push(if flat == 0 { 0.0 } else { 1.0 / lambda });
    }
    let inverse = ops::cast(&ops::constant(Ctx::of(f), Tensor::from_vec(inverse, half)?)?, f.dtype())?;
    let spectrum = match rank {
        1 => ops::rfft(f, None)?,
        2 => ops::rfft2(f, None)?,
        _ => ops::rfft3(f, None)?,
    };
    let solved = crate::ops::complex::scale_by(&spectrum, &inverse)?;
    match rank {
        1 => ops::irfft(&solved, Some(dims[0])),
        2 => ops::irfft2(&solved, Some([dims[0], dims[1]])),
        _ => ops::irfft3(&solved, Some([dims[0], dims[1], dims[2]])),
    }
}
