//! The reference backend: every primitive as a plain scalar loop over host
//! memory, written for reading, not speed. No fused kernels, no SIMD, no
//! threads: composites run as their decompositions. It is the oracle the
//! optimized backends are compared with, and a second device on every
//! machine (`/reference:0`), so that placement and copies are tested for real.
//!
//! Elements are widened to f64 (floats, exactly) or i128 (integers and
//! bools, exactly), computed on, and rounded once to the output dtype:
//! float arithmetic is correctly rounded, integer arithmetic wraps at the
//! dtype's width as TensorFlow's does.

use super::Backend;
use crate::backend::special;
use crate::error::{bail, Result};
use crate::op::creation::{Distribution, RandomStream, Sample};
use crate::op::elementwise::{BinaryOp, UnaryOp, SELU_ALPHA, SELU_SCALE};
use crate::op::reduce::{ArgOp, ReduceOp, ScanOp};
use crate::op::Meta;
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::layout::Layout;
use crate::tensor::storage::{try_vec_with_capacity, HostBuffer};
use crate::tensor::{DType, Device, Scalar, Shape, Value};

/// The reference device's backend.
pub(crate) struct ReferenceBackend;

/// The elements of a value in row-major order, widened.
#[derive(Clone)]
enum Elems {
    F(Vec<f64>),
    I(Vec<i128>),
}

impl Elems {
    fn len(&self) -> usize {
        match self {
            Elems::F(v) => v.len(),
            Elems::I(v) => v.len(),
        }
    }
    /// The elements at these positions, in this order.
    fn pick(&self, at: &[usize]) -> Elems {
        match self {
            Elems::F(v) => Elems::F(at.iter().map(|&i| v[i]).collect()),
            Elems::I(v) => Elems::I(at.iter().map(|&i| v[i]).collect()),
        }
    }
    /// The elements as exact integers (floats truncated).
    fn wide_ints(self) -> Vec<i128> {
        match self {
            Elems::I(v) => v,
            Elems::F(v) => v.into_iter().map(|x| x as i64 as i128).collect(),
        }
    }
    fn ints(self) -> Vec<i64> {
        match self {
            Elems::I(v) => v.into_iter().map(|x| x as i64).collect(),
            Elems::F(v) => v.into_iter().map(|x| x as i64).collect(),
        }
    }
}

/// Refuse an op whose working set the host cannot hold: this backend
/// widens each element to 16 bytes (f64 or i128) and lists its position
/// (8 more), so a large view or output would abort the process otherwise.
fn admit(elements: usize) -> Result<()> {
    crate::tensor::storage::check_request(elements.saturating_mul(24))
}

/// Buffer positions of a layout's elements in row-major order.
fn positions(l: &Layout) -> Result<Vec<usize>> {
    let shape = l.shape();
    let n = l.numel();
    admit(n)?;
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.rank()];
    for _ in 0..n {
        let mut at = l.offset() as isize;
        for (d, &i) in idx.iter().enumerate() {
            at += i as isize * l.strides()[d];
        }
        out.push(at as usize);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

fn read(v: &Value) -> Result<Elems> {
    let at = positions(&v.layout)?;
    Ok(with_dtype!(v.dtype, T => {
        let buf = v.buffer::<T>();
        if T::DTYPE.is_float() {
            Elems::F(at.iter().map(|&i| buf[i].to_f64()).collect())
        } else {
            // u64 comes back from the bits of its wrapped i64.
            let unsigned64 = T::DTYPE == DType::U64;
            Elems::I(at.iter().map(|&i| if unsigned64 { buf[i].to_i64() as u64 as i128 } else { buf[i].to_i64() as i128 }).collect())
        }
    }))
}

/// The elements of `v` broadcast to `shape`.
fn read_as(v: &Value, shape: &Shape) -> Result<Elems> {
    read(&v.view(v.layout.broadcast_to(shape)?))
}

/// A new reference value of `dtype` and `shape` holding `e`, each element
/// rounded once (floats) or converted as `as` does (integers).
fn write(dtype: DType, shape: &Shape, e: &Elems) -> Result<Value> {
    with_dtype!(dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(e.len())?;
        let o = buf.as_mut_slice::<T>();
        match e {
            Elems::F(v) => o.iter_mut().zip(v).for_each(|(o, &x)| *o = T::from_f64(x)),
            Elems::I(v) => o.iter_mut().zip(v).for_each(|(o, &x)| {
                *o = match i64::try_from(x) {
                    Ok(x) => T::from_i64(x),
                    // Past i64::MAX (u64): rounded once to a float, or its bits to u64.
                    Err(_) if T::DTYPE.is_float() => crate::tensor::dtype::u64_to_float(x as u64),
                    Err(_) => T::from_i64(x as u64 as i64),
                }
            }),
        }
        Ok(Value::from_buffer_on(Device::REFERENCE, T::DTYPE, shape.clone(), buf))
    })
}

