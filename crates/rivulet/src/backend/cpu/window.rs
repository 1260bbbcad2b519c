//! Convolution and pooling kernels, channels-last, 1 to 3 spatial
//! dimensions (a lower rank runs as 3-D with leading sizes of 1).
//!
//! A convolution is an im2col product: a block of output rows gathers its
//! windows into a scratch matrix that stays in cache, and `gemm` multiplies
//! it by the filter. The two gradients are the same product transposed: the
//! filter's sums `colᵀ · dy` over fixed blocks of rows (summed in block
//! order, so the result does not depend on the thread count), the input's
//! scatters `dy · filterᵀ` back through the windows one image at a time.
//! A 1×1 window with unit strides and no padding skips the gather.

use super::copy::materialize;
use super::matmul::{gemm_strided, GemmFloat, Strided};
use super::simd::{vectorize, Kernel};
use crate::error::{bail, Result};
use crate::op::window::{ConvSpec, Geometry, Geometry3 as G3, PoolKind, WindowOp};
use crate::op::Meta;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Value};
use rayon::prelude::*;

/// The element types the kernels run on (f32, f64).
trait Real: GemmFloat + PartialOrd + std::ops::AddAssign + std::ops::Div<Output = Self> {}
impl<T: GemmFloat + PartialOrd + std::ops::AddAssign + std::ops::Div<Output = T>> Real for T {}

/// Elements of one block's scratch matrix: a few hundred KiB, inside L2.
const SCRATCH_ELEMENTS: usize = 1 << 15;
/// Blocks of rows per partial sum of a filter gradient.
const BLOCKS_PER_PARTIAL: usize = 16;

impl G3 {
    /// Calls `f(tap, input position)` for each tap of output position `o`
    /// (within an image) that lies inside the input, in window order.
    #[inline(always)]
    fn for_taps(&self, o: usize, mut f: impl FnMut(usize, usize)) {
        let [_, oh, ow] = self.output;
        let (oz, oy, ox) = (o / (oh * ow), (o / ow) % oh, o % ow);
        let [kd, kh, kw] = self.window;
        let [_, ih, iw] = self.input;
        let origin = |d: usize, o: usize| (o * self.strides[d]) as isize - self.pad[d] as isize;
        let (z0, y0, x0) = (origin(0, oz), origin(1, oy), origin(2, ox));
        for a in 0..kd {
            let z = z0 + (a * self.dilations[0]) as isize;
            if z < 0 || z >= self.input[0] as isize {
                continue;
            }
            for b in 0..kh {
                let y = y0 + (b * self.dilations[1]) as isize;
                if y < 0 || y >= ih as isize {
                    continue;
                }
                for cc in 0..kw {
                    let x = x0 + (cc * self.dilations[2]) as isize;
                    if x < 0 || x >= iw as isize {
                        continue;
                    }
                    f((a * kh + b) * kw + cc, (z as usize * ih + y as usize) * iw + x as usize);
                }
            }
        }
    }
}

/// Run a window op on contiguous copies of its inputs.
pub(crate) fn run(f: &WindowOp, inputs: &[&Value], out: &Meta) -> Result<Value> {
    let a = materialize(inputs[0])?;
    let b = match inputs.get(1) {
        Some(v) => Some(materialize(v)?),
        None => None,
    };
    if let WindowOp::FusedConv { spec, activation } = f {
        let (Some(w), Some(bias), DType::F32) = (&b, inputs.get(2), out.dtype) else {
            bail!(invalid, "_FusedConv takes f32 x, filter and bias");
        };
        let bias = materialize(bias)?;
        let (g, channels) = spec.geometry(a.shape(), w.shape())?;
        if bias.shape().dims() != [channels] {
            bail!(shape, "_FusedConv bias {} for {channels} channels", bias.shape());
        }
        let mut buf = HostBuffer::for_elements::<f32>(out.shape.numel_known())?;
        let (bias, act) = (bias.buffer::<f32>(), *activation);
        let epilogue = |block: &mut [f32]| super::fused::bias_activation(block, bias, act);
        conv(&G3::new(&g), spec.groups, channels, a.buffer::<f32>(), w.buffer::<f32>(), buf.as_mut_slice(), epilogue)?;
        return Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf));
    }
    match out.dtype {
        DType::F32 => typed::<f32>(f, &a, b.as_ref(), out),
        DType::F64 => typed::<f64>(f, &a, b.as_ref(), out),
        d => bail!(dtype, "{} does not accept {d}", f.type_name()),
    }
}

