//! Products with a fused epilogue on cuBLASLt: `product + bias` as one
//! launch, where `FusedMatMul` is otherwise the cuBLAS product and a
//! generated bias-and-activation kernel.
//!
//! Only the bias epilogue is used by default. cuBLASLt documents its ReLU
//! epilogue only as `max(x, 0)`, leaving NaN unspecified (a hardware max
//! gives 0), where Rivulet's ReLU keeps NaN; its GELU is the tanh form,
//! not TensorFlow's exact one. So products with an activation keep the two
//! launches. `RIVULET_CUBLASLT=relu` turns the ReLU epilogue on, for a GPU
//! session to check and measure; `RIVULET_CUBLASLT=0` turns every epilogue
//! off. A product is described once per shape, alignments and
//! TensorFloat-32 setting: its descriptors and the algorithm cuBLASLt's
//! heuristic picks are cached, as are the shapes it refuses.

use super::gpu::Gpu;
use super::Gemm;
use crate::error::{Error, Result};
use crate::op::elementwise::UnaryOp;
use cudarc::cublaslt::sys as lt;
use rustc_hash::FxHashMap;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

/// What cuBLASLt adds to the product before writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Epilogue {
    /// `product + bias`, the bias broadcast over rows.
    Bias,
    /// `relu(product + bias)`.
    ReluBias,
}

impl Epilogue {
    /// The epilogue computing `activation(product + bias)`, where cuBLASLt
    /// has one (and the epilogues are on).
    pub fn of(activation: Option<UnaryOp>) -> Option<Epilogue> {
        Epilogue::under(mode(), activation)
    }

    fn under(mode: Mode, activation: Option<UnaryOp>) -> Option<Epilogue> {
        match (mode, activation) {
            (Mode::Off, _) => None,
            (_, None) => Some(Epilogue::Bias),
            // cuBLASLt's ReLU leaves NaN unspecified; Rivulet's keeps it
            // (as the unfused ops do), so ReLU stays in the generated
            // kernel unless asked for.
            (Mode::WithRelu, Some(UnaryOp::Relu)) => Some(Epilogue::ReluBias),
            (_, Some(_)) => None,
        }
    }

    fn code(self) -> lt::cublasLtEpilogue_t {
        match self {
            Epilogue::Bias => lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            Epilogue::ReluBias => lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
        }
    }
}

/// Which epilogues run on cuBLASLt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `RIVULET_CUBLASLT=0`: none.
    Off,
    /// The default: the bias alone.
    Bias,
    /// `RIVULET_CUBLASLT=relu`: the bias, and the bias then ReLU.
    WithRelu,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("RIVULET_CUBLASLT").as_deref() {
        Ok("0") => Mode::Off,
        Ok("relu") => Mode::WithRelu,
        _ => Mode::Bias,
    })
}

/// One operand as cuBLASLt sees it: column-major, `rows × cols` with
/// leading dimension `ld`, batches `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LtMatrix {
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
    pub stride: i64,
}

/// A row-major [`Gemm`] as cuBLASLt's column-major product. Row-major
/// `C[m, n] = op(A) op(B)` is column-major `Cᵀ[n, m] = op(B)ᵀ op(A)ᵀ`:
/// cuBLASLt's first operand is `B`, its second `A`, and a bias over `C`'s
/// columns is one over `Cᵀ`'s rows, as the epilogue adds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LtShape {
    /// Whether cuBLASLt's first operand (`B`) and second (`A`) are
    /// transposed.
    pub trans_first: bool,
    pub trans_second: bool,
    pub first: LtMatrix,
    pub second: LtMatrix,
    pub out: LtMatrix,
    pub batches: i32,
}

impl LtShape {
    /// The shape of `g`; `None` where the epilogue does not apply (an
    /// accumulating product) or the sizes exceed 32-bit batch counts.
    pub fn of<P: Copy>(g: &Gemm<P>) -> Option<LtShape> {
        if g.accumulate || !g.fits_cublas() {
            return None;
        }
        let (m, n, k) = (g.m as u64, g.n as u64, g.k as u64);
        // Stored `B` is op(B) = [k, n] row-major, i.e. [n, k] column-major;
        // transposed, the stored matrix is [n, k] row-major = [k, n] column-major.
        let first = LtMatrix {
            rows: if g.tb { k } else { n },
            cols: if g.tb { n } else { k },
            ld: g.ldb as i64,
            stride: g.sb as i64,
        };
        let second = LtMatrix {
            rows: if g.ta { m } else { k },
            cols: if g.ta { k } else { m },
            ld: g.lda as i64,
            stride: g.sa as i64,
        };
        let out = LtMatrix { rows: n, cols: m, ld: g.ldc as i64, stride: g.sc as i64 };
        Some(LtShape { trans_first: g.tb, trans_second: g.ta, first, second, out, batches: g.batches as i32 })
    }
}

