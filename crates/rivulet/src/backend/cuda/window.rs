//! Convolutions and pooling on the GPU.
//!
//! A window op becomes a [`Plan`]: launches of the window kernels
//! ([`kernels::window`](super::kernels::window)) and cuBLAS products over
//! the op's operands and one scratch buffer. A convolution is an im2col
//! product, as on the CPU: the im2col matrix of a block of output rows
//! (every group's at once), then one batched product over the groups; the
//! filter gradient is the transposed product summed over the blocks (cuBLAS
//! adding into the result), the input gradient the product by the filter's
//! transpose scattered back by `col2im`. Pooling and its gradients are one
//! kernel each (the max-pool gradient after a pass that writes each
//! window's argmax), gathering rather than scattering, so they add in a
//! fixed order (the CPU's) with no atomics. The CUDA backend runs a plan; the
//! tests run the same plan on the host with the kernels emulated.

use super::kernels::{WindowKernel, WindowParams};
use super::Gemm;
use crate::error::{Error, Result};
use crate::op::window::{Geometry, Geometry3, PoolKind, WindowOp};
use crate::tensor::Shape;

/// Elements of the im2col scratch matrix: 2^25 (128 MiB of f32) for a
/// block of rows, or one row where a row is larger.
pub(crate) const SCRATCH_ELEMENTS: usize = 1 << 25;

/// The buffers a plan works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The op's first input.
    X,
    /// Its second input.
    Y,
    /// The result.
    Out,
    /// The scratch matrix of [`Plan::scratch`] elements.
    Scratch,
}

/// A place in a plan: a buffer and an element offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct At {
    pub buf: Buf,
    pub offset: usize,
}

fn at(buf: Buf, offset: usize) -> At {
    At { buf, offset }
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A window kernel over `params.n` elements, with its operands.
    Launch { kernel: WindowKernel, params: WindowParams, x: Buf, y: Option<Buf>, out: Buf },
    /// A cuBLAS product.
    Gemm(Gemm<At>),
}

/// What a window op runs on the GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// Elements of scratch (0: none).
    pub scratch: usize,
    /// Whether the result starts as zeros (the steps add into it, or leave
    /// it alone where every sum is empty).
    pub zeroed: bool,
    /// Whether every index fits 32 bits (the kernels' `int` variant).
    pub narrow: bool,
}

/// The kernels' parameters for a geometry (addresses and the launch's
/// extent left to the caller).
fn params(g: &Geometry3, cg: usize) -> WindowParams {
    let wide = |a: [usize; 3]| a.map(|v| v as i64);
    WindowParams {
        c: g.c as i64,
        cg: cg as i64,
        input: wide(g.input),
        output: wide(g.output),
        window: wide(g.window),
        strides: wide(g.strides),
        dilations: wide(g.dilations),
        pad: wide(g.pad),
        ..Default::default()
    }
}

/// Blocks of the rows (batch × output positions) of `g`, each row `width`
/// elements, at most `limit` elements a block (one row where a row is
/// larger): `(first row, rows)`. Blocks hold whole images where one fits,
/// else parts of one image, so `col2im` visits only the inputs they reach.
fn blocks(g: &Geometry3, width: usize, limit: usize) -> Vec<(usize, usize)> {
    let opos = g.out_positions();
    let total = g.n * opos;
    if total == 0 {
        return Vec::new();
    }
    let per_row = (limit / width.max(1)).max(1);
    if per_row >= opos {
        let per = per_row / opos * opos;
        return (0..total.div_ceil(per)).map(|b| (b * per, per.min(total - b * per))).collect();
    }
    let mut blocks = Vec::new();
    for img in 0..g.n {
        let mut o = 0;
        while o < opos {
            let rows = per_row.min(opos - o);
            blocks.push((img * opos + o, rows));
            o += rows;
        }
    }
    blocks
}

/// The largest coordinate a kernel's index arithmetic reaches along any
/// dimension of `g` (input, padding, a stride past the last output, the
/// window's extent), or `None` beyond `u64`.
fn reach(g: &Geometry3) -> Option<u64> {
    (0..3).try_fold(0u64, |most, d| {
        let w = |v: usize| u64::try_from(v).ok();
        let along = w(g.input[d])?
            .checked_add(w(g.pad[d])?)?
            .checked_add(w(g.output[d])?.checked_add(1)?.checked_mul(w(g.strides[d])?)?)?
            .checked_add(w(g.window[d])?.checked_mul(w(g.dilations[d])?)?)?;
        Some(most.max(along))
    })
}

