//! Batched matrix multiplication: the `gemm` crate for floats (packed,
//! vectorised, parallel), a blocked loop for integers.

use super::elementwise::cast;
use super::movement::{copy, materialize};
use crate::error::{bail, Result};
use crate::ops::Meta;
use crate::tensor::dtype::Element;
use crate::tensor::layout::Layout;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Shape, Value};
use rayon::prelude::*;

/// Work (m * n * k) above which one product uses all threads. Below it the
/// threads' hand-offs cost more than they save: on a 2-core Zen 4, gemm's
/// 128x512x10 and 512x10x128 products (0.65 M) run 1.0-2.2x faster on one
/// thread, and 128x512x32 (2 M) 1.5x faster on two.
const PARALLEL_FLOPS: usize = 1 << 20;

/// Depth below which gemm reads a column-major right-hand side directly:
/// packing a short depth costs little, and a row-major copy of a wide,
/// shallow operand (say 10 x 512) costs about as much as the product.
const COPY_RHS_MIN_DEPTH: usize = 32;

/// One operand seen as a batch of matrices: batch layout plus matrix strides.
struct Operand<'a> {
    value: &'a Value,
    batch: Layout,
    /// Row and column strides of the logical (possibly transposed) matrix.
    rs: isize,
    cs: isize,
}

fn operand<'a>(v: &'a Value, transpose: bool, batch_shape: &Shape) -> Result<Operand<'a>> {
    let r = v.shape().rank();
    let (s0, s1) = (v.layout.strides[r - 2], v.layout.strides[r - 1]);
    let (rs, cs) = if transpose { (s1, s0) } else { (s0, s1) };
    let batch_only = Layout {
        shape: Shape::new(&v.shape()[..r - 2]),
        strides: v.layout.strides[..r - 2].into(),
        offset: v.layout.offset,
    };
    Ok(Operand { value: v, batch: batch_only.broadcast_to(batch_shape)?, rs, cs })
}

/// Matrix strides gemm can read: positive, and not aliasing rows (no broadcast inside a matrix).
fn needs_copy(v: &Value) -> bool {
    let r = v.shape().rank();
    let (s0, s1) = (v.layout.strides[r - 2], v.layout.strides[r - 1]);
    let (d0, d1) = (v.shape()[r - 2], v.shape()[r - 1]);
    (s0 <= 0 && d0 > 1) || (s1 <= 0 && d1 > 1)
}

/// Whether op(b) is stored column by column (unit row stride) and the
/// product is big and deep enough for a row-major copy of it to pay for itself.
fn column_major_rhs(b: &Value, tb: bool, d: &Dims) -> bool {
    let r = b.shape().rank();
    let (s0, s1) = (b.layout.strides[r - 2], b.layout.strides[r - 1]);
    let (rs, cs) = if tb { (s1, s0) } else { (s0, s1) };
    rs == 1 && cs != 1 && d.k >= COPY_RHS_MIN_DEPTH && d.n > 1 && d.m * d.n * d.k >= PARALLEL_FLOPS
}

pub(crate) fn matmul(a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
    if needs_copy(a) {
        return matmul(&materialize(a)?, b, ta, tb, out);
    }
    if needs_copy(b) {
        return matmul(a, &materialize(b)?, ta, tb, out);
    }
    if a.dtype.is_float() && column_major_rhs(b, tb, &dims(a, ta, &out.shape)) {
        // gemm runs several times slower with a column-major right-hand side
        // (e.g. `dy @ w^T` in every backward pass) than with a row-major one;
        // writing op(b) out row-major costs one pass over b.
        let r = b.shape().rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        let bt = copy(&b.view(b.layout.permute(&perm)))?;
        return matmul(a, &bt, ta, !tb, out);
    }
    match a.dtype {
        DType::F32 => gemm_batched::<f32>(a, b, ta, tb, &out.shape),
        DType::F64 => gemm_batched::<f64>(a, b, ta, tb, &out.shape),
        DType::F16 => gemm_batched::<half::f16>(a, b, ta, tb, &out.shape),
        DType::BF16 => {
            let r = matmul(
                &cast(a, DType::F32)?,
                &cast(b, DType::F32)?,
                ta,
                tb,
                &Meta::new(DType::F32, out.shape.clone()),
            )?;
            cast(&r, DType::BF16)
        }
        DType::I32 => int_batched::<i32>(a, b, ta, tb, &out.shape),
        DType::I64 => int_batched::<i64>(a, b, ta, tb, &out.shape),
        dt => bail!(dtype, "matmul does not accept {dt}"),
    }
}

struct Dims {
    m: usize,
    n: usize,
    k: usize,
    batch: Shape,
    count: usize,
}

fn dims(a: &Value, ta: bool, out_shape: &Shape) -> Dims {
    let ro = out_shape.rank();
    let ra = a.shape().rank();
    let k = if ta { a.shape()[ra - 2] } else { a.shape()[ra - 1] };
    let batch = Shape::new(&out_shape[..ro - 2]);
    let count = batch.numel_known();
    Dims { m: out_shape[ro - 2], n: out_shape[ro - 1], k, batch, count }
}