/// The largest power of two up to 256 dividing `address` (cuBLASLt's
/// heuristic assumes 256-byte operands unless told).
pub(crate) fn alignment(address: u64) -> u32 {
    if address == 0 {
        return 256;
    }
    1u32 << address.trailing_zeros().min(8)
}

/// Cached products kept at most (then the cache starts again).
const MAX_PLANS: usize = 1024;

/// The bias alignment below which the epilogue is not used (cuBLASLt's
/// vectorised bias loads).
pub(crate) const BIAS_ALIGNMENT: u32 = 16;

/// What a cached product is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    shape: LtShape,
    epilogue: Epilogue,
    tf32: bool,
    /// Alignments of the first, second and output operands, and the bias.
    align: [u32; 4],
}

/// A product cuBLASLt agreed to run: its descriptors and algorithm.
struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    layouts: [lt::cublasLtMatrixLayout_t; 3],
    algo: lt::cublasLtMatmulAlgo_t,
}

/// The cuBLASLt handle and its cached products, used by one thread at a
/// time (under the GPU's mutex).
pub(crate) struct BlasLt {
    handle: lt::cublasLtHandle_t,
    /// `None`: cuBLASLt refused the shape; the caller keeps two launches.
    plans: FxHashMap<Key, Option<Plan>>,
}

// SAFETY: cuBLASLt handles and descriptors may move between threads; the
// mutex around them keeps their use to one thread at a time.
unsafe impl Send for BlasLt {}

/// A cuBLASLt status as a result.
fn check(what: &str, status: lt::cublasStatus_t) -> Result<()> {
    match status {
        lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS => Ok(()),
        s => Err(Error::device(format!("{what} failed: {s:?}"))),
    }
}

impl BlasLt {
    /// The handle, made now; an error saying so without libcublasLt.
    pub fn open() -> Result<BlasLt> {
        // SAFETY: only looks for the library (cudarc's loader panics without it).
        if !unsafe { lt::is_culib_present() } {
            return Err(Error::device("cuBLASLt (libcublasLt) was not found"));
        }
        let mut handle: lt::cublasLtHandle_t = std::ptr::null_mut();
        // SAFETY: an out-pointer to a handle.
        check("cublasLtCreate", unsafe { lt::cublasLtCreate(&mut handle) })?;
        Ok(BlasLt { handle, plans: FxHashMap::default() })
    }

