//! Views: ops that only build a new layout over the same storage
//! (transpose, expand_dims, squeeze, broadcast, slice, strided_slice, split,
//! unstack, reverse, and reshape where the layout allows). One
//! implementation serves every backend, and a view stays on its device.

use crate::error::Result;
use crate::op::movement::{resolve_reshape, resolve_strided, SliceDim};
use crate::op::Meta;
use crate::tensor::layout::{Layout, Strides};
use crate::tensor::{Shape, Value};

/// Reshape: a view where the layout allows one, else `copy` (the backend's
/// contiguous copy) and a view of that.
pub(crate) fn reshape(x: &Value, spec: &[i64], copy: impl FnOnce(&Value) -> Result<Value>) -> Result<Value> {
    let shape = resolve_reshape(spec, x.shape())?;
    // The same shape is the identity, view or not (the graph optimizer
    // removes such reshapes: both modes then hand kernels the same layout).
    if shape == *x.shape() {
        return Ok(x.clone());
    }
    match x.layout.reshape_view(shape.clone()) {
        Some(l) => Ok(x.view(l)),
        None => {
            let c = copy(x)?;
            Ok(c.view(Layout::contiguous(shape)))
        }
    }
}

pub(crate) fn transpose(x: &Value, perm: &[usize]) -> Value {
    x.view(x.layout.permute(perm))
}

pub(crate) fn expand_dims(x: &Value, axis: usize) -> Value {
    let mut l = x.layout.clone();
    l.shape.dims_mut().insert(axis, 1);
    l.strides.insert(axis, 0);
    x.view(l)
}

/// Drop the listed axes (all of size 1), or every size-1 axis when `axes` is empty.
pub(crate) fn squeeze(x: &Value, axes: &[usize]) -> Value {
    let mut l = Layout { shape: Shape::scalar(), strides: Strides::new(), offset: x.layout.offset };
    for (i, &d) in x.shape().iter().enumerate() {
        let drop = if axes.is_empty() { d == 1 } else { axes.contains(&i) };
        if !drop {
            l.shape.dims_mut().push(d);
            l.strides.push(x.layout.strides[i]);
        }
    }
    x.view(l)
}

pub(crate) fn broadcast_to(x: &Value, shape: &Shape) -> Result<Value> {
    Ok(x.view(x.layout.broadcast_to(shape)?))
}

pub(crate) fn slice(x: &Value, begin: &[usize], out: &Meta) -> Value {
    let mut l = x.layout.clone();
    l.offset = x.layout.offset_of(begin);
    l.shape = out.shape.clone();
    x.view(l)
}

pub(crate) fn split(x: &Value, axis: usize, sizes: &[usize]) -> Vec<Value> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&s| {
            let mut begin = vec![0usize; x.shape().rank()];
            begin[axis] = start;
            let mut l = x.layout.clone();
            l.offset = if x.numel() == 0 { x.layout.offset } else { x.layout.offset_of(&begin) };
            l.shape.dims_mut()[axis] = s;
            start += s;
            x.view(l)
        })
        .collect()
}

pub(crate) fn unstack(x: &Value, axis: usize, num: usize) -> Vec<Value> {
    (0..num)
        .map(|i| {
            let mut l = x.layout.clone();
            l.offset = (x.layout.offset as isize + i as isize * x.layout.strides[axis]) as usize;
            l.shape.dims_mut().remove(axis);
            l.strides.remove(axis);
            x.view(l)
        })
        .collect()
}

pub(crate) fn strided_slice(x: &Value, spec: &[crate::op::movement::SliceItem]) -> Result<Value> {
    Ok(x.view(strided_layout(&x.layout, spec)?))
}

/// The layout of `l` indexed by `spec` (a view of the same buffer).
pub(crate) fn strided_layout(l: &Layout, spec: &[crate::op::movement::SliceItem]) -> Result<Layout> {
    let (dims, fixed) = resolve_strided(spec, l.shape())?;
    let mut offset = l.offset as isize;
    for &(d, i) in &fixed {
        offset += i as isize * l.strides[d];
    }
    let mut shape = Vec::with_capacity(dims.len());
    let mut strides = Strides::new();
    for d in &dims {
        match *d {
            SliceDim::New => {
                shape.push(1);
                strides.push(0);
            }
            SliceDim::Input { dim, start, step, len } => {
                if len > 0 {
                    offset += start as isize * l.strides[dim];
                }
                shape.push(len);
                // With at most one element the step never applies (and may be huge).
                strides.push(if len <= 1 { 0 } else { l.strides[dim] * step as isize });
            }
        }
    }
    let empty = shape.contains(&0);
    let offset = if empty { l.offset } else { offset as usize };
    Ok(Layout { shape: Shape::from(shape), strides, offset })
}

pub(crate) fn reverse(x: &Value, axes: &[usize]) -> Value {
    let mut l = x.layout.clone();
    for &a in axes {
        let d = l.shape[a];
        if d > 1 {
            l.offset = (l.offset as isize + (d as isize - 1) * l.strides[a]) as usize;
            l.strides[a] = -l.strides[a];
        }
    }
    x.view(l)
}