/// The plan of `op` (a `FusedConv` plans its convolution; the caller adds
/// the bias and activation) over inputs shaped `x` and `y` giving `out`,
/// with at most `scratch_limit` elements of scratch. An error of kind
/// `Unimplemented` where cuBLAS's 32-bit sizes cannot hold a product, or
/// the window's coordinates would overflow the kernels' 64-bit indices.
pub(crate) fn plan(op: &WindowOp, x: &Shape, y: Option<&Shape>, out: &Shape, scratch_limit: usize) -> Result<Plan> {
    let second = || y.ok_or_else(|| Error::invalid(format!("{} takes two inputs", op.type_name())));
    let (g, mut plan) = match op {
        WindowOp::Conv { spec } | WindowOp::FusedConv { spec, .. } => {
            let (g, channels) = spec.geometry(x, second()?)?;
            let g = Geometry3::new(&g);
            (g, conv(&g, spec.groups, channels, scratch_limit))
        }
        WindowOp::ConvBackpropInput { spec, .. } => {
            // The forward op's geometry, from its input's shape (the result's).
            let (g, channels) = spec.geometry(out, second()?)?;
            let g = Geometry3::new(&g);
            (g, conv_backprop_input(&g, spec.groups, channels, scratch_limit))
        }
        WindowOp::ConvBackpropFilter { spec, window } => {
            let g = Geometry3::new(&Geometry::new(x, window, &spec.strides, &spec.dilations, &spec.padding)?);
            let channels = out.last().copied().unwrap_or(0);
            (g, conv_backprop_filter(&g, spec.groups, channels, scratch_limit))
        }
        WindowOp::Pool { f, spec } => {
            let g = Geometry3::new(&spec.geometry(x)?);
            (g, one_launch(WindowKernel::Pool(*f), &g, out.numel_known(), None))
        }
        WindowOp::PoolGrad { f: PoolKind::Avg, spec } => {
            let g = Geometry3::new(&spec.geometry(x)?);
            (g, one_launch(WindowKernel::PoolGrad(PoolKind::Avg), &g, x.numel_known(), Some(Buf::Y)))
        }
        WindowOp::PoolGrad { f: PoolKind::Max, spec } => {
            let g = Geometry3::new(&spec.geometry(x)?);
            (g, max_pool_grad(&g, x.numel_known(), y.map_or(0, |s| s.numel_known())))
        }
        WindowOp::MaxPoolGradGrad { spec } => {
            let g = Geometry3::new(&spec.geometry(x)?);
            (g, one_launch(WindowKernel::MaxPoolGradGrad, &g, out.numel_known(), Some(Buf::Y)))
        }
    };
    let too_large = |what: &str| Error::unimplemented(format!("a GPU {} of {x} has {what}", op.type_name()));
    if plan.steps.iter().any(|s| matches!(s, Step::Gemm(g) if !g.fits_cublas())) {
        return Err(too_large("a product beyond cuBLAS's 32-bit sizes"));
    }
    let Some(reach) = reach(&g).filter(|&r| r < 1 << 62) else {
        return Err(too_large("window coordinates beyond 64-bit indices"));
    };
    let largest = [x.numel_known(), y.map_or(0, |s| s.numel_known()), out.numel_known(), plan.scratch];
    // Room for a grid-stride loop's last step past the end.
    plan.narrow = largest.into_iter().max().unwrap_or(0) < 1 << 30 && reach < 1 << 30;
    Ok(plan)
}

