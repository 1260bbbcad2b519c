//! Element types: the [`DType`] tag, the [`Element`] trait that ties a Rust
//! type to its tag, and [`Scalar`], a dtype-erased single value used in op
//! attributes (fill values, clip bounds, ...).

use half::{bf16, f16};
pub use num_complex::Complex;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor. `F32` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    F32,
    F64,
    F16,
    BF16,
    I32,
    I64,
    U8,
    Bool,
    I8,
    I16,
    U16,
    U32,
    U64,
    /// Complex numbers of two f32 parts (TensorFlow's `complex64`).
    C64,
    /// Complex numbers of two f64 parts (TensorFlow's `complex128`).
    C128,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 15] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::C64,
        DType::C128,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::C128 => 16,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::U8 | DType::I8 | DType::Bool => 1,
        }
    }
    /// Floating point (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
    /// Signed or unsigned integer (i8 to i64, u8 to u64).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I32 | DType::I64 | DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::U32 | DType::U64
        )
    }
    /// An unsigned integer (u8 to u64).
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64)
    }
    /// Complex (c64, c128).
    pub fn is_complex(self) -> bool {
        matches!(self, DType::C64 | DType::C128)
    }
    /// Floating point or complex: the dtypes gradients flow through.
    pub fn is_inexact(self) -> bool {
        self.is_float() || self.is_complex()
    }
    /// Real float or integer: what the real arithmetic kernels take.
    /// Complex tensors have their own arithmetic (`ops::complex`), made
    /// of real ops on their parts.
    pub fn is_numeric(self) -> bool {
        !matches!(self, DType::Bool | DType::C64 | DType::C128)
    }
    /// The complex dtype with parts of this float dtype (f32 to c64, f64
    /// to c128), or `None`.
    pub fn to_complex(self) -> Option<DType> {
        match self {
            DType::F32 => Some(DType::C64),
            DType::F64 => Some(DType::C128),
            _ => None,
        }
    }
    /// The dtype of a complex dtype's parts (c64 to f32, c128 to f64), or `None`.
    pub fn complex_part(self) -> Option<DType> {
        match self {
            DType::C64 => Some(DType::F32),
            DType::C128 => Some(DType::F64),
            _ => None,
        }
    }
    /// The lowercase name used in messages and files (`f32`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::C64 => "c64",
            DType::C128 => "c128",
        }
    }
    /// Parse the name printed by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can be the element of a tensor.
///
/// Sealed: implemented for `f32, f64, f16, bf16, i8, i16, i32, i64, u8,
/// u16, u32, u64, bool` and `Complex<f32>`, `Complex<f64>` (whose
/// conversions to and from real numbers use the real part, as NumPy's casts).
pub trait Element: sealed::Sealed + Copy + Send + Sync + PartialEq + fmt::Debug + Default + 'static {
    /// The dtype tag of this type.
    const DTYPE: DType;
    /// Lossy conversion to f64 (exact for every type but i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Conversion from f64 with Rust `as` semantics (saturating, NaN to 0 for ints).
    fn from_f64(v: f64) -> Self;
    /// Conversion to i64 with Rust `as` semantics (floats truncate and saturate).
    fn to_i64(self) -> i64;
    /// Conversion from i64 with Rust `as` semantics (booleans: nonzero is true).
    fn from_i64(v: i64) -> Self;
    /// The value as a [`Scalar`].
    fn to_scalar(self) -> Scalar;
}

