//! Conjugate gradients for `A x = b` with `A` symmetric positive definite,
//! given only as a function applying it (a stencil, a matrix product, ...).

use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{self, while_loop, Axes, WhileOptions};

/// When conjugate gradients stop.
#[derive(Clone, Debug, PartialEq)]
pub struct CgOptions {
    /// Stop when `‖r‖ <= max(tol · ‖b‖, atol)`.
    pub tol: f64,
    /// The absolute floor of the stopping test.
    pub atol: f64,
    /// Stop after this many iterations at the latest.
    pub max_iterations: u64,
}

impl Default for CgOptions {
    fn default() -> CgOptions {
        CgOptions { tol: 1e-5, atol: 0.0, max_iterations: 1000 }
    }
}

/// The result of [`conjugate_gradient`]: the solution, the iterations run
/// (int32) and the final residual norm.
#[derive(Clone, Debug)]
pub struct CgSolution {
    pub x: Tensor,
    pub iterations: Tensor,
    pub residual_norm: Tensor,
}

fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    ops::sum(&ops::mul(a, b)?, Axes::All, false)
}

/// Solve `op(x) = b` by conjugate gradients, `op` linear, symmetric and
/// positive definite over tensors of `b`'s shape, from `x0` (zeros when
/// `None`). One `while_loop`, whose body applies `op` once per iteration.
#[track_caller]
pub fn conjugate_gradient(
    op: impl Fn(&Tensor) -> Result<Tensor>,
    b: &Tensor,
    x0: Option<&Tensor>,
    options: &CgOptions,
) -> Result<CgSolution> {
    if !b.dtype().is_float() {
        bail!(dtype, "conjugate_gradient needs a float right-hand side, got {}", b.dtype());
    }
    if options.tol.is_nan() || options.tol < 0.0 || options.atol.is_nan() || options.atol < 0.0 {
        bail!(invalid, "conjugate_gradient needs tol and atol >= 0, got {} and {}", options.tol, options.atol);
    }
    let x = match x0 {
        Some(x) => x.clone(),
        None => ops::zeros_like(b)?,
    };
    let r = ops::sub(b, &op(&x)?)?;
    if r.shape() != b.shape() && r.shape().is_fully_known() && b.shape().is_fully_known() {
        bail!(shape, "conjugate_gradient: the operator maps {} to {}", b.shape(), r.shape());
    }
    let rs = dot(&r, &r)?;
    let threshold = ops::maximum(&ops::mul(&ops::sqrt(&dot(b, b)?)?, options.tol)?, options.atol)?;
    let threshold2 = ops::square(&threshold)?;
    let i0 = ops::zeros_like(&ops::cast(&rs, crate::tensor::DType::I32)?)?;
    let (iterations, x, _, _, rs) = while_loop(
        |(_, _, _, _, rs): &(Tensor, Tensor, Tensor, Tensor, Tensor)| ops::greater(rs, &threshold2),
        |(i, x, r, p, rs): &(Tensor, Tensor, Tensor, Tensor, Tensor)| {
            let ap = op(p)?;
            let alpha = ops::div(rs, &dot(p, &ap)?)?;
            let x = ops::add(x, &ops::mul(&alpha, p)?)?;
            let r = ops::sub(r, &ops::mul(&alpha, &ap)?)?;
            let rs_new = dot(&r, &r)?;
            let p = ops::add(&r, &ops::mul(&ops::div(&rs_new, rs)?, p)?)?;
            Ok((ops::add(i, 1i32)?, x, r, p, rs_new))
        },
        (i0, x, r.clone(), r, rs),
        &WhileOptions::default().maximum_iterations(options.max_iterations),
    )?;
    Ok(CgSolution { x, iterations, residual_norm: ops::sqrt(&rs)? })
}
