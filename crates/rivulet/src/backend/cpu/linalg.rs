//! Kernels of the matrix factorizations and solves (`op::LinalgOp`), the
//! only implementation of them: other backends run these on host copies.
//!
//! `faer` wants column-major matrices; a row-major matrix is, in memory,
//! its transpose in column-major order. So the solves, inverses and
//! determinants factor that transpose (a straight copy), Cholesky and eigh
//! read a row-major view of it, and only QR, SVD and LU copy through a
//! tiled transpose (O(n²) beside their O(n³)). A batch of several matrices
//! runs them in parallel, each on one thread; a single matrix is threaded
//! inside `faer` only from [`PARALLEL_MIN_ELEMENTS`]. Temporaries, scratch
//! and results live in buffers of the CPU buffer cache ([`Work`]).

use super::copy::materialize;
use crate::error::{Error, Result};
use crate::op::{LinalgOp, Meta};
use crate::tensor::layout::Layout;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Element, Shape, Value};
use faer::dyn_stack::{MemStack, StackReq};
use faer::linalg::{cholesky, evd, householder, lu, qr, svd, triangular_solve};
use faer::traits::RealField;
use faer::{Accum, Conj, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// The float types the factorizations run in.
trait Float:
    RealField + Element + Copy + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign
{
}
impl Float for f32 {}
impl Float for f64 {}

/// Run `f` on CPU values of the types inferred in `outs`.
pub(crate) fn run(f: LinalgOp, inputs: &[&Value], outs: &[Meta]) -> Result<SmallVec<[Value; 2]>> {
    match inputs[0].dtype {
        DType::F32 => run_typed::<f32>(f, inputs, outs),
        DType::F64 => run_typed::<f64>(f, inputs, outs),
        d => Err(Error::dtype(format!("{} needs float32 or float64 matrices, got {d}", f.type_name()))),
    }
}

/// The size from which one matrix's factorization is threaded.
const PARALLEL_MIN_ELEMENTS: usize = 512 * 512;

/// One matrix's results, row-major, one buffer of `T` per output (the LU
/// permutation as `T`, converted to int32 at the end).
type Parts = SmallVec<[HostBuffer; 3]>;

fn run_typed<T: Float>(f: LinalgOp, inputs: &[&Value], outs: &[Meta]) -> Result<SmallVec<[Value; 2]>> {
    let a = materialize(inputs[0])?;
    let b = match inputs.get(1) {
        Some(b) => Some(materialize(b)?),
        None => None,
    };
    let a_data = a.contiguous_slice::<T>().unwrap_or(&[]);
    let b_data = match &b {
        Some(b) => b.contiguous_slice::<T>().unwrap_or(&[]),
        None => &[],
    };
    let dims = a.shape().dims();
    let (m, n) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    // The batch the outputs have (the broadcast of both operands' for solves).
    let batch_rank = if b.is_some() { outs[0].shape.rank() - 2 } else { dims.len() - 2 };
    let out_batch = Shape::new(&outs[0].shape.dims()[..batch_rank]);
    let count = out_batch.numel_known();
    let a_at = matrix_offsets(&a, &out_batch)?;
    let (b_at, k) = match &b {
        Some(b) => (matrix_offsets(b, &out_batch)?, b.shape()[b.shape().rank() - 1]),
        None => (Vec::new(), 0),
    };
    let one = |i: usize| -> Result<Parts> {
        let a = &a_data[a_at[i]..a_at[i] + m * n];
        let b = b_at.get(i).map_or(&[][..], |&at| &b_data[at..at + n * k]);
        // Measured on two cores (AMD EPYC, AVX2), with the temporaries
        // cached: faer's threaded factorizations beat one thread from 512²
        // elements (B9's 1024² Cholesky and LU, 512² eigh: 1.2-1.5x); a
        // batch runs its matrices in parallel instead.
        let par = if count == 1 && m * n >= PARALLEL_MIN_ELEMENTS { Par::rayon(0) } else { Par::Seq };
        if par == Par::Seq || rayon::current_thread_index().is_some() {
            return matrix(f, a, m, n, b, k, par);
        }
        // faer's threaded routines fork and join many times; from a thread
        // outside the pool (an eager call, or a Session's op) each join is a
        // trip through the pool's queue and a wake-up. The whole call on a
        // worker makes them local (B9's 512² f64 eigh: about 24 against 19 ms).
        rayon::scope(|_| matrix(f, a, m, n, b, k, par))
    };
    let mut parts: Vec<Parts> = if count > 1 {
        (0..count).into_par_iter().map(one).collect::<Result<_>>()?
    } else {
        (0..count).map(one).collect::<Result<_>>()?
    };
    let buffers: Parts = match parts.pop() {
        // One matrix: its results are the outputs' buffers.
        Some(single) if parts.is_empty() => single,
        last => {
            parts.extend(last);
            outs.iter()
                .enumerate()
                .map(|(o, meta)| {
                    let size: usize = meta.shape.dims().iter().skip(batch_rank).product();
                    let mut buf = HostBuffer::for_elements::<T>(count * size)?;
                    let dst = buf.as_mut_slice::<T>();
                    for (i, p) in parts.iter().enumerate() {
                        dst[i * size..(i + 1) * size].copy_from_slice(p[o].as_slice::<T>());
                    }
                    Ok(buf)
                })
                .collect::<Result<_>>()?
        }
    };
    debug_assert_eq!(buffers.len(), outs.len(), "{}: one result per output", f.type_name());
    outs.iter()
        .zip(buffers)
        .map(|(meta, buf)| {
            let v = Value::from_buffer(T::DTYPE, meta.shape.clone(), buf);
            if meta.dtype == T::DTYPE {
                Ok(v)
            } else {
                super::elementwise::cast(&v, meta.dtype)
            }
        })
        .collect()
}

/// Where each matrix of the output batch starts in `v`'s contiguous data:
/// `v`'s batch dimensions broadcast to `out_batch` (a broadcast dimension
/// repeats its matrix). The strides are the data's row-major ones in
/// elements (0 throughout for empty matrices, whose data is empty).
fn matrix_offsets(v: &Value, out_batch: &Shape) -> Result<Vec<usize>> {
    let dims = v.shape().dims();
    let r = dims.len();
    let mut strides: smallvec::SmallVec<[isize; 4]> = smallvec::smallvec![0; r - 2];
    let mut step = dims[r - 2] * dims[r - 1];
    for d in (0..r - 2).rev() {
        strides[d] = step as isize;
        step *= dims[d];
    }
    let batch = Layout { shape: Shape::new(&dims[..r - 2]), strides, offset: 0 }.broadcast_to(out_batch)?;
    Ok((0..out_batch.numel_known()).map(|i| batch.offset_of(&out_batch.unravel(i))).collect())
}

/// Tile edge of the transposing copies (row-major to column-major and
/// back): a tile of both sides stays in cache.
const TILE: usize = 32;

/// A column-major matrix in a buffer from the CPU buffer cache: the kernels'
/// temporaries and results. A fresh multi-megabyte `Vec` or `Mat` per call
/// has its pages faulted in again on every call (glibc maps each large
/// allocation anew), which cost as much as the factorization itself: a
/// 1024² f64 Cholesky took 28-31 ms per call against 13-16 ms for faer's.
struct Work<T> {
    buf: HostBuffer,
    rows: usize,
    cols: usize,
    _t: PhantomData<T>,
}

impl<T: Float> Work<T> {
    /// A `rows×cols` matrix whose entries the caller overwrites.
    fn new(rows: usize, cols: usize) -> Result<Work<T>> {
        Ok(Work { buf: HostBuffer::for_elements::<T>(rows * cols)?, rows, cols, _t: PhantomData })
    }

    fn zeros(rows: usize, cols: usize) -> Result<Work<T>> {
        Ok(Work { buf: HostBuffer::zeroed::<T>(rows * cols)?, rows, cols, _t: PhantomData })
    }

    /// The first `cols` columns of the `rows×rows` identity.
    fn identity(rows: usize, cols: usize) -> Result<Work<T>> {
        let mut w = Work::zeros(rows, cols)?;
        for i in 0..rows.min(cols) {
            w.as_mut()[(i, i)] = T::from_f64(1.0);
        }
        Ok(w)
    }

    fn copy_of(x: MatRef<'_, T>) -> Result<Work<T>> {
        let mut w = Work::new(x.nrows(), x.ncols())?;
        w.as_mut().copy_from(x);
        Ok(w)
    }

    fn as_ref(&self) -> MatRef<'_, T> {
        MatRef::from_column_major_slice(self.buf.as_slice::<T>(), self.rows, self.cols)
    }

    fn as_mut(&mut self) -> MatMut<'_, T> {
        MatMut::from_column_major_slice_mut(self.buf.as_mut_slice::<T>(), self.rows, self.cols)
    }
}

