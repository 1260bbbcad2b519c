//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), read and write.
//!
//! Files are untrusted: the header length is bounded, the shape is checked
//! against [`MAX_ELEMENTS`](crate::tensor::shape::MAX_ELEMENTS) before anything is
//! allocated, the data must have exactly the bytes the header promises, and
//! bool data must be 0 or 1. Big-endian and Fortran-order arrays are
//! converted on load.

use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::{DType, Shape, Value};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
const MAX_HEADER: usize = 1 << 20;

fn descr(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::C64 => "<c8",
        DType::C128 => "<c16",
        DType::BF16 => bail!(unimplemented, "bf16 has no standard .npy dtype; cast to f32 first"),
    })
}

/// Parse a dtype string like `<f4`; returns the dtype and whether it is big-endian.
fn parse_descr(d: &str) -> Result<(DType, bool)> {
    if !d.is_ascii() || d.is_empty() {
        bail!(format, "unsupported npy dtype '{d}'");
    }
    let (order, code) = d.split_at(1);
    let big = order == ">";
    if !matches!(order, "<" | ">" | "|" | "=") {
        bail!(format, "unsupported npy dtype '{d}'");
    }
    let dtype = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "c8" => DType::C64,
        "c16" => DType::C128,
        _ => bail!(
            format,
            "unsupported npy dtype '{d}' (supported: f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8, b1, c8, c16)"
        ),
    };
    Ok((dtype, big))
}

/// The value of `key` in the header dict, as raw text up to the next
/// top-level comma.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat).ok_or_else(|| Error::format(format!("npy header has no '{key}'")))? + pat.len();
    let rest = header[start..].trim_start();
    if rest.starts_with('(') {
        let end = rest.find(')').ok_or_else(|| Error::format("npy header: unclosed shape tuple"))?;
        return Ok(&rest[..=end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Ok(rest[..end].trim())
}

fn parse_header(header: &str) -> Result<(DType, bool, bool, Shape)> {
    let d = header_field(header, "descr")?;
    let d = d.trim_matches(|c| c == '\'' || c == '"');
    let (dtype, big) = parse_descr(d)?;
    let fortran = match header_field(header, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => bail!(format, "npy header: fortran_order is '{other}'"),
    };
    let tuple = header_field(header, "shape")?;
    let inner = tuple.trim_start_matches('(').trim_end_matches(')');
    let mut dims = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: usize = part
            .trim_end_matches('L')
            .parse()
            .map_err(|_| Error::format(format!("npy header: bad dimension '{part}'")))?;
        dims.push(v);
    }
    let shape = Shape::from(dims);
    if shape.numel().is_none() {
        bail!(format, "npy header: shape {:?} is too large", shape.dims());
    }
    Ok((dtype, big, fortran, shape))
}

/// A short read is a damaged file; any other read failure is an I/O error.
fn header_error(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::format(what)
    } else {
        Error::from(e)
    }
}

/// What an `.npy` header says about the data after it.
pub(crate) struct NpyHeader {
    pub dtype: DType,
    pub big_endian: bool,
    pub fortran: bool,
    pub shape: Shape,
}

/// Read the magic, version and header of an `.npy` stream, leaving the reader at the data.
pub(crate) fn read_npy_header(reader: &mut impl Read) -> Result<NpyHeader> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(|e| header_error(e, "not an npy file (too short)"))?;
    if &magic[..6] != MAGIC {
        bail!(format, "not an npy file (bad magic)");
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).map_err(|e| header_error(e, "truncated npy header"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            reader.read_exact(&mut b).map_err(|e| header_error(e, "truncated npy header"))?;
            u32::from_le_bytes(b) as usize
        }
        v => bail!(format, "npy format version {v} is not supported"),
    };
    if header_len > MAX_HEADER {
        bail!(format, "npy header of {header_len} bytes is too long");
    }
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header).map_err(|e| header_error(e, "truncated npy header"))?;
    let header = String::from_utf8_lossy(&header);
    let (dtype, big_endian, fortran, shape) = parse_header(&header)?;
    Ok(NpyHeader { dtype, big_endian, fortran, shape })
}

/// Little-endian, in place: each element (each part of a complex one) byte-swapped.
pub(crate) fn swap_to_little_endian(dtype: DType, data: &mut [u8]) {
    let word = if dtype.is_complex() { dtype.size() / 2 } else { dtype.size() };
    if word > 1 {
        for chunk in data.chunks_mut(word) {
            chunk.reverse();
        }
    }
}

/// Read a `.npy` array from `reader`.
pub fn read_npy(mut reader: impl Read) -> Result<Tensor> {
    let NpyHeader { dtype, big_endian: big, fortran, shape } = read_npy_header(&mut reader)?;
    let nbytes = shape.checked_numel()? * dtype.size();
    let mut data = Vec::new();
    reader.by_ref().take(nbytes as u64 + 1).read_to_end(&mut data)?;
    if data.len() != nbytes {
        bail!(format, "npy data has {} bytes, the header promises {nbytes} ({dtype}{shape})", data.len());
    }
    // A complex element is two numbers, each swapped on its own.
    if big {
        swap_to_little_endian(dtype, &mut data);
    }
    if fortran && shape.rank() > 1 {
        let reversed: Vec<usize> = shape.iter().rev().copied().collect();
        let t = Value::from_le_bytes(dtype, Shape::from(reversed), &data)?.into_tensor();
        let perm: Vec<usize> = (0..shape.rank()).rev().collect();
        return crate::ops::movement::transpose(&t, &perm).and_then(|t| contiguous(&t));
    }
    Ok(Value::from_le_bytes(dtype, shape, &data)?.into_tensor())
}

fn contiguous(t: &Tensor) -> Result<Tensor> {
    let v = t.value()?;
    Ok(Tensor::from_value(crate::backend::cpu::copy::materialize(v)?))
}

/// Write `t` as a version 1.0 `.npy` array.
pub fn write_npy(t: &Tensor, mut writer: impl Write) -> Result<()> {
    let d = descr(t.dtype())?;
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic + version + length + header is a multiple of 64.
    let total = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    if header.len() > u16::MAX as usize {
        bail!(invalid, "shape {} is too long for an npy header", t.shape());
    }
    writer.write_all(MAGIC)?;
    writer.write_all(&[1, 0])?;
    writer.write_all(&(header.len() as u16).to_le_bytes())?;
    writer.write_all(header.as_bytes())?;
    writer.write_all(&t.value()?.to_le_bytes()?)?;
    Ok(())
}

/// Read a `.npy` file.
pub fn load_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let f = std::fs::File::open(path.as_ref()).map_err(|e| Error::from(e).with_path(path.as_ref()))?;
    read_npy(std::io::BufReader::new(f))
}

/// Write a `.npy` file (through a temporary file and a rename, so a crash
/// never leaves a half-written file under `path`).
pub fn save_npy(t: &Tensor, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    crate::io::write_atomic(path, |w| write_npy(t, w))
}
