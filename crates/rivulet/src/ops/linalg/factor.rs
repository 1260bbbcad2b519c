//! Factorizations, solves and the functions made of them (`tf.linalg`'s
//! cholesky, lu, qr, svd, eigh, solve, inv, det, expm, lstsq, pinv, ...).
//! The primitives are `Op::Linalg` (faer's kernels); the rest compose them.

use super::super::{apply, apply1, checked, creation, elementwise as ew, movement as mv, reduce, Op};
use super::matrix::{band_part, diag_part, matrix_dims, set_diag};
use super::{matmul, matmul_t};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::LinalgOp;
use crate::ops::Ctx;
use crate::tensor::DType;

#[track_caller]
fn linalg1(f: LinalgOp, inputs: &[&Tensor]) -> Result<Tensor> {
    apply1(Op::Linalg { f }, inputs)
}

/// The lower Cholesky factor `L` of symmetric positive definite matrices,
/// `A = L Lᵀ`; only the lower triangle of `A` is read. Not positive
/// definite: an error, as in TensorFlow.
#[track_caller]
pub fn cholesky(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Cholesky, &[a])
}

/// `X` with `A X = B` (`Aᵀ X = B` when `adjoint`) for triangular `A`, of
/// which only the `lower` (else upper) triangle is read; batch dimensions
/// broadcast.
#[track_caller]
pub fn triangular_solve(a: &Tensor, b: &Tensor, lower: bool, adjoint: bool) -> Result<Tensor> {
    linalg1(LinalgOp::TriangularSolve { lower, adjoint }, &[a, b])
}

/// `X` with `A X = B` (LU with partial pivoting); batch dimensions
/// broadcast. A singular `A` is an error, as in TensorFlow.
#[track_caller]
pub fn solve(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    solve_t(a, b, false)
}

/// [`solve`] of `Aᵀ X = B` when `adjoint` (`tf.linalg.solve(a, b, adjoint)`).
#[track_caller]
pub fn solve_t(a: &Tensor, b: &Tensor, adjoint: bool) -> Result<Tensor> {
    linalg1(LinalgOp::Solve { adjoint }, &[a, b])
}

/// The inverse of each square matrix; a singular one is an error.
#[track_caller]
pub fn inv(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Inv { adjoint: false }, &[a])
}

/// The LU factorization with partial pivoting, `P A = L U`: `L` and `U`
/// packed in one matrix (`L`'s unit diagonal implied) and the permutation
/// `p` (int32) with `(P A)[i] = A[p[i]]` (`tf.linalg.lu`).
#[track_caller]
pub fn lu(a: &Tensor) -> Result<(Tensor, Tensor)> {
    let out = apply(Op::Linalg { f: LinalgOp::Lu }, &[a])?;
    Ok((out[0].clone(), out[1].clone()))
}

/// The QR factorization `A = Q R`: `Q` with orthonormal columns (`m×k`, or
/// `m×m` when `full_matrices`) and upper-triangular `R` (`k×n`, or `m×n`).
#[track_caller]
pub fn qr(a: &Tensor, full_matrices: bool) -> Result<(Tensor, Tensor)> {
    let out = apply(Op::Linalg { f: LinalgOp::Qr { full_matrices } }, &[a])?;
    Ok((out[0].clone(), out[1].clone()))
}

/// The singular value decomposition `A = U diag(s) Vᵀ`: `(s, u, v)` as
/// `tf.linalg.svd` gives them, `s` non-increasing.
#[track_caller]
pub fn svd(a: &Tensor, full_matrices: bool) -> Result<(Tensor, Tensor, Tensor)> {
    let out = apply(Op::Linalg { f: LinalgOp::Svd { full_matrices, compute_uv: true } }, &[a])?;
    Ok((out[0].clone(), out[1].clone(), out[2].clone()))
}

/// The singular values alone (`tf.linalg.svd(a, compute_uv=False)`).
#[track_caller]
pub fn singular_values(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Svd { full_matrices: false, compute_uv: false }, &[a])
}

/// Eigenvalues (non-decreasing) and eigenvectors (columns) of symmetric
/// matrices, of which the lower triangle is read (`tf.linalg.eigh`).
#[track_caller]
pub fn eigh(a: &Tensor) -> Result<(Tensor, Tensor)> {
    let out = apply(Op::Linalg { f: LinalgOp::Eigh { compute_v: true } }, &[a])?;
    Ok((out[0].clone(), out[1].clone()))
}

