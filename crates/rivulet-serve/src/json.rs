//! Tensors in TensorFlow Serving's JSON: nested lists of numbers or bools,
//! one list level per axis. Requests are untrusted: lists must be regular
//! (no ragged rows), ranks and element counts are bounded, and numbers must
//! fit the input's dtype.
//!
//! Binary values (`{"b64": "..."}`): Rivulet graphs have no string dtype,
//! so a base64 value carries raw tensor bytes: for a `u8` input one byte
//! per element, for another dtype its elements' little-endian bytes. The
//! decoded value is the innermost axis.

use crate::error::ServeError;
use base64::Engine;
use rivulet::{DType, Tensor};
use serde_json::Value;

/// The most axes a request tensor may have.
pub const MAX_RANK: usize = 32;

/// Bounds on what one request may ask the server to build.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Elements of one tensor.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_elements: 1 << 26 }
    }
}

/// The shape of nested lists, read down the first elements (checked for
/// regularity while converting).
fn outer_shape(v: &Value) -> Result<Vec<usize>, ServeError> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        if shape.len() >= MAX_RANK {
            return Err(ServeError::invalid(format!("lists nested more than {MAX_RANK} deep")));
        }
        shape.push(a.len());
        match a.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    Ok(shape)
}

fn b64_bytes(v: &Value) -> Option<Result<Vec<u8>, ServeError>> {
    let Value::Object(m) = v else { return None };
    let s = m.get("b64")?;
    Some(match (s, m.len()) {
        (Value::String(s), 1) => base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| ServeError::invalid(format!("bad base64 value: {e}"))),
        _ => Err(ServeError::invalid("a binary value must be {\"b64\": \"<base64 string>\"}")),
    })
}