/// Scratch memory for one faer routine, from the CPU buffer cache (see [`Work`]).
fn scratch(req: StackReq) -> Result<HostBuffer> {
    HostBuffer::new(req.unaligned_bytes_required())
}

/// `buf` as the stack faer's routines take their scratch from.
fn stack(buf: &mut HostBuffer) -> &mut MemStack {
    let bytes = buf.bytes_mut();
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout. The buffer's later users
    // read its bytes as initialised, so this relies on faer storing only
    // padding-free plain values in a caller's scratch (floats, indices,
    // bools, Jacobi rotations: checked for faer 0.24.4; check again when
    // faer is upgraded).
    MemStack::new(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes.len()) })
}

/// `values` (a vector or a scalar result) in a buffer.
fn vector<T: Float>(values: impl ExactSizeIterator<Item = T>) -> Result<HostBuffer> {
    let mut buf = HostBuffer::for_elements::<T>(values.len())?;
    for (d, v) in buf.as_mut_slice::<T>().iter_mut().zip(values) {
        *d = v;
    }
    Ok(buf)
}

/// A row-major `m×n` slice as a column-major matrix.
fn to_mat<T: Float>(data: &[T], m: usize, n: usize) -> Result<Work<T>> {
    let mut out = Work::<T>::new(m, n)?;
    let dst = out.buf.as_mut_slice::<T>();
    for i0 in (0..m).step_by(TILE) {
        for j0 in (0..n).step_by(TILE) {
            for j in j0..(j0 + TILE).min(n) {
                for i in i0..(i0 + TILE).min(m) {
                    dst[j * m + i] = data[i * n + j];
                }
            }
        }
    }
    Ok(out)
}

