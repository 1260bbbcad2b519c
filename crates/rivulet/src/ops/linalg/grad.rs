//! Gradients of the factorizations and solves, written with the public ops
//! (so they run on any device and differentiate again). The formulas are
//! TensorFlow's (`linalg_grad.py`): symmetric-input ops (cholesky, eigh)
//! give gradients for symmetric perturbations, as TensorFlow's do.

use super::super::{creation, elementwise as ew, movement as mv, SliceItem};
use super::factor::{eigh, expm, inv, solve_t, svd, triangular_solve};
use super::matrix::{adjoint, band_part, diag, diag_part, matrix_dims, set_diag};
use super::{matmul, matmul_t};
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::op::LinalgOp;
use crate::ops::Ctx;

/// Gradients of `f` with respect to its inputs, given those flowing into
/// its outputs (`None`: zero).
pub(crate) fn linalg_grad(
    f: LinalgOp,
    inputs: &[Tensor],
    outputs: &[Tensor],
    grads: &[Option<Tensor>],
    wants: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    // The gradient into output `k`, zeros where none flows.
    let g = |k: usize| -> Result<Tensor> {
        match grads.get(k).cloned().flatten() {
            Some(g) => Ok(g),
            None => creation::zeros_like(&outputs[k]),
        }
    };
    let a = &inputs[0];
    Ok(match f {
        LinalgOp::Cholesky => vec![Some(cholesky_grad(&outputs[0], &g(0)?)?)],
        LinalgOp::TriangularSolve { lower, adjoint: adj } => {
            let (b, c) = (&inputs[1], &outputs[0]);
            let gb = triangular_solve(a, &g(0)?, lower, !adj)?;
            let ga = if want(0) {
                let ga = if adj { matmul_t(c, &gb, false, true)? } else { matmul_t(&gb, c, false, true)? };
                let ga = band_part(&ew::neg(&ga)?, if lower { -1 } else { 0 }, if lower { 0 } else { -1 })?;
                Some(mv::sum_to(&ga, a)?)
            } else {
                None
            };
            vec![ga, if want(1) { Some(mv::sum_to(&gb, b)?) } else { None }]
        }
        LinalgOp::Solve { adjoint: adj } => {
            let (b, c) = (&inputs[1], &outputs[0]);
            let gb = solve_t(a, &g(0)?, !adj)?;
            let ga = if want(0) {
                let ga = if adj { matmul_t(c, &gb, false, true)? } else { matmul_t(&gb, c, false, true)? };
                Some(mv::sum_to(&ew::neg(&ga)?, a)?)
            } else {
                None
            };
            vec![ga, if want(1) { Some(mv::sum_to(&gb, b)?) } else { None }]
        }
        LinalgOp::Inv { adjoint: adj } => {
            let y = &outputs[0];
            let ga = if adj {
                matmul(&matmul_t(y, &g(0)?, false, true)?, y)?
            } else {
                matmul_t(&matmul_t(y, &g(0)?, true, false)?, y, false, true)?
            };
            vec![Some(ew::neg(&ga)?)]
        }
        LinalgOp::Det => {
            let scale = ew::mul(&g(0)?, &outputs[0])?;
            vec![Some(ew::mul(&mv::expand_dims(&mv::expand_dims(&scale, -1)?, -1)?, &adjoint(&inv(a)?)?)?)]
        }
        LinalgOp::Slogdet => {
            let scale = g(1)?;
            vec![Some(ew::mul(&mv::expand_dims(&mv::expand_dims(&scale, -1)?, -1)?, &adjoint(&inv(a)?)?)?)]
        }
        LinalgOp::Lu => {
            return Err(Error::unimplemented(
                "lu has no gradient: differentiate through solve, lu_solve or det instead",
            ))
        }
        LinalgOp::Qr { full_matrices } => {
            vec![Some(qr_grad(a, &outputs[0], &outputs[1], &g(0)?, &g(1)?, full_matrices)?)]
        }
        LinalgOp::Eigh { compute_v } => {
            let ge = g(0)?;
            let ga = if compute_v {
                let (e, v) = (&outputs[0], &outputs[1]);
                eigh_grad(e, v, &ge, &g(1)?)?
            } else {
                let (_, v) = eigh(a)?;
                matmul_t(&matmul(&v, &diag(&ge)?)?, &v, false, true)?
            };
            // Only the lower triangle is read: fold the symmetric gradient onto it.
            let sym = band_part(&ew::add(&ga, &adjoint(&ga)?)?, -1, 0)?;
            vec![Some(set_diag(&sym, &ew::mul(&diag_part(&sym)?, 0.5)?)?)]
        }
        LinalgOp::Svd { full_matrices, compute_uv } => {
            let gs = g(0)?;
            if compute_uv {
                vec![Some(svd_grad(a, &outputs[0], &outputs[1], &outputs[2], &gs, &g(1)?, &g(2)?, full_matrices)?)]
            } else {
                let (_, u, v) = svd(a, false)?;
                vec![Some(matmul_t(&matmul(&u, &diag(&gs)?)?, &v, false, true)?)]
            }
        }
        LinalgOp::Expm => vec![Some(expm_grad(a, &g(0)?)?)],
    })
}

