//! Matrix structure, composed of other ops (so their gradients come from
//! theirs): transposes, bands and diagonals, traces, products with vectors,
//! cross products and norms (`tf.linalg.band_part`, `diag_part`, `norm`, ...).

use super::super::{checked, creation, elementwise as ew, movement as mv, reduce, SliceItem};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::ops::{Axes, Ctx};
use crate::tensor::shape::{normalize_axis, UNKNOWN};
use crate::tensor::DType;

/// The last two dimensions of `x`, which must be known.
pub(crate) fn matrix_dims(x: &Tensor, op: &str) -> Result<(usize, usize)> {
    let r = x.rank();
    if r < 2 {
        bail!(shape, "{op} needs a matrix or a batch of matrices (rank >= 2), got shape {}", x.shape());
    }
    let (m, n) = (x.shape()[r - 2], x.shape()[r - 1]);
    if m == UNKNOWN || n == UNKNOWN {
        bail!(shape, "{op} needs the matrix dimensions known when the graph is built, got shape {}", x.shape());
    }
    Ok((m, n))
}

/// A bool `[m, n]` constant beside `x`: `keep(i, j)` at each position.
fn mask(x: &Tensor, m: usize, n: usize, keep: impl Fn(usize, usize) -> bool) -> Result<Tensor> {
    let v: Vec<bool> = (0..m * n).map(|p| keep(p / n, p % n)).collect();
    creation::constant(Ctx::of(x), Tensor::from_vec(v, vec![m, n])?)
}

/// The conjugate transpose of the last two dimensions (`tf.linalg.adjoint`;
/// the plain transpose for real matrices).
#[track_caller]
pub fn adjoint(x: &Tensor) -> Result<Tensor> {
    crate::ops::complex::conj(&matrix_transpose(x)?)
}

/// The transpose of the last two dimensions (`tf.linalg.matrix_transpose`),
/// without conjugation.
#[track_caller]
pub fn matrix_transpose(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 {
        return checked(
            Err(crate::error::Error::shape(format!("matrix_transpose needs rank >= 2, got shape {}", x.shape()))),
            "MatrixTranspose",
            &[x],
        );
    }
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    mv::transpose(x, &perm)
}

/// The entries within `num_lower` diagonals below and `num_upper` above the
/// main one, zeros elsewhere (a negative count keeps that whole triangle):
/// `band_part(x, -1, 0)` is the lower triangle.
#[track_caller]
pub fn band_part(x: &Tensor, num_lower: i64, num_upper: i64) -> Result<Tensor> {
    checked(band_part_impl(x, num_lower, num_upper), "MatrixBandPart", &[x])
}

fn band_part_impl(x: &Tensor, num_lower: i64, num_upper: i64) -> Result<Tensor> {
    let (m, n) = matrix_dims(x, "band_part")?;
    let keep = mask(x, m, n, |i, j| {
        let (i, j) = (i as i64, j as i64);
        (num_lower < 0 || i - j <= num_lower) && (num_upper < 0 || j - i <= num_upper)
    })?;
    ew::select(&keep, x, 0.0)
}

/// The main diagonal of each matrix, `[..., min(m, n)]`.
#[track_caller]
pub fn diag_part(x: &Tensor) -> Result<Tensor> {
    checked(diag_part_impl(x), "MatrixDiagPart", &[x])
}

fn diag_part_impl(x: &Tensor) -> Result<Tensor> {
    let (m, n) = matrix_dims(x, "diag_part")?;
    let k = m.min(n);
    let square = if m == n {
        x.clone()
    } else {
        let k = k as i64;
        mv::strided_slice(x, &[SliceItem::Ellipsis, SliceItem::range(0, k), SliceItem::range(0, k)])?
    };
    let eye = mask(x, k, k, |i, j| i == j)?;
    reduce::sum(&ew::select(&eye, &square, 0.0)?, -1i64, false)
}

/// Square matrices with `v`'s last dimension on the diagonal and zeros
/// elsewhere (`tf.linalg.diag`).
#[track_caller]
pub fn diag(v: &Tensor) -> Result<Tensor> {
    checked(diag_impl(v), "MatrixDiag", &[v])
}