/// The eigenvalues of symmetric matrices (`tf.linalg.eigvalsh`).
#[track_caller]
pub fn eigvalsh(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Eigh { compute_v: false }, &[a])
}

/// The determinant of each square matrix.
#[track_caller]
pub fn det(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Det, &[a])
}

/// The sign of the determinant and the log of its magnitude
/// (`tf.linalg.slogdet`): 0 and -inf for a singular matrix.
#[track_caller]
pub fn slogdet(a: &Tensor) -> Result<(Tensor, Tensor)> {
    let out = apply(Op::Linalg { f: LinalgOp::Slogdet }, &[a])?;
    Ok((out[0].clone(), out[1].clone()))
}

/// The log-determinant of symmetric positive definite matrices, from their
/// Cholesky factor (`tf.linalg.logdet`).
#[track_caller]
pub fn logdet(a: &Tensor) -> Result<Tensor> {
    checked(
        cholesky(a)
            .and_then(|l| diag_part(&l))
            .and_then(|d| ew::log(&d))
            .and_then(|l| reduce::sum(&l, -1i64, false))
            .and_then(|s| ew::mul(&s, 2.0)),
        "LogDet",
        &[a],
    )
}

/// The matrix exponential (`tf.linalg.expm`).
#[track_caller]
pub fn expm(a: &Tensor) -> Result<Tensor> {
    linalg1(LinalgOp::Expm, &[a])
}

/// `X` with `A X = B` given `A`'s Cholesky factor (`tf.linalg.cholesky_solve`).
#[track_caller]
pub fn cholesky_solve(chol: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    checked(
        triangular_solve(chol, rhs, true, false).and_then(|y| triangular_solve(chol, &y, true, true)),
        "CholeskySolve",
        &[chol, rhs],
    )
}

/// `P` as a matrix (`P[i, p[i]] = 1`) in `dtype`, for permutations `p`.
fn permutation_matrix(perm: &Tensor, n: usize, dtype: DType) -> Result<Tensor> {
    mv::one_hot_with(perm, n, 1.0, 0.0, -1, dtype)
}

/// The unit lower factor of packed LU factors.
fn unit_lower(lu: &Tensor) -> Result<Tensor> {
    let l = band_part(lu, -1, 0)?;
    set_diag(&l, &creation::ones_like(&diag_part(lu)?)?)
}

/// `X` with `A X = B` given `A`'s LU factors from [`lu`] (`tf.linalg.lu_solve`).
#[track_caller]
pub fn lu_solve(lu_factors: &Tensor, perm: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    checked(lu_solve_impl(lu_factors, perm, rhs), "LuSolve", &[lu_factors, perm, rhs])
}

fn lu_solve_impl(lu: &Tensor, perm: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let (n, _) = matrix_dims(lu, "lu_solve")?;
    let permuted = matmul(&permutation_matrix(perm, n, lu.dtype())?, rhs)?;
    let y = triangular_solve(&unit_lower(lu)?, &permuted, true, false)?;
    triangular_solve(lu, &y, false, false)
}

/// The matrix whose LU factors these are (`tf.linalg.lu_reconstruct`).
#[track_caller]
pub fn lu_reconstruct(lu_factors: &Tensor, perm: &Tensor) -> Result<Tensor> {
    checked(lu_reconstruct_impl(lu_factors, perm), "LuReconstruct", &[lu_factors, perm])
}

fn lu_reconstruct_impl(lu: &Tensor, perm: &Tensor) -> Result<Tensor> {
    let (n, _) = matrix_dims(lu, "lu_reconstruct")?;
    let product = matmul(&unit_lower(lu)?, &band_part(lu, 0, -1)?)?;
    matmul_t(&permutation_matrix(perm, n, lu.dtype())?, &product, true, false)
}

/// The inverse from LU factors (`tf.linalg.lu_matrix_inverse`).
#[track_caller]
pub fn lu_matrix_inverse(lu_factors: &Tensor, perm: &Tensor) -> Result<Tensor> {
    checked(
        matrix_dims(lu_factors, "lu_matrix_inverse")
            .and_then(|(n, _)| creation::eye(Ctx::of(lu_factors), n, n, lu_factors.dtype()))
            .and_then(|eye| lu_solve_impl(lu_factors, perm, &eye)),
        "LuMatrixInverse",
        &[lu_factors, perm],
    )
}