/// The identity beside `x`, `n×n` in `x`'s dtype.
fn eye_like(x: &Tensor, n: usize) -> Result<Tensor> {
    creation::eye(Ctx::of(x), n, n, x.dtype())
}

/// `Φ` of Murray (2016): `A⁻¹`-free form as TensorFlow writes it.
fn cholesky_grad(l: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (n, _) = matrix_dims(l, "cholesky gradient")?;
    let l_inv = triangular_solve(l, &eye_like(l, n)?, true, false)?;
    let middle = matmul_t(l, g, true, false)?;
    let middle = set_diag(&middle, &ew::mul(&diag_part(&middle)?, 0.5)?)?;
    let middle = band_part(&middle, -1, 0)?;
    let ga = matmul(&matmul_t(&l_inv, &middle, true, false)?, &l_inv)?;
    ew::mul(&ew::add(&ga, &adjoint(&ga)?)?, 0.5)
}

/// `V (diag(ḡₑ) + F ∘ (Vᵀ ḡᵥ)) Vᵀ`, `F[i, j] = 1 / (e[j] - e[i])` off the diagonal.
fn eigh_grad(e: &Tensor, v: &Tensor, ge: &Tensor, gv: &Tensor) -> Result<Tensor> {
    let gaps = ew::sub(&mv::expand_dims(e, -2)?, &mv::expand_dims(e, -1)?)?;
    let f = set_diag(&ew::reciprocal(&gaps)?, &creation::zeros_like(e)?)?;
    let inner = ew::add(&diag(ge)?, &ew::mul(&f, &matmul_t(v, gv, true, false)?)?)?;
    matmul_t(&matmul(v, &inner)?, v, false, true)
}

/// `x r⁻ᵀ` for upper-triangular `r`.
fn right_solve_upper_t(x: &Tensor, r: &Tensor) -> Result<Tensor> {
    adjoint(&triangular_solve(r, &adjoint(x)?, false, false)?)
}

/// QR's gradient for `m >= n` (reduced factors), TensorFlow's
/// `_QrGradSquareAndDeepMatrices`.
fn qr_grad_deep(q: &Tensor, r: &Tensor, dq: &Tensor, dr: &Tensor) -> Result<Tensor> {
    let qdq = matmul_t(q, dq, true, false)?;
    let qdq_ = ew::sub(&qdq, &adjoint(&qdq)?)?;
    let rdr = matmul_t(r, dr, false, true)?;
    let rdr_ = ew::sub(&rdr, &adjoint(&rdr)?)?;
    let tril = band_part(&ew::add(&qdq_, &rdr_)?, -1, 0)?;
    let grad_a = matmul(q, &ew::add(dr, &right_solve_upper_t(&tril, r)?)?)?;
    let grad_b = right_solve_upper_t(&ew::sub(dq, &matmul(q, &qdq)?)?, r)?;
    ew::add(&grad_a, &grad_b)
}

fn qr_grad(a: &Tensor, q: &Tensor, r: &Tensor, dq: &Tensor, dr: &Tensor, full: bool) -> Result<Tensor> {
    let (m, n) = matrix_dims(a, "qr gradient")?;
    if m >= n {
        if full && m > n {
            return Err(Error::unimplemented(
                "the gradient of qr with full_matrices=true and more rows than columns is not defined (as in TensorFlow)",
            ));
        }
        return qr_grad_deep(q, r, dq, dr);
    }
    // Wide: A = [X Y] with X square, R = [U V]; X = Q U.
    let (mi, ni) = (m as i64, n as i64);
    let cols = |t: &Tensor, lo: i64, hi: i64| {
        mv::strided_slice(t, &[SliceItem::Ellipsis, SliceItem::ALL, SliceItem::range(lo, hi)])
    };
    let y = cols(a, mi, ni)?;
    let u = cols(r, 0, mi)?;
    let dv = cols(dr, mi, ni)?;
    let du = cols(dr, 0, mi)?;
    let dq = ew::add(dq, &matmul_t(&y, &dv, false, true)?)?;
    let dx = qr_grad_deep(q, &u, &dq, &du)?;
    let dy = matmul(q, &dv)?;
    mv::concat(&[&dx, &dy], -1)
}