fn typed<T: Real>(f: &WindowOp, a: &Value, b: Option<&Value>, out: &Meta) -> Result<Value> {
    let numel = out.shape.numel_known();
    let second = || b.map(|v| v.buffer::<T>()).unwrap_or(&[]);
    if matches!(f, WindowOp::PoolGrad { f: PoolKind::Max, .. } | WindowOp::MaxPoolGradGrad { .. })
        && a.shape().dims()[1..a.shape().rank() - 1].iter().product::<usize>() > u32::MAX as usize
    {
        bail!(shape, "{}: more than 2^32 positions per image ({})", f.type_name(), a.shape());
    }
    // The forward convolution writes every element; the others add into zeros.
    let mut buf = match f {
        WindowOp::Conv { .. } => HostBuffer::for_elements::<T>(numel)?,
        _ => HostBuffer::zeroed::<T>(numel)?,
    };
    let o = buf.as_mut_slice::<T>();
    match f {
        WindowOp::Conv { spec } => {
            let filter = b.map(|v| v.shape().clone()).unwrap_or_default();
            let (g, channels) = spec.geometry(a.shape(), &filter)?;
            conv(&G3::new(&g), spec.groups, channels, a.buffer::<T>(), second(), o, |_| Ok(()))?;
        }
        WindowOp::ConvBackpropInput { spec, .. } => {
            // Geometry of the forward op, from the output shape (x's).
            let filter = b.map(|v| v.shape().clone()).unwrap_or_default();
            let (g, channels) = spec.geometry(&out.shape, &filter)?;
            conv_backprop_input(&G3::new(&g), spec.groups, channels, a.buffer::<T>(), second(), o);
        }
        WindowOp::ConvBackpropFilter { spec, window } => {
            let g = conv_geometry(spec, a, window)?;
            let channels = out.shape[out.shape.rank() - 1];
            conv_backprop_filter(&G3::new(&g), spec.groups, channels, a.buffer::<T>(), second(), o);
        }
        WindowOp::Pool { f, spec } => {
            let g = G3::new(&spec.geometry(a.shape())?);
            match f {
                PoolKind::Max => max_pool(&g, a.buffer::<T>(), o),
                PoolKind::Avg => avg_pool(&g, a.buffer::<T>(), o),
            }
        }
        WindowOp::PoolGrad { f, spec } => {
            let g = G3::new(&spec.geometry(a.shape())?);
            match f {
                PoolKind::Max => max_pool_grad(&g, a.buffer::<T>(), second(), o),
                PoolKind::Avg => avg_pool_grad::<T>(&g, second(), o),
            }
        }
        WindowOp::MaxPoolGradGrad { spec } => {
            let g = G3::new(&spec.geometry(a.shape())?);
            max_pool_grad_grad(&g, a.buffer::<T>(), second(), o);
        }
        WindowOp::FusedConv { .. } => bail!(invalid, "_FusedConv runs through its own path"),
    }
    Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf))
}

fn conv_geometry(spec: &ConvSpec, x: &Value, window: &[usize]) -> Result<Geometry> {
    Geometry::new(x.shape(), window, &spec.strides, &spec.dilations, &spec.padding)
}

/// Rows of output (flattened batch and positions) per scratch block.
fn block_rows(depth: usize) -> usize {
    (SCRATCH_ELEMENTS / depth.max(1)).max(1)
}