/// A matrix's entries, row-major.
fn to_rows<T: Float>(x: MatRef<'_, T>) -> Result<HostBuffer> {
    let (m, n) = (x.nrows(), x.ncols());
    let mut buf = HostBuffer::for_elements::<T>(m * n)?;
    let out = buf.as_mut_slice::<T>();
    for i0 in (0..m).step_by(TILE) {
        for j0 in (0..n).step_by(TILE) {
            for j in j0..(j0 + TILE).min(n) {
                for i in i0..(i0 + TILE).min(m) {
                    out[i * n + j] = x[(i, j)];
                }
            }
        }
    }
    Ok(buf)
}

/// The transpose of a row-major `m×n` slice, column-major: the same
/// memory order, so a straight copy.
fn transpose_of<T: Float>(data: &[T], m: usize, n: usize) -> Result<Work<T>> {
    let mut w = Work::<T>::new(n, m)?;
    w.buf.as_mut_slice::<T>().copy_from_slice(data);
    Ok(w)
}

/// The lower (or upper) triangle of a row-major square slice, the other
/// entries zero.
fn triangle<T: Float>(data: &[T], n: usize, lower: bool) -> Result<Work<T>> {
    let mut t = to_mat(data, n, n)?;
    let mut m = t.as_mut();
    for j in 0..n {
        let (lo, hi) = if lower { (0, j) } else { (j + 1, n) };
        for i in lo..hi {
            m[(i, j)] = T::from_f64(0.0);
        }
    }
    Ok(t)
}

/// An LU factorization with partial pivoting: packed factors, the row
/// permutation (forward and inverse), and the number of row swaps.
struct Lu<T: Float> {
    lu: Work<T>,
    fwd: Vec<usize>,
    bwd: Vec<usize>,
    swaps: usize,
}

impl<T: Float> Lu<T> {
    /// The factors of the row-major matrix `a`.
    fn new(a: &[T], n: usize, par: Par) -> Result<Lu<T>> {
        Lu::of(to_mat(a, n, n)?, par)
    }

    /// The factors of `a`'s transpose, which need no transposing copy:
    /// enough for solves (`A X = B` is `(Aᵀ)ᵀ X = B`), inverses and
    /// determinants.
    fn of_transpose(a: &[T], n: usize, par: Par) -> Result<Lu<T>> {
        Lu::of(transpose_of(a, n, n)?, par)
    }