/// `v` wrapped to the width of integer `dtype` (two's complement).
fn wrap(dtype: DType, v: i128) -> i128 {
    match dtype {
        DType::I32 => v as i32 as i128,
        DType::U8 => v as u8 as i128,
        DType::I8 => v as i8 as i128,
        DType::I16 => v as i16 as i128,
        DType::U16 => v as u16 as i128,
        DType::U32 => v as u32 as i128,
        DType::U64 => v as u64 as i128,
        DType::Bool => (v != 0) as i128,
        _ => v as i64 as i128,
    }
}

fn float_unary(f: UnaryOp, v: f64) -> f64 {
    use UnaryOp::*;
    match f {
        Neg => -v,
        Abs => v.abs(),
        Sign => {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else if v == 0.0 {
                0.0
            } else {
                v
            }
        }
        Square => v * v,
        Relu => {
            if v > 0.0 || v.is_nan() {
                v
            } else {
                0.0
            }
        }
        Relu6 => {
            if v.is_nan() {
                v
            } else {
                v.clamp(0.0, 6.0)
            }
        }
        Exp => v.exp(),
        Expm1 => v.exp_m1(),
        Log => v.ln(),
        Log1p => v.ln_1p(),
        Sqrt => v.sqrt(),
        Rsqrt => 1.0 / v.sqrt(),
        Reciprocal => 1.0 / v,
        Sin => v.sin(),
        Cos => v.cos(),
        Tan => v.tan(),
        Tanh => v.tanh(),
        Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Elu => {
            if v > 0.0 {
                v
            } else {
                v.exp_m1()
            }
        }
        Selu => SELU_SCALE * if v > 0.0 { v } else { SELU_ALPHA * v.exp_m1() },
        Gelu => 0.5 * v * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2)),
        Softplus => {
            if v.is_nan() {
                v
            } else {
                v.max(0.0) + (-v.abs()).exp().ln_1p()
            }
        }
        Erf => libm::erf(v),
        Lgamma => libm::lgamma(v),
        Digamma => special::digamma(v),
        Erfinv => special::erfinv(v),
        Ndtri => special::ndtri(v),
        BesselI0e => special::bessel_i0e(v),
        BesselI1e => special::bessel_i1e(v),
        Erfc => libm::erfc(v),
        Sinh => v.sinh(),
        Cosh => v.cosh(),
        Asin => v.asin(),
        Acos => v.acos(),
        Atan => v.atan(),
        Asinh => libm::asinh(v),
        Acosh if v < 1.0 => f64::NAN,
        Acosh => libm::acosh(v),
        Atanh => libm::atanh(v),
        Floor => v.floor(),
        Ceil => v.ceil(),
        Round => v.round_ties_even(),
        IsNan => v.is_nan() as i64 as f64,
        IsFinite => v.is_finite() as i64 as f64,
        IsInf => v.is_infinite() as i64 as f64,
        LogicalNot => f64::NAN,
    }
}

fn int_unary(f: UnaryOp, dtype: DType, v: i128) -> Result<i128> {
    use UnaryOp::*;
    Ok(wrap(
        dtype,
        match f {
            Neg => -v,
            Abs => v.abs(),
            Sign => v.signum(),
            Square => v.wrapping_mul(v),
            Relu => v.max(0),
            Relu6 => v.clamp(0, 6),
            Floor | Ceil | Round => v,
            LogicalNot => (v == 0) as i128,
            _ => bail!(dtype, "{} needs a floating-point dtype, got {dtype}", f.name()),
        },
    ))
}

