//! Elementwise operations: unary math, binary arithmetic and comparisons with
//! NumPy broadcasting, `select` (TensorFlow's `where`), `cast`.
//!
//! Binary ops take the same dtype on both sides (as TensorFlow does); a Rust
//! number on one side takes the dtype of the tensor on the other.

use super::{apply1, Meta, Op};
use crate::error::{bail, Error, Result};
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{DType, Scalar, Tensor};
use serde::{Deserialize, Serialize};

/// SELU's `alpha` (Klambauer et al. 2017).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
/// SELU's `lambda`, the scale (Klambauer et al. 2017).
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// Which inputs a unary op accepts and what it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// Any numeric dtype; output has the input's dtype.
    Numeric,
    /// Floating point only; output has the input's dtype.
    Float,
    /// Bool only.
    Bool,
    /// Floating point in, bool out.
    FloatToBool,
}

macro_rules! unary_ops {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident; )*) => {
        /// A unary elementwise function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum UnaryOp { $( $variant, )* }

        impl UnaryOp {
            /// Every unary op, in declaration order.
            pub const ALL: &'static [UnaryOp] = &[$( UnaryOp::$variant, )*];
            pub(crate) fn type_name(self) -> &'static str {
                match self { $( UnaryOp::$variant => $tf, )* }
            }
            fn domain(self) -> Domain {
                match self { $( UnaryOp::$variant => Domain::$domain, )* }
            }
            /// The public function's name (`exp`, `relu`, ...).
            pub fn name(self) -> &'static str {
                match self { $( UnaryOp::$variant => stringify!($fname), )* }
            }
        }

        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname(x: &Tensor) -> Result<Tensor> {
                apply1(Op::Unary { f: UnaryOp::$variant }, &[x])
            }
        )*
    };
}

unary_ops! {
    /// `-x`.
    Neg => neg, "Neg", Numeric;
    /// `|x|`.
    Abs => abs, "Abs", Numeric;
    /// `-1`, `0` or `1` by the sign of `x` (NaN stays NaN).
    Sign => sign, "Sign", Numeric;
    /// `x * x`.
    Square => square, "Square", Numeric;
    /// `max(x, 0)`.
    Relu => relu, "Relu", Numeric;
    /// `min(max(x, 0), 6)`.
    Relu6 => relu6, "Relu6", Numeric;
    /// `e^x`.
    Exp => exp, "Exp", Float;
    /// `e^x - 1`, accurate near 0.
    Expm1 => expm1, "Expm1", Float;
    /// Natural logarithm.
    Log => log, "Log", Float;
    /// `ln(1 + x)`, accurate near 0.
    Log1p => log1p, "Log1p", Float;
    /// Square root.
    Sqrt => sqrt, "Sqrt", Float;
    /// `1 / sqrt(x)`.
    Rsqrt => rsqrt, "Rsqrt", Float;
    /// `1 / x`.
    Reciprocal => reciprocal, "Reciprocal", Float;
    /// Sine.
    Sin => sin, "Sin", Float;
    /// Cosine.
    Cos => cos, "Cos", Float;
    /// Tangent.
    Tan => tan, "Tan", Float;
    /// Hyperbolic tangent.
    Tanh => tanh, "Tanh", Float;
    /// `1 / (1 + e^-x)`.
    Sigmoid => sigmoid, "Sigmoid", Float;
    /// `x` for `x > 0`, else `e^x - 1`.
    Elu => elu, "Elu", Float;
    /// Scaled ELU (Klambauer et al. 2017) with its fixed constants.
    Selu => selu, "Selu", Float;
    /// Gaussian error linear unit, exact form `x * Φ(x)`.
    Gelu => gelu, "Gelu", Float;
    /// `ln(1 + e^x)`, computed without overflow.
    Softplus => softplus, "Softplus", Float;
    /// The error function.
    Erf => erf, "Erf", Float;
    /// Largest integer not above `x`.
    Floor => floor, "Floor", Numeric;
    /// Smallest integer not below `x`.
    Ceil => ceil, "Ceil", Numeric;
    /// Nearest integer, halves to even (banker's rounding, as TensorFlow).
    Round => round, "Round", Numeric;
    /// Boolean not.
    LogicalNot => logical_not, "LogicalNot", Bool;
    /// True where `x` is NaN.
    IsNan => is_nan, "IsNan", FloatToBool;
    /// True where `x` is neither infinite nor NaN.
    IsFinite => is_finite, "IsFinite", FloatToBool;
}