/// The input positions (within an image) that output positions `o0 ..= o1`
/// of one image read: `(first, count)`. Narrowed along the outermost
/// dimension with more than one output where those before it have one
/// input position; otherwise the whole image.
fn reached_positions(g: &Geometry3, o0: usize, o1: usize) -> (usize, usize) {
    let whole = (0, g.in_positions());
    let Some(d) = (0..3).find(|&d| g.output[d] > 1) else { return whole };
    if g.input[..d].iter().any(|&n| n != 1) {
        return whole;
    }
    let inner_out: usize = g.output[d + 1..].iter().product();
    let inner_in: usize = g.input[d + 1..].iter().product();
    let (q0, q1) = (o0 / inner_out % g.output[d], o1 / inner_out % g.output[d]);
    // Signed: the first window may start in the padding.
    let lo = (q0 * g.strides[d]) as i128 - g.pad[d] as i128;
    let hi = (q1 * g.strides[d] + (g.window[d] - 1) * g.dilations[d]) as i128 - g.pad[d] as i128;
    let (lo, hi) = (lo.max(0), hi.min(g.input[d] as i128 - 1));
    if hi < lo {
        return (0, 0);
    }
    (lo as usize * inner_in, (hi - lo + 1) as usize * inner_in)
}

fn one_launch(kernel: WindowKernel, g: &Geometry3, n: usize, y: Option<Buf>) -> Plan {
    let mut steps = Vec::new();
    if n > 0 {
        let params = WindowParams { n: n as i64, ..params(g, g.c) };
        steps.push(Step::Launch { kernel, params, x: Buf::X, y, out: Buf::Out });
    }
    Plan { steps, ..Default::default() }
}

/// Max pooling's gradient: each window's first largest position into
/// scratch (two elements each: room for a 64-bit index in f32 scratch),
/// then one thread per input element finds the windows it won (the same
/// sums in the same order as re-deciding each window, at O(1) a window).
/// `outputs` is dy's size; with no windows every gradient is zero.
fn max_pool_grad(g: &Geometry3, inputs: usize, outputs: usize) -> Plan {
    if inputs == 0 || outputs == 0 {
        return Plan { zeroed: true, ..Default::default() };
    }
    let argmax = WindowParams { n: outputs as i64, ..params(g, g.c) };
    let grad = WindowParams { n: inputs as i64, ..params(g, g.c) };
    Plan {
        steps: vec![
            Step::Launch { kernel: WindowKernel::PoolArgmax, params: argmax, x: Buf::X, y: None, out: Buf::Scratch },
            Step::Launch {
                kernel: WindowKernel::PoolGrad(PoolKind::Max),
                params: grad,
                x: Buf::Scratch,
                y: Some(Buf::Y),
                out: Buf::Out,
            },
        ],
        scratch: 2 * outputs,
        ..Default::default()
    }
}

impl Plan {
    /// The im2col matrix of rows `r0 .. r0 + rows` for a product: where it
    /// is (`X` itself for a pointwise window, else scratch, filled by a
    /// launch added here), its leading dimension and its stride per group.
    fn columns(&mut self, g: &Geometry3, cg: usize, groups: usize, r0: usize, rows: usize) -> (At, usize, usize) {
        if g.is_pointwise() {
            return (at(Buf::X, r0 * g.c), g.c, cg);
        }
        let depth = g.taps() * cg;
        let n = groups * rows * depth;
        let params = WindowParams { n: n as i64, r0: r0 as i64, rows: rows as i64, ..params(g, cg) };
        self.steps.push(Step::Launch { kernel: WindowKernel::Im2col, params, x: Buf::X, y: None, out: Buf::Scratch });
        self.scratch = self.scratch.max(n);
        (at(Buf::Scratch, 0), depth, rows * depth)
    }
}

/// `out[rows, channels] = windows(x) · filter` per group; x is `X`, the
/// filter (`[taps·cg, channels]`) `Y`.
fn conv(g: &Geometry3, groups: usize, channels: usize, limit: usize) -> Plan {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let total = g.n * g.out_positions();
    let mut plan = Plan::default();
    if total == 0 || channels == 0 {
        return plan;
    }
    if depth == 0 {
        // No input channels: every sum is empty.
        plan.zeroed = true;
        return plan;
    }
    for (r0, rows) in blocks(g, depth * groups, limit) {
        let a = plan.columns(g, cg, groups, r0, rows);
        plan.steps.push(Step::Gemm(Gemm {
            m: rows,
            n: og,
            k: depth,
            a: a.0,
            lda: a.1,
            sa: a.2,
            ta: false,
            b: at(Buf::Y, 0),
            ldb: channels,
            sb: og,
            tb: false,
            c: at(Buf::Out, r0 * channels),
            ldc: channels,
            sc: og,
            batches: groups,
            accumulate: false,
        }));
    }
    plan
}

