//! Neural-network ops (softmax, log-softmax, top-k): the shapes they give.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::shape::UNKNOWN;
use crate::tensor::{DType, Shape};
use smallvec::smallvec;

pub(crate) fn infer_softmax(axis: usize, x: &Meta) -> Result<Meta> {
    if !x.dtype.is_float() {
        bail!(dtype, "softmax needs a floating-point dtype, got {}", x.dtype);
    }
    if axis >= x.shape.rank() {
        bail!(invalid, "softmax axis {axis} is out of range for shape {}", x.shape);
    }
    Ok(x.clone())
}

pub(crate) fn infer_top_k(k: usize, x: &Meta) -> Result<Metas> {
    if !x.dtype.is_numeric() {
        bail!(dtype, "top_k needs a numeric dtype, got {}", x.dtype);
    }
    let Some(&last) = x.shape.last() else {
        bail!(shape, "top_k needs rank >= 1, got a scalar");
    };
    if last != UNKNOWN && k > last {
        bail!(invalid, "top_k: k = {k} exceeds the last dimension of {}", x.shape);
    }
    let mut dims = x.shape.to_vec();
    *dims.last_mut().unwrap_or(&mut 0) = k;
    let s = Shape::from(dims);
    Ok(smallvec![Meta::new(x.dtype, s.clone()), Meta::new(DType::I32, s)])
}