    fn of(mut lu: Work<T>, par: Par) -> Result<Lu<T>> {
        let n = lu.rows;
        let (mut fwd, mut bwd) = (vec![0usize; n], vec![0usize; n]);
        let mut mem =
            scratch(lu::partial_pivoting::factor::lu_in_place_scratch::<usize, T>(n, n, par, Default::default()))?;
        let (info, _) = lu::partial_pivoting::factor::lu_in_place(
            lu.as_mut(),
            &mut fwd,
            &mut bwd,
            par,
            stack(&mut mem),
            Default::default(),
        );
        Ok(Lu { lu, fwd, bwd, swaps: info.transposition_count })
    }

    /// Whether a pivot is exactly zero (the matrix is singular).
    fn singular(&self) -> bool {
        let lu = self.lu.as_ref();
        (0..lu.nrows()).any(|i| lu[(i, i)] == T::from_f64(0.0))
    }

    fn perm(&self) -> faer::perm::PermRef<'_, usize> {
        faer::perm::PermRef::new_checked(&self.fwd, &self.bwd, self.fwd.len())
    }

    /// `X` with `op(A) X = rhs`, in place.
    fn solve(&self, rhs: MatMut<'_, T>, transpose: bool, par: Par) -> Result<()> {
        // The unit-lower solve reads below the diagonal only, the upper
        // solve on and above it: the packed factors serve as both.
        let (l, u) = (self.lu.as_ref(), self.lu.as_ref());
        let n = self.lu.rows;
        use lu::partial_pivoting::solve as s;
        type Scratch = fn(usize, usize, Par) -> faer::dyn_stack::StackReq;
        type Solver<T> = fn(
            MatRef<'_, T>,
            MatRef<'_, T>,
            faer::perm::PermRef<'_, usize>,
            Conj,
            faer::MatMut<'_, T>,
            Par,
            &mut MemStack,
        );
        let (scratch, solver): (Scratch, Solver<T>) = if transpose {
            (s::solve_transpose_in_place_scratch::<usize, T>, s::solve_transpose_in_place_with_conj::<usize, T>)
        } else {
            (s::solve_in_place_scratch::<usize, T>, s::solve_in_place_with_conj::<usize, T>)
        };
        let mut mem = self::scratch(scratch(n, rhs.ncols(), par))?;
        solver(l, u, self.perm(), Conj::No, rhs, par, stack(&mut mem));
        Ok(())
    }

    /// The determinant's sign (0 when singular) and the log of its magnitude.
    fn slogdet(&self) -> (T, T) {
        let mut sign = if self.swaps.is_multiple_of(2) { 1.0 } else { -1.0 };
        let mut log = 0.0f64;
        let lu = self.lu.as_ref();
        for i in 0..lu.nrows() {
            let d = lu[(i, i)].to_f64();
            if d == 0.0 || d.is_nan() {
                return if d.is_nan() {
                    (T::from_f64(f64::NAN), T::from_f64(f64::NAN))
                } else {
                    (T::from_f64(0.0), T::from_f64(f64::NEG_INFINITY))
                };
            }
            if d < 0.0 {
                sign = -sign;
            }
            log += d.abs().ln();
        }
        (T::from_f64(sign), T::from_f64(log))
    }

    /// The determinant, as the product of the pivots in `T` (so that it
    /// overflows and underflows as the product does).
    fn det(&self) -> T {
        let mut d = if self.swaps.is_multiple_of(2) { T::from_f64(1.0) } else { T::from_f64(-1.0) };
        let lu = self.lu.as_ref();
        for i in 0..lu.nrows() {
            d *= lu[(i, i)];
        }
        d
    }
}

fn not_invertible(name: &str) -> Error {
    Error::invalid(format!("{name}: the input is not invertible (an LU pivot is zero)"))
}

