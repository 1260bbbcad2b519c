//! Batched matrix multiplication: the `gemm` crate for floats (packed,
//! vectorised, parallel), a blocked loop for integers.

use super::copy::{copy, materialize};
use super::elementwise::cast;
use super::parallel::Shared;
use crate::error::{bail, Result};
use crate::op::Meta;
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

/// Columns per parallel task of one large product: wide enough that gemm's
/// packed panels pay for themselves (on a 2-core Sapphire Rapids, 256-wide
/// blocks ran 5-15% faster than gemm's own threading at n = 512..2048).
const SPLIT_COLUMNS: usize = 256;

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

/// Whether gemm would pick a path whose summation order depends on the
/// operands' memory layout: its dot-product kernels for small outputs and
/// its matrix-vector kernels. Only its packed path is layout-blind.
fn layout_sensitive(d: &Dims) -> bool {
    d.k > 2 && (d.m * d.n <= 16 * 16 || d.m <= 1 || d.n <= 1)
}

/// Whether `v`'s matrices have exactly row-major strides (what gemm then
/// sees is the same for every operand with these values).
fn is_row_major(v: &Value) -> bool {
    let r = v.shape().rank();
    let (rows, cols) = (v.shape()[r - 2], v.shape()[r - 1]);
    let expected = Shape::new(&[rows, cols]).contiguous_strides();
    v.layout.strides[r - 2..] == expected[..]
}

/// `op(v)` (the matrix transposed when `t`) with row-major matrices.
fn row_major(v: &Value, t: bool) -> Result<Value> {
    if !t && is_row_major(v) {
        return Ok(v.clone());
    }
    let r = v.shape().rank();
    let mut perm: Vec<usize> = (0..r).collect();
    if t {
        perm.swap(r - 2, r - 1);
    }
    copy(&v.view(v.layout.permute(&perm)))
}

pub(crate) fn matmul(a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
    let layout_free = !ta && !tb && is_row_major(a) && is_row_major(b);
    if a.dtype.is_float() && !layout_free && layout_sensitive(&dims(a, ta, &out.shape)) {
        // The same product must give the same bits however its operands are
        // laid out (a graph rewrite may hand over a view where eager code
        // had a copy): row-major operands for the layout-sensitive paths.
        return matmul_laid_out(&row_major(a, ta)?, &row_major(b, tb)?, false, false, out);
    }
    matmul_laid_out(a, b, ta, tb, out)
}

