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
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident; )*) => {
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

/// The unary ops: `unary_table!(m)` calls `m!` with every entry.
macro_rules! unary_table {
    ($then:ident) => {
        $then! {
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
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $cmp:literal; )*) => {
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

/// The binary ops: `binary_table!(m)` calls `m!` with every entry.
macro_rules! binary_table {
    ($then:ident) => {
        $then! {
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
        if !ok {
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