/// Gather the windows of rows `r0..r0 + rows` (flattened batch × output
/// positions) over input channels `c0..c0 + cg` into `col` (`rows × taps·cg`).
/// Positions advance by counting (no division per row), and a window wholly
/// inside the input is copied without per-tap bounds checks.
fn im2col<T: Real>(g: &G3, x: &[T], r0: usize, rows: usize, c0: usize, cg: usize, col: &mut [T]) {
    let depth = g.taps() * cg;
    let (opos, ipos) = (g.out_positions(), g.in_positions());
    let ([od, oh, ow], [kd, kh, kw], [id, ih, iw]) = (g.output, g.window, g.input);
    // The first tap of a window at output index `o` along dimension `d`, and
    // whether the whole window lies inside the input there.
    let start = |d: usize, o: usize| (o * g.strides[d]) as isize - g.pad[d] as isize;
    let inside = |d: usize, s: isize, size: usize| s >= 0 && s as usize + (g.window[d] - 1) * g.dilations[d] < size;
    let (mut img, o) = (r0 / opos, r0 % opos);
    let (mut oz, mut oy, mut ox) = (o / (oh * ow), (o / ow) % oh, o % ow);
    for row in col[..rows * depth].chunks_exact_mut(depth) {
        let (z0, y0, x0) = (start(0, oz), start(1, oy), start(2, ox));
        let base = img * ipos;
        if inside(0, z0, id) && inside(1, y0, ih) && inside(2, x0, iw) {
            let mut taps = row.chunks_exact_mut(cg);
            for a in 0..kd {
                for b in 0..kh {
                    let line = base + ((z0 as usize + a * g.dilations[0]) * ih + y0 as usize + b * g.dilations[1]) * iw;
                    for c in 0..kw {
                        let src = (line + x0 as usize + c * g.dilations[2]) * g.c + c0;
                        if let Some(dst) = taps.next() {
                            if cg == 1 {
                                dst[0] = x[src];
                            } else {
                                dst.copy_from_slice(&x[src..src + cg]);
                            }
                        }
                    }
                }
            }
        } else {
            // Taps in the padding read zeros.
            row.fill(T::from_f64(0.0));
            g.for_taps((oz * oh + oy) * ow + ox, |tap, p| {
                let src = (base + p) * g.c + c0;
                row[tap * cg..(tap + 1) * cg].copy_from_slice(&x[src..src + cg]);
            });
        }
        ox += 1;
        if ox == ow {
            ox = 0;
            oy += 1;
            if oy == oh {
                oy = 0;
                oz += 1;
                if oz == od {
                    oz = 0;
                    img += 1;
                }
            }
        }
    }
}

