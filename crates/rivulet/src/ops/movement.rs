//! Data movement: reshape, transpose, expand_dims, squeeze, broadcast_to,
//! concat, stack, unstack, split, slice, strided_slice, gather, gather_nd,
//! scatter_nd, tile, pad, reverse, one_hot, and identity.
//!
//! Reshape of contiguous data, transpose, expand_dims, squeeze, broadcast_to,
//! slice, strided_slice, split, unstack and reverse are views: they share the
//! input's buffer.

use super::{apply, apply1, checked, Op};
use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
pub use crate::op::movement::{PadMode, SliceItem};
use crate::tensor::shape::{normalize_axes, normalize_axis, UNKNOWN};
use crate::tensor::{DType, Scalar, Shape};

/// Sum `x` down to the shape of `like` (undoing a broadcast); `x` itself
/// when the static shapes already agree.
#[track_caller]
pub fn sum_to(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    if x.shape() == like.shape() && x.shape().is_fully_known() {
        return Ok(x.clone());
    }
    apply1(Op::SumTo, &[x, like])
}

/// Broadcast `x` to the shape of `like` (known perhaps only at run time).
#[track_caller]
pub fn broadcast_like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    if x.shape() == like.shape() && x.shape().is_fully_known() {
        return Ok(x.clone());
    }
    apply1(Op::BroadcastLike, &[x, like])
}

/// Reshape `x` to the shape of `like` (known perhaps only at run time).
#[track_caller]
pub fn reshape_like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    if x.shape() == like.shape() && x.shape().is_fully_known() {
        return Ok(x.clone());
    }
    apply1(Op::ReshapeLike, &[x, like])
}

/// Number of elements of `x` as a scalar of `dtype` (TensorFlow's `size`).
#[track_caller]
pub fn size(x: &Tensor, dtype: DType) -> Result<Tensor> {
    apply1(Op::Size { dtype }, &[x])
}

#[track_caller]
pub(crate) fn strided_slice_grad(g: &Tensor, like: &Tensor, spec: Vec<SliceItem>) -> Result<Tensor> {
    apply1(Op::StridedSliceGrad { spec }, &[g, like])
}

#[track_caller]
pub(crate) fn gather_grad(
    g: &Tensor,
    indices: &Tensor,
    params: &Tensor,
    axis: usize,
    batch_dims: usize,
) -> Result<Tensor> {
    apply1(Op::GatherGrad { axis, batch_dims }, &[g, indices, params])
}

#[track_caller]
pub(crate) fn gather_nd_grad(g: &Tensor, indices: &Tensor, params: &Tensor) -> Result<Tensor> {
    apply1(Op::GatherNdGrad, &[g, indices, params])
}

#[track_caller]
pub(crate) fn split_like(g: &Tensor, likes: &[Tensor], axis: usize) -> Result<Vec<Tensor>> {
    let mut inputs: Vec<&Tensor> = vec![g];
    inputs.extend(likes.iter());
    Ok(apply(Op::SplitLike { axis }, &inputs)?.into_vec())
}

/// Same elements, new shape; one entry may be `-1` (inferred).
#[track_caller]
pub fn reshape(x: &Tensor, shape: &[i64]) -> Result<Tensor> {
    apply1(Op::Reshape { shape: shape.to_vec() }, &[x])
}

/// Permute dimensions: output dimension `i` is input dimension `perm[i]`.
/// An empty `perm` reverses the dimensions (a matrix transpose for rank 2).
#[track_caller]
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let perm: Vec<usize> = if perm.is_empty() { (0..x.rank()).rev().collect() } else { perm.to_vec() };
    apply1(Op::Transpose { perm }, &[x])
}

/// Insert a dimension of size 1 at `axis` (`-1` appends).
#[track_caller]
pub fn expand_dims(x: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, x.rank() + 1), "ExpandDims", &[x])?;
    apply1(Op::ExpandDims { axis }, &[x])
}

/// Remove dimensions of size 1: those listed, or all when `axes` is empty.
#[track_caller]
pub fn squeeze(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let axes = checked(normalize_axes(axes, x.rank()), "Squeeze", &[x])?;
    apply1(Op::Squeeze { axes }, &[x])
}

