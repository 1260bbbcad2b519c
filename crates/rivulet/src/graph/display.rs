//! Printing tensors the way NumPy prints arrays, abbreviated when large.

use super::tensor::{Repr, Tensor};
use crate::tensor::dtype::with_dtype;
use crate::tensor::Element;
use std::fmt;

const EDGE: usize = 3;
const FULL_LIMIT: usize = 1000;

fn write_elem<T: Element>(f: &mut fmt::Formatter<'_>, v: T) -> fmt::Result {
    if T::DTYPE.is_float() {
        write!(f, "{}", v.to_f64() as f32)
    } else {
        write!(f, "{v:?}")
    }
}

fn write_level<T: Element>(
    f: &mut fmt::Formatter<'_>,
    data: &[T],
    shape: &[usize],
    abbreviate: bool,
    indent: usize,
) -> fmt::Result {
    if shape.is_empty() {
        return write_elem(f, data[0]);
    }
    let n = shape[0];
    let inner: usize = shape[1..].iter().product();
    f.write_str("[")?;
    let mut i = 0;
    while i < n {
        if abbreviate && n > 2 * EDGE && i == EDGE {
            f.write_str("...")?;
            i = n - EDGE;
            if shape.len() > 1 {
                write!(f, ",\n{:indent$}", "", indent = indent + 1)?;
            } else {
                f.write_str(", ")?;
            }
        }
        write_level(f, &data[i * inner..(i + 1) * inner], &shape[1..], abbreviate, indent + 1)?;
        if i + 1 < n {
            if shape.len() > 1 {
                write!(f, ",\n{:indent$}", "", indent = indent + 1)?;
            } else {
                f.write_str(", ")?;
            }
        }
        i += 1;
    }
    f.write_str("]")
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Symbolic(s) => {
                write!(f, "Tensor(\"{}:{}\", shape={}, dtype={})", s.graph.node_name(s.node), s.index, s.shape, s.dtype)
            }
            Repr::Value(v) => with_dtype!(v.dtype, T => {
                let data = self.to_vec::<T>().map_err(|_| fmt::Error)?;
                let shape = v.shape().clone();
                if data.is_empty() {
                    return write!(f, "[] (shape={shape}, dtype={})", v.dtype);
                }
                write_level(f, &data, &shape, data.len() > FULL_LIMIT, 0)
            }),
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Symbolic(_) => fmt::Display::fmt(self, f),
            Repr::Value(v) => write!(f, "Tensor(shape={}, dtype={}, {})", v.shape(), v.dtype, self),
        }
    }
}