/// One matrix `a` (`m×n`, row-major) of op `f`, with right-hand sides `b`
/// (`n×k`) for the solves.
fn matrix<T: Float>(f: LinalgOp, a: &[T], m: usize, n: usize, b: &[T], k: usize, par: Par) -> Result<Parts> {
    let name = f.type_name();
    let mut parts: Parts = SmallVec::new();
    match f {
        LinalgOp::Cholesky => {
            if (0..n).any(|i| a[i * n..=i * n + i].iter().any(|x| x.to_f64().is_nan())) {
                return Err(not_positive_definite(name));
            }
            // Factor in place in a row-major view of a straight copy (faer
            // reads the view's lower triangle, A's): the buffer then holds
            // L row-major, with A's upper triangle to clear.
            let mut l = transpose_of(a, n, n)?;
            let mut mem = scratch(cholesky::llt::factor::cholesky_in_place_scratch::<T>(n, par, Default::default()))?;
            cholesky::llt::factor::cholesky_in_place(
                l.as_mut().transpose_mut(),
                Default::default(),
                par,
                stack(&mut mem),
                Default::default(),
            )
            .map_err(|_| not_positive_definite(name))?;
            let rows = l.buf.as_mut_slice::<T>();
            for i in 0..n {
                rows[i * n + i + 1..(i + 1) * n].fill(T::from_f64(0.0));
            }
            parts.push(l.buf);
        }
        LinalgOp::TriangularSolve { lower, adjoint } => {
            let t = triangle(a, n, lower)?;
            let mut x = to_mat(b, n, k)?;
            let t = if adjoint { t.as_ref().transpose() } else { t.as_ref() };
            if lower != adjoint {
                triangular_solve::solve_lower_triangular_in_place(t, x.as_mut(), par);
            } else {
                triangular_solve::solve_upper_triangular_in_place(t, x.as_mut(), par);
            }
            parts.push(to_rows(x.as_ref())?);
        }
        LinalgOp::Solve { adjoint } => {
            let lu = Lu::of_transpose(a, n, par)?;
            if lu.singular() {
                return Err(not_invertible(name));
            }
            let mut x = to_mat(b, n, k)?;
            lu.solve(x.as_mut(), !adjoint, par)?;
            parts.push(to_rows(x.as_ref())?);
        }
        LinalgOp::Inv { adjoint } => {
            // With M = Aᵀ: inv(M) is inv(A)ᵀ, and inv(Mᵀ) is inv(A).
            let lu = Lu::of_transpose(a, n, par)?;
            if lu.singular() {
                return Err(not_invertible(name));
            }
            let mut x = Work::<T>::identity(n, n)?;
            lu.solve(x.as_mut(), adjoint, par)?;
            // inv(A)ᵀ column-major is inv(A) row-major: the buffer as it is.
            parts.push(x.buf);
        }
        LinalgOp::Lu => {
            let lu = Lu::new(a, n, par)?;
            parts.push(to_rows(lu.lu.as_ref())?);
            parts.push(vector(lu.fwd.iter().map(|&p| T::from_f64(p as f64)))?);
        }
        LinalgOp::Det => {
            let lu = Lu::of_transpose(a, n, par)?;
            parts.push(vector(std::iter::once(lu.det()))?);
        }
        LinalgOp::Slogdet => {
            let lu = Lu::of_transpose(a, n, par)?;
            let (s, l) = lu.slogdet();
            parts.push(vector(std::iter::once(s))?);
            parts.push(vector(std::iter::once(l))?);
        }
        LinalgOp::Qr { full_matrices } => {
            let (q, r) = qr_factors(a, m, n, full_matrices, par)?;
            parts.push(to_rows(q.as_ref())?);
            parts.push(to_rows(r.as_ref())?);
        }
        LinalgOp::Svd { full_matrices, compute_uv } => {
            let x = to_mat(a, m, n)?;
            let size = m.min(n);
            let mut s = faer::diag::Diag::<T>::zeros(size);
            let vectors = match (compute_uv, full_matrices) {
                (false, _) => svd::ComputeSvdVectors::No,
                (true, true) => svd::ComputeSvdVectors::Full,
                (true, false) => svd::ComputeSvdVectors::Thin,
            };
            let (uc, vc) = if full_matrices { (m, n) } else { (size, size) };
            let (mut u, mut v) = if compute_uv {
                (Work::<T>::zeros(m, uc)?, Work::<T>::zeros(n, vc)?)
            } else {
                (Work::<T>::zeros(0, 0)?, Work::<T>::zeros(0, 0)?)
            };
            if has_non_finite(a) {
                s.column_vector_mut().fill(T::from_f64(f64::NAN));
                u.as_mut().fill(T::from_f64(f64::NAN));
                v.as_mut().fill(T::from_f64(f64::NAN));
            } else {
                let mut mem = scratch(svd::svd_scratch::<T>(m, n, vectors, vectors, par, Default::default()))?;
                let (uo, vo) = if compute_uv { (Some(u.as_mut()), Some(v.as_mut())) } else { (None, None) };
                svd::svd(x.as_ref(), s.as_mut(), uo, vo, par, stack(&mut mem), Default::default())
                    .map_err(|_| Error::invalid(format!("{name}: the SVD did not converge")))?;
            }
            parts.push(vector((0..size).map(|i| s[i]))?);
            if compute_uv {
                parts.push(to_rows(u.as_ref())?);
                parts.push(to_rows(v.as_ref())?);
            }
        }
        LinalgOp::Eigh { compute_v } => {
            // A row-major view of a straight copy: faer reads its lower
            // triangle, A's. (Writing the eigenvectors through a row-major
            // view as well measured 5x slower than the transposing copy.)
            let x = transpose_of(a, n, n)?;
            let mut w = faer::diag::Diag::<T>::zeros(n);
            let mut vt = if compute_v { Work::<T>::zeros(n, n)? } else { Work::<T>::zeros(0, 0)? };
            if has_non_finite(a) {
                w.column_vector_mut().fill(T::from_f64(f64::NAN));
                vt.as_mut().fill(T::from_f64(f64::NAN));
            } else {
                let vectors = if compute_v { evd::ComputeEigenvectors::Yes } else { evd::ComputeEigenvectors::No };
                let mut mem = scratch(evd::self_adjoint_evd_scratch::<T>(n, vectors, par, Default::default()))?;
                let vo = if compute_v { Some(vt.as_mut()) } else { None };
                evd::self_adjoint_evd(x.as_ref().transpose(), w.as_mut(), vo, par, stack(&mut mem), Default::default())
                    .map_err(|_| Error::invalid(format!("{name}: the eigendecomposition did not converge")))?;
            }
            parts.push(vector((0..n).map(|i| w[i]))?);
            if compute_v {
                parts.push(to_rows(vt.as_ref())?);
            }
        }
        LinalgOp::Expm => parts.push(to_rows(expm(a, n, par)?.as_ref())?),
    }
    Ok(parts)
}