/// `dfilter[taps·cg, channels] = Σ windows(x)ᵀ · dy` per group, block by
/// block; x is `X`, dy `Y`.
fn conv_backprop_filter(g: &Geometry3, groups: usize, channels: usize, limit: usize) -> Plan {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let total = g.n * g.out_positions();
    let mut plan = Plan { zeroed: total == 0, ..Default::default() };
    if channels == 0 || depth == 0 {
        return plan;
    }
    for (i, (r0, rows)) in blocks(g, depth * groups, limit).into_iter().enumerate() {
        let a = plan.columns(g, cg, groups, r0, rows);
        plan.steps.push(Step::Gemm(Gemm {
            m: depth,
            n: og,
            k: rows,
            a: a.0,
            lda: a.1,
            sa: a.2,
            ta: true,
            b: at(Buf::Y, r0 * channels),
            ldb: channels,
            sb: og,
            tb: false,
            c: at(Buf::Out, 0),
            ldc: channels,
            sc: og,
            batches: groups,
            accumulate: i > 0,
        }));
    }
    plan
}

/// `dx = Σ dy · filterᵀ` scattered back through the windows; dy is `X`,
/// the filter `Y`.
fn conv_backprop_input(g: &Geometry3, groups: usize, channels: usize, limit: usize) -> Plan {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let (opos, ipos) = (g.out_positions(), g.in_positions());
    let total = g.n * opos;
    let mut plan = Plan { zeroed: true, ..Default::default() };
    if total == 0 || channels == 0 || depth == 0 {
        return plan;
    }
    let pointwise = g.is_pointwise();
    // Each output row of a pointwise window is its input position's
    // gradient: written, not added.
    plan.zeroed = !pointwise;
    for (r0, rows) in blocks(g, depth * groups, limit) {
        let (c, ldc, sc) = if pointwise {
            (at(Buf::Out, r0 * g.c), g.c, cg)
        } else {
            plan.scratch = plan.scratch.max(groups * rows * depth);
            (at(Buf::Scratch, 0), depth, rows * depth)
        };
        // dy's rows by the filter's transpose (element (o, i) of og × depth).
        plan.steps.push(Step::Gemm(Gemm {
            m: rows,
            n: depth,
            k: og,
            a: at(Buf::X, r0 * channels),
            lda: channels,
            sa: og,
            ta: false,
            b: at(Buf::Y, 0),
            ldb: channels,
            sb: og,
            tb: true,
            c,
            ldc,
            sc,
            batches: groups,
            accumulate: false,
        }));
        if !pointwise {
            // Whole images, or the positions part of one reaches.
            let (img0, images, (pos0, npos)) = if rows % opos == 0 {
                (r0 / opos, rows / opos, (0, ipos))
            } else {
                (r0 / opos, 1, reached_positions(g, r0 % opos, r0 % opos + rows - 1))
            };
            let n = images * npos * g.c;
            if n > 0 {
                let params = WindowParams {
                    n: n as i64,
                    r0: r0 as i64,
                    rows: rows as i64,
                    img0: img0 as i64,
                    pos0: pos0 as i64,
                    npos: npos as i64,
                    ..params(g, cg)
                };
                plan.steps.push(Step::Launch {
                    kernel: WindowKernel::Col2im,
                    params,
                    x: Buf::Scratch,
                    y: None,
                    out: Buf::Out,
                });
            }
        }
    }
    plan
}

/// Whether the window kernels take `dtype`: f32 and f64 (f16 and bf16
/// reach the window ops as f32).
pub(crate) fn takes(dtype: crate::tensor::DType) -> bool {
    matches!(dtype, crate::tensor::DType::F32 | crate::tensor::DType::F64)
}

#[cfg(test)]
mod tests {
    use super::tests_spec as spec;
    use super::*;
    use crate::op::window::{Padding, PoolKind, PoolSpec};

