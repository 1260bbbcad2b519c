//! Matrix products and factorizations: the shapes they give.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::shape::{broadcast_shapes, UNKNOWN};
use crate::tensor::{DType, Shape};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

pub(crate) fn infer_matmul(ta: bool, tb: bool, a: &Meta, b: &Meta) -> Result<Meta> {
    if a.dtype != b.dtype {
        bail!(dtype, "matmul needs equal dtypes, got {} and {}", a.dtype, b.dtype);
    }
    if a.dtype == DType::Bool
        || a.dtype.is_complex()
        || (a.dtype.is_int() && !matches!(a.dtype, DType::I32 | DType::I64))
    {
        bail!(dtype, "matmul does not accept {}", a.dtype);
    }
    if a.shape.rank() < 2 || b.shape.rank() < 2 {
        bail!(shape, "matmul needs rank >= 2 on both sides, got {} and {}", a.shape, b.shape);
    }
    let (ra, rb) = (a.shape.rank(), b.shape.rank());
    let (m, ka) = if ta { (a.shape[ra - 1], a.shape[ra - 2]) } else { (a.shape[ra - 2], a.shape[ra - 1]) };
    let (kb, n) = if tb { (b.shape[rb - 1], b.shape[rb - 2]) } else { (b.shape[rb - 2], b.shape[rb - 1]) };
    if ka != kb && ka != UNKNOWN && kb != UNKNOWN {
        bail!(
            shape,
            "matmul inner dimensions differ: {} x {} (transpose_a={ta}, transpose_b={tb}) contracts {ka} with {kb}",
            a.shape,
            b.shape
        );
    }
    let batch = broadcast_shapes(&Shape::new(&a.shape[..ra - 2]), &Shape::new(&b.shape[..rb - 2]))?;
    let mut dims = batch.to_vec();
    dims.push(m);
    dims.push(n);
    Ok(Meta::new(a.dtype, Shape::from(dims)))
}

/// A dense matrix factorization or solve over the last two dimensions,
/// batched over the leading ones (which broadcast between the operands of
/// the solves). Kernels are `faer`'s, on the host: other backends copy the
/// operands there and the results back. f32 and f64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinalgOp {
    /// The lower Cholesky factor `L` of `A = L Lᵀ` (only `A`'s lower
    /// triangle is read); an error where `A` is not positive definite.
    Cholesky,
    /// `X` with `op(A) X = B`, `A` triangular (only the triangle named by
    /// `lower` is read), `op` the transpose when `adjoint`.
    TriangularSolve { lower: bool, adjoint: bool },
    /// `X` with `op(A) X = B` by LU with partial pivoting; an error where
    /// `A` is singular.
    Solve { adjoint: bool },
    /// `A`'s inverse (or its transpose's); an error where `A` is singular.
    Inv { adjoint: bool },
    /// `A = Pᵀ L U` with partial pivoting: outputs `L` and `U` packed in one
    /// matrix (`L`'s unit diagonal implied) and the permutation `p` (int32)
    /// with `(P A)[i] = A[p[i]]`.
    Lu,
    /// `A = Q R` (Householder): `Q` `m×m` and `R` `m×n` when
    /// `full_matrices`, else `m×k` and `k×n`, `k = min(m, n)`.
    Qr { full_matrices: bool },
    /// `A = U diag(s) Vᵀ`, `s` non-increasing: outputs `s`, then `U` and
    /// `V` (`m×m`, `n×n` when `full_matrices`, else `m×k`, `n×k`) when
    /// `compute_uv`.
    Svd { full_matrices: bool, compute_uv: bool },
    /// Eigenvalues (non-decreasing) of a symmetric `A` (its lower triangle
    /// is read), then its eigenvectors as columns when `compute_v`.
    Eigh { compute_v: bool },
    /// The determinant, from the LU factors (0 for a singular matrix).
    Det,
    /// The sign of the determinant and the log of its magnitude (0 and
    /// -inf for a singular matrix).
    Slogdet,
    /// The matrix exponential (scaling and squaring with a Padé
    /// approximant, of the order TensorFlow picks for the dtype and norm).
    Expm,
}

