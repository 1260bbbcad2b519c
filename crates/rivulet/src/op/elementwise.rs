//! Elementwise ops: the unary and binary tables (each entry: variant, public
//! function name, TensorFlow type name, dtype domain), `select` and `cast`,
//! and the dtypes and shapes they give.
//!
//! The tables are read twice: here for the op enums, and in `crate::ops` for
//! the public functions, so that adding an elementwise op is one table line.

use super::Meta;
use crate::error::{bail, Result};
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::DType;
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

/// Makes `UnaryOp` from [`unary_table`].
macro_rules! define_unary_ops {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $grad:expr; )*) => {
        /// A unary elementwise function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum UnaryOp { $( $(#[$doc])* $variant, )* }

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
    };
}

/// The unary ops: `unary_table!(m)` calls `m!` with every entry: variant,
/// public function, TensorFlow type, dtype domain, and the gradient rule
/// `|x, y, g|` (input, output, output gradient) written with the public
/// functions. This module only reads the first four; `crate::ops` expands
/// the functions and the rules (`some(r)`: the gradient `r`; `none()`: no gradient).
macro_rules! unary_table {
    ($then:ident) => {
        $then! {
            /// `-x`.
            Neg => neg, "Neg", Numeric, |x, y, g| some(neg(g));
            /// `|x|`.
            Abs => abs, "Abs", Numeric, |x, y, g| some(mul(g, &sign(x)?));
            /// `-1`, `0` or `1` by the sign of `x` (NaN stays NaN).
            Sign => sign, "Sign", Numeric, |x, y, g| some(zeros_like(x));
            /// `x * x`.
            Square => square, "Square", Numeric, |x, y, g| some(mul(g, &mul(x, 2.0)?));
            /// `max(x, 0)`.
            // Through the output, positive exactly where the input is (so a graph
            // can run `relu(matmul + bias)` as one step; TensorFlow's ReluGrad takes
            // the output too).
            Relu => relu, "Relu", Numeric, |x, y, g| some(select(&greater(y, 0.0)?, g, 0.0));
            /// `min(max(x, 0), 6)`.
            Relu6 => relu6, "Relu6", Numeric, |x, y, g| some(select(&logical_and(&greater(y, 0.0)?, &less(y, 6.0)?)?, g, 0.0));
            /// `e^x`.
            Exp => exp, "Exp", Float, |x, y, g| some(mul(g, y));
            /// `e^x - 1`, accurate near 0.
            Expm1 => expm1, "Expm1", Float, |x, y, g| some(mul(g, &add(y, 1.0)?));
            /// Natural logarithm.
            Log => log, "Log", Float, |x, y, g| some(div(g, x));
            /// `ln(1 + x)`, accurate near 0.
            Log1p => log1p, "Log1p", Float, |x, y, g| some(div(g, &add(x, 1.0)?));
            /// Square root.
            // Sqrt, Rsqrt and Reciprocal: zero where the upstream gradient is
            // (TensorFlow's SqrtGrad and kin), so `where(x > 0, sqrt(x), 0)`
            // has a finite gradient at 0.
            Sqrt => sqrt, "Sqrt", Float, |x, y, g| some(select(&equal(g, 0.0)?, 0.0, &div(&mul(g, 0.5)?, y)?));
            /// `1 / sqrt(x)`.
            // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3.
            Rsqrt => rsqrt, "Rsqrt", Float, |x, y, g| some(select(&equal(g, 0.0)?, 0.0, &mul(&mul(g, -0.5)?, &mul(y, &square(y)?)?)?));
            /// `1 / x`.
            Reciprocal => reciprocal, "Reciprocal", Float, |x, y, g| some(select(&equal(g, 0.0)?, 0.0, &neg(&mul(g, &square(y)?)?)?));
            /// Sine.
            Sin => sin, "Sin", Float, |x, y, g| some(mul(g, &cos(x)?));
            /// Cosine.
            Cos => cos, "Cos", Float, |x, y, g| some(neg(&mul(g, &sin(x)?)?));
            /// Tangent.
            Tan => tan, "Tan", Float, |x, y, g| some(mul(g, &add(&square(y)?, 1.0)?));
            /// Hyperbolic tangent.
            Tanh => tanh, "Tanh", Float, |x, y, g| some(mul(g, &sub(1.0, &square(y)?)?));
            /// `1 / (1 + e^-x)`.
            Sigmoid => sigmoid, "Sigmoid", Float, |x, y, g| some(mul(g, &mul(y, &sub(1.0, y)?)?));
            /// `x` for `x > 0`, else `e^x - 1`.
            Elu => elu, "Elu", Float, |x, y, g| some(select(&greater(x, 0.0)?, g, &mul(g, &add(y, 1.0)?)?));
            /// Scaled ELU (Klambauer et al. 2017) with its fixed constants.
            // For x <= 0, y = scale * alpha * (e^x - 1), so dy/dx = y + scale * alpha.
            Selu => selu, "Selu", Float, |x, y, g| some(select(&greater(x, 0.0)?, &mul(g, SELU_SCALE)?, &mul(g, &add(y, SELU_SCALE * SELU_ALPHA)?)?));
            /// Gaussian error linear unit, exact form `x * Φ(x)`.
            // d/dx x Φ(x) = Φ(x) + x φ(x).
            Gelu => gelu, "Gelu", Float, |x, y, g| {
                let cdf = mul(&add(&erf(&mul(x, std::f64::consts::FRAC_1_SQRT_2)?)?, 1.0)?, 0.5)?;
                let pdf = mul(
                    &exp(&mul(&square(x)?, -0.5)?)?,
                    0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2,
                )?;
                some(mul(g, &add(&cdf, &mul(x, &pdf)?)?))
            };
            /// `ln(1 + e^x)`, computed without overflow.
            Softplus => softplus, "Softplus", Float, |x, y, g| some(mul(g, &sigmoid(x)?));
            /// The error function.
            Erf => erf, "Erf", Float, |x, y, g| some(mul(g, &mul(&exp(&neg(&square(x)?)?)?, std::f64::consts::FRAC_2_SQRT_PI)?));
            /// The complementary error function `1 - erf(x)`, accurate where `erf` is near 1.
            Erfc => erfc, "Erfc", Float, |x, y, g| some(mul(g, &mul(&exp(&neg(&square(x)?)?)?, -std::f64::consts::FRAC_2_SQRT_PI)?));
            /// Hyperbolic sine.
            Sinh => sinh, "Sinh", Float, |x, y, g| some(mul(g, &cosh(x)?));
            /// Hyperbolic cosine.
            Cosh => cosh, "Cosh", Float, |x, y, g| some(mul(g, &sinh(x)?));
            /// Inverse sine, in `[-pi/2, pi/2]` (NaN outside `[-1, 1]`).
            Asin => asin, "Asin", Float, |x, y, g| some(mul(g, &rsqrt(&sub(1.0, &square(x)?)?)?));
            /// Inverse cosine, in `[0, pi]` (NaN outside `[-1, 1]`).
            Acos => acos, "Acos", Float, |x, y, g| some(neg(&mul(g, &rsqrt(&sub(1.0, &square(x)?)?)?)?));
            /// Inverse tangent, in `(-pi/2, pi/2)`.
            Atan => atan, "Atan", Float, |x, y, g| some(div(g, &add(&square(x)?, 1.0)?));
            /// Inverse hyperbolic sine.
            // As TensorFlow: through the output, 1 / cosh(asinh x).
            Asinh => asinh, "Asinh", Float, |x, y, g| some(div(g, &cosh(y)?));
            /// Inverse hyperbolic cosine (NaN below 1).
            Acosh => acosh, "Acosh", Float, |x, y, g| some(div(g, &sinh(y)?));
            /// Inverse hyperbolic tangent (NaN outside `[-1, 1]`).
            Atanh => atanh, "Atanh", Float, |x, y, g| some(div(g, &sub(1.0, &square(x)?)?));
            /// `ln |Gamma(x)|` (inf at the poles 0, -1, -2, ...).
            Lgamma => lgamma, "Lgamma", Float, |x, y, g| some(mul(g, &digamma(x)?));
            /// `d/dx ln Gamma(x)` (NaN at the poles).
            Digamma => digamma, "Digamma", Float, |x, y, g| some(mul(g, &polygamma(&ones_like(x)?, x)?));
            /// The inverse error function on `[-1, 1]`.
            // d/dy erfinv(y) = sqrt(pi)/2 e^(erfinv(y)^2).
            Erfinv => erfinv, "Erfinv", Float, |x, y, g| some(mul(g, &mul(&exp(&square(y)?)?, 0.5 * std::f64::consts::PI.sqrt())?));
            /// The standard normal quantile (inverse CDF) on `[0, 1]`.
            // d/dp ndtri(p) = sqrt(2 pi) e^(ndtri(p)^2 / 2).
            Ndtri => ndtri, "Ndtri", Float, |x, y, g| some(mul(g, &mul(&exp(&mul(&square(y)?, 0.5)?)?, (2.0 * std::f64::consts::PI).sqrt())?));
            /// `I0(x) e^-|x|`, the exponentially scaled modified Bessel function of order 0.
            // d/dx = i1e(x) - sign(x) i0e(x).
            BesselI0e => bessel_i0e, "BesselI0e", Float, |x, y, g| some(mul(g, &sub(&bessel_i1e(x)?, &mul(&sign(x)?, y)?)?));
            /// `I1(x) e^-|x|`, the exponentially scaled modified Bessel function of order 1.
            // d/dx = i0e(x) - i1e(x) (sign(x) + 1/x), and 1/2 at 0 (TensorFlow's rule).
            BesselI1e => bessel_i1e, "BesselI1e", Float, |x, y, g| {
                let zero = equal(x, 0.0)?;
                let safe = select(&zero, 1.0, x)?;
                let d = sub(&bessel_i0e(x)?, &mul(y, &add(&sign(x)?, &reciprocal(&safe)?)?)?)?;
                some(mul(g, &select(&zero, 0.5, &d)?))
            };
            /// Largest integer not above `x`.
            // Floor, Ceil and Round have no gradient in TensorFlow (None, not
            // zeros: a loss reached only through them is unconnected).
            Floor => floor, "Floor", Numeric, |x, y, g| none();
            /// Smallest integer not below `x`.
            Ceil => ceil, "Ceil", Numeric, |x, y, g| none();
            /// Nearest integer, halves to even (banker's rounding, as TensorFlow).
            Round => round, "Round", Numeric, |x, y, g| none();
            /// Boolean not.
            LogicalNot => logical_not, "LogicalNot", Bool, |x, y, g| none();
            /// True where `x` is NaN.
            IsNan => is_nan, "IsNan", FloatToBool, |x, y, g| none();
            /// True where `x` is neither infinite nor NaN.
            IsFinite => is_finite, "IsFinite", FloatToBool, |x, y, g| none();
            /// True where `x` is +inf or -inf.
            IsInf => is_inf, "IsInf", FloatToBool, |x, y, g| none();
        }
    };
}
pub(crate) use unary_table;
unary_table!(define_unary_ops);

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