    /// Blocks cover every row once; the filter gradient adds from its
    /// second block on; a pointwise window needs no scratch.
    #[test]
    fn plans_cover_every_row_in_blocks_of_the_scratch_limit() {
        let conv = WindowOp::Conv { spec: spec(&[2, 1], &[1, 1], Padding::Same, 2) };
        let (x, w) = (Shape::new(&[2, 7, 6, 4]), Shape::new(&[3, 3, 2, 6]));
        let out = Shape::new(&[2, 4, 6, 6]);
        // depth 3·3·2 = 18 per group, 36 a row: 100 elements take 2 rows a block.
        let p = plan(&conv, &x, Some(&w), &out, 100).expect("plan");
        let rows: Vec<(usize, usize)> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Gemm(g) => Some((g.c.offset / 6, g.m)),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 24);
        assert!(rows.iter().enumerate().all(|(i, &(r0, m))| r0 == 2 * i && m == 2));
        assert_eq!((p.scratch, p.zeroed, p.narrow), (72, false, true));
        // The input gradient's scatter of 2 rows (one output row of 6
        // positions: 3 blocks) visits the 3 input rows (of 6 positions)
        // their windows reach, not the whole 7×6 image.
        let input =
            WindowOp::ConvBackpropInput { spec: spec(&[2, 1], &[1, 1], Padding::Same, 2), input_spatial: vec![7, 6] };
        let p = plan(&input, &out, Some(&w), &x, 100).expect("plan");
        let reached: Vec<(i64, i64, i64)> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Launch { kernel: WindowKernel::Col2im, params, .. } => {
                    Some((params.r0, params.pos0, params.npos))
                }
                _ => None,
            })
            .collect();
        assert_eq!(reached.len(), 24);
        // Output row 1 (rows 8 and 10 of image 0) reads input rows 1 to 3; row 0 (padded above) rows 0 and 1.
        assert_eq!(reached[4], (8, 6, 18));
        assert_eq!(reached[0], (0, 0, 12));
        assert_eq!(reached[12], (24, 0, 12));
        // Whole images per block where they fit.
        let p = plan(&input, &out, Some(&w), &x, 36 * 24 * 2).expect("plan");
        assert_eq!(p.steps.len(), 2, "one product and one scatter for both images");
        let filter =
            WindowOp::ConvBackpropFilter { spec: spec(&[2, 1], &[1, 1], Padding::Same, 2), window: vec![3, 3] };
        let p = plan(&filter, &x, Some(&out), &w, 100).expect("plan");
        let adds: Vec<bool> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Gemm(g) => Some(g.accumulate),
                _ => None,
            })
            .collect();
        assert_eq!(adds.len(), 24);
        assert!(!adds[0] && adds[1..].iter().all(|&a| a));
        let pointwise = WindowOp::Conv { spec: spec(&[1, 1], &[1, 1], Padding::Valid, 1) };
        let p =
            plan(&pointwise, &x, Some(&Shape::new(&[1, 1, 4, 3])), &Shape::new(&[2, 7, 6, 3]), 1 << 20).expect("plan");
        assert_eq!((p.scratch, p.steps.len()), (0, 1));
        // A product cuBLAS's 32-bit sizes cannot hold is left to the decomposition.
        let huge = Shape::new(&[1, 1, 1, 1 << 31]);
        let err = plan(&pointwise, &huge, Some(&Shape::new(&[1, 1, 1 << 31, 1])), &Shape::new(&[1, 1, 1, 1]), 1 << 20)
            .expect_err("too large");
        assert_eq!(err.kind(), crate::error::ErrorKind::Unimplemented);
        // Coordinates beyond 32 bits index with 64 however small the buffers;
        // beyond 2^62, the decomposition takes it.
        let wide = |dilation: usize| {
            let op =
                WindowOp::Conv { spec: spec(&[1], &[dilation], Padding::Explicit { pads: vec![(0, dilation)] }, 1) };
            plan(&op, &Shape::new(&[1, 1, 1]), Some(&Shape::new(&[2, 1, 1])), &Shape::new(&[1, 1, 1]), 1 << 20)
        };
        assert!(!wide(1 << 32).expect("plan").narrow);
        assert_eq!(wide(1 << 62).expect_err("too wide").kind(), crate::error::ErrorKind::Unimplemented);
        let pool = WindowOp::Pool {
            f: PoolKind::Max,
            spec: PoolSpec { window: vec![2, 2], strides: vec![2, 2], padding: Padding::Valid },
        };
        let p = plan(&pool, &Shape::new(&[1, 1 << 16, 1 << 15, 1]), None, &Shape::new(&[1, 1 << 15, 1 << 14, 1]), 1)
            .expect("plan");
        assert!(!p.narrow, "2^31 input elements index with 64 bits");
    }
}