fn not_positive_definite(name: &str) -> Error {
    Error::invalid(format!("{name} was not successful: the input is not symmetric positive definite"))
}

fn has_non_finite<T: Float>(a: &[T]) -> bool {
    a.iter().any(|x| !x.to_f64().is_finite())
}

/// Householder QR: `Q` (`m×m`, or `m×k` thin) and `R` (`m×n`, or `k×n`).
fn qr_factors<T: Float>(a: &[T], m: usize, n: usize, full: bool, par: Par) -> Result<(Work<T>, Mat<T>)> {
    let size = m.min(n);
    let mut x = to_mat(a, m, n)?;
    let block = qr::no_pivoting::factor::recommended_block_size::<T>(m, n);
    let mut coeff = Mat::<T>::zeros(block, size);
    {
        let mut mem = scratch(qr::no_pivoting::factor::qr_in_place_scratch::<T>(m, n, block, par, Default::default()))?;
        qr::no_pivoting::factor::qr_in_place(x.as_mut(), coeff.as_mut(), par, stack(&mut mem), Default::default());
    }
    let qc = if full { m } else { size };
    let rr = if full { m } else { size };
    let xr = x.as_ref();
    let r = Mat::from_fn(rr, n, |i, j| if j >= i && i < size { xr[(i, j)] } else { T::from_f64(0.0) });
    let mut q = Work::<T>::identity(m, qc)?;
    if size > 0 {
        let basis = xr.get(.., ..size);
        let mut mem =
            scratch(householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<T>(m, block, qc))?;
        householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
            basis,
            coeff.as_ref(),
            Conj::No,
            q.as_mut(),
            par,
            stack(&mut mem),
        );
    }
    Ok((q, r))
}

/// `c = a b`.
fn mul<T: Float>(a: &Mat<T>, b: &Mat<T>, par: Par) -> Mat<T> {
    let mut c = Mat::<T>::zeros(a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), T::from_f64(1.0), par);
    c
}