/// Append one element (a JSON leaf) of `dtype` as little-endian bytes.
fn push_leaf(out: &mut Vec<u8>, v: &Value, dtype: DType, name: &str) -> Result<(), ServeError> {
    let bad =
        |what: &str| ServeError::invalid(format!("input '{name}': expected {what} for {dtype}, got {}", short(v)));
    match dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            let x = v.as_f64().ok_or_else(|| bad("a number"))?;
            match dtype {
                DType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
                DType::F64 => out.extend_from_slice(&x.to_le_bytes()),
                DType::F16 => out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
                _ => out.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes()),
            }
        }
        DType::Bool => out.push(v.as_bool().ok_or_else(|| bad("true or false"))? as u8),
        DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::U8 | DType::U16 | DType::U32 | DType::U64 => {
            let range = |lo: i128, hi: i128| -> Result<i128, ServeError> {
                let x = match v {
                    Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
                    _ => None,
                }
                .ok_or_else(|| bad("an integer"))?;
                if x < lo || x > hi {
                    return Err(ServeError::invalid(format!("input '{name}': {x} is out of range for {dtype}")));
                }
                Ok(x)
            };
            match dtype {
                DType::I8 => out.extend_from_slice(&(range(i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes()),
                DType::I16 => out.extend_from_slice(&(range(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes()),
                DType::I32 => out.extend_from_slice(&(range(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes()),
                DType::I64 => out.extend_from_slice(&(range(i64::MIN.into(), i64::MAX.into())? as i64).to_le_bytes()),
                DType::U8 => out.push(range(0, u8::MAX.into())? as u8),
                DType::U16 => out.extend_from_slice(&(range(0, u16::MAX.into())? as u16).to_le_bytes()),
                DType::U32 => out.extend_from_slice(&(range(0, u32::MAX.into())? as u32).to_le_bytes()),
                _ => out.extend_from_slice(&(range(0, u64::MAX.into())? as u64).to_le_bytes()),
            }
        }
        DType::C64 | DType::C128 => {
            return Err(ServeError::invalid(format!("input '{name}': complex inputs cannot be sent as JSON")))
        }
    }
    Ok(())
}

/// A JSON value, abbreviated for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.char_indices().nth(37).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

/// Convert nested lists (or one leaf) into a tensor of `dtype`.
pub fn to_tensor(v: &Value, dtype: DType, name: &str, limits: Limits) -> Result<Tensor, ServeError> {
    let mut shape = outer_shape(v)?;
    // The innermost leaf: a binary value adds its own axis.
    let mut leaf = v;
    while let Value::Array(a) = leaf {
        match a.first() {
            Some(f) => leaf = f,
            None => break,
        }
    }
    let binary_len = match b64_bytes(leaf) {
        Some(bytes) => {
            let n = bytes?.len();
            let size = dtype.size();
            if n % size != 0 {
                return Err(ServeError::invalid(format!(
                    "input '{name}': a binary value of {n} bytes is not a whole number of {dtype} elements"
                )));
            }
            shape.push(n / size);
            Some(n)
        }
        None => None,
    };
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    if numel > limits.max_elements {
        return Err(ServeError::invalid(format!(
            "input '{name}' has {numel} elements, more than the server's limit of {}",
            limits.max_elements
        )));
    }
    // The shape was read down the first elements only: reserve for what a
    // small request may hold, and let a regular large one grow.
    let mut bytes = Vec::with_capacity((numel * dtype.size()).min(1 << 20));
    let outer = shape.len() - usize::from(binary_len.is_some());
    fill(v, &shape[..outer], dtype, name, binary_len, &mut bytes)?;
    Tensor::from_le_bytes(dtype, shape, &bytes).map_err(ServeError::from)
}

fn fill(
    v: &Value,
    shape: &[usize],
    dtype: DType,
    name: &str,
    binary_len: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<(), ServeError> {
    match shape.split_first() {
        Some((&n, rest)) => match v {
            Value::Array(a) if a.len() == n => a.iter().try_for_each(|x| fill(x, rest, dtype, name, binary_len, out)),
            _ => Err(ServeError::invalid(format!(
                "input '{name}' is ragged: every list at one depth must have the same length ({n} expected, got {})",
                short(v)
            ))),
        },
        None => match (binary_len, b64_bytes(v)) {
            (Some(len), Some(bytes)) => {
                let bytes = bytes?;
                if bytes.len() != len {
                    return Err(ServeError::invalid(format!(
                        "input '{name}': binary values of different lengths ({len} and {})",
                        bytes.len()
                    )));
                }
                out.extend_from_slice(&bytes);
                Ok(())
            }
            (None, None) if !v.is_array() => push_leaf(out, v, dtype, name),
            _ => Err(ServeError::invalid(format!("input '{name}' is ragged or mixes binary and plain values"))),
        },
    }
}

/// Write one element of `dtype` from little-endian `b`.
fn write_leaf(out: &mut String, dtype: DType, b: &[u8], buf: &mut ryu::Buffer) {
    fn float(out: &mut String, x: f64, single: Option<f32>, buf: &mut ryu::Buffer) {
        if x.is_nan() {
            out.push_str("NaN");
        } else if x.is_infinite() {
            out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        } else if let Some(s) = single {
            out.push_str(buf.format_finite(s));
        } else {
            out.push_str(buf.format_finite(x));
        }
    }
    use std::fmt::Write;
    let arr = |n: usize| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&b[..n]);
        a
    };
    match dtype {
        DType::F32 => {
            let x = f32::from_le_bytes(arr(4)[..4].try_into().unwrap_or_default());
            float(out, f64::from(x), Some(x), buf)
        }
        DType::F64 => float(out, f64::from_le_bytes(arr(8)), None, buf),
        DType::F16 => {
            let x = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            float(out, f64::from(x), Some(x), buf)
        }
        DType::BF16 => {
            let x = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            float(out, f64::from(x), Some(x), buf)
        }
        DType::Bool => out.push_str(if b[0] != 0 { "true" } else { "false" }),
        DType::I8 => _ = write!(out, "{}", b[0] as i8),
        DType::U8 => _ = write!(out, "{}", b[0]),
        DType::I16 => _ = write!(out, "{}", i16::from_le_bytes([b[0], b[1]])),
        DType::U16 => _ = write!(out, "{}", u16::from_le_bytes([b[0], b[1]])),
        DType::I32 => _ = write!(out, "{}", i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::U32 => _ = write!(out, "{}", u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::I64 => _ = write!(out, "{}", i64::from_le_bytes(arr(8))),
        DType::U64 => _ = write!(out, "{}", u64::from_le_bytes(arr(8))),
        // Complex values as [re, im] pairs.
        DType::C64 => {
            out.push('[');
            write_leaf(out, DType::F32, &b[..4], buf);
            out.push(',');
            write_leaf(out, DType::F32, &b[4..8], buf);
            out.push(']');
        }
        DType::C128 => {
            out.push('[');
            write_leaf(out, DType::F64, &b[..8], buf);
            out.push(',');
            write_leaf(out, DType::F64, &b[8..16], buf);
            out.push(']');
        }
    }
}

/// A tensor's elements (little-endian `bytes`) as nested lists of `shape`.
fn write_nested(out: &mut String, dtype: DType, bytes: &[u8], shape: &[usize], buf: &mut ryu::Buffer) {
    match shape.split_first() {
        None => write_leaf(out, dtype, bytes, buf),
        Some((&n, rest)) => {
            let inner = rest.iter().product::<usize>() * dtype.size();
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                write_nested(out, dtype, &bytes[i * inner..(i + 1) * inner], rest, buf);
            }
            out.push(']');
        }
    }
}

/// A computed tensor, ready to be written whole or row by row.
pub struct Output {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Output {
    pub fn new(t: &Tensor) -> Result<Output, ServeError> {
        Ok(Output { dtype: t.dtype(), shape: t.shape().to_vec(), bytes: t.to_le_bytes()? })
    }
    /// The whole tensor as JSON.
    pub fn write(&self, out: &mut String, buf: &mut ryu::Buffer) {
        write_nested(out, self.dtype, &self.bytes, &self.shape, buf)
    }
    /// The whole tensor as a JSON string.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, &mut ryu::Buffer::new());
        out
    }
    /// Row `i` (along the first axis, below [`Output::rows`]) as JSON.
    pub(crate) fn write_row(&self, i: usize, out: &mut String, buf: &mut ryu::Buffer) {
        let rest = &self.shape[1..];
        let inner = rest.iter().product::<usize>() * self.dtype.size();
        write_nested(out, self.dtype, &self.bytes[i * inner..(i + 1) * inner], rest, buf)
    }
    /// Rows along the first axis (none for a scalar).
    pub fn rows(&self) -> Option<usize> {
        self.shape.first().copied()
    }
}

/// `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}