fn float_binary(f: BinaryOp, x: f64, y: f64) -> f64 {
    use BinaryOp::*;
    let b = |c: bool| c as i64 as f64;
    match f {
        Add => x + y,
        Sub => x - y,
        Mul => x * y,
        Div => x / y,
        FloorDiv => (x / y).floor(),
        FloorMod => {
            let r = x % y;
            if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                r + y
            } else {
                r
            }
        }
        TruncateMod => x % y,
        Zeta => special::zeta(x, y),
        Polygamma => special::polygamma(x, y),
        Igamma => special::igamma(x, y),
        Igammac => special::igammac(x, y),
        IgammaGradA => special::igamma_grad_a(x, y),
        NextAfter => libm::nextafter(x, y),
        MulNoNan if y == 0.0 => 0.0,
        MulNoNan => x * y,
        DivNoNan if y == 0.0 => 0.0,
        DivNoNan => x / y,
        Xlogy | Xlog1py | Xdivy if x == 0.0 => 0.0,
        Xlogy => x * y.ln(),
        Xlog1py => x * y.ln_1p(),
        Xdivy => x / y,
        Pow => x.powf(y),
        Maximum | Minimum if x.is_nan() || y.is_nan() => f64::NAN,
        Maximum => x.max(y),
        Minimum => x.min(y),
        Atan2 => x.atan2(y),
        Hypot => x.hypot(y),
        LogAddExp if x == y => x + std::f64::consts::LN_2,
        LogAddExp if x.is_nan() || y.is_nan() => f64::NAN,
        LogAddExp => x.max(y) + (-(x - y).abs()).exp().ln_1p(),
        Equal => b(x == y),
        NotEqual => b(x != y),
        Less => b(x < y),
        LessEqual => b(x <= y),
        Greater => b(x > y),
        GreaterEqual => b(x >= y),
        LogicalAnd | LogicalOr => f64::NAN,
    }
}

fn int_binary(f: BinaryOp, dtype: DType, x: i128, y: i128) -> Result<i128> {
    use BinaryOp::*;
    if matches!(f, Div | FloorDiv | FloorMod | TruncateMod) && y == 0 {
        bail!(invalid, "integer division by zero in {}", f.name());
    }
    let w = |v: i128| wrap(dtype, v);
    Ok(match f {
        Add => w(x + y),
        Sub => w(x - y),
        Mul => w(x.wrapping_mul(y)),
        Div => w(x / y),
        FloorDiv => w(x.div_euclid(y) - if y < 0 && x.rem_euclid(y) != 0 { 1 } else { 0 }),
        FloorMod => {
            let r = x % y;
            w(if r != 0 && ((r < 0) != (y < 0)) { r + y } else { r })
        }
        TruncateMod => w(x % y),
        Pow => {
            if y < 0 {
                bail!(invalid, "integers cannot be raised to negative integer powers");
            }
            let (mut acc, mut base, mut e) = (1i128, w(x), y as u128);
            while e > 0 {
                if e & 1 == 1 {
                    acc = w(acc.wrapping_mul(base));
                }
                base = w(base.wrapping_mul(base));
                e >>= 1;
            }
            acc
        }
        Maximum => w(x.max(y)),
        Minimum => w(x.min(y)),
        Equal => (x == y) as i128,
        NotEqual => (x != y) as i128,
        Less => (x < y) as i128,
        LessEqual => (x <= y) as i128,
        Greater => (x > y) as i128,
        GreaterEqual => (x >= y) as i128,
        Atan2 | Hypot | LogAddExp | DivNoNan | MulNoNan | Zeta | Polygamma | Igamma | Igammac | IgammaGradA
        | NextAfter | Xlogy | Xlog1py | Xdivy => {
            bail!(dtype, "{} needs a floating-point dtype, got {dtype}", f.name())
        }
        LogicalAnd => (x != 0 && y != 0) as i128,
        LogicalOr => (x != 0 || y != 0) as i128,
    })
}

/// Row-major strides of `shape`.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The multi-index of row-major position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides_of(shape)).map(|(i, s)| i * s).sum()
}

/// Row-major source positions in `params` of gather's output elements, and
/// the matching output shape (TensorFlow's GatherV2 with `batch_dims`).
fn gather_positions(
    params: &Shape,
    indices: &[i64],
    idx_shape: &Shape,
    axis: usize,
    batch_dims: usize,
    out: &Shape,
) -> Result<Vec<usize>> {
    let n_axis = params[axis];
    if let Some(&bad) = indices.iter().find(|&&i| i < 0 || i as usize >= n_axis) {
        bail!(invalid, "gather index {bad} is out of range [0, {n_axis}) for axis {axis} of params {params}");
    }
    let j_rank = idx_shape.rank() - batch_dims;
    admit(out.numel_known())?;
    let mut at = Vec::with_capacity(out.numel_known());
    for o in 0..out.numel_known() {
        let oi = unravel(o, out);
        // out = params[:axis] + indices[batch_dims:] + params[axis + 1:]
        let (head, rest) = oi.split_at(axis);
        let (j, inner) = rest.split_at(j_rank);
        let mut ii: Vec<usize> = head[..batch_dims].to_vec();
        ii.extend_from_slice(j);
        let k = indices[ravel(&ii, idx_shape)] as usize;
        let mut pi = head.to_vec();
        pi.push(k);
        pi.extend_from_slice(inner);
        at.push(ravel(&pi, params));
    }
    Ok(at)
}