impl UnaryOp {
    pub(crate) fn infer(self, x: &Meta) -> Result<Meta> {
        let ok = match self.domain() {
            Domain::Numeric => x.dtype.is_numeric(),
            Domain::Float | Domain::FloatToBool => x.dtype.is_float(),
            Domain::Bool => x.dtype == DType::Bool,
        };
        if !ok {
            let wanted = match self.domain() {
                Domain::Numeric => "a numeric dtype",
                Domain::Float | Domain::FloatToBool => "a floating-point dtype",
                Domain::Bool => "bool",
            };
            bail!(dtype, "{} needs {wanted}, got {}", self.name(), x.dtype);
        }
        let dtype = if self.domain() == Domain::FloatToBool { DType::Bool } else { x.dtype };
        Ok(Meta::new(dtype, x.shape.clone()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BinaryDomain {
    Numeric,
    Float,
    Any,
    Bool,
}

macro_rules! binary_ops {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $cmp:literal; )*) => {
        /// A binary elementwise function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum BinaryOp { $( $variant, )* }

        impl BinaryOp {
            /// Every binary op, in declaration order.
            pub const ALL: &'static [BinaryOp] = &[$( BinaryOp::$variant, )*];
            pub(crate) fn type_name(self) -> &'static str {
                match self { $( BinaryOp::$variant => $tf, )* }
            }
            fn domain(self) -> BinaryDomain {
                match self { $( BinaryOp::$variant => BinaryDomain::$domain, )* }
            }
            /// True for comparisons (their output is bool).
            pub fn is_comparison(self) -> bool {
                match self { $( BinaryOp::$variant => $cmp, )* }
            }
            /// The public function's name (`add`, `less`, ...).
            pub fn name(self) -> &'static str {
                match self { $( BinaryOp::$variant => stringify!($fname), )* }
            }
        }

        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
                binary(BinaryOp::$variant, a.into(), b.into())
            }
        )*
    };
}

binary_ops! {
    /// `a + b`.
    Add => add, "AddV2", Numeric, false;
    /// `a - b`.
    Sub => sub, "Sub", Numeric, false;
    /// `a * b`.
    Mul => mul, "Mul", Numeric, false;
    /// `a / b`: true division for floats, truncating for integers (division
    /// by an integer zero is an error).
    Div => div, "RealDiv", Numeric, false;
    /// `floor(a / b)` (Python's `//`).
    FloorDiv => floor_div, "FloorDiv", Numeric, false;
    /// Remainder with the sign of `b` (Python's `%`, TensorFlow's `floormod`).
    FloorMod => floor_mod, "FloorMod", Numeric, false;
    /// `a ^ b`.
    Pow => pow, "Pow", Numeric, false;
    /// Larger of the two (NaN if either is NaN).
    Maximum => maximum, "Maximum", Numeric, false;
    /// Smaller of the two (NaN if either is NaN).
    Minimum => minimum, "Minimum", Numeric, false;
    /// The angle of the point `(b, a)`: `atan(a / b)` in the right quadrant
    /// (TensorFlow's `atan2(y, x)` with `y = a`, `x = b`).
    Atan2 => atan2, "Atan2", Float, false;
    /// `sqrt(a^2 + b^2)` without overflow or underflow on the way.
    Hypot => hypot, "Hypot", Float, false;
    /// `log(exp(a) + exp(b))` without overflow.
    LogAddExp => logaddexp, "LogAddExp", Float, false;
    /// `a == b`.
    Equal => equal, "Equal", Any, true;
    /// `a != b`.
    NotEqual => not_equal, "NotEqual", Any, true;
    /// `a < b`.
    Less => less, "Less", Numeric, true;
    /// `a <= b`.
    LessEqual => less_equal, "LessEqual", Numeric, true;
    /// `a > b`.
    Greater => greater, "Greater", Numeric, true;
    /// `a >= b`.
    GreaterEqual => greater_equal, "GreaterEqual", Numeric, true;
    /// Boolean and.
    LogicalAnd => logical_and, "LogicalAnd", Bool, false;
    /// Boolean or.
    LogicalOr => logical_or, "LogicalOr", Bool, false;
}

impl BinaryOp {
    pub(crate) fn infer(self, a: &Meta, b: &Meta) -> Result<Meta> {
        if a.dtype != b.dtype {
            bail!(dtype, "{} needs equal dtypes, got {} and {} (cast one of them)", self.name(), a.dtype, b.dtype);
        }
        let ok = match self.domain() {
            BinaryDomain::Numeric => a.dtype.is_numeric(),
            BinaryDomain::Float => a.dtype.is_float(),
            BinaryDomain::Any => true,
            BinaryDomain::Bool => a.dtype == DType::Bool,
        };
        if !ok {
            bail!(dtype, "{} does not accept {}", self.name(), a.dtype);
        }
        let shape = broadcast_shapes(&a.shape, &b.shape)?;
        let dtype = if self.is_comparison() { DType::Bool } else { a.dtype };
        Ok(Meta::new(dtype, shape))
    }
}

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

pub(crate) fn infer_select(inputs: &[Meta]) -> Result<Meta> {
    let (c, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
    if c.dtype != DType::Bool {
        bail!(dtype, "select needs a bool condition, got {}", c.dtype);
    }
    if a.dtype != b.dtype {
        bail!(dtype, "select needs equal dtypes for both branches, got {} and {}", a.dtype, b.dtype);
    }
    let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
    Ok(Meta::new(a.dtype, shape))
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

/// Check an operand list for the variadic helpers.
pub(crate) fn nonempty<'a>(what: &str, xs: &'a [&'a Tensor]) -> Result<&'a [&'a Tensor]> {
    if xs.is_empty() {
        return Err(Error::invalid(format!("{what} needs at least one tensor")));
    }
    Ok(xs)
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