    /// Describe the product of `key` and ask the heuristic for an
    /// algorithm; `Ok(None)` where cuBLASLt has none.
    fn describe(&self, key: &Key, workspace_bytes: usize) -> Result<Option<Plan>> {
        use lt::cublasLtMatmulDescAttributes_t as D;
        use lt::cublasLtMatmulPreferenceAttributes_t as P;
        use lt::cublasLtMatrixLayoutAttribute_t as L;
        let compute = if key.tf32 {
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let f32_type = lt::cudaDataType::CUDA_R_32F;
        let mut plan = Plan {
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            algo: lt::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        // SAFETY: out-pointers to descriptors, then attributes of the sizes
        // cuBLASLt documents (int32 operations, uint32 epilogue, int32 batch
        // count, int64 batch offsets, uint64 workspace, uint32 alignments);
        // everything made here is destroyed on failure (`Plan::drop`).
        unsafe {
            check("cublasLtMatmulDescCreate", lt::cublasLtMatmulDescCreate(&mut plan.desc, compute, f32_type))?;
            let set_desc = |attr: D, value: *const c_void, size: usize| {
                check(
                    "cublasLtMatmulDescSetAttribute",
                    lt::cublasLtMatmulDescSetAttribute(plan.desc, attr, value, size),
                )
            };
            let op = |t: bool| -> i32 { t as i32 };
            let (ta, tb) = (op(key.shape.trans_first), op(key.shape.trans_second));
            set_desc(D::CUBLASLT_MATMUL_DESC_TRANSA, &ta as *const i32 as _, 4)?;
            set_desc(D::CUBLASLT_MATMUL_DESC_TRANSB, &tb as *const i32 as _, 4)?;
            let epilogue = key.epilogue.code() as u32;
            set_desc(D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue as *const u32 as _, 4)?;
            // The heuristic sees a bias pointer of the launches' alignment;
            // each launch sets its own.
            let placeholder = key.align[3] as u64;
            set_desc(D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &placeholder as *const u64 as _, 8)?;
            let matrices = [key.shape.first, key.shape.second, key.shape.out];
            for (layout, m) in plan.layouts.iter_mut().zip(matrices) {
                check(
                    "cublasLtMatrixLayoutCreate",
                    lt::cublasLtMatrixLayoutCreate(layout, f32_type, m.rows, m.cols, m.ld),
                )?;
                if key.shape.batches > 1 {
                    let set = |attr: L, value: *const c_void, size: usize| {
                        check(
                            "cublasLtMatrixLayoutSetAttribute",
                            lt::cublasLtMatrixLayoutSetAttribute(*layout, attr, value, size),
                        )
                    };
                    set(L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &key.shape.batches as *const i32 as _, 4)?;
                    set(L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &m.stride as *const i64 as _, 8)?;
                }
            }
            let mut pref: lt::cublasLtMatmulPreference_t = std::ptr::null_mut();
            check("cublasLtMatmulPreferenceCreate", lt::cublasLtMatmulPreferenceCreate(&mut pref))?;
            let chosen = (|| -> Result<Option<lt::cublasLtMatmulAlgo_t>> {
                let set = |attr: P, value: *const c_void, size: usize| {
                    check(
                        "cublasLtMatmulPreferenceSetAttribute",
                        lt::cublasLtMatmulPreferenceSetAttribute(pref, attr, value, size),
                    )
                };
                let bytes = workspace_bytes as u64;
                set(P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes as *const u64 as _, 8)?;
                let aligned = [
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                ];
                let align = [key.align[0], key.align[1], key.align[2], key.align[2]];
                for (attr, a) in aligned.into_iter().zip(align.iter()) {
                    set(attr, a as *const u32 as _, 4)?;
                }
                let mut result = std::mem::zeroed::<lt::cublasLtMatmulHeuristicResult_t>();
                let mut count = 0i32;
                let [a, b, d] = plan.layouts;
                let status = lt::cublasLtMatmulAlgoGetHeuristic(
                    self.handle,
                    plan.desc,
                    a,
                    b,
                    d,
                    d,
                    pref,
                    1,
                    &mut result,
                    &mut count,
                );
                let ok = lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS;
                if status != ok || count < 1 || result.state != ok || result.workspaceSize > workspace_bytes {
                    // No algorithm: the two launches do it (nothing was queued).
                    log::debug!("cuBLASLt has no {:?} product for {:?}: {status:?}", key.epilogue, key.shape);
                    return Ok(None);
                }
                Ok(Some(result.algo))
            })();
            let _ = lt::cublasLtMatmulPreferenceDestroy(pref);
            match chosen? {
                Some(algo) => {
                    plan.algo = algo;
                    Ok(Some(plan))
                }
                None => Ok(None),
            }
        }
    }

    /// `epilogue(product + bias)` of `g` into `g.c`, queued on `stream`;
    /// `Ok(false)` where cuBLASLt refuses the product (nothing queued).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &mut self,
        g: &Gemm<u64>,
        epilogue: Epilogue,
        bias: u64,
        tf32: bool,
        workspace: u64,
        workspace_bytes: usize,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<bool> {
        let Some(shape) = LtShape::of(g) else { return Ok(false) };
        if alignment(bias) < BIAS_ALIGNMENT {
            return Ok(false);
        }
        let key =
            Key { shape, epilogue, tf32, align: [alignment(g.b), alignment(g.a), alignment(g.c), alignment(bias)] };
        if !self.plans.contains_key(&key) {
            if self.plans.len() >= MAX_PLANS {
                // Nothing queued reads a descriptor after it was queued.
                self.plans.clear();
            }
            let plan = self.describe(&key, workspace_bytes).unwrap_or_else(|e| {
                log::debug!("cuBLASLt: {}", e.message());
                None
            });
            self.plans.insert(key, plan);
        }
        let Some(Some(plan)) = self.plans.get(&key) else { return Ok(false) };
        let (one, zero) = (1f32, 0f32);
        let [first, second, out] = plan.layouts;
        // SAFETY: live descriptors of this product; the operands, bias and
        // workspace are live device buffers of the sizes the layouts say;
        // the scalars outlive the (host-pointer-mode) call.
        let status = unsafe {
            let set = lt::cublasLtMatmulDescSetAttribute(
                plan.desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &bias as *const u64 as _,
                8,
            );
            if set != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                // Nothing queued yet: the two launches do it.
                log::debug!("cuBLASLt: setting the bias pointer failed: {set:?}");
                return Ok(false);
            }
            lt::cublasLtMatmul(
                self.handle,
                plan.desc,
                &one as *const f32 as _,
                g.b as *const c_void,
                first,
                g.a as *const c_void,
                second,
                &zero as *const f32 as _,
                g.c as *const c_void,
                out,
                g.c as *mut c_void,
                out,
                &plan.algo,
                workspace as *mut c_void,
                workspace_bytes,
                stream as lt::cudaStream_t,
            )
        };
        use lt::cublasStatus_t as S;
        match status {
            S::CUBLAS_STATUS_SUCCESS => Ok(true),
            // Refusals of this product (nothing was queued): remember, and
            // let the caller fall back.
            S::CUBLAS_STATUS_NOT_SUPPORTED | S::CUBLAS_STATUS_INVALID_VALUE | S::CUBLAS_STATUS_ARCH_MISMATCH => {
                log::debug!("cuBLASLt refused a {epilogue:?} product of {shape:?}: {status:?}");
                self.plans.insert(key, None);
                Ok(false)
            }
            // Faults (a failed launch, memory, the library's state): errors.
            _ => check("cublasLtMatmul", status).map(|_| false),
        }
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: descriptors made by `describe` (null where creation
        // failed), destroyed once; no launch queued later uses them (a
        // launch reads its descriptors when it is queued).
        unsafe {
            for layout in self.layouts {
                if !layout.is_null() {
                    let _ = lt::cublasLtMatrixLayoutDestroy(layout);
                }
            }
            if !self.desc.is_null() {
                let _ = lt::cublasLtMatmulDescDestroy(self.desc);
            }
        }
    }
}

impl Gpu {
    /// `epilogue(product + bias)` of `g` on cuBLASLt, on this thread's
    /// stream; `Ok(false)` where cuBLASLt is missing or refuses it.
    pub fn matmul_epilogue(self: &Arc<Self>, g: &Gemm<u64>, epilogue: Epilogue, bias: u64, tf32: bool) -> Result<bool> {
        self.with_blas_lt(|lt, workspace, bytes, stream| lt.matmul(g, epilogue, bias, tf32, workspace, bytes, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLASLt's product as documented: column-major operands, `op` by
    /// the transpose flags, the bias added down each column of `D`, ReLU
    /// after. Run on the host over the row-major buffers of a [`Gemm`].
    fn lt_reference(s: &LtShape, a: &[f64], b: &[f64], bias: &[f64], relu: bool, c: &mut [f64]) {
        // D (rows × cols) = op(first) (rows × k) · op(second) (k × cols).
        let (rows, cols) = (s.out.rows as usize, s.out.cols as usize);
        let k = if s.trans_first { s.first.rows } else { s.first.cols } as usize;
        let at = |m: &LtMatrix, data: &[f64], batch: usize, i: usize, j: usize| {
            data[batch * m.stride as usize + i + j * m.ld as usize]
        };
        for batch in 0..s.batches as usize {
            for i in 0..rows {
                for j in 0..cols {
                    let mut sum = 0.0;
                    for p in 0..k {
                        let x = if s.trans_first { at(&s.first, b, batch, p, i) } else { at(&s.first, b, batch, i, p) };
                        let y =
                            if s.trans_second { at(&s.second, a, batch, j, p) } else { at(&s.second, a, batch, p, j) };
                        sum += x * y;
                    }
                    let v = sum + bias[i];
                    c[batch * s.out.stride as usize + i + j * s.out.ld as usize] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }

    /// The row-major product the [`Gemm`] means, plus the bias over columns.
    fn row_major(g: &Gemm<()>, a: &[f64], b: &[f64], bias: &[f64], relu: bool) -> Vec<f64> {
        let mut c = vec![f64::NAN; g.sc * g.batches.max(1)];
        for batch in 0..g.batches {
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut sum = 0.0;
                    for p in 0..g.k {
                        let x = if g.ta { a[batch * g.sa + p * g.lda + i] } else { a[batch * g.sa + i * g.lda + p] };
                        let y = if g.tb { b[batch * g.sb + j * g.ldb + p] } else { b[batch * g.sb + p * g.ldb + j] };
                        sum += x * y;
                    }
                    let v = sum + bias[j];
                    c[batch * g.sc + i * g.ldc + j] = if relu { v.max(0.0) } else { v };
                }
            }
        }
        c
    }

    /// The column-major description of each row-major product computes
    /// that product, bias over its columns: transposes, padded leading
    /// dimensions, batches.
    #[test]
    fn row_major_products_map_onto_cublaslt_column_major_with_the_bias_on_columns() {
        let mut checked = 0;
        for (m, n, k) in [(3, 5, 4), (1, 7, 2), (6, 1, 3), (4, 4, 1)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (pad, batches) in [(0, 1), (2, 1), (1, 3)] {
                    let lda = if ta { m } else { k } + pad;
                    let ldb = if tb { k } else { n } + pad;
                    let ldc = n + pad;
                    let rows_a = if ta { k } else { m };
                    let rows_b = if tb { n } else { k };
                    let g = Gemm {
                        m,
                        n,
                        k,
                        a: (),
                        lda,
                        sa: rows_a * lda + pad,
                        ta,
                        b: (),
                        ldb,
                        sb: rows_b * ldb,
                        tb,
                        c: (),
                        ldc,
                        sc: m * ldc + pad,
                        batches,
                        accumulate: false,
                    };
                    let s = LtShape::of(&g).expect("a plain product");
                    let a: Vec<f64> = (0..g.sa * batches).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
                    let b: Vec<f64> = (0..g.sb * batches).map(|i| ((i * 5) % 13) as f64 - 6.0).collect();
                    let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.5 - 1.0).collect();
                    for relu in [false, true] {
                        let want = row_major(&g, &a, &b, &bias, relu);
                        let mut got = vec![f64::NAN; want.len()];
                        lt_reference(&s, &a, &b, &bias, relu, &mut got);
                        // Compare only the elements of C (padding stays NaN in both).
                        let same = want.iter().zip(&got).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()));
                        assert!(same, "m {m} n {n} k {k} ta {ta} tb {tb} pad {pad} batches {batches} relu {relu}");
                        checked += 1;
                    }
                    assert_eq!((s.out.rows, s.out.cols), (n as u64, m as u64), "bias runs down Cᵀ's rows");
                    // Leading dimensions cover the stored rows.
                    for mat in [s.first, s.second, s.out] {
                        assert!(mat.ld as u64 >= mat.rows);
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 4 * 3 * 2);
    }

    #[test]
    fn epilogues_cover_the_bias_relu_only_when_asked_and_refuse_the_rest() {
        assert_eq!(Epilogue::under(Mode::Bias, None), Some(Epilogue::Bias));
        assert_eq!(Epilogue::under(Mode::Bias, Some(UnaryOp::Relu)), None, "NaN would become 0");
        assert_eq!(Epilogue::under(Mode::WithRelu, Some(UnaryOp::Relu)), Some(Epilogue::ReluBias));
        assert_eq!(Epilogue::under(Mode::Off, None), None);
        for f in [UnaryOp::Gelu, UnaryOp::Relu6, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Elu] {
            assert_eq!(Epilogue::under(Mode::WithRelu, Some(f)), None, "{f:?}");
        }
        // Accumulating products (filter gradients over blocks) keep cuBLAS.
        let g = Gemm {
            m: 2,
            n: 2,
            k: 2,
            a: (),
            lda: 2,
            sa: 4,
            ta: false,
            b: (),
            ldb: 2,
            sb: 4,
            tb: false,
            c: (),
            ldc: 2,
            sc: 4,
            batches: 1,
            accumulate: true,
        };
        assert_eq!(LtShape::of(&g), None);
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0x7f00_0000_0100), 256);
        assert_eq!(alignment(0x7f00_0000_0104), 4);
        assert_eq!(alignment(0x7f00_0000_0110), 16);
        assert_eq!(alignment(0x7f00_0000_0008), 8);
        assert_eq!(alignment(0), 256);
    }
}