fn gemm_batched<T: Element>(a: &Value, b: &Value, ta: bool, tb: bool, out_shape: &Shape) -> Result<Value> {
    let d = dims(a, ta, out_shape);
    if d.m == 0 || d.n == 0 || d.k == 0 || d.count == 0 {
        return Ok(Value::from_buffer(T::DTYPE, out_shape.clone(), HostBuffer::zeroed::<T>(out_shape.numel_known())?));
    }
    // gemm overwrites the output (read_dst = false): no need to clear it.
    let mut buf = HostBuffer::for_elements::<T>(out_shape.numel_known())?;
    let (oa, ob) = (operand(a, ta, &d.batch)?, operand(b, tb, &d.batch)?);
    let (abuf, bbuf) = (oa.value.buffer::<T>(), ob.value.buffer::<T>());
    let mn = d.m * d.n;
    let big = d.m * d.n * d.k >= PARALLEL_FLOPS;
    let one = |i: usize, c: &mut [T], par: gemm::Parallelism| {
        let idx = unravel(i, &d.batch);
        let (offa, offb) = (oa.batch.offset_of(&idx), ob.batch.offset_of(&idx));
        // SAFETY: offsets and strides come from valid layouts of these buffers
        // (every index of the m x k and k x n matrices is in bounds), `c` is
        // an exclusive m x n row-major block, and the types are gemm's.
        unsafe {
            gemm::gemm::<T>(
                d.m,
                d.n,
                d.k,
                c.as_mut_ptr(),
                1,
                d.n as isize,
                false,
                abuf.as_ptr().add(offa),
                oa.cs,
                oa.rs,
                bbuf.as_ptr().add(offb),
                ob.cs,
                ob.rs,
                T::from_f64(0.0),
                T::from_f64(1.0),
                false,
                false,
                false,
                par,
            );
        }
    };
    let out = buf.as_mut_slice::<T>();
    if big || d.count == 1 {
        let par = if big { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
        for (i, c) in out.chunks_mut(mn).enumerate() {
            one(i, c, par);
        }
    } else {
        out.par_chunks_mut(mn).enumerate().for_each(|(i, c)| one(i, c, gemm::Parallelism::None));
    }
    Ok(Value::from_buffer(T::DTYPE, out_shape.clone(), buf))
}

/// Multi-index of batch `i` in `batch` (row-major).
fn unravel(mut i: usize, batch: &Shape) -> smallvec::SmallVec<[usize; 4]> {
    let mut idx: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::from_elem(0, batch.rank());
    for d in (0..batch.rank()).rev() {
        idx[d] = i % batch[d];
        i /= batch[d];
    }
    idx
}

trait IntMul: Element {
    fn mul_add(acc: Self, a: Self, b: Self) -> Self;
}
impl IntMul for i32 {
    #[inline(always)]
    fn mul_add(acc: i32, a: i32, b: i32) -> i32 {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}
impl IntMul for i64 {
    #[inline(always)]
    fn mul_add(acc: i64, a: i64, b: i64) -> i64 {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}

fn int_batched<T: IntMul>(a: &Value, b: &Value, ta: bool, tb: bool, out_shape: &Shape) -> Result<Value> {
    let d = dims(a, ta, out_shape);
    let mut buf = HostBuffer::zeroed::<T>(out_shape.numel_known())?;
    if d.m == 0 || d.n == 0 || d.k == 0 || d.count == 0 {
        return Ok(Value::from_buffer(T::DTYPE, out_shape.clone(), buf));
    }
    let (oa, ob) = (operand(a, ta, &d.batch)?, operand(b, tb, &d.batch)?);
    let (abuf, bbuf) = (oa.value.buffer::<T>(), ob.value.buffer::<T>());
    let mn = d.m * d.n;
    buf.as_mut_slice::<T>().par_chunks_mut(mn).enumerate().for_each(|(bi, c)| {
        let idx = unravel(bi, &d.batch);
        let (offa, offb) = (oa.batch.offset_of(&idx) as isize, ob.batch.offset_of(&idx) as isize);
        // i-p-j order: the inner loop runs along a row of b and of c.
        for i in 0..d.m {
            let crow = &mut c[i * d.n..(i + 1) * d.n];
            for p in 0..d.k {
                let av = abuf[(offa + i as isize * oa.rs + p as isize * oa.cs) as usize];
                for (j, cv) in crow.iter_mut().enumerate() {
                    let bv = bbuf[(offb + p as isize * ob.rs + j as isize * ob.cs) as usize];
                    *cv = T::mul_add(*cv, av, bv);
                }
            }
        }
    });
    Ok(Value::from_buffer(T::DTYPE, out_shape.clone(), buf))
}