/// Broadcast to `shape` (NumPy rules), as a view.
#[track_caller]
pub fn broadcast_to(x: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    apply1(Op::BroadcastTo { shape: shape.into() }, &[x])
}

/// Join tensors along an existing `axis`.
#[track_caller]
pub fn concat(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = checked(super::nonempty("concat", xs), "ConcatV2", xs)?[0];
    let axis = checked(normalize_axis(axis, first.rank()), "ConcatV2", xs)?;
    apply1(Op::Concat { axis }, xs)
}

/// Join tensors of equal shape along a new `axis`.
#[track_caller]
pub fn stack(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    checked(stack_parts(xs, axis), "Pack", xs)
}

fn stack_parts(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = super::nonempty("stack", xs)?[0];
    let axis = normalize_axis(axis, first.rank() + 1)?;
    for (i, x) in xs.iter().enumerate().skip(1) {
        if x.dtype() != first.dtype() || !x.shape().is_compatible_with(first.shape()) {
            bail!(
                shape,
                "stack needs tensors of one dtype and shape: input {i} is {}{}, input 0 is {}{}",
                x.dtype(),
                x.shape(),
                first.dtype(),
                first.shape()
            );
        }
    }
    let mut expanded: Vec<Tensor> = Vec::with_capacity(xs.len());
    for x in xs {
        expanded.push(expand_dims(x, axis as i64)?);
    }
    let refs: Vec<&Tensor> = expanded.iter().collect();
    concat(&refs, axis as i64)
}

/// Split along `axis` into its slices, each with that axis removed.
#[track_caller]
pub fn unstack(x: &Tensor, axis: i64) -> Result<Vec<Tensor>> {
    let axis = checked(normalize_axis(axis, x.rank()), "Unpack", &[x])?;
    let num = x.shape()[axis];
    if num == UNKNOWN || num > super::MAX_OUTPUTS {
        let e = Error::shape(format!(
            "unstack along axis {axis} of shape {}: the size must be known and at most {}",
            x.shape(),
            super::MAX_OUTPUTS
        ));
        return checked(Err(e), "Unpack", &[x]);
    }
    Ok(apply(Op::Unstack { axis, num }, &[x])?.into_vec())
}

/// Split along `axis` into `num` equal pieces.
#[track_caller]
pub fn split(x: &Tensor, num: usize, axis: i64) -> Result<Vec<Tensor>> {
    let a = checked(normalize_axis(axis, x.rank()), "SplitV", &[x])?;
    let n = x.shape()[a];
    if num == 0 || n == UNKNOWN || !n.is_multiple_of(num) || num > super::MAX_OUTPUTS {
        let e = Error::invalid(format!(
            "cannot split axis {a} of {} into {num} equal pieces (at most {} outputs)",
            x.shape(),
            super::MAX_OUTPUTS
        ));
        return checked(Err(e), "SplitV", &[x]);
    }
    split_sizes(x, &vec![(n / num) as i64; num], axis)
}

/// Split along `axis` into pieces of the given sizes (one may be -1: the rest).
#[track_caller]
pub fn split_sizes(x: &Tensor, sizes: &[i64], axis: i64) -> Result<Vec<Tensor>> {
    let resolved = checked(resolve_split(x, sizes, axis), "SplitV", &[x])?;
    let a = normalize_axis(axis, x.rank())?;
    Ok(apply(Op::Split { axis: a, sizes: resolved }, &[x])?.into_vec())
}

/// Sizes of a split with at most one -1 resolved against the axis length.
fn resolve_split(x: &Tensor, sizes: &[i64], axis: i64) -> Result<Vec<usize>> {
    let a = normalize_axis(axis, x.rank())?;
    let n = x.shape()[a];
    if sizes.iter().filter(|&&s| s == -1).count() > 1 || sizes.iter().any(|&s| s < -1) {
        bail!(invalid, "split sizes {sizes:?}: at most one -1 and no other negatives");
    }
    let known: i64 = sizes.iter().filter(|&&s| s >= 0).fold(0i64, |acc, &s| acc.saturating_add(s));
    sizes
        .iter()
        .map(|&s| {
            if s != -1 {
                return Ok(s as usize);
            }
            if n == UNKNOWN || known > n as i64 {
                bail!(invalid, "split sizes {sizes:?} do not fit axis {a} of {}", x.shape());
            }
            Ok(n - known as usize)
        })
        .collect()
}