/// `out[rows, channels] = Σ windows · filter`, group by group; then
/// `epilogue` on each block of whole rows while it is in cache.
fn conv<T: Real>(
    g: &G3,
    groups: usize,
    channels: usize,
    x: &[T],
    w: &[T],
    out: &mut [T],
    epilogue: impl Fn(&mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let total = g.n * g.out_positions();
    if total == 0 || channels == 0 {
        return Ok(());
    }
    if depth == 0 {
        // No input channels: every sum is empty.
        out.fill(T::from_f64(0.0));
        return out.chunks_mut(channels).try_for_each(&epilogue);
    }
    let per = block_rows(depth);
    let pointwise = g.is_pointwise();
    out.par_chunks_mut(per * channels).enumerate().try_for_each_init(Vec::new, |col: &mut Vec<T>, (blk, o)| {
        let (r0, rows) = (blk * per, o.len() / channels);
        for j in 0..groups {
            let filter = Strided { data: &w[j * og..], rs: channels, cs: 1 };
            let dst = &mut o[j * og..];
            if pointwise {
                let a = Strided { data: &x[r0 * g.c + j * cg..], rs: g.c, cs: 1 };
                gemm_strided(rows, og, cg, a, filter, dst, channels, false);
            } else {
                col.resize(rows * depth, T::from_f64(0.0));
                im2col(g, x, r0, rows, j * cg, cg, col);
                gemm_strided(rows, og, depth, Strided { data: col, rs: depth, cs: 1 }, filter, dst, channels, false);
            }
        }
        epilogue(o)
    })
}

/// `dfilter[taps·cg, channels] = Σ_rows windowsᵀ · dy`: fixed blocks of rows
/// each sum into a partial, and the partials add up in block order.
fn conv_backprop_filter<T: Real>(g: &G3, groups: usize, channels: usize, x: &[T], dy: &[T], dw: &mut [T]) {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let total = g.n * g.out_positions();
    if total == 0 || channels == 0 || depth == 0 {
        return;
    }
    let per = block_rows(depth);
    let span = per * BLOCKS_PER_PARTIAL;
    let pointwise = g.is_pointwise();
    let partials: Vec<Vec<T>> = (0..total.div_ceil(span))
        .into_par_iter()
        .map(|p| {
            let mut part = vec![T::from_f64(0.0); depth * channels];
            let mut col = Vec::new();
            let end = ((p + 1) * span).min(total);
            let mut r0 = p * span;
            let mut first = true;
            while r0 < end {
                let rows = per.min(end - r0);
                for j in 0..groups {
                    let d = Strided { data: &dy[r0 * channels + j * og..], rs: channels, cs: 1 };
                    let dst = &mut part[j * og..];
                    if pointwise {
                        let a = Strided { data: &x[r0 * g.c + j * cg..], rs: 1, cs: g.c };
                        gemm_strided(depth, og, rows, a, d, dst, channels, !first);
                    } else {
                        col.resize(rows * depth, T::from_f64(0.0));
                        im2col(g, x, r0, rows, j * cg, cg, &mut col);
                        let a = Strided { data: &col, rs: 1, cs: depth };
                        gemm_strided(depth, og, rows, a, d, dst, channels, !first);
                    }
                }
                first = false;
                r0 += rows;
            }
            part
        })
        .collect();
    for part in partials {
        for (d, p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// `dx = Σ dy · filterᵀ` scattered back through the windows, one image per
/// task (images never share input elements).
fn conv_backprop_input<T: Real>(g: &G3, groups: usize, channels: usize, dy: &[T], w: &[T], dx: &mut [T]) {
    let (cg, og) = (g.c / groups, channels / groups);
    let depth = g.taps() * cg;
    let (opos, ipos) = (g.out_positions(), g.in_positions());
    if g.n == 0 || channels == 0 || ipos * g.c == 0 {
        return;
    }
    let per = block_rows(depth);
    let pointwise = g.is_pointwise();
    dx.par_chunks_mut(ipos * g.c).enumerate().for_each_init(Vec::new, |col: &mut Vec<T>, (img, dxi)| {
        vectorize(Wide(
            #[inline(always)]
            || {
                let mut o0 = 0;
                while o0 < opos {
                    let rows = per.min(opos - o0);
                    let r0 = img * opos + o0;
                    for j in 0..groups {
                        let d = Strided { data: &dy[r0 * channels + j * og..], rs: channels, cs: 1 };
                        // filterᵀ: element (o, i) of the og × depth matrix.
                        let wt = Strided { data: &w[j * og..], rs: 1, cs: channels };
                        if pointwise {
                            gemm_strided(rows, cg, og, d, wt, &mut dxi[o0 * g.c + j * cg..], g.c, false);
                            continue;
                        }
                        col.resize(rows * depth, T::from_f64(0.0));
                        gemm_strided(rows, depth, og, d, wt, col, depth, false);
                        for (i, row) in col[..rows * depth].chunks(depth).enumerate() {
                            g.for_taps(
                                o0 + i,
                                #[inline(always)]
                                |tap, p| {
                                    let dst = &mut dxi[p * g.c + j * cg..p * g.c + (j + 1) * cg];
                                    for (d, &s) in dst.iter_mut().zip(&row[tap * cg..(tap + 1) * cg]) {
                                        *d += s;
                                    }
                                },
                            );
                        }
                    }
                    o0 += rows;
                }
            },
        ))
    });
}

/// Run `f(image input, image output slice of positions × c)` per image in parallel.
fn per_image<T: Real>(out: &mut [T], out_per_image: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out_per_image == 0 {
        return;
    }
    out.par_chunks_mut(out_per_image).enumerate().for_each(|(img, o)| {
        vectorize(Wide(
            #[inline(always)]
            || f(img, o),
        ))
    });
}

/// A closure compiled for the widest vector extension (the channel loops
/// of pooling and of the input gradient's scatter).
struct Wide<F>(F);

impl<R, F: FnMut() -> R> Kernel for Wide<F> {
    type Output = R;
    #[inline(always)]
    fn run(mut self) -> R {
        // Called through `FnMut` (the closure's own body, which its
        // `#[inline(always)]` puts here), not `FnOnce`, whose shim would
        // stay a function compiled for the baseline instruction set.
        let f = &mut self.0;
        f()
    }
}

/// Whether `s` replaces `best` in a window: a larger number, or a number
/// after a NaN kept from the first tap (`v != v`: NaN). Branch-free.
#[allow(clippy::eq_op)]
#[inline(always)]
fn wins<T: Real>(s: T, best: T) -> bool {
    (s > best) | ((best != best) & (s == s))
}

/// The largest element of each channel's window and, with `ARG`, the input
/// position it is at: the first one (NaN never wins; a window of NaN or
/// -inf only picks its first element). The channel loop is branch-free, so
/// it runs in vector registers. False, with nothing written, for a window
/// wholly in the padding.
#[inline(always)]
fn window_max<T: Real, const ARG: bool>(g: &G3, xi: &[T], o: usize, best: &mut [T], arg: &mut [u32]) -> bool {
    let c = g.c;
    let mut first = true;
    g.for_taps(
        o,
        #[inline(always)]
        |_, p| {
            let src = &xi[p * c..(p + 1) * c];
            if first {
                best.copy_from_slice(src);
                if ARG {
                    arg.fill(p as u32);
                }
                first = false;
                return;
            }
            let p = p as u32;
            if ARG {
                for ((b, a), &s) in best.iter_mut().zip(arg.iter_mut()).zip(src) {
                    let take = wins(s, *b);
                    *b = if take { s } else { *b };
                    *a = if take { p } else { *a };
                }
            } else {
                for (b, &s) in best.iter_mut().zip(src) {
                    *b = if wins(s, *b) { s } else { *b };
                }
            }
        },
    );
    !first
}

fn max_pool<T: Real>(g: &G3, x: &[T], out: &mut [T]) {
    let (ipos, opos, c) = (g.in_positions(), g.out_positions(), g.c);
    per_image(
        out,
        opos * c,
        #[inline(always)]
        |img, oi| {
            let xi = &x[img * ipos * c..(img + 1) * ipos * c];
            for (o, dst) in oi.chunks_mut(c).enumerate() {
                window_max::<T, false>(g, xi, o, dst, &mut []);
            }
        },
    );
}

/// Calls `f(image, o, arg, out)` for each output position `o` of each image
/// whose window reaches into the input, `arg` the input positions of its
/// channels' first largest elements, `out` the image's part of `out`
/// (`out_per_image` elements).
#[inline(always)]
fn for_each_argmax<T: Real>(
    g: &G3,
    x: &[T],
    out: &mut [T],
    out_per_image: usize,
    f: impl Fn(usize, usize, &[u32], &mut [T]) + Sync,
) {
    let (ipos, opos, c) = (g.in_positions(), g.out_positions(), g.c);
    per_image(
        out,
        out_per_image,
        #[inline(always)]
        |img, oi| {
            let xi = &x[img * ipos * c..(img + 1) * ipos * c];
            let (mut best, mut arg) = (vec![T::from_f64(0.0); c], vec![0u32; c]);
            for o in 0..opos {
                if window_max::<T, true>(g, xi, o, &mut best, &mut arg) {
                    f(img, o, &arg, oi);
                }
            }
        },
    );
}

/// `dy` added at each window's first largest element.
fn max_pool_grad<T: Real>(g: &G3, x: &[T], dy: &[T], dx: &mut [T]) {
    let (ipos, opos, c) = (g.in_positions(), g.out_positions(), g.c);
    for_each_argmax(
        g,
        x,
        dx,
        ipos * c,
        #[inline(always)]
        |img, o, arg, dxi| {
            let d = &dy[(img * opos + o) * c..(img * opos + o + 1) * c];
            for (ch, (&a, &v)) in arg.iter().zip(d).enumerate() {
                dxi[a as usize * c + ch] += v;
            }
        },
    );
}

/// `g` read at each window's first largest element.
fn max_pool_grad_grad<T: Real>(g: &G3, x: &[T], gx: &[T], out: &mut [T]) {
    let (ipos, c) = (g.in_positions(), g.c);
    for_each_argmax(
        g,
        x,
        out,
        g.out_positions() * c,
        #[inline(always)]
        |img, o, arg, oi| {
            let gi = &gx[img * ipos * c..(img + 1) * ipos * c];
            for (ch, (d, &a)) in oi[o * c..(o + 1) * c].iter_mut().zip(arg).enumerate() {
                *d = gi[a as usize * c + ch];
            }
        },
    );
}

/// Number of window elements inside the input at output position `o`.
fn count(g: &G3, o: usize) -> usize {
    let mut n = 0;
    g.for_taps(o, |_, _| n += 1);
    n
}

fn avg_pool<T: Real>(g: &G3, x: &[T], out: &mut [T]) {
    let (ipos, opos, c) = (g.in_positions(), g.out_positions(), g.c);
    per_image(
        out,
        opos * c,
        #[inline(always)]
        |img, oi| {
            let xi = &x[img * ipos * c..(img + 1) * ipos * c];
            for (o, dst) in oi.chunks_mut(c).enumerate() {
                g.for_taps(
                    o,
                    #[inline(always)]
                    |_, p| {
                        for (d, &s) in dst.iter_mut().zip(&xi[p * c..(p + 1) * c]) {
                            *d += s;
                        }
                    },
                );
                let n = T::from_f64(count(g, o).max(1) as f64);
                dst.iter_mut().for_each(|d| *d = *d / n);
            }
        },
    );
}

fn avg_pool_grad<T: Real>(g: &G3, dy: &[T], dx: &mut [T]) {
    let (ipos, opos, c) = (g.in_positions(), g.out_positions(), g.c);
    per_image(
        dx,
        ipos * c,
        #[inline(always)]
        |img, dxi| {
            for o in 0..opos {
                let n = T::from_f64(count(g, o).max(1) as f64);
                let d = &dy[(img * opos + o) * c..(img * opos + o + 1) * c];
                g.for_taps(
                    o,
                    #[inline(always)]
                    |_, p| {
                        for (t, &s) in dxi[p * c..(p + 1) * c].iter_mut().zip(d) {
                            *t += s / n;
                        }
                    },
                );
            }
        },
    );
}
