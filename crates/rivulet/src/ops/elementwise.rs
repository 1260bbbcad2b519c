//! Elementwise operations: unary math, binary arithmetic and comparisons with
//! NumPy broadcasting, `select` (TensorFlow's `where`), `cast`.
//!
//! Binary ops take the same dtype on both sides (as TensorFlow does); a Rust
//! number on one side takes the dtype of the tensor on the other.

use super::{apply1, ones_like, zeros_like, Op};
use crate::error::Result;
use crate::graph::Tensor;
use crate::op::elementwise::{binary_table, unary_table};
pub use crate::op::elementwise::{BinaryOp, UnaryOp, SELU_ALPHA, SELU_SCALE};
use crate::tensor::{DType, Scalar};

/// Makes one public function per entry of the unary table, and
/// [`unary_grad`] from the entries' gradient rules.
macro_rules! unary_functions {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $grad:expr; )*) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname(x: &Tensor) -> Result<Tensor> {
                unary_op(UnaryOp::$variant, x)
            }
        )*

        /// Gradient of unary op `f` at input `x` with output `y`, given the
        /// output gradient `g` (`None`: the op has no gradient).
        #[allow(unused_variables)]
        pub(crate) fn unary_grad(f: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
            match f {
                $( UnaryOp::$variant => ($grad)(x, y, g), )*
            }
        }
    };
}
unary_table!(unary_functions);

/// Makes one public function per entry of the binary table, and
/// [`binary_grad`] from the entries' gradient rules.
macro_rules! binary_functions {
    ($( $(#[$doc:meta])* $variant:ident => $fname:ident, $tf:literal, $domain:ident, $cmp:literal, $da:expr, $db:expr; )*) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $fname<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
                binary(BinaryOp::$variant, a.into(), b.into())
            }
        )*

        /// Gradient of a binary op with broadcasting: each side's gradient
        /// is summed back to that side's shape. `wants` says which sides are
        /// needed; the rules of the others do not run.
        #[allow(unused_variables)]
        pub(crate) fn binary_grad(
            f: BinaryOp,
            a: &Tensor,
            b: &Tensor,
            y: &Tensor,
            g: &Tensor,
            wants: [bool; 2],
        ) -> Result<[Option<Tensor>; 2]> {
            let back = |grad: Option<Tensor>, like: &Tensor| grad.map(|t| super::movement::sum_to(&t, like)).transpose();
            Ok(match f {
                $( BinaryOp::$variant => [
                    if wants[0] { back(($da)(a, b, y, g)?, a)? } else { None },
                    if wants[1] { back(($db)(a, b, y, g)?, b)? } else { None },
                ], )*
            })
        }
    };
}
binary_table!(binary_functions);

/// 1 where `x` is nonzero, else 0, in `x`'s dtype (the `x` side of the xlogy family's gradients).
fn nonzero(x: &Tensor) -> Result<Tensor> {
    cast(&not_equal(x, 0.0)?, x.dtype())
}

/// A gradient rule's result: the gradient `r`.
fn some(r: Result<Tensor>) -> Result<Option<Tensor>> {
    r.map(Some)
}

/// A gradient rule's result: no gradient (integer-valued or boolean ops).
fn none() -> Result<Option<Tensor>> {
    Ok(None)
}

/// A gradient rule's result: the output gradient itself.
fn same(g: &Tensor) -> Result<Option<Tensor>> {
    Ok(Some(g.clone()))
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
operand_from!(f32, f64, i32, i64, u8, i8, i16, u16, u32, u64, bool);

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
    if x.dtype().is_complex() {
        return super::complex::unary(f, x);
    }
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
    if a.dtype().is_complex() && b.dtype().is_complex() {
        return super::complex::binary(f, &a, &b);
    }
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

/// `a / b` as Python 3's `/` and TensorFlow's `truediv`: integers are divided
/// as floats (int32 and int64 as f64, uint8 as f32, as TensorFlow does), so
/// `7 / 2` is 3.5 and `1 / 0` is inf. [`truncate_div`] and [`floor_div`]
/// divide integers as integers.
#[doc(alias = "truediv")]
#[track_caller]
pub fn div<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
    let (a, b) = resolve(a.into(), b.into())?;
    match true_div_dtype(a.dtype()) {
        Some(float) if a.dtype() == b.dtype() => real_div(&cast(&a, float)?, &cast(&b, float)?),
        _ => real_div(&*a, &*b),
    }
}

/// The float dtype TensorFlow's `truediv` divides integers of `dtype` in
/// (`None` for floats and bool).
fn true_div_dtype(dtype: DType) -> Option<DType> {
    match dtype {
        DType::I32 | DType::I64 | DType::U32 | DType::U64 => Some(DType::F64),
        DType::U8 | DType::I8 | DType::I16 | DType::U16 => Some(DType::F32),
        _ => None,
    }
}

/// Integer division rounding toward zero (C's `/`, TensorFlow's
/// `truncatediv`); division by zero is an error. Integers only.
#[track_caller]
pub fn truncate_div<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
    let (a, b) = resolve(a.into(), b.into())?;
    if !a.dtype().is_int() {
        crate::error::bail!(dtype, "truncate_div needs an integer dtype, got {} (use div for floats)", a.dtype());
    }
    real_div(&*a, &*b)
}

/// `(a - b)^2` (TensorFlow's `squared_difference`).
#[track_caller]
pub fn squared_difference<'a, 'b>(a: impl Into<Operand<'a>>, b: impl Into<Operand<'b>>) -> Result<Tensor> {
    square(&sub(a, b)?)
}

/// Boolean exclusive or.
#[track_caller]
pub fn logical_xor(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != DType::Bool || b.dtype() != DType::Bool {
        crate::error::bail!(dtype, "logical_xor needs bool inputs, got {} and {}", a.dtype(), b.dtype());
    }
    not_equal(a, b)
}

/// Nearest integer, halves to even: TensorFlow's `rint`, the same as [`round`].
#[track_caller]
pub fn rint(x: &Tensor) -> Result<Tensor> {
    round(x)
}

/// `1 / x`, and 0 where `x` is 0 (TensorFlow's `reciprocal_no_nan`).
#[track_caller]
pub fn reciprocal_no_nan(x: &Tensor) -> Result<Tensor> {
    div_no_nan(1.0, x)
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
