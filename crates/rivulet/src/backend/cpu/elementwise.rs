//! Elementwise kernels: unary, binary (broadcasting), select and cast.
//!
//! Each kernel maps values to a fresh contiguous output. Contiguous inputs of
//! the output's shape take a slice-to-slice path; anything else (broadcast,
//! transposed, stepped, reversed) goes row by row through [`Rows`], with the
//! common inner strides 0 and 1 specialised so they vectorise too.

use super::loops::{self, Map, Select, Zip};
use super::math;
use super::parallel::{fill_chunks, map_slices, GRAIN};
use super::simd::vectorize;
use super::strided::Rows;
use crate::backend::special;
use crate::error::{bail, Result};
use crate::op::elementwise::{BinaryOp, UnaryOp};
use crate::op::Meta;
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{Complex, DType, Shape, Value};
use half::{bf16, f16};

/// Map one input to a new contiguous value of element type `U`.
pub(crate) fn map_unary<T: Element, U: Element>(x: &Value, f: impl Fn(T) -> U + Sync + Send + Copy) -> Result<Value> {
    let n = x.numel();
    let mut buf = HostBuffer::for_elements::<U>(n)?;
    let out = buf.as_mut_slice::<U>();
    if let Some(src) = x.contiguous_slice::<T>() {
        map_slices(src, out, |s, d| loops::map(s, d, f));
    } else {
        let rows = Rows::new(x.shape(), [&x.layout]);
        let (src, stride) = (x.buffer::<T>(), rows.inner_stride(0));
        rows.fill(out, GRAIN, |dst, [off]| vectorize(Map { src, off, stride, dst, f }));
    }
    Ok(Value::from_buffer(U::DTYPE, x.shape().clone(), buf))
}

/// Map two inputs, broadcast to `shape`, to a new contiguous value.
pub(crate) fn map_binary<A: Element, B: Element, U: Element>(
    a: &Value,
    b: &Value,
    shape: &Shape,
    f: impl Fn(A, B) -> U + Sync + Send + Copy,
) -> Result<Value> {
    let n = shape.numel_known();
    let mut buf = HostBuffer::for_elements::<U>(n)?;
    let out = buf.as_mut_slice::<U>();
    let whole = |v: &Value| v.shape() == shape;
    match (a.contiguous_slice::<A>(), b.contiguous_slice::<B>()) {
        // Same shape, or one side a single element: one flat loop.
        (Some(sa), Some(sb)) if (whole(a) || sa.len() == 1) && (whole(b) || sb.len() == 1) => {
            let (step_a, step_b) = (if whole(a) { 1 } else { 0 }, if whole(b) { 1 } else { 0 });
            fill_chunks(out, GRAIN, |start, dst| {
                let s = start as isize;
                vectorize(Zip { a: sa, oa: s * step_a, sa: step_a, b: sb, ob: s * step_b, sb: step_b, dst, f })
            });
        }
        _ => {
            let la = a.layout.broadcast_to(shape)?;
            let lb = b.layout.broadcast_to(shape)?;
            let rows = Rows::new(shape, [&la, &lb]);
            let (ba, bb) = (a.buffer::<A>(), b.buffer::<B>());
            let (sa, sb) = (rows.inner_stride(0), rows.inner_stride(1));
            rows.fill(out, GRAIN, |dst, [oa, ob]| vectorize(Zip { a: ba, oa, sa, b: bb, ob, sb, dst, f }));
        }
    }
    Ok(Value::from_buffer(U::DTYPE, shape.clone(), buf))
}

/// Float ops on f16/bf16 compute in f32 and round once at the end.
fn via_f32(x: &Value, out_dtype: DType, f: impl FnOnce(&Value) -> Result<Value>) -> Result<Value> {
    let up = cast(x, DType::F32)?;
    let r = f(&up)?;
    if r.dtype == DType::F32 && out_dtype != DType::F32 {
        cast(&r, out_dtype)
    } else {
        Ok(r)
    }
}