/// Row-major positions in `params` (leading `k` dims) of gather_nd's output
/// elements, checked.
fn gather_nd_positions(params: &Shape, indices: &[i64], idx_shape: &Shape) -> Result<(Vec<usize>, usize)> {
    let k = *idx_shape.last().unwrap_or(&0);
    let lead = &params[..k.min(params.rank())];
    let inner: usize = params[k.min(params.rank())..].iter().product();
    let vectors = indices.len().checked_div(k).unwrap_or(idx_shape.numel_known());
    let mut bases = Vec::with_capacity(vectors);
    for v in 0..vectors {
        let mut base = 0usize;
        for (d, &dim) in lead.iter().enumerate() {
            let i = indices[v * k + d];
            if i < 0 || i as usize >= dim {
                bail!(invalid, "gather_nd index {i} is out of range [0, {dim}) for dimension {d} of params {params}");
            }
            base = base * dim + i as usize;
        }
        bases.push(base * inner);
    }
    Ok((bases, inner))
}

impl Backend for ReferenceBackend {
    fn device(&self) -> Device {
        Device::REFERENCE
    }

    fn unary(&self, f: UnaryOp, x: &Value, out: &Meta) -> Result<Value> {
        let e = match read(x)? {
            Elems::F(v) => Elems::F(v.into_iter().map(|v| float_unary(f, v)).collect()),
            Elems::I(v) => Elems::I(v.into_iter().map(|v| int_unary(f, x.dtype, v)).collect::<Result<_>>()?),
        };
        write(out.dtype, &out.shape, &e)
    }

    fn binary(&self, f: BinaryOp, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        let e = match (read_as(a, &out.shape)?, read_as(b, &out.shape)?) {
            // f32's next value is f32's own.
            (Elems::F(x), Elems::F(y)) if f == BinaryOp::NextAfter && a.dtype == DType::F32 => {
                Elems::F(x.iter().zip(&y).map(|(&x, &y)| f64::from(libm::nextafterf(x as f32, y as f32))).collect())
            }
            (Elems::F(x), Elems::F(y)) => Elems::F(x.iter().zip(&y).map(|(&x, &y)| float_binary(f, x, y)).collect()),
            (x, y) => {
                let (x, y) = (x.wide_ints(), y.wide_ints());
                Elems::I(x.iter().zip(&y).map(|(&x, &y)| int_binary(f, a.dtype, x, y)).collect::<Result<_>>()?)
            }
        };
        write(out.dtype, &out.shape, &e)
    }

    fn select(&self, c: &Value, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
        let c = read_as(c, &out.shape)?.ints();
        let e = match (read_as(a, &out.shape)?, read_as(b, &out.shape)?) {
            (Elems::F(x), Elems::F(y)) => Elems::F((0..c.len()).map(|i| if c[i] != 0 { x[i] } else { y[i] }).collect()),
            (x, y) => {
                let (x, y) = (x.wide_ints(), y.wide_ints());
                Elems::I((0..c.len()).map(|i| if c[i] != 0 { x[i] } else { y[i] }).collect())
            }
        };
        write(out.dtype, &out.shape, &e)
    }

    fn cast(&self, x: &Value, out: &Meta) -> Result<Value> {
        write(out.dtype, &out.shape, &read(x)?)
    }