/// Makes `BinaryOp` from [`binary_table`].
macro_rules! define_binary_ops {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $cmp:literal, $da:expr, $db:expr; )*) => {
        /// A binary elementwise function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum BinaryOp { $( $(#[$doc])* $variant, )* }

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
    };
}

/// The binary ops: `binary_table!(m)` calls `m!` with every entry: variant,
/// public function, TensorFlow type, dtype domain, whether it compares, and
/// the gradient rules `|a, b, y, g|` for `a` and for `b` (before summing
/// back over broadcast dimensions; `same(g)` passes the gradient through).
macro_rules! binary_table {
    ($then:ident) => {
        $then! {
            /// `a + b`.
            Add => add, "AddV2", Numeric, false,
                |a, b, y, g| same(g),
                |a, b, y, g| same(g);
            /// `a - b`.
            Sub => sub, "Sub", Numeric, false,
                |a, b, y, g| same(g),
                |a, b, y, g| some(neg(g));
            /// `a * b`.
            Mul => mul, "Mul", Numeric, false,
                |a, b, y, g| some(mul(g, b)),
                |a, b, y, g| some(mul(g, a));
            /// `a / b` in the operands' own dtype: true division for floats,
            /// truncating for integers (TensorFlow's `RealDiv` and `TruncateDiv`;
            /// division by an integer zero is an error). [`div`] is Python 3's `/`.
            Div => real_div, "RealDiv", Numeric, false,
                |a, b, y, g| some(div(g, b)),
                |a, b, y, g| some(neg(&div(&mul(g, y)?, b)?));
            /// `floor(a / b)` (Python's `//`).
            FloorDiv => floor_div, "FloorDiv", Numeric, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// Remainder with the sign of `b` (Python's `%`, TensorFlow's `floormod`).
            FloorMod => floor_mod, "FloorMod", Numeric, false,
                |a, b, y, g| same(g),
                |a, b, y, g| some(neg(&mul(g, &floor_div(a, b)?)?));
            /// Remainder with the sign of `a` (C's `%`, TensorFlow's `truncatemod`).
            // TensorFlow registers no gradient for TruncateMod.
            TruncateMod => truncate_mod, "TruncateMod", Numeric, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a / b`, and 0 where `b` is 0 (TensorFlow's `divide_no_nan`).
            DivNoNan => div_no_nan, "DivNoNan", Float, false,
                |a, b, y, g| some(div_no_nan(g, b)),
                |a, b, y, g| some(mul(g, &div_no_nan(&div_no_nan(&neg(a)?, b)?, b)?));
            /// `a * b`, and 0 where `b` is 0 (whatever `a` is: inf and NaN too).
            MulNoNan => multiply_no_nan, "MulNoNan", Float, false,
                |a, b, y, g| some(multiply_no_nan(g, b)),
                |a, b, y, g| some(multiply_no_nan(a, g));
            /// `a * log(b)`, and 0 where `a` is 0 (whatever `b` is).
            Xlogy => xlogy, "Xlogy", Float, false,
                |a, b, y, g| some(mul(g, &xlogy(&nonzero(a)?, b)?)),
                |a, b, y, g| some(mul(g, &xdivy(a, b)?));
            /// `a * log(1 + b)`, and 0 where `a` is 0.
            Xlog1py => xlog1py, "Xlog1py", Float, false,
                |a, b, y, g| some(mul(g, &xlog1py(&nonzero(a)?, b)?)),
                |a, b, y, g| some(mul(g, &xdivy(a, &add(b, 1.0)?)?));
            /// `a / b`, and 0 where `a` is 0 (whatever `b` is).
            Xdivy => xdivy, "Xdivy", Float, false,
                |a, b, y, g| some(mul(g, &xdivy(&nonzero(a)?, b)?)),
                |a, b, y, g| some(mul(g, &xdivy(&neg(a)?, &square(b)?)?));
            /// Hurwitz's zeta function `sum_k (b + k)^-a` (TensorFlow's `zeta(x, q)`).
            // No gradient for `a`, as in TensorFlow; d/db = -a zeta(a + 1, b).
            Zeta => zeta, "Zeta", Float, false,
                |a, b, y, g| none(),
                |a, b, y, g| some(mul(g, &neg(&mul(a, &zeta(&add(a, 1.0)?, b)?)?)?));
            /// The `a`-th derivative of digamma at `b` (integer `a >= 0`; NaN otherwise).
            // No gradient for the order; d/db = polygamma(a + 1, b).
            Polygamma => polygamma, "Polygamma", Float, false,
                |a, b, y, g| none(),
                |a, b, y, g| some(mul(g, &polygamma(&add(a, 1.0)?, b)?));
            /// The regularized lower incomplete gamma function `P(a, x)`.
            // d/dx = x^(a-1) e^-x / Gamma(a); d/da is `igamma_grad_a`.
            Igamma => igamma, "Igamma", Float, false,
                |a, b, y, g| some(mul(g, &igamma_grad_a(a, b)?)),
                |a, b, y, g| some(mul(g, &exp(&sub(&sub(&xlogy(&sub(a, 1.0)?, b)?, b)?, &lgamma(a)?)?)?));
            /// The regularized upper incomplete gamma function `Q(a, x) = 1 - P(a, x)`.
            Igammac => igammac, "Igammac", Float, false,
                |a, b, y, g| some(neg(&mul(g, &igamma_grad_a(a, b)?)?)),
                |a, b, y, g| some(neg(&mul(g, &exp(&sub(&sub(&xlogy(&sub(a, 1.0)?, b)?, b)?, &lgamma(a)?)?)?)?));
            /// `dP(a, x)/da`, the derivative of [`igamma`] in `a` (TensorFlow's
            /// `IgammaGradA`).
            // TensorFlow registers no gradient for IgammaGradA.
            IgammaGradA => igamma_grad_a, "IgammaGradA", Float, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// The next representable value after `a` towards `b`.
            NextAfter => nextafter, "NextAfter", Float, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a ^ b`.
            // d/da a^b = b a^(b-1); d/db a^b = a^b ln a (taken as 0 where a <= 0).
            Pow => pow, "Pow", Numeric, false,
                |a, b, y, g| some(mul(g, &mul(b, &pow(a, &sub(b, 1.0)?)?)?)),
                |a, b, y, g| {
                let positive = greater(a, 0.0)?;
                let safe_a = select(&positive, a, 1.0)?;
                some(mul(g, &select(&positive, &mul(y, &log(&safe_a)?)?, 0.0)?))
            };
            /// Larger of the two (NaN if either is NaN).
            // The gradient goes to `a` on ties.
            Maximum => maximum, "Maximum", Numeric, false,
                |a, b, y, g| some(select(&greater_equal(a, b)?, g, 0.0)),
                |a, b, y, g| some(select(&greater_equal(a, b)?, 0.0, g));
            /// Smaller of the two (NaN if either is NaN).
            // The gradient goes to `a` on ties.
            Minimum => minimum, "Minimum", Numeric, false,
                |a, b, y, g| some(select(&less_equal(a, b)?, g, 0.0)),
                |a, b, y, g| some(select(&less_equal(a, b)?, 0.0, g));
            /// The angle of the point `(b, a)`: `atan(a / b)` in the right quadrant
            /// (TensorFlow's `atan2(y, x)` with `y = a`, `x = b`).
            // d/da atan2(a, b) = b / (a^2 + b^2); d/db = -a / (a^2 + b^2).
            Atan2 => atan2, "Atan2", Float, false,
                |a, b, y, g| some(div(&mul(g, b)?, &add(&square(a)?, &square(b)?)?)),
                |a, b, y, g| some(neg(&div(&mul(g, a)?, &add(&square(a)?, &square(b)?)?)?));
            /// `sqrt(a^2 + b^2)` without overflow or underflow on the way.
            // d/da hypot(a, b) = a / hypot(a, b), taken as 0 at the origin.
            Hypot => hypot, "Hypot", Float, false,
                |a, b, y, g| some(mul(g, &select(&greater(y, 0.0)?, &div(a, &select(&greater(y, 0.0)?, y, 1.0)?)?, 0.0)?)),
                |a, b, y, g| some(mul(g, &select(&greater(y, 0.0)?, &div(b, &select(&greater(y, 0.0)?, y, 1.0)?)?, 0.0)?));
            /// `log(exp(a) + exp(b))` without overflow.
            // d/da log(e^a + e^b) = e^(a - y) = sigmoid(a - b).
            LogAddExp => logaddexp, "LogAddExp", Float, false,
                |a, b, y, g| some(mul(g, &sigmoid(&sub(a, b)?)?)),
                |a, b, y, g| some(mul(g, &sigmoid(&sub(b, a)?)?));
            /// `a == b`.
            Equal => equal, "Equal", Any, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a != b`.
            NotEqual => not_equal, "NotEqual", Any, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a < b`.
            Less => less, "Less", Numeric, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a <= b`.
            LessEqual => less_equal, "LessEqual", Numeric, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a > b`.
            Greater => greater, "Greater", Numeric, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// `a >= b`.
            GreaterEqual => greater_equal, "GreaterEqual", Numeric, true,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// Boolean and.
            LogicalAnd => logical_and, "LogicalAnd", Bool, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
            /// Boolean or.
            LogicalOr => logical_or, "LogicalOr", Bool, false,
                |a, b, y, g| none(),
                |a, b, y, g| none();
        }
    };
}
pub(crate) use binary_table;
binary_table!(define_binary_ops);

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
        // NextAfter steps in the dtype's own representation: f32 and f64 only, as TensorFlow's.
        if !ok || (self == BinaryOp::NextAfter && !matches!(a.dtype, DType::F32 | DType::F64)) {
            bail!(dtype, "{} does not accept {}", self.name(), a.dtype);
        }
        let shape = broadcast_shapes(&a.shape, &b.shape)?;
        let dtype = if self.is_comparison() { DType::Bool } else { a.dtype };
        Ok(Meta::new(dtype, shape))
    }
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
