//! Elementwise operations: unary math, binary arithmetic and comparisons with
//! NumPy broadcasting, `select` (TensorFlow's `where`), `cast`.
//!
//! Binary ops take the same dtype on both sides (as TensorFlow does); a Rust
//! number on one side takes the dtype of the tensor on the other.

use super::{apply1, Op};
use crate::error::Result;
use crate::graph::Tensor;
use crate::op::elementwise::{binary_table, unary_table};
pub use crate::op::elementwise::{BinaryOp, UnaryOp, SELU_ALPHA, SELU_SCALE};
use crate::tensor::{DType, Scalar};

/// Makes one public function per entry of the unary table.
macro_rules! unary_functions {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident; )*) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname(x: &Tensor) -> Result<Tensor> {
                apply1(Op::Unary { f: UnaryOp::$variant }, &[x])
            }
        )*
    };
}
unary_table!(unary_functions);

/// Makes one public function per entry of the binary table.
macro_rules! binary_functions {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $cmp:literal; )*) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
                binary(BinaryOp::$variant, a.into(), b.into())
            }
        )*
    };
}
binary_table!(binary_functions);

/// One side of a binary op: a tensor, or a Rust number that takes the other side's dtype.
#[derive(Clone)]
pub enum Operand<'a> {
    Tensor(&'a Tensor),
    Scalar(Scalar),
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Operand<'a> {
        Operand::Tensor(t)
    }
}
macro_rules! operand_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand<'_> {
            fn from(v: $t) -> Self {
                Operand::Scalar(Scalar::from(v))
            }
        }
    )*};
}
operand_from!(f32, f64, i32, i64, u8, bool);

/// Turn a pair of operands into tensors: a number takes the other side's dtype.
fn resolve<'a, 'b>(
    a: Operand<'a>,
    b: Operand<'b>,
) -> Result<(std::borrow::Cow<'a, Tensor>, std::borrow::Cow<'b, Tensor>)> {
    use std::borrow::Cow;
    Ok(match (a, b) {
        (Operand::Tensor(a), Operand::Tensor(b)) => (Cow::Borrowed(a), Cow::Borrowed(b)),
        (Operand::Tensor(a), Operand::Scalar(s)) => (Cow::Borrowed(a), Cow::Owned(Tensor::scalar_of(s, a.dtype()))),
        (Operand::Scalar(s), Operand::Tensor(b)) => (Cow::Owned(Tensor::scalar_of(s, b.dtype())), Cow::Borrowed(b)),
        (Operand::Scalar(a), Operand::Scalar(b)) => {
            let dtype = match (a, b) {
                (Scalar::Bool(_), _) | (_, Scalar::Bool(_)) => DType::Bool,
                (Scalar::I64(_), Scalar::I64(_)) => DType::I32,
                _ => DType::F32,
            };
            (Cow::Owned(Tensor::scalar_of(a, dtype)), Cow::Owned(Tensor::scalar_of(b, dtype)))
        }
    })
}

/// Unary op `f` of `x`, for code that picks the op at run time (the named
/// functions, `exp` and so on, are the same op).
#[track_caller]
pub fn unary_op(f: UnaryOp, x: &Tensor) -> Result<Tensor> {
    apply1(Op::Unary { f }, &[x])
}

/// Binary op `f` of `a` and `b` (see [`unary_op`]).
#[track_caller]
pub fn binary_op<'a, 'b>(f: BinaryOp, a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
    binary(f, a.into(), b.into())
}

#[track_caller]
fn binary(f: BinaryOp, a: Operand<'_>, b: Operand<'_>) -> Result<Tensor> {
    let (a, b) = resolve(a, b)?;
    apply1(Op::Binary { f }, &[&a, &b])
}

/// `cond ? a : b` elementwise, with all three broadcast together
/// (TensorFlow's `where` with three arguments).
#[doc(alias = "where")]
#[track_caller]
pub fn select<'a, 'b>(cond: &Tensor, a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
    let (a, b) = resolve(a.into(), b.into())?;
    apply1(Op::Select, &[cond, &a, &b])
}

/// Convert to `dtype` (floats to integers truncate toward zero and saturate;
/// NaN becomes 0; nonzero becomes `true`).
#[track_caller]
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    apply1(Op::Cast { dtype }, &[x])
}