/// The plans run on the host, the window kernels emulated (see
/// `kernels::emulated`) and the products a float64 reference, against the
/// CPU backend's kernels: the same bits for pooling (NaN as NaN), within
/// rounding where products are involved.
#[cfg(all(test, target_os = "linux"))]
mod emulated {
    use super::tests_spec;
    use super::*;
    use crate::backend::cuda::codegen::tests::{value as host, HostLibrary};
    use crate::backend::cuda::kernels::emulated::{build, bytes, launcher, meta};
    use crate::backend::cuda::kernels::{self, Instance, WINDOW_KERNELS};
    use crate::backend::{execute_on, KernelCtx};
    use crate::op::window::{ConvSpec, Padding, PoolKind, PoolSpec};
    use crate::op::Op;
    use crate::tensor::{DType, Device, Element, Value};
    use std::ffi::c_void;

    type WindowLauncher = unsafe extern "C" fn(u32, u32, u32, WindowParams);

    struct Lib {
        lib: HostLibrary,
    }

    impl Lib {
        /// The kernels built for the host; each test its own `tag` (a
        /// library's emulated grid is process-wide state).
        fn new(tag: &str) -> Option<Lib> {
            let mut all: Vec<Instance> = Vec::new();
            for d in [DType::F32, DType::F64] {
                for narrow in [true, false] {
                    all.extend(WINDOW_KERNELS.iter().map(|&k| kernels::window(k, d, narrow)));
                }
            }
            Some(Lib { lib: build(tag, &all)? })
        }

        fn launch(&self, kernel: WindowKernel, dtype: DType, narrow: bool, p: WindowParams) {
            let inst = kernels::window(kernel, dtype, narrow);
            // SAFETY: the launcher's signature; the caller's addresses are
            // live host buffers sized by the plan.
            unsafe {
                let f = std::mem::transmute::<*mut c_void, WindowLauncher>(launcher(&self.lib, &inst));
                f(3, 1, 32, p);
            }
        }
    }