fn matmul_laid_out(a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
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

/// gemm's entry point for one element type (its argument order).
type GemmFn<T> = unsafe fn(
    usize,
    usize,
    usize,
    *mut T,
    isize,
    isize,
    bool,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    T,
    bool,
    bool,
    bool,
    gemm::Parallelism,
);

/// Float types gemm multiplies, with the kernels for each instruction set.
pub(crate) trait GemmFloat: Element {
    /// gemm's kernels for the level the CPU kernels run at: gemm detects
    /// the CPU itself and would pick AVX-512 whatever `RIVULET_SIMD` says.
    fn kernels() -> GemmFn<Self>;

    /// Whether faer multiplies this type ([`GemmFloat::product_on_all_threads`]).
    const FAER: bool = false;

    /// `dst = lhs · rhs` (`m×k` by `k×n`, `dst` row-major with row stride
    /// `dst_rs`) on all threads with faer's kernels.
    ///
    /// # Safety
    /// The pointers and strides describe matrices inside live allocations,
    /// strides non-negative, and `dst` aliases neither operand.
    #[allow(clippy::too_many_arguments)]
    unsafe fn product_on_all_threads(
        _m: usize,
        _n: usize,
        _k: usize,
        _dst: *mut Self,
        _dst_rs: usize,
        _lhs: *const Self,
        _lhs_strides: (isize, isize),
        _rhs: *const Self,
        _rhs_strides: (isize, isize),
    ) {
        unreachable!("only called for types with FAER")
    }
}

/// Whether large f32/f64 products use faer's x86 kernels (`private-gemm-x86`)
/// instead of gemm's: at the AVX2 level, on any x86 CPU (the level is chosen
/// only where the CPU has AVX2 and FMA). On a 2-core AVX2-only AMD EPYC two
/// threads ran 1.1-1.3x gemm's speed at n = 1024-2048, giving the same bits
/// as gemm and as faer on one thread (same depth order). The kernels are
/// called with their instruction set named, so `RIVULET_SIMD=avx2` measures
/// on an AVX-512 machine what an AVX2-only CPU runs. At the AVX-512 level
/// gemm's measured figures stand.
fn faer_for_large_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::simd::simd_level() == "avx2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// faer's AVX2 product for one float type (see
/// [`GemmFloat::product_on_all_threads`]), as `faer::linalg::matmul` calls
/// it on an AVX2-only CPU, on all of the pool's threads.
macro_rules! faer_product {
    ($t:ty, $dtype:ident) => {
        const FAER: bool = cfg!(target_arch = "x86_64");

        #[cfg(target_arch = "x86_64")]
        unsafe fn product_on_all_threads(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut $t,
            dst_rs: usize,
            lhs: *const $t,
            lhs_strides: (isize, isize),
            rhs: *const $t,
            rhs_strides: (isize, isize),
        ) {
            use private_gemm_x86::{Accum, DType, DstKind, IType, InstrSet};
            let alpha: $t = 1.0;
            // SAFETY: the caller's contract (three matrices in live
            // allocations, `dst` written by this call alone, strides in
            // elements); no index lists, no diagonal; the AVX2 level is only
            // chosen on CPUs with AVX2 and FMA.
            unsafe {
                private_gemm_x86::gemm(
                    DType::$dtype,
                    IType::U32,
                    InstrSet::Avx256,
                    m,
                    n,
                    k,
                    dst.cast(),
                    dst_rs as isize,
                    1,
                    std::ptr::null(),
                    std::ptr::null(),
                    DstKind::Full,
                    Accum::Replace,
                    lhs.cast(),
                    lhs_strides.0,
                    lhs_strides.1,
                    false,
                    std::ptr::null(),
                    0,
                    rhs.cast(),
                    rhs_strides.0,
                    rhs_strides.1,
                    false,
                    (&raw const alpha).cast(),
                    rayon::current_num_threads(),
                )
            }
        }
    };
}

/// The arguments of one gemm call (its order and meaning: `dst := alpha·dst +
/// beta·lhs·rhs`, strides as column then row stride).
struct GemmCall<T> {
    m: usize,
    n: usize,
    dst: *mut T,
    dst_cs: isize,
    dst_rs: isize,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
    conj_lhs: bool,
    conj_rhs: bool,
}

impl<T> GemmCall<T> {
    /// The same product oriented as gemm's own entry point hands it to its
    /// packed kernels: a column-major destination (a row-major one is
    /// computed as `dstᵀ = rhsᵀ·lhsᵀ`). The kernels read and write along
    /// columns; given a row-major destination as it is, they ran at
    /// 0.55-0.65x of gemm's own speed. gemm's entry point also flips
    /// negative strides; ours are negative only on axes of length 1, which
    /// are never stepped (`needs_copy`; `gemm_strided` takes `usize`).
    fn oriented(self) -> GemmCall<T> {
        if self.dst_cs.unsigned_abs() < self.dst_rs.unsigned_abs() {
            GemmCall {
                m: self.n,
                n: self.m,
                dst: self.dst,
                dst_cs: self.dst_rs,
                dst_rs: self.dst_cs,
                lhs: self.rhs,
                lhs_cs: self.rhs_rs,
                lhs_rs: self.rhs_cs,
                rhs: self.lhs,
                rhs_cs: self.lhs_rs,
                rhs_rs: self.lhs_cs,
                conj_lhs: self.conj_rhs,
                conj_rhs: self.conj_lhs,
            }
        } else {
            self
        }
    }
}

/// gemm's packed product instantiated with one of its kernel sets, as its
/// own dispatch does for the level it detects (orientation included).
/// `$n` is the kernels' vector width in elements (gemm's `gemm_def!`
/// multiplier times the register's).
macro_rules! gemm_with_kernels {
    ($name:ident, $t:ty, $simd:ty, $n:expr, $($kernels:ident)::+) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut $t,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const $t,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const $t,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: $t,
            beta: $t,
            conj_dst: bool,
            conj_lhs: bool,
            conj_rhs: bool,
            parallelism: gemm::Parallelism,
        ) {
            use gemm_common::simd::MixedSimd;
            use $($kernels)::+ as kernels;
            let Some(simd) = <$simd as MixedSimd<$t, $t, $t, $t>>::try_new() else {
                // Unreachable: the level was chosen from the same CPU features.
                // SAFETY: the caller's contract is gemm's.
                return unsafe {
                    gemm::gemm(
                        m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, alpha,
                        beta, conj_dst, conj_lhs, conj_rhs, parallelism,
                    )
                };
            };
            let c = GemmCall {
                m,
                n,
                dst,
                dst_cs,
                dst_rs,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                conj_lhs,
                conj_rhs,
            }
            .oriented();
            // SAFETY: the caller's contract is gemm's (`oriented` describes
            // the same elements); the kernels are the ones gemm pairs with
            // this instruction set and width.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    $t,
                    { $n },
                    { kernels::MR_DIV_N * $n },
                    { kernels::NR },
                    { kernels::MR_DIV_N },
                    { kernels::H_M },
                    { kernels::H_N },
                >(
                    simd,
                    c.m,
                    c.n,
                    k,
                    c.dst,
                    c.dst_cs,
                    c.dst_rs,
                    read_dst,
                    c.lhs,
                    c.lhs_cs,
                    c.lhs_rs,
                    c.rhs,
                    c.rhs_cs,
                    c.rhs_rs,
                    alpha,
                    beta,
                    conj_dst,
                    c.conj_lhs,
                    c.conj_rhs,
                    |a, b, c| a * b + c,
                    &kernels::UKR,
                    &kernels::H_UKR,
                    false,
                    parallelism,
                )
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
gemm_with_kernels!(gemm_f32_avx2, f32, gemm_common::simd::V3, 8, gemm_f32::microkernel::fma::f32);
#[cfg(target_arch = "x86_64")]
gemm_with_kernels!(gemm_f64_avx2, f64, gemm_common::simd::V3, 4, gemm_f64::microkernel::fma::f64);
#[cfg(target_arch = "x86_64")]
gemm_with_kernels!(gemm_f32_scalar, f32, gemm_common::simd::Scalar, 1, gemm_f32::microkernel::scalar::f32);
#[cfg(target_arch = "x86_64")]
gemm_with_kernels!(gemm_f64_scalar, f64, gemm_common::simd::Scalar, 1, gemm_f64::microkernel::scalar::f64);

impl GemmFloat for f32 {
    faer_product!(f32, F32);

    fn kernels() -> GemmFn<f32> {
        #[cfg(target_arch = "x86_64")]
        match super::simd::simd_level() {
            "avx2" => return gemm_f32_avx2,
            "scalar" => return gemm_f32_scalar,
            _ => {}
        }
        gemm::gemm::<f32>
    }
}

impl GemmFloat for f64 {
    faer_product!(f64, F64);

    fn kernels() -> GemmFn<f64> {
        #[cfg(target_arch = "x86_64")]
        match super::simd::simd_level() {
            "avx2" => return gemm_f64_avx2,
            "scalar" => return gemm_f64_scalar,
            _ => {}
        }
        gemm::gemm::<f64>
    }
}

/// Half precision keeps gemm's own choice of kernels: `RIVULET_SIMD` does
/// not reach f16 products (only f32 and f64 ones).
impl GemmFloat for half::f16 {
    fn kernels() -> GemmFn<half::f16> {
        gemm::gemm::<half::f16>
    }
}

/// A matrix inside a slice: element `(i, j)` is `data[i * rs + j * cs]`.
pub(crate) struct Strided<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// `c = a · b`, or `c += a · b` with `accumulate`, on the calling thread, for
/// `m × k` and `k × n` operands with any strides and a row-major `c` of row
/// stride `c_rs`: the products the convolutions run on their blocks. Panics
/// only if a caller passes slices too short for the shapes (checked first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided<T: GemmFloat>(
    m: usize,
    n: usize,
    k: usize,
    a: Strided<'_, T>,
    b: Strided<'_, T>,
    c: &mut [T],
    c_rs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, c_rs, 1) < c.len(), "gemm_strided: output too short");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * c_rs..i * c_rs + n].fill(T::from_f64(0.0));
            }
        }
        return;
    }
    assert!(
        last(m, k, a.rs, a.cs) < a.data.len() && last(k, n, b.rs, b.cs) < b.data.len(),
        "gemm_strided: operand too short"
    );
    // SAFETY: the asserts above keep every index of the three matrices
    // inside their slices; `c` is borrowed mutably, so no one else reads it.
    unsafe {
        (T::kernels())(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn gemm_batched<T: GemmFloat>(a: &Value, b: &Value, ta: bool, tb: bool, out_shape: &Shape) -> Result<Value> {
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
    let gemm = T::kernels();
    // Columns `j0..j0 + w` of product `i`, written into `c`, the product's
    // m x n row-major block.
    let columns = |i: usize, c: Shared<T>, j0: usize, w: usize, par: gemm::Parallelism| {
        let idx = d.batch.unravel(i);
        let (offa, offb) = (oa.batch.offset_of(&idx), ob.batch.offset_of(&idx));
        // SAFETY: offsets and strides come from valid layouts of these
        // buffers, positive within a matrix (see `needs_copy`), so every
        // index of the m x k matrix and of the k x w columns from j0 is in
        // bounds; `c` is an m x n row-major block of which this call alone
        // writes columns j0..j0 + w; the types are gemm's.
        unsafe {
            gemm(
                d.m,
                w,
                d.k,
                c.0.add(j0),
                1,
                d.n as isize,
                false,
                abuf.as_ptr().add(offa),
                oa.cs,
                oa.rs,
                bbuf.as_ptr().add(offb).offset(j0 as isize * ob.cs),
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
    let blocks = d.n.div_ceil(SPLIT_COLUMNS);
    let one_thread = gemm::Parallelism::None;
    if big && blocks > 1 && T::FAER && faer_for_large_products() {
        for (i, c) in out.chunks_mut(mn).enumerate() {
            let idx = d.batch.unravel(i);
            let (offa, offb) = (oa.batch.offset_of(&idx), ob.batch.offset_of(&idx));
            // SAFETY: as in `columns`: valid layouts of these buffers with
            // positive matrix strides; `c` is this product's own block.
            unsafe {
                T::product_on_all_threads(
                    d.m,
                    d.n,
                    d.k,
                    c.as_mut_ptr(),
                    d.n,
                    abuf.as_ptr().add(offa),
                    (oa.rs, oa.cs),
                    bbuf.as_ptr().add(offb),
                    (ob.rs, ob.cs),
                );
            }
        }
    } else if big && blocks > 1 {
        // One product at a time, its columns in parallel: each task packs
        // its own columns of b and all of a, with no synchronisation inside
        // the product (gemm's own threading joins after every depth block
        // and splits work evenly, which stalls on a busy core). Every
        // element is summed the same way whatever the split.
        let width = d.n.div_ceil(blocks).next_multiple_of(16).min(d.n);
        for (i, c) in out.chunks_mut(mn).enumerate() {
            let c = Shared(c.as_mut_ptr());
            (0..d.n.div_ceil(width)).into_par_iter().for_each(|b| {
                let j0 = b * width;
                columns(i, c, j0, width.min(d.n - j0), one_thread);
            });
        }
    } else if big || d.count == 1 {
        // Narrow products: gemm splits the rows itself.
        let par = if big { gemm::Parallelism::Rayon(0) } else { one_thread };
        for (i, c) in out.chunks_mut(mn).enumerate() {
            columns(i, Shared(c.as_mut_ptr()), 0, d.n, par);
        }
    } else {
        out.par_chunks_mut(mn).enumerate().for_each(|(i, c)| columns(i, Shared(c.as_mut_ptr()), 0, d.n, one_thread));
    }
    Ok(Value::from_buffer(T::DTYPE, out_shape.clone(), buf))
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
        let idx = d.batch.unravel(bi);
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