/// Clamp to `[lo, hi]` elementwise: `minimum(maximum(x, lo), hi)`.
#[track_caller]
pub fn clip_by_value<'a, 'b>(x: &Tensor, lo: impl Into<Operand<'a>>, hi: impl Into<Operand<'b>>) -> Result<Tensor> {
    minimum(&maximum(x, lo)?, hi)
}

macro_rules! operator {
    ($trait:ident, $method:ident, $f:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                $f(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                $f(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                $f(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                $f(self, &rhs)
            }
        }
        // A number on the right takes the tensor's dtype; one generic impl so
        // that `&x * 2.0` needs no suffix on the literal.
        impl<S: Into<Scalar>> std::ops::$trait<S> for &Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: S) -> Result<Tensor> {
                $f(self, Operand::Scalar(rhs.into()))
            }
        }
        impl<S: Into<Scalar>> std::ops::$trait<S> for Tensor {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: S) -> Result<Tensor> {
                $f(&self, Operand::Scalar(rhs.into()))
            }
        }
        // A number on the left: f64 and i64 only, so that unsuffixed literals infer.
        operator!(@scalars $trait, $method, $f, f64, i64);
    };
    (@scalars $trait:ident, $method:ident, $f:ident, $($t:ty),*) => {$(
        impl std::ops::$trait<&Tensor> for $t {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                $f(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for $t {
            type Output = Result<Tensor>;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                $f(self, &rhs)
            }
        }
    )*};
}
operator!(Add, add, add);
operator!(Sub, sub, sub);
operator!(Mul, mul, mul);
operator!(Div, div, div);
operator!(Rem, rem, floor_mod);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    #[track_caller]
    fn neg(self) -> Result<Tensor> {
        neg(self)
    }
}
impl std::ops::Neg for Tensor {
    type Output = Result<Tensor>;
    #[track_caller]
    fn neg(self) -> Result<Tensor> {
        neg(&self)
    }
}

/// Gradient of a unary op: `g` flows back through `y = f(x)`. `None` for
/// ops without a gradient (logical ops, NaN tests).
pub(crate) fn unary_grad(f: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
    use UnaryOp::*;
    let zeros = || super::zeros_like(x);
    Ok(Some(match f {
        Neg => neg(g)?,
        Abs => mul(g, &sign(x)?)?,
        Sign | Floor | Ceil | Round => zeros()?,
        Square => mul(g, &mul(x, 2.0)?)?,
        // Through the output, which is positive exactly where the input is
        // (and in (0, 6) exactly where the input is, for Relu6): then the
        // pre-activation is not needed after the forward pass, so a graph
        // runs `relu(matmul + bias)` as one step (TensorFlow's ReluGrad
        // takes the output too).
        Relu => select(&greater(y, 0.0)?, g, 0.0)?,
        Relu6 => select(&logical_and(&greater(y, 0.0)?, &less(y, 6.0)?)?, g, 0.0)?,
        Exp => mul(g, y)?,
        Expm1 => mul(g, &add(y, 1.0)?)?,
        Log => div(g, x)?,
        Log1p => div(g, &add(x, 1.0)?)?,
        Sqrt => div(&mul(g, 0.5)?, y)?,
        // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3
        Rsqrt => mul(&mul(g, -0.5)?, &mul(y, &square(y)?)?)?,
        Reciprocal => neg(&mul(g, &square(y)?)?)?,
        Sin => mul(g, &cos(x)?)?,
        Cos => neg(&mul(g, &sin(x)?)?)?,
        Tan => mul(g, &add(&square(y)?, 1.0)?)?,
        Tanh => mul(g, &sub(1.0, &square(y)?)?)?,
        Sigmoid => mul(g, &mul(y, &sub(1.0, y)?)?)?,
        Elu => select(&greater(x, 0.0)?, g, &mul(g, &add(y, 1.0)?)?)?,
        // For x <= 0, y = scale * alpha * (e^x - 1), so dy/dx = y + scale * alpha.
        Selu => select(&greater(x, 0.0)?, &mul(g, SELU_SCALE)?, &mul(g, &add(y, SELU_SCALE * SELU_ALPHA)?)?)?,
        Gelu => {
            // d/dx x Φ(x) = Φ(x) + x φ(x)
            let cdf = mul(&add(&erf(&mul(x, std::f64::consts::FRAC_1_SQRT_2)?)?, 1.0)?, 0.5)?;
            let pdf = mul(
                &exp(&mul(&square(x)?, -0.5)?)?,
                0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2,
            )?;
            mul(g, &add(&cdf, &mul(x, &pdf)?)?)?
        }
        Softplus => mul(g, &sigmoid(x)?)?,
        Erf => mul(g, &mul(&exp(&neg(&square(x)?)?)?, std::f64::consts::FRAC_2_SQRT_PI)?)?,
        LogicalNot | IsNan | IsFinite => return Ok(None),
    }))
}

