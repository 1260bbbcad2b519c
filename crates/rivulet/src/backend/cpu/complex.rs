//! Kernels of the complex-part ops and the Fourier transforms, the only
//! implementation of them: other backends run these on host copies.
//!
//! Transforms are `rustfft`'s (complex) and `realfft`'s (real to complex
//! and back), planned once per length and cached. A transform along the
//! last axis runs on the contiguous rows directly; along another axis, a
//! task gathers a group of columns into rows (whole cache lines at a time),
//! transforms them and a second pass writes them back.

use super::copy::materialize;
use crate::error::{bail, Result};
use crate::op::{ComplexOp, FftOp, Meta};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{Complex, DType, Element, Value};
use parking_lot::Mutex;
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftDirection, FftNum, FftPlanner};
use smallvec::{smallvec, SmallVec};
use std::sync::{Arc, OnceLock};

/// Elements a parallel task transforms at least (smaller inputs stay on one thread).
const TASK_ELEMENTS: usize = 1 << 14;
/// Columns gathered into rows at once: a 64-byte line of c64.
const COLUMNS: usize = 8;

/// Run a complex-part op on CPU values.
pub(crate) fn parts(f: ComplexOp, inputs: &[&Value], out: &Meta) -> Result<Value> {
    match (f, inputs[0].dtype) {
        (ComplexOp::Make, DType::F32) => make::<f32>(inputs, out),
        (ComplexOp::Make, DType::F64) => make::<f64>(inputs, out),
        (ComplexOp::Real | ComplexOp::Imag, DType::C64) => part::<f32>(f, inputs[0]),
        (ComplexOp::Real | ComplexOp::Imag, DType::C128) => part::<f64>(f, inputs[0]),
        (f, d) => bail!(dtype, "{} does not accept {d}", f.type_name()),
    }
}

fn make<T: FftFloat>(inputs: &[&Value], out: &Meta) -> Result<Value>
where
    Complex<T>: Element,
{
    let [re, im] = [inputs[0], inputs[1]]
        .map(|v| v.layout.broadcast_to(&out.shape).map(|l| materialize(&v.view(l))))
        .map(|r| r.and_then(|v| v));
    let (re, im) = (re?, im?);
    let (re, im) = (re.contiguous_slice::<T>().unwrap_or(&[]), im.contiguous_slice::<T>().unwrap_or(&[]));
    let mut buf = HostBuffer::for_elements::<Complex<T>>(out.shape.checked_numel()?)?;
    let dst = buf.as_mut_slice::<Complex<T>>();
    super::parallel::fill_chunks(dst, super::parallel::GRAIN, |start, chunk| {
        for (k, z) in chunk.iter_mut().enumerate() {
            *z = Complex::new(re[start + k], im[start + k]);
        }
    });
    Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf))
}

fn part<T: FftFloat>(f: ComplexOp, z: &Value) -> Result<Value>
where
    Complex<T>: Element,
{
    let z = materialize(z)?;
    let src = z.contiguous_slice::<Complex<T>>().unwrap_or(&[]);
    let mut buf = HostBuffer::for_elements::<T>(src.len())?;
    let imag = f == ComplexOp::Imag;
    super::parallel::map_slices(src, buf.as_mut_slice::<T>(), |s, d| {
        for (o, z) in d.iter_mut().zip(s) {
            *o = if imag { z.im } else { z.re };
        }
    });
    Ok(Value::from_buffer(T::DTYPE, z.shape().clone(), buf))
}

/// Run a Fourier transform on a CPU value.
pub(crate) fn fft(f: FftOp, x: &Value, out: &Meta) -> Result<Value> {
    match x.dtype {
        DType::F32 | DType::C64 => fft_typed::<f32>(f, x, out),
        DType::F64 | DType::C128 => fft_typed::<f64>(f, x, out),
        d => bail!(dtype, "{} does not accept {d}", f.type_name()),
    }
}

/// The float types the transforms run in, each with its cached planners.
pub(crate) trait FftFloat: FftNum + Element {
    fn planners() -> &'static Planners<Self>;
}

/// Cached plans of one float type (plans are shared, planning is not).
pub(crate) struct Planners<T: FftNum> {
    complex: Mutex<FftPlanner<T>>,
    real: Mutex<RealFftPlanner<T>>,
}

