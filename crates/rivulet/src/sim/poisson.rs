//! The Poisson equation `-∇²u = f` on a regular grid.

use super::cg::{conjugate_gradient, CgOptions, CgSolution};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, grid::laplacian, Boundary};

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