/// The box starting at `begin` with `size` elements per dimension (`-1`: to the end).
#[track_caller]
pub fn slice(x: &Tensor, begin: &[usize], size: &[i64]) -> Result<Tensor> {
    apply1(Op::Slice { begin: begin.to_vec(), size: size.to_vec() }, &[x])
}

/// NumPy-style indexing: `x[1, 2:5, ::-1, np.newaxis, ...]` is
/// `strided_slice(x, &[1.into(), (2..5).into(), SliceItem::stepped(None, None, -1), SliceItem::NewAxis, SliceItem::Ellipsis])`.
#[track_caller]
pub fn strided_slice(x: &Tensor, spec: &[SliceItem]) -> Result<Tensor> {
    apply1(Op::StridedSlice { spec: spec.to_vec() }, &[x])
}

/// Slices of `params` along `axis` picked by integer `indices`; the first
/// `batch_dims` dimensions of both are batch dimensions. Out-of-range
/// indices are an error.
#[track_caller]
pub fn gather(params: &Tensor, indices: &Tensor, axis: i64, batch_dims: usize) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, params.rank()), "GatherV2", &[params, indices])?;
    apply1(Op::Gather { axis, batch_dims }, &[params, indices])
}

/// TensorFlow's `strided_slice` with its masks: bit `i` of `begin_mask`
/// (`end_mask`) ignores `begin[i]` (`end[i]`); of `ellipsis_mask`, entry
/// `i` is `...`; of `new_axis_mask`, a new axis; of `shrink_axis_mask`,
/// the single index `begin[i]`. The same as [`strided_slice`] with the
/// equivalent [`SliceItem`]s.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn strided_slice_with_masks(
    x: &Tensor,
    begin: &[i64],
    end: &[i64],
    strides: &[i64],
    begin_mask: u64,
    end_mask: u64,
    ellipsis_mask: u64,
    new_axis_mask: u64,
    shrink_axis_mask: u64,
) -> Result<Tensor> {
    if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > 64 {
        let e = crate::error::Error::invalid(format!(
            "strided_slice needs begin, end and strides of one length (at most 64), got {}, {} and {}",
            begin.len(),
            end.len(),
            strides.len()
        ));
        return checked(Err(e), "StridedSlice", &[x]);
    }
    let bit = |m: u64, i: usize| m >> i & 1 == 1;
    let spec: Vec<SliceItem> = (0..begin.len())
        .map(|i| {
            if bit(ellipsis_mask, i) {
                SliceItem::Ellipsis
            } else if bit(new_axis_mask, i) {
                SliceItem::NewAxis
            } else if bit(shrink_axis_mask, i) {
                SliceItem::Index(begin[i])
            } else {
                SliceItem::Range {
                    start: (!bit(begin_mask, i)).then_some(begin[i]),
                    stop: (!bit(end_mask, i)).then_some(end[i]),
                    step: strides[i],
                }
            }
        })
        .collect();
    strided_slice(x, &spec)
}

/// Slices of `params` picked by the index vectors in the last dimension of `indices`.
#[track_caller]
pub fn gather_nd(params: &Tensor, indices: &Tensor) -> Result<Tensor> {
    apply1(Op::GatherNd, &[params, indices])
}

/// A zero tensor of `shape` with `updates` added at `indices` (duplicates add up).
#[track_caller]
pub fn scatter_nd(indices: &Tensor, updates: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    apply1(Op::ScatterNd { shape: shape.into() }, &[indices, updates])
}

/// Repeat the tensor `multiples[i]` times along dimension `i`.
#[track_caller]
pub fn tile(x: &Tensor, multiples: &[usize]) -> Result<Tensor> {
    apply1(Op::Tile { multiples: multiples.to_vec() }, &[x])
}

/// Pad each dimension with `(before, after)` elements: a constant `value`,
/// or a reflection of the edge.
#[track_caller]
pub fn pad(x: &Tensor, paddings: &[(usize, usize)], mode: PadMode, value: impl Into<Scalar>) -> Result<Tensor> {
    apply1(Op::Pad { paddings: paddings.to_vec(), mode, value: value.into() }, &[x])
}