/// Gradient of a binary op with broadcasting: each side's gradient is
/// summed back to that side's shape. `wants` says which sides are needed.
pub(crate) fn binary_grad(
    f: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    g: &Tensor,
    wants: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    use super::movement::sum_to;
    use BinaryOp::*;
    let side = |want: bool, t: &dyn Fn() -> Result<Tensor>, like: &Tensor| -> Result<Option<Tensor>> {
        if want {
            Ok(Some(sum_to(&t()?, like)?))
        } else {
            Ok(None)
        }
    };
    Ok(match f {
        Add => [side(wants[0], &|| Ok(g.clone()), a)?, side(wants[1], &|| Ok(g.clone()), b)?],
        Sub => [side(wants[0], &|| Ok(g.clone()), a)?, side(wants[1], &|| neg(g), b)?],
        Mul => [side(wants[0], &|| mul(g, b), a)?, side(wants[1], &|| mul(g, a), b)?],
        Div => [side(wants[0], &|| div(g, b), a)?, side(wants[1], &|| neg(&div(&mul(g, y)?, b)?), b)?],
        FloorMod => [side(wants[0], &|| Ok(g.clone()), a)?, side(wants[1], &|| neg(&mul(g, &floor_div(a, b)?)?), b)?],
        Pow => {
            // d/da a^b = b a^(b-1); d/db a^b = a^b ln a (taken as 0 where a <= 0).
            let da = || mul(g, &mul(b, &pow(a, &sub(b, 1.0)?)?)?);
            let db = || {
                let positive = greater(a, 0.0)?;
                let safe_a = select(&positive, a, 1.0)?;
                mul(g, &select(&positive, &mul(y, &log(&safe_a)?)?, 0.0)?)
            };
            [side(wants[0], &da, a)?, side(wants[1], &db, b)?]
        }
        Maximum | Minimum => {
            let take_a = if f == Maximum { greater_equal(a, b)? } else { less_equal(a, b)? };
            [side(wants[0], &|| select(&take_a, g, 0.0), a)?, side(wants[1], &|| select(&take_a, 0.0, g), b)?]
        }
        Atan2 => {
            // d/da atan2(a, b) = b / (a^2 + b^2); d/db = -a / (a^2 + b^2).
            let r2 = || add(&square(a)?, &square(b)?);
            [side(wants[0], &|| div(&mul(g, b)?, &r2()?), a)?, side(wants[1], &|| neg(&div(&mul(g, a)?, &r2()?)?), b)?]
        }
        Hypot => {
            // d/da hypot(a, b) = a / hypot(a, b), taken as 0 at the origin.
            let part = |t: &Tensor| -> Result<Tensor> {
                let nonzero = greater(y, 0.0)?;
                mul(g, &select(&nonzero, &div(t, &select(&nonzero, y, 1.0)?)?, 0.0)?)
            };
            [side(wants[0], &|| part(a), a)?, side(wants[1], &|| part(b), b)?]
        }
        LogAddExp => {
            // d/da log(e^a + e^b) = e^(a - y) = sigmoid(a - b).
            let d = || sub(a, b);
            [side(wants[0], &|| mul(g, &sigmoid(&d()?)?), a)?, side(wants[1], &|| mul(g, &sigmoid(&neg(&d()?)?)?), b)?]
        }
        FloorDiv | Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual | LogicalAnd | LogicalOr => {
            [None, None]
        }
    })
}