    fn reduce(&self, f: ReduceOp, x: &Value, axes: &[usize], out: &Meta) -> Result<Value> {
        if x.dtype == DType::Bool && !matches!(f, ReduceOp::Any | ReduceOp::All)
            || x.dtype != DType::Bool && matches!(f, ReduceOp::Any | ReduceOp::All)
        {
            bail!(dtype, "{} does not accept {}", f.name(), x.dtype);
        }
        let shape = x.shape();
        let kept: Vec<usize> = (0..shape.rank()).filter(|d| !axes.contains(d)).collect();
        let kept_shape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
        let count: usize = axes.iter().map(|&d| shape[d]).product();
        // Group the elements by their position in the output.
        let groups = |n_out: usize| -> Vec<Vec<usize>> {
            let mut g = vec![Vec::with_capacity(count); n_out];
            for i in 0..shape.numel_known() {
                let idx = unravel(i, shape);
                let k: Vec<usize> = kept.iter().map(|&d| idx[d]).collect();
                g[ravel(&k, &kept_shape)].push(i);
            }
            g
        };
        let n_out: usize = kept_shape.iter().product();
        admit(shape.numel_known().saturating_add(n_out))?;
        let g = groups(n_out);
        let e = match read(x)? {
            Elems::F(v) => Elems::F(
                g.iter()
                    .map(|members| {
                        let xs = members.iter().map(|&i| v[i]);
                        match f {
                            ReduceOp::Sum => xs.sum(),
                            ReduceOp::Mean => xs.sum::<f64>() / count as f64,
                            ReduceOp::Prod => xs.product(),
                            ReduceOp::Max => {
                                xs.fold(
                                    f64::NEG_INFINITY,
                                    |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) },
                                )
                            }
                            ReduceOp::Min => {
                                xs.fold(
                                    f64::INFINITY,
                                    |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) },
                                )
                            }
                            ReduceOp::Any | ReduceOp::All => f64::NAN,
                        }
                    })
                    .collect(),
            ),
            Elems::I(v) => {
                let dt = x.dtype;
                let (lo, hi) = match dt {
                    DType::I32 => (i32::MIN as i128, i32::MAX as i128),
                    DType::U8 => (0, 255),
                    DType::I8 => (i8::MIN as i128, i8::MAX as i128),
                    DType::I16 => (i16::MIN as i128, i16::MAX as i128),
                    DType::U16 => (0, u16::MAX as i128),
                    DType::U32 => (0, u32::MAX as i128),
                    DType::U64 => (0, u64::MAX as i128),
                    _ => (i64::MIN as i128, i64::MAX as i128),
                };
                Elems::I(
                    g.iter()
                        .map(|members| {
                            let xs = members.iter().map(|&i| v[i]);
                            match f {
                                ReduceOp::Sum => xs.fold(0, |a, b| wrap(dt, a + b)),
                                ReduceOp::Mean => {
                                    // TensorFlow's: exact for the narrower
                                    // integers (summed wide), wrapping for the
                                    // 64-bit ones; the quotient truncated
                                    // toward zero.
                                    let s: i128 = match dt {
                                        DType::I64 | DType::U64 => xs.fold(0, |a, b| wrap(dt, a + b)),
                                        _ => xs.sum(),
                                    };
                                    if count == 0 {
                                        0
                                    } else {
                                        wrap(dt, s / count as i128)
                                    }
                                }
                                ReduceOp::Prod => xs.fold(1i128, |a, b| wrap(dt, a.wrapping_mul(b))),
                                ReduceOp::Max => xs.fold(lo, i128::max),
                                ReduceOp::Min => xs.fold(hi, i128::min),
                                ReduceOp::Any => xs.fold(0, |a, b| (a != 0 || b != 0) as i128),
                                ReduceOp::All => xs.fold(1, |a, b| (a != 0 && b != 0) as i128),
                            }
                        })
                        .collect(),
                )
            }
        };
        write(out.dtype, &out.shape, &e)
    }

    fn arg_reduce(&self, f: ArgOp, x: &Value, axis: usize, out: &Meta) -> Result<Value> {
        if !x.dtype.is_numeric() {
            bail!(dtype, "argmax/argmin do not accept {}", x.dtype);
        }
        let shape = x.shape().to_vec();
        let v = match read(x)? {
            Elems::F(v) => v,
            Elems::I(v) => v.into_iter().map(|x| x as f64).collect(),
        };
        let st = strides_of(&shape);
        admit(out.shape.numel_known())?;
        let mut best = Vec::with_capacity(out.shape.numel_known());
        for o in 0..out.shape.numel_known() {
            // The output drops `axis`: put it back at 0.
            let mut idx = unravel(o, &out.shape);
            idx.insert(axis, 0);
            let base = ravel(&idx, &shape);
            let mut at = 0usize;
            for k in 1..shape[axis] {
                let (c, b) = (v[base + k * st[axis]], v[base + at * st[axis]]);
                // TensorFlow's: NaN skipped, the first of equals kept.
                let better = !c.is_nan() && (b.is_nan() || if f == ArgOp::ArgMax { c > b } else { c < b });
                if better {
                    at = k;
                }
            }
            best.push(at as i128);
        }
        write(out.dtype, &out.shape, &Elems::I(best))
    }

    fn scan(&self, f: ScanOp, x: &Value, axis: usize, exclusive: bool, reverse: bool, out: &Meta) -> Result<Value> {
        let shape = x.shape().to_vec();
        let st = strides_of(&shape);
        let n = shape[axis];
        let mut e = read(x)?;
        let lines: Vec<usize> = (0..x.numel()).filter(|&i| unravel(i, &shape)[axis] == 0).collect();
        let order = |j: usize| if reverse { n - 1 - j } else { j };
        match &mut e {
            Elems::F(v) => {
                for &base in &lines {
                    let mut acc = if f == ScanOp::Cumsum { 0.0 } else { 1.0 };
                    for j in 0..n {
                        let p = base + order(j) * st[axis];
                        let x = v[p];
                        let next = if f == ScanOp::Cumsum { acc + x } else { acc * x };
                        v[p] = if exclusive { acc } else { next };
                        acc = next;
                    }
                }
            }
            Elems::I(v) => {
                for &base in &lines {
                    let mut acc: i128 = if f == ScanOp::Cumsum { 0 } else { 1 };
                    for j in 0..n {
                        let p = base + order(j) * st[axis];
                        let x = v[p];
                        let next = wrap(out.dtype, if f == ScanOp::Cumsum { acc + x } else { acc.wrapping_mul(x) });
                        v[p] = if exclusive { acc } else { next };
                        acc = next;
                    }
                }
            }
        }
        write(out.dtype, &out.shape, &e)
    }

    fn matmul(&self, a: &Value, b: &Value, ta: bool, tb: bool, out: &Meta) -> Result<Value> {
        let r = out.shape.rank();
        let (m, n) = (out.shape[r - 2], out.shape[r - 1]);
        let batch = &out.shape[..r - 2];
        // Each operand as [batch..., rows, cols] broadcast over the batch, then transposed if asked.
        let operand = |v: &Value, t: bool| -> Result<(Elems, usize, usize)> {
            let vr = v.shape().rank();
            let (rows, cols) = (v.shape()[vr - 2], v.shape()[vr - 1]);
            let mut target = batch.to_vec();
            target.extend([rows, cols]);
            let mut l = v.layout.broadcast_to(&Shape::from(target))?;
            if t {
                let mut perm: Vec<usize> = (0..r).collect();
                perm.swap(r - 2, r - 1);
                l = l.permute(&perm);
            }
            let (rows, cols) = if t { (cols, rows) } else { (rows, cols) };
            Ok((read(&v.view(l))?, rows, cols))
        };
        let (ea, _, k) = operand(a, ta)?;
        let (eb, _, _) = operand(b, tb)?;
        let nb: usize = batch.iter().product();
        admit(out.shape.numel_known())?;
        let e = match (ea, eb) {
            (Elems::F(x), Elems::F(y)) => {
                let mut o = vec![0.0; nb * m * n];
                for p in 0..nb {
                    for i in 0..m {
                        for j in 0..n {
                            o[(p * m + i) * n + j] =
                                (0..k).map(|q| x[(p * m + i) * k + q] * y[(p * k + q) * n + j]).sum();
                        }
                    }
                }
                Elems::F(o)
            }
            (x, y) => {
                let (x, y) = (x.wide_ints(), y.wide_ints());
                let dt = out.dtype;
                let mut o = vec![0i128; nb * m * n];
                for p in 0..nb {
                    for i in 0..m {
                        for j in 0..n {
                            o[(p * m + i) * n + j] = (0..k).fold(0, |acc, q| {
                                wrap(dt, acc + x[(p * m + i) * k + q].wrapping_mul(y[(p * k + q) * n + j]))
                            });
                        }
                    }
                }
                Elems::I(o)
            }
        };
        write(out.dtype, &out.shape, &e)
    }

    fn assemble(&self, out: &Meta, fill: Scalar, pieces: &[(Layout, &Value)]) -> Result<Value> {
        let n = out.shape.numel_known();
        admit(n)?;
        let mut e = if out.dtype.is_float() {
            Elems::F(vec![fill.as_f64(); n])
        } else {
            Elems::I(vec![fill.as_i64() as i128; n])
        };
        for (region, v) in pieces {
            let src = read(v)?;
            let at = positions(region)?;
            match (&mut e, src) {
                (Elems::F(o), Elems::F(s)) => at.iter().zip(s).for_each(|(&p, x)| o[p] = x),
                (Elems::I(o), Elems::I(s)) => at.iter().zip(s).for_each(|(&p, x)| o[p] = x),
                _ => bail!(dtype, "assemble: a {} piece in a {} output", v.dtype, out.dtype),
            }
        }
        write(out.dtype, &out.shape, &e)
    }

    fn range(&self, start: Scalar, delta: Scalar, out: &Meta) -> Result<Value> {
        let n = out.shape.numel_known();
        admit(n)?;
        let e = match (start, delta) {
            (Scalar::I64(s), Scalar::I64(d)) if !out.dtype.is_float() => {
                Elems::I((0..n).map(|i| s.wrapping_add((i as i64).wrapping_mul(d)) as i128).collect())
            }
            _ => Elems::F((0..n).map(|i| start.as_f64() + i as f64 * delta.as_f64()).collect()),
        };
        write(out.dtype, &out.shape, &e)
    }

    fn random(&self, dist: &Distribution, out: &Meta, seed: u64, stream: u64) -> Result<Value> {
        let s = RandomStream::new(seed, stream);
        let per = RandomStream::per_block(out.dtype, dist);
        let n = out.shape.numel_known();
        admit(n)?;
        let (mut f, mut ints) = (Vec::new(), Vec::new());
        // Block `b` holds elements `b * per ..`: each block drawn once.
        for b in 0..n.div_ceil(per) {
            let take = per.min(n - b * per);
            match s.sample_block(dist, out.dtype, b as u64) {
                Sample::F(v) => f.extend_from_slice(&v[..take]),
                Sample::I(v) => ints.extend_from_slice(&v[..take]),
            }
        }
        let e = if matches!(dist, Distribution::UniformInt { .. }) {
            Elems::I(ints.into_iter().map(i128::from).collect())
        } else {
            Elems::F(f)
        };
        write(out.dtype, &out.shape, &e)
    }

    fn gather(&self, params: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value> {
        let idx = read(indices)?.ints();
        let at = gather_positions(params.shape(), &idx, indices.shape(), axis, batch_dims, &out.shape)?;
        write(out.dtype, &out.shape, &read(params)?.pick(&at))
    }

    fn gather_nd(&self, params: &Value, indices: &Value, out: &Meta) -> Result<Value> {
        let idx = read(indices)?.ints();
        let (bases, inner) = gather_nd_positions(params.shape(), &idx, indices.shape())?;
        admit(bases.len().saturating_mul(inner))?;
        let at: Vec<usize> = bases.iter().flat_map(|&b| b..b + inner).collect();
        write(out.dtype, &out.shape, &read(params)?.pick(&at))
    }

    fn scatter_add(
        &self,
        updates: &Value,
        indices: &Value,
        axis: usize,
        batch_dims: usize,
        out: &Meta,
    ) -> Result<Value> {
        let idx = read(indices)?.ints();
        let at = gather_positions(&out.shape, &idx, indices.shape(), axis, batch_dims, updates.shape())?;
        scatter(out, &read(updates)?, &at)
    }

    fn scatter_nd(&self, indices: &Value, updates: &Value, out: &Meta) -> Result<Value> {
        let idx = read(indices)?.ints();
        let (bases, inner) = gather_nd_positions(&out.shape, &idx, indices.shape())?;
        admit(bases.len().saturating_mul(inner))?;
        let at: Vec<usize> = bases.iter().flat_map(|&b| b..b + inner).collect();
        if at.len() != updates.numel() {
            bail!(
                shape,
                "scatter_nd updates {} do not match indices {} and shape {}",
                updates.shape(),
                indices.shape(),
                out.shape
            );
        }
        scatter(out, &read(updates)?, &at)
    }

    fn top_k(&self, x: &Value, k: usize, outs: &[Meta]) -> Result<(Value, Value)> {
        let shape = x.shape();
        let len = *shape.last().unwrap_or(&1);
        let rows = x.numel().checked_div(len).unwrap_or(0);
        let v = match read(x)? {
            Elems::F(v) => v,
            Elems::I(v) => v.into_iter().map(|x| x as f64).collect(),
        };
        admit(rows.saturating_mul(k).saturating_mul(2))?;
        let (mut vals, mut idx) = (Vec::with_capacity(rows * k), Vec::with_capacity(rows * k));
        for r in 0..rows {
            let row = &v[r * len..(r + 1) * len];
            let mut order: Vec<usize> = (0..len).collect();
            // Descending, NaN first, ties by index.
            order.sort_by(|&a, &b| match (row[a].is_nan(), row[b].is_nan()) {
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => row[b].partial_cmp(&row[a]).unwrap_or(std::cmp::Ordering::Equal),
            });
            for &j in &order[..k] {
                vals.push(row[j]);
                idx.push(j as i128);
            }
        }
        let vals =
            if x.dtype.is_float() { Elems::F(vals) } else { Elems::I(vals.into_iter().map(|v| v as i128).collect()) };
        Ok((write(outs[0].dtype, &outs[0].shape, &vals)?, write(outs[1].dtype, &outs[1].shape, &Elems::I(idx))?))
    }

    fn upload(&self, host: &Value) -> Result<Value> {
        copy_to(host, Device::REFERENCE)
    }

    fn download(&self, v: &Value) -> Result<Value> {
        copy_to(v, Device::CPU)
    }

    /// The decomposed update into new values, then copied over the old
    /// buffers: the reference device keeps variables at one address as an
    /// accelerator does, so the store's in-place path is tested on it.
    fn update_in_place(
        &self,
        rule: &crate::op::optim::UpdateRule,
        targets: &mut [Value],
        grad: &Value,
        lr: &Value,
        step: &Value,
    ) -> Result<bool> {
        if targets.iter().any(|t| !t.layout.is_contiguous()) {
            return Ok(false);
        }
        let mut inputs: Vec<&Value> = vec![&targets[0], grad, lr, step];
        inputs.extend(&targets[1..]);
        let op = crate::op::Op::ApplyUpdate { rule: *rule };
        let new = super::execute_on(Device::REFERENCE, &op, &inputs, &super::KernelCtx::EAGER)?;
        if new.len() != targets.len() {
            bail!(invalid, "internal: {} values from an update of {}", new.len(), targets.len());
        }
        // Fresh copies: a decomposed result may be a view of an old buffer.
        let fresh: Vec<Value> = new.iter().map(|v| copy_to(v, Device::REFERENCE)).collect::<Result<_>>()?;
        drop((inputs, new));
        let new = fresh;
        for (t, v) in targets.iter_mut().zip(&new) {
            let (at, len) = (t.layout.offset * t.dtype.size(), t.numel() * t.dtype.size());
            let Some(storage) = std::sync::Arc::get_mut(&mut t.storage) else {
                bail!(invalid, "internal: an in-place update of a shared buffer")
            };
            storage.host_mut().bytes_mut()[at..at + len].copy_from_slice(&v.storage.host().bytes()[..len]);
        }
        Ok(true)
    }
}