fn diag_impl(v: &Tensor) -> Result<Tensor> {
    let r = v.rank();
    if r < 1 || v.shape()[r - 1] == UNKNOWN {
        bail!(shape, "diag needs a vector (or a batch of them) of known length, got shape {}", v.shape());
    }
    let k = v.shape()[r - 1];
    let eye = mask(v, k, k, |i, j| i == j)?;
    ew::select(&eye, &mv::expand_dims(v, -1)?, 0.0)
}

/// `x` with its main diagonal replaced by `d` (`[..., min(m, n)]`).
#[track_caller]
pub fn set_diag(x: &Tensor, d: &Tensor) -> Result<Tensor> {
    checked(set_diag_impl(x, d), "MatrixSetDiag", &[x, d])
}

fn set_diag_impl(x: &Tensor, d: &Tensor) -> Result<Tensor> {
    let (m, n) = matrix_dims(x, "set_diag")?;
    let k = m.min(n);
    if d.rank() < 1 || (d.shape()[d.rank() - 1] != k && d.shape()[d.rank() - 1] != UNKNOWN) {
        bail!(shape, "set_diag: a diagonal of {k} entries for matrices {m}x{n}, got shape {}", d.shape());
    }
    let square = diag_impl(d)?;
    let full = if m == n {
        square
    } else {
        let mut pads = vec![(0, 0); square.rank()];
        let r = pads.len();
        pads[r - 2] = (0, m - k);
        pads[r - 1] = (0, n - k);
        mv::pad(&square, &pads, mv::PadMode::Constant, 0.0)?
    };
    let eye = mask(x, m, n, |i, j| i == j)?;
    ew::select(&eye, &full, x)
}

/// The sum of each matrix's main diagonal.
#[track_caller]
pub fn trace(x: &Tensor) -> Result<Tensor> {
    checked(diag_part_impl(x).and_then(|d| reduce::sum(&d, -1i64, false)), "Trace", &[x])
}

/// The matrix-vector product `a @ b` over the last dimensions, batched.
#[track_caller]
pub fn matvec(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    checked(super::matmul(a, &mv::expand_dims(b, -1)?).and_then(|p| mv::squeeze(&p, &[-1])), "MatVec", &[a, b])
}

/// The cross product of 3-vectors along the last dimension.
#[track_caller]
pub fn cross(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    checked(cross_impl(a, b), "Cross", &[a, b])
}

fn cross_impl(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    for t in [a, b] {
        if t.rank() < 1 || t.shape()[t.rank() - 1] != 3 {
            bail!(
                shape,
                "cross needs vectors of 3 components in the last dimension, got shapes {} and {}",
                a.shape(),
                b.shape()
            );
        }
    }
    let c = |t: &Tensor, i: i64| mv::strided_slice(t, &[SliceItem::Ellipsis, SliceItem::Index(i)]);
    let (a0, a1, a2) = (c(a, 0)?, c(a, 1)?, c(a, 2)?);
    let (b0, b1, b2) = (c(b, 0)?, c(b, 1)?, c(b, 2)?);
    let x = ew::sub(&ew::mul(&a1, &b2)?, &ew::mul(&a2, &b1)?)?;
    let y = ew::sub(&ew::mul(&a2, &b0)?, &ew::mul(&a0, &b2)?)?;
    let z = ew::sub(&ew::mul(&a0, &b1)?, &ew::mul(&a1, &b0)?)?;
    mv::stack(&[&x, &y, &z], -1)
}

/// The order of a norm (`tf.norm`'s `ord`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormOrd {
    /// The 2-norm of vectors, the Frobenius norm of matrices (the default).
    Euclidean,
    /// The Frobenius norm (of vectors, the 2-norm).
    Fro,
    /// The `p`-norm, `p > 0`; for matrices 1 (the largest column sum of
    /// magnitudes) and 2 (the largest singular value).
    P(f64),
    /// The largest magnitude; of matrices, the largest row sum of magnitudes.
    Inf,
}

/// Which axes a norm runs over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormAxes {
    /// Every element, as one vector.
    All,
    /// One axis: vector norms.
    Vector(i64),
    /// Two axes (rows, columns): matrix norms.
    Matrix(i64, i64),
}

/// The norm of vectors or matrices (`tf.norm`).
#[track_caller]
pub fn norm(x: &Tensor, ord: NormOrd, axes: NormAxes, keepdims: bool) -> Result<Tensor> {
    checked(norm_impl(x, ord, axes, keepdims), "Norm", &[x])
}