/// Reverse the order of elements along `axes`.
#[track_caller]
pub fn reverse(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let axes = checked(normalize_axes(axes, x.rank()), "ReverseV2", &[x])?;
    apply1(Op::Reverse { axes }, &[x])
}

/// One-hot f32 encoding along a new last axis: 1 at the index, 0 elsewhere
/// (indices outside `0..depth` give all zeros).
#[track_caller]
pub fn one_hot(indices: &Tensor, depth: usize) -> Result<Tensor> {
    one_hot_with(indices, depth, 1.0, 0.0, -1, DType::F32)
}

/// One-hot encoding with explicit on/off values, axis and dtype.
#[track_caller]
pub fn one_hot_with(
    indices: &Tensor,
    depth: usize,
    on: impl Into<Scalar>,
    off: impl Into<Scalar>,
    axis: i64,
    dtype: DType,
) -> Result<Tensor> {
    let axis = checked(normalize_axis(axis, indices.rank() + 1), "OneHot", &[indices])?;
    apply1(Op::OneHot { depth, on: on.into(), off: off.into(), axis, dtype }, &[indices])
}

/// The input itself (a new node in a graph: useful to name or group a tensor).
#[track_caller]
pub fn identity(x: &Tensor) -> Result<Tensor> {
    apply1(Op::Identity, &[x])
}

/// The input, with a zero gradient.
#[track_caller]
pub fn stop_gradient(x: &Tensor) -> Result<Tensor> {
    apply1(Op::StopGradient, &[x])
}

/// Zeros for the outputs nobody differentiated (multi-output ops).
fn grads_or_zeros(grads: &[Option<Tensor>], outputs: &[Tensor]) -> Result<Vec<Tensor>> {
    grads
        .iter()
        .zip(outputs)
        .map(|(g, y)| match g {
            Some(g) => Ok(g.clone()),
            None => super::zeros_like(y),
        })
        .collect()
}

/// The spec that a `Slice { begin, size }` selects.
fn slice_spec(begin: &[usize], size: &[i64]) -> Vec<SliceItem> {
    begin
        .iter()
        .zip(size)
        .map(|(&b, &s)| SliceItem::Range {
            start: Some(b as i64),
            stop: if s < 0 { None } else { Some(b as i64 + s) },
            step: 1,
        })
        .collect()
}