/// Zeros of `out` with `updates[i]` added at position `at[i]`.
fn scatter(out: &Meta, updates: &Elems, at: &[usize]) -> Result<Value> {
    let n = out.shape.numel_known();
    admit(n)?;
    let e = match updates {
        Elems::F(u) => {
            let mut o = vec![0.0; n];
            at.iter().zip(u).for_each(|(&p, &x)| o[p] += x);
            Elems::F(o)
        }
        Elems::I(u) => {
            let mut o = vec![0i128; n];
            at.iter().zip(u).for_each(|(&p, &x)| o[p] = wrap(out.dtype, o[p] + x));
            Elems::I(o)
        }
    };
    write(out.dtype, &out.shape, &e)
}

/// A contiguous copy of `v`'s elements in host memory of `device`, bit for bit.
fn copy_to(v: &Value, device: Device) -> Result<Value> {
    let at = positions(&v.layout)?;
    with_dtype!(v.dtype, T => {
        let src = v.buffer::<T>();
        let mut out = try_vec_with_capacity::<T>(at.len())?;
        out.extend(at.iter().map(|&i| src[i]));
        let mut buf = HostBuffer::for_elements::<T>(out.len())?;
        buf.as_mut_slice::<T>().copy_from_slice(&out);
        Ok(Value::from_buffer_on(device, T::DTYPE, v.shape().clone(), buf))
    })
}