    /// A value's elements as `T`.
    fn elements<T: Element>(v: &Value) -> Vec<T> {
        let b = bytes(v);
        b.chunks_exact(std::mem::size_of::<T>())
            // SAFETY: each chunk holds one `T`'s bytes (f32 or f64: any bits are valid).
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr() as *const T) })
            .collect()
    }

    /// `plan` run on the host: the result's elements.
    fn run<T: Element>(lib: &Lib, plan: &Plan, x: &Value, y: Option<&Value>, out_len: usize, narrow: bool) -> Vec<T> {
        let sentinel = T::from_f64(-7777.0);
        let mut bufs: [Vec<T>; 4] = [
            elements(x),
            y.map(elements).unwrap_or_default(),
            vec![if plan.zeroed { T::from_f64(0.0) } else { sentinel }; out_len],
            vec![sentinel; plan.scratch],
        ];
        let slot = |b: Buf| b as usize;
        for step in &plan.steps {
            match *step {
                Step::Launch { kernel, mut params, x, y, out } => {
                    params.x = bufs[slot(x)].as_ptr() as u64;
                    params.y = y.map_or(0, |b| bufs[slot(b)].as_ptr() as u64);
                    params.out = bufs[slot(out)].as_mut_ptr() as u64;
                    lib.launch(kernel, T::DTYPE, narrow, params);
                }
                Step::Gemm(g) => {
                    assert!(g.fits_cublas());
                    let (a, b) = (bufs[slot(g.a.buf)].clone(), bufs[slot(g.b.buf)].clone());
                    let c = &mut bufs[slot(g.c.buf)];
                    for bi in 0..g.batches {
                        for i in 0..g.m {
                            for j in 0..g.n {
                                let mut sum = 0.0;
                                for q in 0..g.k {
                                    let ai = if g.ta { q * g.lda + i } else { i * g.lda + q };
                                    let bj = if g.tb { j * g.ldb + q } else { q * g.ldb + j };
                                    sum += a[g.a.offset + bi * g.sa + ai].to_f64()
                                        * b[g.b.offset + bi * g.sb + bj].to_f64();
                                }
                                let ci = g.c.offset + bi * g.sc + i * g.ldc + j;
                                c[ci] = T::from_f64(if g.accumulate { c[ci].to_f64() + sum } else { sum });
                            }
                        }
                    }
                }
            }
        }
        let [_, _, out, _] = bufs;
        out
    }

    /// Runs `op` by its plan at scratch `limit` and on the CPU, and compares:
    /// bit for bit where `exact`, else within `tol` of the largest magnitude.
    fn check(lib: &Lib, op: &WindowOp, inputs: &[Value], limit: usize, exact: bool, tol: f64) {
        let refs: Vec<&Value> = inputs.iter().collect();
        let window = Op::Window { f: Box::new(op.clone()) };
        let want = execute_on(Device::CPU, &window, &refs, &KernelCtx::EAGER).expect("cpu").swap_remove(0);
        let metas: Vec<_> = inputs.iter().map(meta).collect();
        let out = window.infer(&metas).expect("infer")[0].clone();
        let plan = plan(op, inputs[0].shape(), inputs.get(1).map(|v| v.shape()), &out.shape, limit).expect("plan");
        let what = format!("{} of {:?} at limit {limit}", op.type_name(), metas);
        let (got, want): (Vec<f64>, Vec<f64>) = match out.dtype {
            DType::F32 => {
                let got = run::<f32>(lib, &plan, &inputs[0], inputs.get(1), want.numel(), plan.narrow);
                (got.iter().map(|v| v.to_f64()).collect(), elements::<f32>(&want).iter().map(|v| v.to_f64()).collect())
            }
            _ => (run::<f64>(lib, &plan, &inputs[0], inputs.get(1), want.numel(), plan.narrow), elements::<f64>(&want)),
        };
        if exact {
            // A NaN's sign and payload are the hardware's (x86 and CUDA differ).
            let bits = |v: &[f64]| {
                v.iter().map(|x| if x.is_nan() { f64::NAN.to_bits() } else { x.to_bits() }).collect::<Vec<_>>()
            };
            assert_eq!(bits(&got), bits(&want), "{what}");
            return;
        }
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tol * scale, "{what}: element {i}: {g} against {w}");
        }
    }

    /// Deterministic values in [-2, 2), with every seventh repeated.
    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| if i % 7 == 3 { 0.5 } else { (((i + seed) * 2654435761) % 4096) as f64 / 1024.0 - 2.0 })
            .collect()
    }

    fn value(dtype: DType, shape: &[usize], seed: usize) -> Value {
        host(dtype, shape, &data(shape.iter().product(), seed))
    }

    #[test]
    fn convolutions_and_their_gradients_match_the_cpu() {
        let Some(lib) = Lib::new("window-conv") else { return };
        let explicit = Padding::Explicit { pads: vec![(1, 0), (0, 2), (1, 1)] };
        let cases: Vec<(ConvSpec, Vec<usize>, Vec<usize>)> = vec![
            // Stride 2 with SAME (TensorFlow's asymmetric padding), groups.
            (tests_spec(&[2, 1], &[1, 1], Padding::Same, 2), vec![2, 7, 6, 4], vec![3, 3, 2, 6]),
            // Dilation, odd sizes, batch 1.
            (tests_spec(&[1, 1], &[2, 3], Padding::Valid, 1), vec![1, 9, 8, 3], vec![3, 2, 3, 5]),
            // 1×1: pointwise, and with groups; with stride 2 it gathers.
            (tests_spec(&[1, 1], &[1, 1], Padding::Valid, 1), vec![2, 5, 5, 6], vec![1, 1, 6, 4]),
            (tests_spec(&[1, 1], &[1, 1], Padding::Valid, 3), vec![2, 5, 3, 6], vec![1, 1, 2, 6]),
            (tests_spec(&[2, 2], &[1, 1], Padding::Same, 1), vec![1, 5, 5, 3], vec![1, 1, 3, 2]),
            // 1-D and 3-D, explicit padding.
            (tests_spec(&[3], &[1], Padding::Same, 1), vec![3, 11, 2], vec![4, 2, 3]),
            (tests_spec(&[1, 2, 2], &[1, 1, 1], explicit, 1), vec![1, 5, 4, 6, 2], vec![2, 3, 2, 2, 3]),
        ];
        for (spec, xs, ws) in &cases {
            let r = ws.len() - 2;
            for dtype in [DType::F64, DType::F32] {
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let (x, w) = (value(dtype, xs, 1), value(dtype, ws, 2));
                let conv = WindowOp::Conv { spec: spec.clone() };
                let y =
                    Op::Window { f: Box::new(conv.clone()) }.infer(&[meta(&x), meta(&w)]).expect("infer")[0].clone();
                let dy = value(dtype, y.shape.dims(), 3);
                let input = WindowOp::ConvBackpropInput { spec: spec.clone(), input_spatial: xs[1..=r].to_vec() };
                let filter = WindowOp::ConvBackpropFilter { spec: spec.clone(), window: ws[..r].to_vec() };
                // The whole op in one block, then blocks of a few rows that
                // cross image boundaries.
                for limit in [SCRATCH_ELEMENTS, 41] {
                    check(&lib, &conv, &[x.clone(), w.clone()], limit, false, tol);
                    check(&lib, &input, &[dy.clone(), w.clone()], limit, false, tol);
                    check(&lib, &filter, &[x.clone(), dy.clone()], limit, false, tol);
                }
            }
        }
    }

    #[test]
    fn pooling_and_its_gradients_match_the_cpu_bit_for_bit() {
        let Some(lib) = Lib::new("window-pool") else { return };
        let pool = |window: &[usize], strides: &[usize], padding: Padding| PoolSpec {
            window: window.to_vec(),
            strides: strides.to_vec(),
            padding,
        };
        let cases: Vec<(PoolSpec, Vec<usize>)> = vec![
            (pool(&[3, 2], &[2, 2], Padding::Same), vec![2, 7, 6, 3]),
            (pool(&[2, 2], &[2, 2], Padding::Valid), vec![1, 5, 4, 2]),
            (pool(&[3], &[1], Padding::Same), vec![2, 9, 2]),
            (pool(&[2, 3, 2], &[1, 2, 1], Padding::Same), vec![1, 4, 5, 3, 2]),
            // Explicit padding: edge windows hold one element.
            (pool(&[3, 2], &[1, 1], Padding::Explicit { pads: vec![(2, 2), (1, 1)] }), vec![1, 2, 3, 2]),
        ];
        for (spec, xs) in &cases {
            for dtype in [DType::F32, DType::F64] {
                let n: usize = xs.iter().product();
                // Repeats (ties go to the first), NaN, infinities.
                let mut d = data(n, 5);
                for (i, v) in d.iter_mut().enumerate() {
                    match i % 11 {
                        2 => *v = f64::NAN,
                        5 => *v = f64::NEG_INFINITY,
                        7 => *v = f64::INFINITY,
                        _ => {}
                    }
                }
                let x = host(dtype, xs, &d);
                for f in [PoolKind::Max, PoolKind::Avg] {
                    let op = WindowOp::Pool { f, spec: spec.clone() };
                    check(&lib, &op, std::slice::from_ref(&x), SCRATCH_ELEMENTS, true, 0.0);
                    let y = Op::Window { f: Box::new(op) }.infer(&[meta(&x)]).expect("infer")[0].clone();
                    let dy = value(dtype, y.shape.dims(), 4);
                    check(
                        &lib,
                        &WindowOp::PoolGrad { f, spec: spec.clone() },
                        &[x.clone(), dy],
                        SCRATCH_ELEMENTS,
                        true,
                        0.0,
                    );
                }
                let g = value(dtype, xs, 6);
                check(
                    &lib,
                    &WindowOp::MaxPoolGradGrad { spec: spec.clone() },
                    &[x.clone(), g],
                    SCRATCH_ELEMENTS,
                    true,
                    0.0,
                );
            }
        }
    }
}

#[cfg(test)]
fn tests_spec(
    strides: &[usize],
    dilations: &[usize],
    padding: crate::op::window::Padding,
    groups: usize,
) -> crate::op::window::ConvSpec {
    crate::op::window::ConvSpec { strides: strides.to_vec(), dilations: dilations.to_vec(), padding, groups }
}