impl<T: FftNum> Planners<T> {
    fn new() -> Self {
        Planners { complex: Mutex::new(FftPlanner::new()), real: Mutex::new(RealFftPlanner::new()) }
    }
    fn complex(&self, n: usize, direction: FftDirection) -> Arc<dyn Fft<T>> {
        self.complex.lock().plan_fft(n, direction)
    }
    fn forward_real(&self, n: usize) -> Arc<dyn RealToComplex<T>> {
        self.real.lock().plan_fft_forward(n)
    }
    fn inverse_real(&self, n: usize) -> Arc<dyn ComplexToReal<T>> {
        self.real.lock().plan_fft_inverse(n)
    }
}

impl FftFloat for f32 {
    fn planners() -> &'static Planners<f32> {
        static P: OnceLock<Planners<f32>> = OnceLock::new();
        P.get_or_init(Planners::new)
    }
}
impl FftFloat for f64 {
    fn planners() -> &'static Planners<f64> {
        static P: OnceLock<Planners<f64>> = OnceLock::new();
        P.get_or_init(Planners::new)
    }
}

fn fft_typed<T: FftFloat>(f: FftOp, x: &Value, out: &Meta) -> Result<Value>
where
    Complex<T>: Element,
{
    let x = materialize(x)?;
    let dims: SmallVec<[usize; 6]> = x.shape().iter().copied().collect();
    let out_dims: SmallVec<[usize; 6]> = out.shape.iter().copied().collect();
    let rank = f.rank();
    let last = dims.len() - 1;
    let planners = T::planners();
    match f {
        FftOp::Fft { .. } | FftOp::Ifft { .. } => {
            let inverse = matches!(f, FftOp::Ifft { .. });
            let src = x.contiguous_slice::<Complex<T>>().unwrap_or(&[]);
            let mut buf = HostBuffer::for_elements::<Complex<T>>(src.len())?;
            let data = buf.as_mut_slice::<Complex<T>>();
            let direction = if inverse { FftDirection::Inverse } else { FftDirection::Forward };
            // The first pass reads the input, the others work in place.
            for (k, axis) in (dims.len() - rank..dims.len()).rev().enumerate() {
                transform_axis((k == 0).then_some(src), data, &dims, axis, direction, planners)?;
            }
            if inverse {
                scale(data, points(&dims[dims.len() - rank..]));
            }
            Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf))
        }
        FftOp::Rfft { .. } => {
            let src = x.contiguous_slice::<T>().unwrap_or(&[]);
            let (n, m) = (dims[last], out_dims[last]);
            let mut buf = HostBuffer::for_elements::<Complex<T>>(out.shape.checked_numel()?)?;
            let data = buf.as_mut_slice::<Complex<T>>();
            let plan = planners.forward_real(n);
            let rows = rows_per_task(n);
            data.par_chunks_mut(rows * m).zip(src.par_chunks(rows * n)).try_for_each_init(
                || (plan.make_input_vec(), plan.make_scratch_vec()),
                |(input, scratch), (dst, src)| -> Result<()> {
                    for (o, i) in dst.chunks_mut(m).zip(src.chunks(n)) {
                        input.copy_from_slice(i);
                        plan.process_with_scratch(input, o, scratch).map_err(fft_error)?;
                    }
                    Ok(())
                },
            )?;
            for axis in (dims.len() - rank..last).rev() {
                transform_axis(None, data, &out_dims, axis, FftDirection::Forward, planners)?;
            }
            Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf))
        }
        FftOp::Irfft { n, .. } => {
            let src = x.contiguous_slice::<Complex<T>>().unwrap_or(&[]);
            let m = dims[last];
            // Along the other axes first (into a work buffer), then each row
            // to a real signal through a row copy (the real transform
            // overwrites its input).
            let mut work = HostBuffer::for_elements::<Complex<T>>(if rank > 1 { src.len() } else { 0 })?;
            let spectrum: &[Complex<T>] = if rank > 1 {
                let w = work.as_mut_slice::<Complex<T>>();
                for (k, axis) in (dims.len() - rank..last).rev().enumerate() {
                    transform_axis((k == 0).then_some(src), w, &dims, axis, FftDirection::Inverse, planners)?;
                }
                w
            } else {
                src
            };
            let mut buf = HostBuffer::for_elements::<T>(out.shape.checked_numel()?)?;
            let data = buf.as_mut_slice::<T>();
            let plan = planners.inverse_real(n);
            let s = <T as Element>::from_f64(1.0 / points(&out_dims[out_dims.len() - rank..]) as f64);
            let rows = rows_per_task(n);
            let even = n % 2 == 0;
            data.par_chunks_mut(rows * n).zip(spectrum.par_chunks(rows * m)).try_for_each_init(
                || (plan.make_input_vec(), plan.make_scratch_vec()),
                |(row, scratch), (dst, src)| -> Result<()> {
                    for (o, i) in dst.chunks_mut(n).zip(src.chunks(m)) {
                        row.copy_from_slice(i);
                        // A real signal's spectrum is real at 0 and n/2:
                        // other imaginary parts there are ignored, as
                        // TensorFlow and NumPy do.
                        row[0].im = T::zero();
                        if even {
                            row[m - 1].im = T::zero();
                        }
                        plan.process_with_scratch(row, o, scratch).map_err(fft_error)?;
                        // Normalized while the row is in cache.
                        o.iter_mut().for_each(|v| *v = *v * s);
                    }
                    Ok(())
                },
            )?;
            Ok(Value::from_buffer(out.dtype, out.shape.clone(), buf))
        }
    }
}