/// Gradients of the movement ops. `grads[i]` flows into output `i`.
pub(crate) fn movement_grad(
    op: &Op,
    inputs: &[Tensor],
    outputs: &[Tensor],
    grads: &[Option<Tensor>],
) -> Result<Vec<Option<Tensor>>> {
    let x = &inputs[0];
    let g = || grads[0].clone().ok_or_else(|| Error::invalid("missing output gradient"));
    let static_dims = |what: &str| -> Result<Vec<usize>> {
        if !x.shape().is_fully_known() {
            bail!(unimplemented, "the gradient of {what} needs a fully known input shape, got {}", x.shape());
        }
        Ok(x.shape().to_vec())
    };
    Ok(match op {
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::ReshapeLike => {
            let mut v = vec![Some(reshape_like(&g()?, x)?)];
            v.resize(inputs.len(), None);
            v
        }
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(transpose(&g()?, &inverse)?)]
        }
        Op::ExpandDims { axis } => vec![Some(squeeze(&g()?, &[*axis as i64])?)],
        Op::BroadcastTo { .. } => vec![Some(sum_to(&g()?, x)?)],
        Op::BroadcastLike | Op::BroadcastToDims => vec![Some(sum_to(&g()?, x)?), None],
        Op::SumTo => vec![Some(broadcast_like(&g()?, x)?), None],
        Op::Concat { axis } => split_like(&g()?, inputs, *axis)?.into_iter().map(Some).collect(),
        Op::SplitLike { axis } => {
            let pieces = grads_or_zeros(grads, outputs)?;
            let refs: Vec<&Tensor> = pieces.iter().collect();
            let mut v = vec![Some(concat(&refs, *axis as i64)?)];
            v.resize(inputs.len(), None);
            v
        }
        Op::Split { axis, .. } => {
            let pieces = grads_or_zeros(grads, outputs)?;
            let refs: Vec<&Tensor> = pieces.iter().collect();
            vec![Some(concat(&refs, *axis as i64)?)]
        }
        Op::Unstack { axis, .. } => {
            let pieces = grads_or_zeros(grads, outputs)?;
            let refs: Vec<&Tensor> = pieces.iter().collect();
            vec![Some(stack(&refs, *axis as i64)?)]
        }
        Op::Slice { begin, size } => vec![Some(strided_slice_grad(&g()?, x, slice_spec(begin, size))?)],
        Op::StridedSlice { spec } => vec![Some(strided_slice_grad(&g()?, x, spec.clone())?)],
        Op::StridedSliceGrad { spec } => vec![Some(strided_slice(&g()?, spec)?), None],
        Op::Gather { axis, batch_dims } => vec![Some(gather_grad(&g()?, &inputs[1], x, *axis, *batch_dims)?), None],
        Op::GatherGrad { axis, batch_dims } => {
            vec![Some(gather(&g()?, &inputs[1], *axis as i64, *batch_dims)?), None, None]
        }
        Op::GatherNd => vec![Some(gather_nd_grad(&g()?, &inputs[1], x)?), None],
        Op::GatherNdGrad => vec![Some(gather_nd(&g()?, &inputs[1])?), None, None],
        Op::ScatterNd { .. } => vec![None, Some(gather_nd(&g()?, x)?)],
        Op::Tile { multiples } => {
            // Sum the copies: view g as [m0, d0, m1, d1, ...] and reduce the m axes.
            let dims = static_dims("tile")?;
            let mut split_dims = Vec::with_capacity(2 * dims.len());
            for (&d, &m) in dims.iter().zip(multiples) {
                split_dims.push(m as i64);
                split_dims.push(d as i64);
            }
            let axes: Vec<i64> = (0..dims.len()).map(|i| 2 * i as i64).collect();
            vec![Some(reshape_like(&super::sum(&reshape(&g()?, &split_dims)?, axes, false)?, x)?)]
        }
        Op::Pad { paddings, mode, .. } => {
            let g = g()?;
            match mode {
                PadMode::Constant => {
                    let spec = paddings
                        .iter()
                        .map(|&(b, a)| SliceItem::Range {
                            start: Some(b as i64),
                            stop: if a == 0 { None } else { Some(-(a as i64)) },
                            step: 1,
                        })
                        .collect::<Vec<_>>();
                    vec![Some(strided_slice(&g, &spec)?)]
                }
                PadMode::Reflect | PadMode::Symmetric => {
                    let dims = static_dims("reflect/symmetric pad")?;
                    let shift = if *mode == PadMode::Reflect { 1 } else { 0 };
                    // Undo the padding one dimension at a time, last first: fold
                    // the mirrored borders back onto the elements they copy.
                    let mut cur = g;
                    for (axis, &(before, after)) in paddings.iter().enumerate().rev() {
                        if before == 0 && after == 0 {
                            continue;
                        }
                        let n = dims[axis];
                        let parts = split_sizes(&cur, &[before as i64, n as i64, after as i64], axis as i64)?;
                        let mut pads = vec![(0usize, 0usize); cur.rank()];
                        let mut mid = parts[1].clone();
                        if before > 0 {
                            pads[axis] = (shift, n - shift - before);
                            mid = (mid + pad(&reverse(&parts[0], &[axis as i64])?, &pads, PadMode::Constant, 0)?)?;
                        }
                        if after > 0 {
                            pads[axis] = (n - shift - after, shift);
                            mid = (mid + pad(&reverse(&parts[2], &[axis as i64])?, &pads, PadMode::Constant, 0)?)?;
                        }
                        cur = mid;
                    }
                    vec![Some(cur)]
                }
            }
        }
        Op::Reverse { axes } => vec![Some(reverse(&g()?, &axes.iter().map(|&a| a as i64).collect::<Vec<_>>())?)],
        Op::OneHot { .. } | Op::Size { .. } | Op::ShapeOf { .. } => vec![None],
        other => bail!(unimplemented, "no gradient rule for {}", other.type_name()),
    })
}