pub(crate) fn unary(op: UnaryOp, x: &Value, out: &Meta) -> Result<Value> {
    use UnaryOp::*;
    match x.dtype {
        DType::F16 | DType::BF16 => via_f32(x, out.dtype, |v| unary(op, v, &Meta::new(DType::F32, out.shape.clone()))),
        DType::F32 => unary_f32(op, x),
        DType::F64 => unary_f64(op, x),
        DType::Bool => match op {
            LogicalNot => map_unary(x, |v: bool| !v),
            _ => bail!(dtype, "{} does not accept bool", op.name()),
        },
        dt => {
            with_dtype!(dt, T => unary_int::<T>(op, x), [I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "unexpected dtype {dt}"))
        }
    }
}

/// Evaluate `$body` with `$f` bound to the f32 -> f32 function of unary op
/// `$op`: the one definition of its f32 semantics, shared by the plain and
/// the fused kernels (so fusion never changes a bit). Ops without an
/// f32 -> f32 form evaluate `$other`.
macro_rules! f32_unary {
    ($op:expr, $f:ident => $body:expr, $other:expr) => {{
        use $crate::backend::cpu::math;
        #[allow(unused_imports)]
        use $crate::op::elementwise::UnaryOp::*;
        let alpha = math::SELU_ALPHA as f32;
        let scale = math::SELU_SCALE as f32;
        let _ = (alpha, scale);
        match $op {
            Neg => {
                let $f = |v: f32| -v;
                $body
            }
            Abs => {
                let $f = |v: f32| v.abs();
                $body
            }
            Sign => {
                // TensorFlow's: +0 for either zero, NaN for NaN.
                let $f = |v: f32| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else if v == 0.0 {
                        0.0
                    } else {
                        v
                    }
                };
                $body
            }
            Square => {
                let $f = |v: f32| v * v;
                $body
            }
            Relu => {
                let $f = |v: f32| if v > 0.0 || v.is_nan() { v } else { 0.0 };
                $body
            }
            Relu6 => {
                let $f = |v: f32| if v.is_nan() { v } else { v.clamp(0.0, 6.0) };
                $body
            }
            Exp => {
                let $f = math::exp;
                $body
            }
            Expm1 => {
                let $f = math::expm1;
                $body
            }
            Log => {
                let $f = math::log;
                $body
            }
            Log1p => {
                let $f = math::log1p;
                $body
            }
            Sqrt => {
                let $f = |v: f32| v.sqrt();
                $body
            }
            Rsqrt => {
                let $f = |v: f32| 1.0 / v.sqrt();
                $body
            }
            Reciprocal => {
                let $f = |v: f32| 1.0 / v;
                $body
            }
            Sin => {
                let $f = |v: f32| v.sin();
                $body
            }
            Cos => {
                let $f = |v: f32| v.cos();
                $body
            }
            Tan => {
                let $f = |v: f32| v.tan();
                $body
            }
            Tanh => {
                let $f = math::tanh;
                $body
            }
            Sigmoid => {
                let $f = math::sigmoid;
                $body
            }
            Elu => {
                let $f = |v: f32| if v > 0.0 { v } else { math::expm1(v) };
                $body
            }
            Selu => {
                let $f = move |v: f32| scale * if v > 0.0 { v } else { alpha * math::expm1(v) };
                $body
            }
            Gelu => {
                let $f = |v: f32| 0.5 * v * (1.0 + math::erf(v * std::f32::consts::FRAC_1_SQRT_2));
                $body
            }
            Softplus => {
                let $f = math::softplus;
                $body
            }
            Erf => {
                let $f = math::erf;
                $body
            }
            Lgamma => {
                // In f64 and rounded once: lgammaf loses digits near its zeros at 1 and 2.
                let $f = |v: f32| libm::lgamma(f64::from(v)) as f32;
                $body
            }
            Digamma => {
                let $f = |v: f32| $crate::backend::special::digamma(f64::from(v)) as f32;
                $body
            }
            Erfinv => {
                let $f = |v: f32| $crate::backend::special::erfinv(f64::from(v)) as f32;
                $body
            }
            Ndtri => {
                let $f = |v: f32| $crate::backend::special::ndtri(f64::from(v)) as f32;
                $body
            }
            BesselI0e => {
                let $f = |v: f32| $crate::backend::special::bessel_i0e(f64::from(v)) as f32;
                $body
            }
            BesselI1e => {
                let $f = |v: f32| $crate::backend::special::bessel_i1e(f64::from(v)) as f32;
                $body
            }
            Erfc => {
                let $f = libm::erfcf;
                $body
            }
            Sinh => {
                let $f = |v: f32| v.sinh();
                $body
            }
            Cosh => {
                let $f = |v: f32| v.cosh();
                $body
            }
            Asin => {
                let $f = |v: f32| v.asin();
                $body
            }
            Acos => {
                let $f = |v: f32| v.acos();
                $body
            }
            Atan => {
                let $f = |v: f32| v.atan();
                $body
            }
            Asinh => {
                let $f = libm::asinhf;
                $body
            }
            Acosh => {
                // libm answers for |x| below -1 too; acosh is NaN below 1.
                let $f = |v: f32| if v < 1.0 { f32::NAN } else { libm::acoshf(v) };
                $body
            }
            Atanh => {
                let $f = libm::atanhf;
                $body
            }
            Floor => {
                let $f = |v: f32| v.floor();
                $body
            }
            Ceil => {
                let $f = |v: f32| v.ceil();
                $body
            }
            Round => {
                let $f = |v: f32| v.round_ties_even();
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use f32_unary;

/// [`f32_unary`] for the f32 -> bool tests.
macro_rules! f32_predicate {
    ($op:expr, $f:ident => $body:expr, $other:expr) => {{
        match $op {
            $crate::op::elementwise::UnaryOp::IsNan => {
                let $f = |v: f32| v.is_nan();
                $body
            }
            $crate::op::elementwise::UnaryOp::IsFinite => {
                let $f = |v: f32| v.is_finite();
                $body
            }
            $crate::op::elementwise::UnaryOp::IsInf => {
                let $f = |v: f32| v.is_infinite();
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use f32_predicate;

/// The float arithmetic of binary op `$op` for element type `$t` (one
/// definition for the plain and fused kernels).
macro_rules! float_binary_fn {
    ($t:ty, $op:expr, $f:ident => $body:expr, $other:expr) => {{
        #[allow(unused_imports)]
        use $crate::op::elementwise::BinaryOp::*;
        match $op {
            Add => {
                let $f = |x: $t, y: $t| x + y;
                $body
            }
            Sub => {
                let $f = |x: $t, y: $t| x - y;
                $body
            }
            Mul => {
                let $f = |x: $t, y: $t| x * y;
                $body
            }
            Div => {
                let $f = |x: $t, y: $t| x / y;
                $body
            }
            FloorDiv => {
                let $f = |x: $t, y: $t| (x / y).floor();
                $body
            }
            FloorMod => {
                let $f = |x: $t, y: $t| $crate::backend::cpu::elementwise::fmod_floor(x, y);
                $body
            }
            Pow => {
                let $f = |x: $t, y: $t| x.powf(y);
                $body
            }
            TruncateMod => {
                let $f = |x: $t, y: $t| x % y;
                $body
            }
            Zeta => {
                let $f = |x: $t, y: $t| $crate::backend::special::zeta(x as f64, y as f64) as $t;
                $body
            }
            Polygamma => {
                let $f = |x: $t, y: $t| $crate::backend::special::polygamma(x as f64, y as f64) as $t;
                $body
            }
            Igamma => {
                let $f = |x: $t, y: $t| $crate::backend::special::igamma(x as f64, y as f64) as $t;
                $body
            }
            Igammac => {
                let $f = |x: $t, y: $t| $crate::backend::special::igammac(x as f64, y as f64) as $t;
                $body
            }
            IgammaGradA => {
                let $f = |x: $t, y: $t| $crate::backend::special::igamma_grad_a(x as f64, y as f64) as $t;
                $body
            }
            NextAfter => {
                let $f = <$t as $crate::backend::cpu::elementwise::NextAfter>::next_after;
                $body
            }
            MulNoNan => {
                let $f = |x: $t, y: $t| if y == 0.0 { 0.0 } else { x * y };
                $body
            }
            DivNoNan => {
                let $f = |x: $t, y: $t| if y == 0.0 { 0.0 } else { x / y };
                $body
            }
            Xlogy => {
                let $f = |x: $t, y: $t| if x == 0.0 { 0.0 } else { x * y.ln() };
                $body
            }
            Xlog1py => {
                let $f = |x: $t, y: $t| if x == 0.0 { 0.0 } else { x * y.ln_1p() };
                $body
            }
            Xdivy => {
                let $f = |x: $t, y: $t| if x == 0.0 { 0.0 } else { x / y };
                $body
            }
            Maximum => {
                let $f = |x: $t, y: $t| {
                    if x.is_nan() || y.is_nan() {
                        <$t>::NAN
                    } else if x > y {
                        x
                    } else {
                        y
                    }
                };
                $body
            }
            Minimum => {
                let $f = |x: $t, y: $t| {
                    if x.is_nan() || y.is_nan() {
                        <$t>::NAN
                    } else if x < y {
                        x
                    } else {
                        y
                    }
                };
                $body
            }
            Atan2 => {
                let $f = |x: $t, y: $t| x.atan2(y);
                $body
            }
            Hypot => {
                let $f = |x: $t, y: $t| x.hypot(y);
                $body
            }
            LogAddExp => {
                // The larger plus log1p(e^-|x - y|); exact where the two are
                // equal (infinities included), NaN if either is NaN.
                let $f = |x: $t, y: $t| {
                    if x == y {
                        x + std::f64::consts::LN_2 as $t
                    } else if x.is_nan() || y.is_nan() {
                        <$t>::NAN
                    } else {
                        x.max(y) + (-(x - y).abs()).exp().ln_1p()
                    }
                };
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use float_binary_fn;

/// The comparisons of binary op `$op` for element type `$t` (bool results).
macro_rules! compare_fn {
    ($t:ty, $op:expr, $f:ident => $body:expr, $other:expr) => {{
        #[allow(unused_imports)]
        use $crate::op::elementwise::BinaryOp::*;
        match $op {
            Equal => {
                let $f = |x: $t, y: $t| x == y;
                $body
            }
            NotEqual => {
                let $f = |x: $t, y: $t| x != y;
                $body
            }
            Less => {
                let $f = |x: $t, y: $t| x < y;
                $body
            }
            LessEqual => {
                let $f = |x: $t, y: $t| x <= y;
                $body
            }
            Greater => {
                let $f = |x: $t, y: $t| x > y;
                $body
            }
            GreaterEqual => {
                let $f = |x: $t, y: $t| x >= y;
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use compare_fn;

/// The bool -> bool binary ops.
macro_rules! bool_binary_fn {
    ($op:expr, $f:ident => $body:expr, $other:expr) => {{
        #[allow(unused_imports)]
        use $crate::op::elementwise::BinaryOp::*;
        match $op {
            Equal => {
                let $f = |x: bool, y: bool| x == y;
                $body
            }
            NotEqual => {
                let $f = |x: bool, y: bool| x != y;
                $body
            }
            LogicalAnd => {
                let $f = |x: bool, y: bool| x & y;
                $body
            }
            LogicalOr => {
                let $f = |x: bool, y: bool| x | y;
                $body
            }
            _ => $other,
        }
    }};
}
pub(crate) use bool_binary_fn;

fn unary_f32(op: UnaryOp, x: &Value) -> Result<Value> {
    f32_unary!(op, f => map_unary(x, f), f32_predicate!(op, f => map_unary(x, f), bail!(dtype, "{} needs bool, got f32", op.name())))
}

fn unary_f64(op: UnaryOp, x: &Value) -> Result<Value> {
    use UnaryOp::*;
    let (alpha, scale) = (math::SELU_ALPHA, math::SELU_SCALE);
    match op {
        Neg => map_unary(x, |v: f64| -v),
        Abs => map_unary(x, |v: f64| v.abs()),
        Sign => map_unary(x, |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else if v == 0.0 {
                0.0
            } else {
                v
            }
        }),
        Square => map_unary(x, |v: f64| v * v),
        Relu => map_unary(x, |v: f64| if v > 0.0 || v.is_nan() { v } else { 0.0 }),
        Relu6 => map_unary(x, |v: f64| if v.is_nan() { v } else { v.clamp(0.0, 6.0) }),
        Exp => map_unary(x, |v: f64| v.exp()),
        Expm1 => map_unary(x, |v: f64| v.exp_m1()),
        Log => map_unary(x, |v: f64| v.ln()),
        Log1p => map_unary(x, |v: f64| v.ln_1p()),
        Sqrt => map_unary(x, |v: f64| v.sqrt()),
        Rsqrt => map_unary(x, |v: f64| 1.0 / v.sqrt()),
        Reciprocal => map_unary(x, |v: f64| 1.0 / v),
        Sin => map_unary(x, |v: f64| v.sin()),
        Cos => map_unary(x, |v: f64| v.cos()),
        Tan => map_unary(x, |v: f64| v.tan()),
        Tanh => map_unary(x, |v: f64| v.tanh()),
        Sigmoid => map_unary(x, |v: f64| 1.0 / (1.0 + (-v).exp())),
        Elu => map_unary(x, |v: f64| if v > 0.0 { v } else { v.exp_m1() }),
        Selu => map_unary(x, move |v: f64| scale * if v > 0.0 { v } else { alpha * v.exp_m1() }),
        Gelu => map_unary(x, |v: f64| 0.5 * v * (1.0 + math::erf64(v * std::f64::consts::FRAC_1_SQRT_2))),
        Softplus => map_unary(x, |v: f64| if v.is_nan() { v } else { v.max(0.0) + (-v.abs()).exp().ln_1p() }),
        Erf => map_unary(x, math::erf64),
        Lgamma => map_unary(x, libm::lgamma),
        Digamma => map_unary(x, special::digamma),
        Erfinv => map_unary(x, special::erfinv),
        Ndtri => map_unary(x, special::ndtri),
        BesselI0e => map_unary(x, special::bessel_i0e),
        BesselI1e => map_unary(x, special::bessel_i1e),
        Erfc => map_unary(x, libm::erfc),
        Sinh => map_unary(x, |v: f64| v.sinh()),
        Cosh => map_unary(x, |v: f64| v.cosh()),
        Asin => map_unary(x, |v: f64| v.asin()),
        Acos => map_unary(x, |v: f64| v.acos()),
        Atan => map_unary(x, |v: f64| v.atan()),
        Asinh => map_unary(x, libm::asinh),
        Acosh => map_unary(x, |v: f64| if v < 1.0 { f64::NAN } else { libm::acosh(v) }),
        Atanh => map_unary(x, libm::atanh),
        Floor => map_unary(x, |v: f64| v.floor()),
        Ceil => map_unary(x, |v: f64| v.ceil()),
        Round => map_unary(x, |v: f64| v.round_ties_even()),
        IsNan => map_unary(x, |v: f64| v.is_nan()),
        IsFinite => map_unary(x, |v: f64| v.is_finite()),
        IsInf => map_unary(x, |v: f64| v.is_infinite()),
        LogicalNot => bail!(dtype, "logical_not needs bool, got f64"),
    }
}

/// Integer arithmetic with wrapping overflow (as TensorFlow and NumPy).
pub(crate) trait Int: Element + Ord {
    const ZERO: Self;
    const ONE: Self;
    const SIX: Self;
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn wdiv(self, o: Self) -> Self;
    fn wrem(self, o: Self) -> Self;
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    fn negative(self) -> bool;
}

macro_rules! int_impl {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const SIX: Self = 6;
            #[inline(always)] fn wadd(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)] fn wsub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline(always)] fn wmul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline(always)] fn wdiv(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            #[inline(always)] fn wrem(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            #[inline(always)] fn wneg(self) -> Self { self.wrapping_neg() }
            #[inline(always)] fn wabs(self) -> Self { if self.negative() { self.wrapping_neg() } else { self } }
            #[allow(unused_comparisons)]
            #[inline(always)] fn negative(self) -> bool { self < 0 }
        }
    )*};
}
int_impl!(i32, i64, u8, i8, i16, u16, u32, u64);

fn unary_int<T: Int>(op: UnaryOp, x: &Value) -> Result<Value> {
    use UnaryOp::*;
    match op {
        Neg => map_unary(x, |v: T| v.wneg()),
        Abs => map_unary(x, |v: T| v.wabs()),
        Sign => map_unary(x, |v: T| {
            if v.negative() {
                T::ONE.wneg()
            } else if v == T::ZERO {
                T::ZERO
            } else {
                T::ONE
            }
        }),
        Square => map_unary(x, |v: T| v.wmul(v)),
        Relu => map_unary(x, |v: T| v.max(T::ZERO)),
        Relu6 => map_unary(x, |v: T| v.max(T::ZERO).min(T::SIX)),
        Floor | Ceil | Round => map_unary(x, |v: T| v),
        _ => bail!(dtype, "{} needs a floating-point dtype, got {}", op.name(), T::DTYPE),
    }
}

/// The next representable value of the type after `self` towards `to`.
pub(crate) trait NextAfter {
    fn next_after(self, to: Self) -> Self;
}
impl NextAfter for f32 {
    fn next_after(self, to: f32) -> f32 {
        libm::nextafterf(self, to)
    }
}
impl NextAfter for f64 {
    fn next_after(self, to: f64) -> f64 {
        libm::nextafter(self, to)
    }
}

/// Floor modulo for floats: the remainder takes the divisor's sign.
#[inline(always)]
pub(crate) fn fmod_floor<F: Copy + PartialOrd + std::ops::Rem<Output = F> + std::ops::Add<Output = F> + Default>(
    a: F,
    b: F,
) -> F {
    let r = a % b;
    let zero = F::default();
    if r != zero && ((r < zero) != (b < zero)) {
        r + b
    } else {
        r
    }
}

macro_rules! float_binary {
    ($name:ident, $t:ty) => {
        fn $name(op: BinaryOp, a: &Value, b: &Value, shape: &Shape) -> Result<Value> {
            float_binary_fn!($t, op, f => map_binary(a, b, shape, f),
                compare_fn!($t, op, f => map_binary(a, b, shape, f), bail!(dtype, "{} needs bool inputs", op.name())))
        }
    };
}
float_binary!(binary_f32, f32);
float_binary!(binary_f64, f64);

/// `base^exp` for integers by squaring, wrapping on overflow; `exp >= 0`.
#[inline]
fn int_pow<T: Int>(base: T, exp: T) -> T {
    let mut e = exp.to_f64() as u64;
    let (mut acc, mut b) = (T::ONE, base);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wmul(b);
        }
        b = b.wmul(b);
        e >>= 1;
    }
    acc
}

fn any_element<T: Element>(v: &Value, pred: impl Fn(T) -> bool + Sync + Send + Copy) -> Result<bool> {
    let flags = map_unary(v, pred)?;
    Ok(flags.contiguous_slice::<bool>().is_some_and(|s| s.contains(&true)))
}

fn binary_int<T: Int>(op: BinaryOp, a: &Value, b: &Value, shape: &Shape) -> Result<Value> {
    use BinaryOp::*;
    if matches!(op, Div | FloorDiv | FloorMod | TruncateMod) && any_element(b, |y: T| y == T::ZERO)? {
        bail!(invalid, "integer division by zero in {}", op.name());
    }
    if op == Pow && any_element(b, |y: T| y.negative())? {
        bail!(invalid, "integers cannot be raised to negative integer powers");
    }
    match op {
        Add => map_binary(a, b, shape, |x: T, y: T| x.wadd(y)),
        Sub => map_binary(a, b, shape, |x: T, y: T| x.wsub(y)),
        Mul => map_binary(a, b, shape, |x: T, y: T| x.wmul(y)),
        Div => map_binary(a, b, shape, |x: T, y: T| x.wdiv(y)),
        FloorDiv => map_binary(a, b, shape, |x: T, y: T| {
            let q = x.wdiv(y);
            if x.wrem(y) != T::ZERO && (x.negative() != y.negative()) {
                q.wsub(T::ONE)
            } else {
                q
            }
        }),
        FloorMod => map_binary(a, b, shape, |x: T, y: T| {
            let r = x.wrem(y);
            if r != T::ZERO && (r.negative() != y.negative()) {
                r.wadd(y)
            } else {
                r
            }
        }),
        TruncateMod => map_binary(a, b, shape, |x: T, y: T| x.wrem(y)),
        Pow => map_binary(a, b, shape, int_pow::<T>),
        Maximum => map_binary(a, b, shape, |x: T, y: T| x.max(y)),
        Minimum => map_binary(a, b, shape, |x: T, y: T| x.min(y)),
        Equal => map_binary(a, b, shape, |x: T, y: T| x == y),
        NotEqual => map_binary(a, b, shape, |x: T, y: T| x != y),
        Less => map_binary(a, b, shape, |x: T, y: T| x < y),
        LessEqual => map_binary(a, b, shape, |x: T, y: T| x <= y),
        Greater => map_binary(a, b, shape, |x: T, y: T| x > y),
        GreaterEqual => map_binary(a, b, shape, |x: T, y: T| x >= y),
        LogicalAnd | LogicalOr => bail!(dtype, "{} needs bool inputs", op.name()),
        Atan2 | Hypot | LogAddExp | DivNoNan | MulNoNan | Zeta | Polygamma | Igamma | Igammac | IgammaGradA
        | NextAfter | Xlogy | Xlog1py | Xdivy => {
            bail!(dtype, "{} needs a floating-point dtype, got {}", op.name(), T::DTYPE)
        }
    }
}

pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
    let shape = &out.shape;
    match a.dtype {
        DType::F32 => binary_f32(op, a, b, shape),
        DType::F64 => binary_f64(op, a, b, shape),
        DType::F16 | DType::BF16 => {
            let (ua, ub) = (cast(a, DType::F32)?, cast(b, DType::F32)?);
            let r = binary_f32(op, &ua, &ub, shape)?;
            if r.dtype == DType::F32 {
                cast(&r, a.dtype)
            } else {
                Ok(r)
            }
        }
        DType::Bool => {
            bool_binary_fn!(op, f => map_binary(a, b, shape, f), bail!(dtype, "{} does not accept bool", op.name()))
        }
        dt => {
            with_dtype!(dt, T => binary_int::<T>(op, a, b, shape), [I32, I64, U8, I8, I16, U16, U32, U64], bail!(dtype, "unexpected dtype {dt}"))
        }
    }
}

/// `cond ? a : b` with broadcasting.
pub(crate) fn select(c: &Value, a: &Value, b: &Value, out: &Meta) -> Result<Value> {
    with_dtype!(a.dtype, T => select_typed::<T>(c, a, b, &out.shape))
}

fn select_typed<T: Element>(c: &Value, a: &Value, b: &Value, shape: &Shape) -> Result<Value> {
    let n = shape.numel_known();
    let mut buf = HostBuffer::for_elements::<T>(n)?;
    let out = buf.as_mut_slice::<T>();
    let (lc, la, lb) = (c.layout.broadcast_to(shape)?, a.layout.broadcast_to(shape)?, b.layout.broadcast_to(shape)?);
    let rows = Rows::new(shape, [&lc, &la, &lb]);
    let (bc, ba, bb) = (c.buffer::<bool>(), a.buffer::<T>(), b.buffer::<T>());
    let (sc, sa, sb) = (rows.inner_stride(0), rows.inner_stride(1), rows.inner_stride(2));
    rows.fill(out, GRAIN, |dst, [oc, oa, ob]| {
        vectorize(Select { c: (bc, oc, sc), a: (ba, oa, sa), b: (bb, ob, sb), dst })
    });
    Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
}

/// Convert one element between dtypes: floats go through f64 (exact), integers
/// through i64 (exact), so each conversion rounds at most once. A complex
/// number gives its real part (as NumPy's and TensorFlow's casts).
#[inline(always)]
fn convert<T: Element, U: Element>(x: T) -> U {
    if T::DTYPE.is_float() || T::DTYPE.is_complex() {
        U::from_f64(x.to_f64())
    } else if T::DTYPE == DType::U64 && U::DTYPE.is_float() {
        // The bits come back from the wrapped i64.
        crate::tensor::dtype::u64_to_float(x.to_i64() as u64)
    } else {
        U::from_i64(x.to_i64())
    }
}

/// Cast to another dtype (a view when the dtype already matches).
pub(crate) fn cast(x: &Value, dtype: DType) -> Result<Value> {
    if x.dtype == dtype {
        return Ok(x.view(x.layout.clone()));
    }
    match (x.dtype, dtype) {
        (DType::F32, DType::F16) => map_unary(x, f16::from_f32),
        (DType::F32, DType::BF16) => map_unary(x, bf16::from_f32),
        (DType::F16, DType::F32) => map_unary(x, |v: f16| v.to_f32()),
        (DType::BF16, DType::F32) => map_unary(x, |v: bf16| v.to_f32()),
        (DType::C64, DType::C128) => map_unary(x, |v: Complex<f32>| Complex::new(v.re as f64, v.im as f64)),
        (DType::C128, DType::C64) => map_unary(x, |v: Complex<f64>| Complex::new(v.re as f32, v.im as f32)),
        (src, dst) => with_dtype!(src, T => with_dtype!(dst, U => map_unary(x, convert::<T, U>))),
    }
}