impl LinalgOp {
    /// The op type as TensorFlow spells it.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            LinalgOp::Cholesky => "Cholesky",
            LinalgOp::TriangularSolve { .. } => "MatrixTriangularSolve",
            LinalgOp::Solve { .. } => "MatrixSolve",
            LinalgOp::Inv { .. } => "MatrixInverse",
            LinalgOp::Lu => "Lu",
            LinalgOp::Qr { .. } => "Qr",
            LinalgOp::Svd { .. } => "Svd",
            LinalgOp::Eigh { .. } => "SelfAdjointEigV2",
            LinalgOp::Det => "MatrixDeterminant",
            LinalgOp::Slogdet => "LogMatrixDeterminant",
            LinalgOp::Expm => "MatrixExponential",
        }
    }

    /// Number of inputs: the matrix, and the right-hand sides of the solves.
    pub(crate) fn arity(self) -> usize {
        match self {
            LinalgOp::TriangularSolve { .. } | LinalgOp::Solve { .. } => 2,
            _ => 1,
        }
    }

    /// The outputs' dtypes and shapes.
    pub(crate) fn infer(self, inputs: &[Meta]) -> Result<Metas> {
        let name = self.type_name();
        let a = &inputs[0];
        if !matches!(a.dtype, DType::F32 | DType::F64) {
            bail!(dtype, "{name} needs float32 or float64 matrices, got {}", a.dtype);
        }
        let r = a.shape.rank();
        if r < 2 {
            bail!(shape, "{name} needs a matrix or a batch of matrices (rank >= 2), got shape {}", a.shape);
        }
        let (m, n) = (a.shape[r - 2], a.shape[r - 1]);
        let batch = &a.shape[..r - 2];
        let with = |tail: &[usize]| -> Shape { Shape::from(batch.iter().chain(tail).copied().collect::<Vec<_>>()) };
        let square = || -> Result<usize> {
            if m != n && m != UNKNOWN && n != UNKNOWN {
                bail!(shape, "{name} needs square matrices, got shape {}", a.shape);
            }
            Ok(if m == UNKNOWN { n } else { m })
        };
        let dt = a.dtype;
        let k = if m == UNKNOWN || n == UNKNOWN { UNKNOWN } else { m.min(n) };
        let one = |s: Shape| -> Result<Metas> { Ok(smallvec![Meta::new(dt, s)]) };
        match self {
            LinalgOp::Cholesky | LinalgOp::Inv { .. } | LinalgOp::Expm => {
                let n = square()?;
                one(with(&[n, n]))
            }
            LinalgOp::Det => {
                square()?;
                one(with(&[]))
            }
            LinalgOp::Slogdet => {
                square()?;
                Ok(smallvec![Meta::new(dt, with(&[])), Meta::new(dt, with(&[]))])
            }
            LinalgOp::Lu => {
                let n = square()?;
                Ok(smallvec![Meta::new(dt, with(&[n, n])), Meta::new(DType::I32, with(&[n]))])
            }
            LinalgOp::Eigh { compute_v } => {
                let n = square()?;
                let mut out: Metas = smallvec![Meta::new(dt, with(&[n]))];
                if compute_v {
                    out.push(Meta::new(dt, with(&[n, n])));
                }
                Ok(out)
            }
            LinalgOp::Qr { full_matrices } => {
                let (qc, rr) = if full_matrices { (m, m) } else { (k, k) };
                Ok(smallvec![Meta::new(dt, with(&[m, qc])), Meta::new(dt, with(&[rr, n]))])
            }
            LinalgOp::Svd { full_matrices, compute_uv } => {
                let mut out: Metas = smallvec![Meta::new(dt, with(&[k]))];
                if compute_uv {
                    let (uc, vc) = if full_matrices { (m, n) } else { (k, k) };
                    out.push(Meta::new(dt, with(&[m, uc])));
                    out.push(Meta::new(dt, with(&[n, vc])));
                }
                Ok(out)
            }
            LinalgOp::TriangularSolve { .. } | LinalgOp::Solve { .. } => {
                let n = square()?;
                let b = &inputs[1];
                if b.dtype != dt {
                    bail!(
                        dtype,
                        "{name} needs the matrix and the right-hand sides of one dtype, got {dt} and {}",
                        b.dtype
                    );
                }
                let rb = b.shape.rank();
                if rb < 2 {
                    bail!(
                        shape,
                        "{name} needs right-hand sides of rank >= 2 (a column is [n, 1]), got shape {}",
                        b.shape
                    );
                }
                let (bm, bk) = (b.shape[rb - 2], b.shape[rb - 1]);
                if bm != n && bm != UNKNOWN && n != UNKNOWN {
                    bail!(
                        shape,
                        "{name}: the matrix is {n}x{n} but the right-hand sides have {bm} rows (shapes {} and {})",
                        a.shape,
                        b.shape
                    );
                }
                let batch = broadcast_shapes(&Shape::new(batch), &Shape::new(&b.shape[..rb - 2]))?;
                let mut dims = batch.to_vec();
                dims.push(if n == UNKNOWN { bm } else { n });
                dims.push(bk);
                one(Shape::from(dims))
            }
        }
    }
}