fn fft_error(e: realfft::FftError) -> crate::error::Error {
    crate::error::Error::invalid(format!("real FFT: {e}"))
}

/// The number of points of a transform over axes of these lengths.
fn points(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Rows of length `n` per parallel task.
fn rows_per_task(n: usize) -> usize {
    (TASK_ELEMENTS / n.max(1)).max(1)
}

/// Multiply every element by `1 / count`.
fn scale<T: FftFloat>(data: &mut [Complex<T>], count: usize) {
    let s = <T as Element>::from_f64(1.0 / count.max(1) as f64);
    super::parallel::fill_chunks(data, super::parallel::GRAIN, |_, chunk| chunk.iter_mut().for_each(|z| *z = *z * s));
}

/// Transform `data` (row-major, of `dims`) along `axis`, unnormalized: in
/// place, or from `src` (of the same shape) when given.
fn transform_axis<T: FftFloat>(
    src: Option<&[Complex<T>]>,
    data: &mut [Complex<T>],
    dims: &[usize],
    axis: usize,
    direction: FftDirection,
    planners: &Planners<T>,
) -> Result<()>
where
    Complex<T>: Element,
{
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    if n <= 1 || data.is_empty() {
        if let Some(src) = src {
            data.copy_from_slice(src);
        }
        return Ok(());
    }
    let plan = planners.complex(n, direction);
    let zero = Complex::new(T::zero(), T::zero());
    let scratch = || vec![zero; plan.get_inplace_scratch_len()];
    if inner == 1 {
        let rows = rows_per_task(n) * n;
        data.par_chunks_mut(rows).enumerate().for_each_init(scratch, |scratch, (t, chunk)| {
            if let Some(src) = src {
                chunk.copy_from_slice(&src[t * rows..t * rows + chunk.len()]);
            }
            plan.process_with_scratch(chunk, scratch)
        });
        return Ok(());
    }
    // Each slab [n, inner] is transposed into columns-as-rows (a task takes
    // COLUMNS columns: whole cache lines), transformed, and written back.
    let slab = n * inner;
    // A cached host buffer: a fresh allocation of this size would fault in
    // its pages on every call.
    let mut scratch_buffer = HostBuffer::for_elements::<Complex<T>>(slab)?;
    let columns = scratch_buffer.as_mut_slice::<Complex<T>>();
    for (b, block) in data.chunks_mut(slab).enumerate() {
        let from: &[Complex<T>] = match src {
            Some(s) => &s[b * slab..(b + 1) * slab],
            None => block,
        };
        columns.par_chunks_mut(COLUMNS * n).enumerate().for_each_init(scratch, |scratch, (g, rows)| {
            let c0 = g * COLUMNS;
            let width = rows.len() / n;
            for i in 0..n {
                for (j, &z) in from[i * inner + c0..i * inner + c0 + width].iter().enumerate() {
                    rows[j * n + i] = z;
                }
            }
            plan.process_with_scratch(rows, scratch);
        });
        let cols: &[Complex<T>] = columns;
        block.par_chunks_mut(COLUMNS * inner).enumerate().for_each(|(g, lines)| {
            let i0 = g * COLUMNS;
            let height = lines.len() / inner;
            for c in 0..inner {
                let run = &cols[c * n + i0..c * n + i0 + height];
                for (di, &z) in run.iter().enumerate() {
                    lines[di * inner + c] = z;
                }
            }
        });
    }
    Ok(())
}

/// The outputs of a complex-part or FFT op, for the CPU dispatcher.
pub(crate) fn run(op: &crate::op::Op, inputs: &[&Value], outs: &[Meta]) -> Result<SmallVec<[Value; 2]>> {
    Ok(match op {
        crate::op::Op::Complex { f } => smallvec![parts(*f, inputs, &outs[0])?],
        crate::op::Op::Fft { f } => smallvec![fft(*f, inputs[0], &outs[0])?],
        other => bail!(invalid, "{} is not a complex or FFT op", other.type_name()),
    })
}