/// The matrix exponential by scaling and squaring: the Padé approximant of
/// the smallest order whose error bound the 1-norm allows (Higham 2005, with
/// TensorFlow's thresholds per dtype), of `A / 2^s`, squared `s` times.
fn expm<T: Float>(a: &[T], n: usize, par: Par) -> Result<Mat<T>> {
    if has_non_finite(a) {
        return Ok(Mat::from_fn(n, n, |_, _| T::from_f64(f64::NAN)));
    }
    let x = to_mat(a, n, n)?;
    let x = x.as_ref();
    let norm1 = (0..n).map(|j| (0..n).map(|i| x[(i, j)].to_f64().abs()).sum::<f64>()).fold(0.0, f64::max);
    let f32_thresholds = [(4.258_730_016_922_831e-1, 3usize), (1.880_152_677_804_762, 5)];
    let f64_thresholds = [
        (1.495_585_217_958_292e-2, 3usize),
        (2.539_398_330_063_23e-1, 5),
        (9.504_178_996_162_932e-1, 7),
        (2.097_847_961_257_068, 9),
    ];
    let (thresholds, top, top_theta) = if T::DTYPE == DType::F32 {
        (&f32_thresholds[..], 7usize, 3.925_724_783_138_66)
    } else {
        (&f64_thresholds[..], 13usize, 5.371_920_351_148_152)
    };
    let (order, squarings) = match thresholds.iter().find(|(t, _)| norm1 < *t) {
        Some(&(_, order)) => (order, 0),
        None => (top, (norm1 / top_theta).log2().ceil().max(0.0) as i32),
    };
    let scale = T::from_f64(0.5f64.powi(squarings));
    let x = Mat::from_fn(n, n, |i, j| x[(i, j)] * scale);
    let b: &[f64] = match order {
        3 => &[120.0, 60.0, 12.0, 1.0],
        5 => &[30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0],
        7 => &[17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0],
        9 => &[
            17643225600.0,
            8821612800.0,
            2075673600.0,
            302702400.0,
            30270240.0,
            2162160.0,
            110880.0,
            3960.0,
            90.0,
            1.0,
        ],
        _ => &[
            64764752532480000.0,
            32382376266240000.0,
            7771770303897600.0,
            1187353796428800.0,
            129060195264000.0,
            10559470521600.0,
            670442572800.0,
            33522128640.0,
            1323241920.0,
            40840800.0,
            960960.0,
            16380.0,
            182.0,
            1.0,
        ],
    };
    let c = |k: usize| T::from_f64(b[k]);
    let eye = Mat::<T>::identity(n, n);
    let lin = |terms: &[(usize, &Mat<T>)], with_eye: Option<usize>| -> Mat<T> {
        Mat::from_fn(n, n, |i, j| {
            let mut s = with_eye.map_or(T::from_f64(0.0), |k| c(k) * eye[(i, j)]);
            for &(k, p) in terms {
                s += c(k) * p[(i, j)];
            }
            s
        })
    };
    let x2 = mul(&x, &x, par);
    let (u, v) = if order == 13 {
        let x4 = mul(&x2, &x2, par);
        let x6 = mul(&x4, &x2, par);
        let inner_u = lin(&[(13, &x6), (11, &x4), (9, &x2)], None);
        let u = mul(&x, &{ mul(&x6, &inner_u, par) + lin(&[(7, &x6), (5, &x4), (3, &x2)], Some(1)) }, par);
        let inner_v = lin(&[(12, &x6), (10, &x4), (8, &x2)], None);
        let v = mul(&x6, &inner_v, par) + lin(&[(6, &x6), (4, &x4), (2, &x2)], Some(0));
        (u, v)
    } else {
        let mut powers = vec![x2.clone()];
        while powers.len() < order / 2 {
            let next = mul(powers.last().unwrap_or(&x2), &x2, par);
            powers.push(next);
        }
        let odd: Vec<(usize, &Mat<T>)> = powers.iter().enumerate().map(|(i, p)| (2 * i + 3, p)).collect();
        let even: Vec<(usize, &Mat<T>)> = powers.iter().enumerate().map(|(i, p)| (2 * i + 2, p)).collect();
        let u = mul(&x, &lin(&odd, Some(1)), par);
        let v = lin(&even, Some(0));
        (u, v)
    };
    // R = (V - U)^-1 (V + U).
    let p = &v + &u;
    let q = &v - &u;
    let lu = Lu::of(Work::copy_of(q.as_ref())?, par)?;
    let mut r = p;
    lu.solve(r.as_mut(), false, par)?;
    for _ in 0..squarings {
        // Past overflow, more squarings change nothing but cost O(n³) each.
        if (0..n).any(|j| r.col(j).iter().any(|v| !v.to_f64().is_finite())) {
            break;
        }
        r = mul(&r, &r, par);
    }
    Ok(r)
}