fn norm_impl(x: &Tensor, ord: NormOrd, axes: NormAxes, keepdims: bool) -> Result<Tensor> {
    if !x.dtype().is_float() {
        bail!(dtype, "norm needs a float tensor, got {}", x.dtype());
    }
    let r = x.rank();
    let (list, matrix): (Axes, Option<(usize, usize)>) = match axes {
        NormAxes::All => (Axes::All, None),
        NormAxes::Vector(a) => (Axes::List(vec![normalize_axis(a, r)? as i64]), None),
        NormAxes::Matrix(a, b) => {
            let (a, b) = (normalize_axis(a, r)?, normalize_axis(b, r)?);
            if a == b {
                bail!(invalid, "norm over the same axis twice ({a})");
            }
            (Axes::List(vec![a as i64, b as i64]), Some((a, b)))
        }
    };
    let abs = || ew::abs(x);
    match (ord, matrix) {
        (NormOrd::Euclidean | NormOrd::Fro | NormOrd::P(2.0), None) | (NormOrd::Euclidean | NormOrd::Fro, Some(_)) => {
            ew::sqrt(&reduce::sum(&ew::mul(x, x)?, list, keepdims)?)
        }
        (NormOrd::Inf, None) => reduce::max(&abs()?, list, keepdims),
        (NormOrd::P(p), None) => {
            if p <= 0.0 || !p.is_finite() {
                bail!(invalid, "norm: ord must be a positive number, 'euclidean', 'fro' or inf, got {p}");
            }
            if p == 1.0 {
                return reduce::sum(&abs()?, list, keepdims);
            }
            ew::pow(&reduce::sum(&ew::pow(&abs()?, p)?, list, keepdims)?, 1.0 / p)
        }
        (NormOrd::P(1.0) | NormOrd::Inf, Some((rows, cols))) => {
            let (sum_axis, max_axis) = if ord == NormOrd::Inf { (cols, rows) } else { (rows, cols) };
            let s = reduce::sum(&abs()?, sum_axis as i64, true)?;
            let out = reduce::max(&s, max_axis as i64, true)?;
            if keepdims {
                Ok(out)
            } else {
                mv::squeeze(&out, &[rows as i64, cols as i64])
            }
        }
        (NormOrd::P(2.0), Some((rows, cols))) => {
            let mut perm: Vec<usize> = (0..r).filter(|&d| d != rows && d != cols).collect();
            perm.push(rows);
            perm.push(cols);
            let s = super::factor::singular_values(&mv::transpose(x, &perm)?)?;
            let top = reduce::max(&s, -1i64, false)?;
            if !keepdims {
                return Ok(top);
            }
            let (lo, hi) = (rows.min(cols), rows.max(cols));
            mv::expand_dims(&mv::expand_dims(&top, lo as i64)?, hi as i64)
        }
        (ord, Some(_)) => {
            bail!(invalid, "norm of matrices takes ord 'fro', 'euclidean', 1, 2 or inf, got {ord:?}")
        }
    }
}

/// The 2-norm of all the tensors' elements together (`tf.linalg.global_norm`).
#[track_caller]
pub fn global_norm(ts: &[&Tensor]) -> Result<Tensor> {
    checked(global_norm_impl(ts), "GlobalNorm", ts)
}

fn global_norm_impl(ts: &[&Tensor]) -> Result<Tensor> {
    let first = super::super::nonempty("global_norm", ts)?[0];
    let mut total: Option<Tensor> = None;
    for t in ts {
        if t.dtype() != first.dtype() {
            bail!(dtype, "global_norm needs tensors of one dtype, got {} and {}", first.dtype(), t.dtype());
        }
        let s = reduce::sum(&ew::mul(*t, *t)?, Axes::All, false)?;
        total = Some(match total {
            Some(acc) => ew::add(&acc, &s)?,
            None => s,
        });
    }
    match total {
        Some(t) => ew::sqrt(&t),
        None => creation::zeros(Ctx::of(first), crate::tensor::Shape::scalar(), DType::F32),
    }
}

/// `x / norm(x)` and the norm (`tf.linalg.normalize`).
#[track_caller]
pub fn normalize(x: &Tensor, ord: NormOrd, axes: NormAxes) -> Result<(Tensor, Tensor)> {
    checked(norm_impl(x, ord, axes, true).and_then(|n| Ok((ew::div(x, &n)?, n))), "Normalize", &[x])
}