macro_rules! element {
    ($t:ty, $dt:ident, $to:expr, $from:expr, $to_i:expr, $from_i:expr, $scalar:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                let f: fn($t) -> f64 = $to;
                f(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                let f: fn(f64) -> $t = $from;
                f(v)
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                let f: fn($t) -> i64 = $to_i;
                f(self)
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                let f: fn(i64) -> $t = $from_i;
                f(v)
            }
            #[inline(always)]
            fn to_scalar(self) -> Scalar {
                let f: fn($t) -> Scalar = $scalar;
                f(self)
            }
        }
    };
}
element!(f32, F32, |v| v as f64, |v| v as f32, |v| v as i64, |v| v as f32, |v| Scalar::F64(v as f64));
element!(f64, F64, |v| v, |v| v, |v| v as i64, |v| v as f64, Scalar::F64);
element!(f16, F16, |v| v.to_f64(), f64_to_f16, |v| v.to_f64() as i64, |v| f64_to_f16(i64_to_f64_odd(v)), |v| {
    Scalar::F64(v.to_f64())
});
element!(bf16, BF16, |v| v.to_f64(), f64_to_bf16, |v| v.to_f64() as i64, |v| f64_to_bf16(i64_to_f64_odd(v)), |v| {
    Scalar::F64(v.to_f64())
});
element!(i32, I32, |v| v as f64, |v| v as i32, |v| v as i64, |v| v as i32, |v| Scalar::I64(v as i64));
element!(i64, I64, |v| v as f64, |v| v as i64, |v| v, |v| v, Scalar::I64);
element!(u8, U8, |v| v as f64, |v| v as u8, |v| v as i64, |v| v as u8, |v| Scalar::I64(v as i64));
element!(i8, I8, |v| v as f64, |v| v as i8, |v| v as i64, |v| v as i8, |v| Scalar::I64(v as i64));
element!(i16, I16, |v| v as f64, |v| v as i16, |v| v as i64, |v| v as i16, |v| Scalar::I64(v as i64));
element!(u16, U16, |v| v as f64, |v| v as u16, |v| v as i64, |v| v as u16, |v| Scalar::I64(v as i64));
element!(u32, U32, |v| v as f64, |v| v as u32, |v| v as i64, |v| v as u32, |v| Scalar::I64(v as i64));
// u64 beyond i64::MAX wraps through i64 (Scalar keeps integers as i64).
element!(u64, U64, |v| v as f64, |v| v as u64, |v| v as i64, |v| v as u64, |v| Scalar::I64(v as i64));
element!(
    Complex<f32>,
    C64,
    |v| v.re as f64,
    |v| Complex::new(v as f32, 0.0),
    |v| v.re as i64,
    |v| { Complex::new(v as f32, 0.0) },
    |v| Scalar::F64(v.re as f64)
);
element!(
    Complex<f64>,
    C128,
    |v| v.re,
    |v| Complex::new(v, 0.0),
    |v| v.re as i64,
    |v| Complex::new(v as f64, 0.0),
    |v| { Scalar::F64(v.re) }
);
element!(bool, Bool, |v| if v { 1.0 } else { 0.0 }, |v| v != 0.0, |v| v as i64, |v| v != 0, Scalar::Bool);

/// f64 to f16, correctly rounded (half's own conversion rounds twice on x86).
fn f64_to_f16(v: f64) -> f16 {
    f16::from_f32(f64_to_f32_odd(v))
}

/// f64 to bf16, correctly rounded.
fn f64_to_bf16(v: f64) -> bf16 {
    bf16::from_f32(f64_to_f32_odd(v))
}

/// f64 to f32 rounding to odd: exact values stay, inexact ones become the
/// neighbour toward zero with the last bit set. Rounding that to nearest in
/// a type with at least two fewer mantissa bits (f16, bf16) gives the
/// correctly rounded conversion of the original value: no double rounding.
fn f64_to_f32_odd(x: f64) -> f32 {
    let r = x as f32;
    if r as f64 == x || x.is_nan() {
        return r;
    }
    let mut bits = r.to_bits();
    if (r as f64).abs() > x.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// u64 to a float type, rounded once: past i64::MAX the value is halved
/// with the dropped bit kept as a sticky bit, converted, and doubled (exact).
pub(crate) fn u64_to_float<U: Element>(v: u64) -> U {
    if U::DTYPE == DType::F64 {
        U::from_f64(v as f64)
    } else if v <= i64::MAX as u64 {
        U::from_i64(v as i64)
    } else {
        let half: U = U::from_i64(((v >> 1) | (v & 1)) as i64);
        U::from_f64(half.to_f64() * 2.0)
    }
}

/// i64 to f64 rounding to odd (see [`f64_to_f32_odd`]).
fn i64_to_f64_odd(v: i64) -> f64 {
    let r = v as f64;
    let back = r as i128;
    if back == v as i128 {
        return r;
    }
    let mut bits = r.to_bits();
    if back.abs() > (v as i128).abs() {
        bits -= 1;
    }
    f64::from_bits(bits | 1)
}

/// A single value of any dtype family, kept exactly (integers as i64).
///
/// Serialized as a JSON bool, integer or number; non-finite floats as the
/// strings `"inf"`, `"-inf"` and `"nan:0x<bits>"` (JSON has no literals for
/// them; the bits keep the NaN's sign and payload).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Bool(bool),
    I64(i64),
    F64(f64),
}