/// SVD's gradient (TensorFlow's `_SvdGrad`, real matrices).
#[allow(clippy::too_many_arguments)]
fn svd_grad(
    a: &Tensor,
    s: &Tensor,
    u: &Tensor,
    v: &Tensor,
    gs: &Tensor,
    gu: &Tensor,
    gv: &Tensor,
    full: bool,
) -> Result<Tensor> {
    let (m0, n0) = matrix_dims(a, "svd gradient")?;
    // Work with m <= n: a tall matrix is handled as its transpose.
    let wide = m0 <= n0;
    let (u, v, gu, gv) = if wide { (u, v, gu, gv) } else { (v, u, gv, gu) };
    let (m, n) = (m0.min(n0), m0.max(n0));
    if full && n - m > 1 {
        return Err(Error::unimplemented(
            "the gradient of svd with full_matrices=true is defined only where the dimensions differ by at most 1 (as in TensorFlow)",
        ));
    }
    let mi = m as i64;
    let first_cols = |t: &Tensor| mv::strided_slice(t, &[SliceItem::Ellipsis, SliceItem::ALL, SliceItem::range(0, mi)]);
    let s_mat = diag(s)?;
    let s2 = ew::mul(s, s)?;
    let f = set_diag(
        &ew::reciprocal(&ew::sub(&mv::expand_dims(&s2, -2)?, &mv::expand_dims(&s2, -1)?)?)?,
        &creation::zeros_like(s)?,
    )?;
    let s_inv = diag(&ew::reciprocal_no_nan(s)?)?;
    let v1 = first_cols(v)?;
    let gv1 = first_cols(gv)?;
    let u_gu = matmul_t(u, gu, true, false)?;
    let v_gv = matmul_t(&v1, &gv1, true, false)?;
    let f_u = ew::mul(&f, &u_gu)?;
    let f_v = ew::mul(&f, &v_gv)?;
    let inner = ew::add(
        &ew::add(&diag(gs)?, &matmul(&ew::add(&f_u, &adjoint(&f_u)?)?, &s_mat)?)?,
        &matmul(&s_mat, &ew::add(&f_v, &adjoint(&f_v)?)?)?,
    )?;
    let term1 = matmul(u, &matmul_t(&inner, &v1, false, true)?)?;
    let grad = if m == n {
        term1
    } else {
        let gv1t = adjoint(&gv1)?;
        let mut term2 = ew::sub(&gv1t, &matmul_t(&matmul(&gv1t, &v1)?, &v1, false, true)?)?;
        if full {
            let rest = |t: &Tensor| {
                mv::strided_slice(t, &[SliceItem::Ellipsis, SliceItem::ALL, SliceItem::range(mi, n as i64)])
            };
            let (v2, gv2) = (rest(v)?, rest(gv)?);
            term2 = ew::sub(&term2, &matmul_t(&matmul_t(&v1, &gv2, true, false)?, &v2, false, true)?)?;
        }
        ew::add(&term1, &matmul(&matmul(u, &s_inv)?, &term2)?)?
    };
    if wide {
        Ok(grad)
    } else {
        adjoint(&grad)
    }
}

/// The Fréchet derivative's adjoint: the upper-right block of
/// `expm([[Aᵀ, G], [0, Aᵀ]])`.
fn expm_grad(a: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (n, _) = matrix_dims(a, "expm gradient")?;
    let at = adjoint(a)?;
    let top = mv::concat(&[&at, g], -1)?;
    let bottom = mv::concat(&[&creation::zeros_like(a)?, &at], -1)?;
    let block = expm(&mv::concat(&[&top, &bottom], -2)?)?;
    let n = n as i64;
    mv::strided_slice(&block, &[SliceItem::Ellipsis, SliceItem::range(0, n), SliceItem::range(n, 2 * n)])
}
