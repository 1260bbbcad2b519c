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
    // With u = v + w, w the boundary's contribution: -∇²v = f + ∇²(boundary lift) where the
    // lift is the laplacian of zeros under the boundary value (the edge rows feel it).
    let lift = laplacian(&ops::zeros_like(f)?, spacing, Boundary::Dirichlet(boundary))?;
    let rhs = ops::add(f, &lift)?;
    let minus_lap = |u: &Tensor| ops::neg(&laplacian(u, spacing, Boundary::Dirichlet(0.0))?);
    conjugate_gradient(minus_lap, &rhs, None, options)
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
    let rank = spacing.len();
    if !(1..=3).contains(&rank) {
        bail!(invalid, "poisson_periodic solves on 1 to 3 axes, got {rank} spacings");
    }
    if spacing.iter().any(|h| !h.is_finite() || *h <= 0.0) {
        bail!(invalid, "poisson_periodic needs positive finite spacings, got {spacing:?}");
    }
    if !matches!(f.dtype(), DType::F32 | DType::F64) {
        bail!(dtype, "poisson_periodic needs an f32 or f64 field, got {}", f.dtype());
    }
    if f.rank() < rank {
        bail!(shape, "poisson_periodic needs a field of rank >= {rank}, got shape {}", f.shape());
    }
    let dims = f.shape()[f.rank() - rank..].to_vec();
    if dims.iter().any(|&d| d == UNKNOWN || d == 0) {
        bail!(shape, "poisson_periodic needs known, nonzero grid lengths, got shape {}", f.shape());
    }
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