impl Scalar {
    /// The value as f64 (booleans as 0/1).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => b as u8 as f64,
            Scalar::I64(i) => i as f64,
            Scalar::F64(f) => f,
        }
    }
    /// The value as i64 (floats truncated and saturated, booleans as 0/1).
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::Bool(b) => b as i64,
            Scalar::I64(i) => i,
            Scalar::F64(f) => f as i64,
        }
    }
    /// The value converted to the element type `T` (integers stay exact).
    pub fn to_element<T: Element>(self) -> T {
        match self {
            Scalar::Bool(b) => T::from_i64(b as i64),
            Scalar::I64(i) => T::from_i64(i),
            Scalar::F64(f) => T::from_f64(f),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ScalarRepr {
    Bool(bool),
    I64(i64),
    F64(f64),
    Text(String),
}

impl Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = match *self {
            Scalar::Bool(b) => ScalarRepr::Bool(b),
            Scalar::I64(i) => ScalarRepr::I64(i),
            Scalar::F64(f) if f.is_nan() => ScalarRepr::Text(format!("nan:0x{:016x}", f.to_bits())),
            Scalar::F64(f) if f == f64::INFINITY => ScalarRepr::Text("inf".into()),
            Scalar::F64(f) if f == f64::NEG_INFINITY => ScalarRepr::Text("-inf".into()),
            Scalar::F64(f) => ScalarRepr::F64(f),
        };
        r.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        Ok(match ScalarRepr::deserialize(d)? {
            ScalarRepr::Bool(b) => Scalar::Bool(b),
            ScalarRepr::I64(i) => Scalar::I64(i),
            ScalarRepr::F64(f) => Scalar::F64(f),
            ScalarRepr::Text(t) => match t.as_str() {
                "nan" => Scalar::F64(f64::NAN),
                t if t.starts_with("nan:0x") => match u64::from_str_radix(&t[6..], 16) {
                    Ok(bits) if f64::from_bits(bits).is_nan() => Scalar::F64(f64::from_bits(bits)),
                    _ => return Err(serde::de::Error::custom(format!("'{t}' is not a NaN bit pattern"))),
                },
                "inf" => Scalar::F64(f64::INFINITY),
                "-inf" => Scalar::F64(f64::NEG_INFINITY),
                other => return Err(serde::de::Error::custom(format!("'{other}' is not a scalar"))),
            },
        })
    }
}

impl From<f32> for Scalar {
    fn from(v: f32) -> Scalar {
        Scalar::F64(v as f64)
    }
}
impl From<f64> for Scalar {
    fn from(v: f64) -> Scalar {
        Scalar::F64(v)
    }
}
impl From<i32> for Scalar {
    fn from(v: i32) -> Scalar {
        Scalar::I64(v as i64)
    }
}
impl From<i64> for Scalar {
    fn from(v: i64) -> Scalar {
        Scalar::I64(v)
    }
}
impl From<u8> for Scalar {
    fn from(v: u8) -> Scalar {
        Scalar::I64(v as i64)
    }
}
macro_rules! scalar_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Scalar {
            fn from(v: $t) -> Scalar {
                Scalar::I64(v as i64)
            }
        }
    )*};
}
// u64 beyond i64::MAX wraps (Scalar keeps integers as i64).
scalar_from_int!(i8, i16, u16, u32, u64);
impl From<bool> for Scalar {
    fn from(v: bool) -> Scalar {
        Scalar::Bool(v)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::I64(i) => write!(f, "{i}"),
            Scalar::F64(v) => write!(f, "{v}"),
        }
    }
}

/// Run `$body` with `$T` bound to the Rust type of `$dtype`.
///
/// The first form accepts every dtype. The second lists the accepted dtypes;
/// any other evaluates `$otherwise`.
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        $crate::tensor::dtype::with_dtype!(@arms $dtype, $T => $body, [F32, F64, F16, BF16, I32, I64, U8, Bool, I8, I16, U16, U32, U64, C64, C128])
    };
    ($dtype:expr, $T:ident => $body:expr, [$($dt:ident),*], $otherwise:expr) => {{
        #[allow(unreachable_patterns)]
        match $dtype {
            $( $crate::tensor::DType::$dt => {
                #[allow(dead_code)]
                type $T = $crate::tensor::dtype::rust_type!($dt);
                $body
            } )*
            _ => $otherwise,
        }
    }};
    (@arms $dtype:expr, $T:ident => $body:expr, [$($dt:ident),*]) => {{
        match $dtype {
            $( $crate::tensor::DType::$dt => {
                #[allow(dead_code)]
                type $T = $crate::tensor::dtype::rust_type!($dt);
                $body
            } )*
        }
    }};
}
pub(crate) use with_dtype;

macro_rules! rust_type {
    (F32) => {
        f32
    };
    (F64) => {
        f64
    };
    (F16) => {
        half::f16
    };
    (BF16) => {
        half::bf16
    };
    (I32) => {
        i32
    };
    (I64) => {
        i64
    };
    (U8) => {
        u8
    };
    (I8) => {
        i8
    };
    (I16) => {
        i16
    };
    (U16) => {
        u16
    };
    (U32) => {
        u32
    };
    (U64) => {
        u64
    };
    (Bool) => {
        bool
    };
    (C64) => {
        $crate::tensor::dtype::Complex<f32>
    };
    (C128) => {
        $crate::tensor::dtype::Complex<f64>
    };
}
pub(crate) use rust_type;