/// The relative cutoff below which singular values count as zero when none
/// is given: `10 · max(m, n) · eps`, as `tf.linalg.pinv`.
fn default_rcond(m: usize, n: usize, dtype: DType) -> f64 {
    let eps = if dtype == DType::F32 { f32::EPSILON as f64 } else { f64::EPSILON };
    10.0 * m.max(n) as f64 * eps
}

/// The Moore–Penrose pseudo-inverse from the SVD, singular values at most
/// `rcond · max(s)` dropped (`tf.linalg.pinv`).
#[track_caller]
pub fn pinv(a: &Tensor, rcond: Option<f64>) -> Result<Tensor> {
    checked(pinv_impl(a, rcond), "Pinv", &[a])
}

fn pinv_impl(a: &Tensor, rcond: Option<f64>) -> Result<Tensor> {
    let (m, n) = matrix_dims(a, "pinv")?;
    let rcond = rcond.unwrap_or_else(|| default_rcond(m, n, a.dtype()));
    let (s, u, v) = svd(a, false)?;
    let cutoff = ew::mul(&reduce::max(&s, -1i64, true)?, rcond)?;
    let kept = ew::select(&ew::greater(&s, &cutoff)?, &s, f64::INFINITY)?;
    matmul_t(&ew::div(&v, &mv::expand_dims(&kept, -2)?)?, &u, false, true)
}

/// The number of singular values above `tol` (default `max(s) · max(m, n) ·
/// eps`), as int64 (`tf.linalg.matrix_rank`).
#[track_caller]
pub fn matrix_rank(a: &Tensor, tol: Option<f64>) -> Result<Tensor> {
    checked(matrix_rank_impl(a, tol), "MatrixRank", &[a])
}

fn matrix_rank_impl(a: &Tensor, tol: Option<f64>) -> Result<Tensor> {
    let (m, n) = matrix_dims(a, "matrix_rank")?;
    let s = singular_values(a)?;
    let above = match tol {
        Some(t) => ew::greater(&s, t)?,
        None => ew::greater(&s, &ew::mul(&reduce::max(&s, -1i64, true)?, default_rcond(m, n, a.dtype()) / 10.0)?)?,
    };
    reduce::sum(&ew::cast(&above, DType::I64)?, -1i64, false)
}

/// Least-squares solutions of `A X ≈ B` (`tf.linalg.lstsq`). `fast`: the
/// normal equations with `l2_regularizer · I` added, solved by Cholesky
/// (TensorFlow's default; squares the condition number). Otherwise a QR
/// factorization (of `A`, or of `Aᵀ` for the minimum-norm solution of an
/// underdetermined system), which takes no regularizer.
#[track_caller]
pub fn lstsq(a: &Tensor, b: &Tensor, l2_regularizer: f64, fast: bool) -> Result<Tensor> {
    checked(lstsq_impl(a, b, l2_regularizer, fast), "MatrixSolveLs", &[a, b])
}

fn lstsq_impl(a: &Tensor, b: &Tensor, l2: f64, fast: bool) -> Result<Tensor> {
    let (m, n) = matrix_dims(a, "lstsq")?;
    if l2 < 0.0 || !l2.is_finite() {
        bail!(invalid, "lstsq: l2_regularizer must be finite and >= 0, got {l2}");
    }
    let ridge = |k: usize, gram: Tensor| -> Result<Tensor> {
        if l2 == 0.0 {
            return Ok(gram);
        }
        let eye = creation::eye(Ctx::of(a), k, k, a.dtype())?;
        ew::add(&gram, &ew::mul(&eye, l2)?)
    };
    if fast {
        if m >= n {
            let gram = ridge(n, matmul_t(a, a, true, false)?)?;
            cholesky_solve(&cholesky(&gram)?, &matmul_t(a, b, true, false)?)
        } else {
            let gram = ridge(m, matmul_t(a, a, false, true)?)?;
            matmul_t(a, &cholesky_solve(&cholesky(&gram)?, b)?, true, false)
        }
    } else {
        if l2 != 0.0 {
            bail!(invalid, "lstsq: l2_regularizer needs fast=true");
        }
        if m >= n {
            let (q, r) = qr(a, false)?;
            triangular_solve(&r, &matmul_t(&q, b, true, false)?, false, false)
        } else {
            let (q, r) = qr(&super::matrix::adjoint(a)?, false)?;
            matmul(&q, &triangular_solve(&r, b, false, true)?)
        }
    }
}
