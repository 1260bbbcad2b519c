//! Data movement: reshape, transpose, expand_dims, squeeze, broadcast_to,
//! concat, stack, unstack, split, slice, strided_slice, gather, gather_nd,
//! scatter_nd, tile, pad, reverse, one_hot, and identity.
//!
//! Reshape of contiguous data, transpose, expand_dims, squeeze, broadcast_to,
//! slice, strided_slice, split, unstack and reverse are views: they share the
//! input's buffer.

use super::{apply, apply1, checked, Meta, Metas, Op};
use crate::error::{bail, Error, Result};
use crate::tensor::shape::{broadcast_shapes, normalize_axes, normalize_axis, UNKNOWN};
use crate::tensor::{DType, Scalar, Shape, Tensor};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// One entry of a NumPy-style index (see [`strided_slice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SliceItem {
    /// A single index; the dimension disappears. Negative counts from the end.
    Index(i64),
    /// `start:stop:step`, Python semantics (`None` = from/to the end).
    Range { start: Option<i64>, stop: Option<i64>, step: i64 },
    /// A new dimension of size 1 (NumPy's `np.newaxis`).
    NewAxis,
    /// As many full ranges as needed to cover the remaining dimensions (`...`).
    Ellipsis,
}

impl SliceItem {
    /// `:` — the whole dimension.
    pub const ALL: SliceItem = SliceItem::Range { start: None, stop: None, step: 1 };
    /// `start:stop`.
    pub fn range(start: i64, stop: i64) -> SliceItem {
        SliceItem::Range { start: Some(start), stop: Some(stop), step: 1 }
    }
    /// `start:stop:step` with optional ends.
    pub fn stepped(start: Option<i64>, stop: Option<i64>, step: i64) -> SliceItem {
        SliceItem::Range { start, stop, step }
    }
}

impl From<i64> for SliceItem {
    fn from(i: i64) -> SliceItem {
        SliceItem::Index(i)
    }
}
impl From<std::ops::Range<i64>> for SliceItem {
    fn from(r: std::ops::Range<i64>) -> SliceItem {
        SliceItem::range(r.start, r.end)
    }
}
impl From<std::ops::RangeFrom<i64>> for SliceItem {
    fn from(r: std::ops::RangeFrom<i64>) -> SliceItem {
        SliceItem::Range { start: Some(r.start), stop: None, step: 1 }
    }
}
impl From<std::ops::RangeTo<i64>> for SliceItem {
    fn from(r: std::ops::RangeTo<i64>) -> SliceItem {
        SliceItem::Range { start: None, stop: Some(r.end), step: 1 }
    }
}
impl From<std::ops::RangeFull> for SliceItem {
    fn from(_: std::ops::RangeFull) -> SliceItem {
        SliceItem::ALL
    }
}

/// How [`pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge: `[1,2,3]` padded by 2 gives `3,2,[1,2,3],2,1`.
    Reflect,
    /// Mirror repeating the edge: `2,1,[1,2,3],3,2`.
    Symmetric,
}

/// Where an output dimension of a strided slice comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SliceDim {
    /// Input dimension `dim`, elements `start, start + step, ...`, `len` of them.
    Input { dim: usize, start: usize, step: i64, len: usize },
    /// A new axis of size 1.
    New,
}

/// Resolve a strided-slice spec against input dims (which may be unknown).
/// Returns the output dimensions and the fixed indices of removed dimensions.
/// Output dimensions of a strided slice, and `(dim, index)` for each removed dimension.
pub(crate) type StridedPlan = (Vec<SliceDim>, Vec<(usize, usize)>);

pub(crate) fn resolve_strided(spec: &[SliceItem], dims: &[usize]) -> Result<StridedPlan> {
    let ellipses = spec.iter().filter(|s| **s == SliceItem::Ellipsis).count();
    if ellipses > 1 {
        bail!(invalid, "an index may hold at most one ellipsis, got {ellipses}");
    }
    let consuming = spec.iter().filter(|s| matches!(s, SliceItem::Index(_) | SliceItem::Range { .. })).count();
    if consuming > dims.len() {
        bail!(invalid, "too many indices ({consuming}) for a tensor of rank {}", dims.len());
    }
    let mut out = Vec::new();
    let mut fixed = Vec::new();
    let mut dim = 0usize;
    let mut expanded: Vec<SliceItem> = Vec::with_capacity(dims.len() + spec.len());
    for item in spec {
        if *item == SliceItem::Ellipsis {
            for _ in 0..dims.len() - consuming {
                expanded.push(SliceItem::ALL);
            }
        } else {
            expanded.push(*item);
        }
    }
    while expanded.iter().filter(|s| **s != SliceItem::NewAxis).count() < dims.len() {
        expanded.push(SliceItem::ALL);
    }
    for item in expanded {
        match item {
            SliceItem::NewAxis => out.push(SliceDim::New),
            SliceItem::Ellipsis => {}
            SliceItem::Index(i) => {
                let n = dims[dim];
                if n == UNKNOWN {
                    if i < 0 {
                        bail!(invalid, "negative index {i} into a dimension of unknown size");
                    }
                    fixed.push((dim, i as usize));
                } else {
                    let j = if i < 0 { i + n as i64 } else { i };
                    if j < 0 || j >= n as i64 {
                        bail!(invalid, "index {i} is out of range for dimension {dim} of size {n}");
                    }
                    fixed.push((dim, j as usize));
                }
                dim += 1;
            }
            SliceItem::Range { start, stop, step } => {
                if step == 0 {
                    bail!(invalid, "slice step must be nonzero");
                }
                let n = dims[dim];
                if n == UNKNOWN {
                    // Only inference sees unknown sizes; the kernel resolves the real range.
                    out.push(SliceDim::Input { dim, start: 0, step, len: UNKNOWN });
                } else {
                    let n = n as i64;
                    let norm = |v: i64| if v < 0 { v + n } else { v };
                    let (s, len) = if step > 0 {
                        let s = start.map(norm).unwrap_or(0).clamp(0, n);
                        let e = stop.map(norm).unwrap_or(n).clamp(0, n);
                        (s, if e > s { ((e - s) as u64).div_ceil(step.unsigned_abs()) as i64 } else { 0 })
                    } else {
                        let s = start.map(norm).unwrap_or(n - 1).clamp(-1, n - 1);
                        let e = stop.map(norm).unwrap_or(-1).clamp(-1, n - 1);
                        (s, if s > e { ((s - e) as u64).div_ceil(step.unsigned_abs()) as i64 } else { 0 })
                    };
                    let start = if len == 0 { 0 } else { s as usize };
                    out.push(SliceDim::Input { dim, start, step, len: len as usize });
                }
                dim += 1;
            }
        }
    }
    Ok((out, fixed))
}

fn int_dtype(what: &str, d: DType) -> Result<()> {
    if !matches!(d, DType::I32 | DType::I64 | DType::U8) {
        bail!(dtype, "{what} must be an integer tensor (i32, i64 or u8), got {d}");
    }
    Ok(())
}

/// Resolve a reshape spec (one -1 allowed) against the input shape.
pub(crate) fn resolve_reshape(spec: &[i64], input: &Shape) -> Result<Shape> {
    let mut unknown_at = None;
    let mut known: usize = 1;
    for (i, &d) in spec.iter().enumerate() {
        if d == -1 {
            if unknown_at.is_some() {
                bail!(invalid, "reshape to {spec:?}: at most one dimension may be -1");
            }
            unknown_at = Some(i);
        } else if d < 0 {
            bail!(invalid, "reshape to {spec:?}: dimensions must be >= 0 or -1");
        } else {
            known = known.saturating_mul(d as usize);
        }
    }
    let mut dims: Vec<usize> = spec.iter().map(|&d| if d < 0 { 0 } else { d as usize }).collect();
    match (input.numel(), unknown_at) {
        (Some(n), None) => {
            if n != known {
                bail!(shape, "cannot reshape {input} ({n} elements) to {spec:?} ({known} elements)");
            }
        }
        (Some(n), Some(i)) => {
            if known == 0 || n % known != 0 {
                bail!(shape, "cannot reshape {input} ({n} elements) to {spec:?}");
            }
            dims[i] = n / known;
        }
        (None, Some(i)) => dims[i] = UNKNOWN,
        (None, None) => {}
    }
    let out = Shape::from(dims);
    if out.is_fully_known() {
        out.checked_numel()?;
    }
    Ok(out)
}

/// Shape inference for every movement op.
pub(crate) fn infer(op: &Op, inputs: &[Meta]) -> Result<Metas> {
    let one = |m: Meta| -> Result<Metas> { Ok(smallvec![m]) };
    match op {
        Op::Reshape { shape } => one(Meta::new(inputs[0].dtype, resolve_reshape(shape, &inputs[0].shape)?)),
        Op::Transpose { perm } => {
            let x = &inputs[0];
            let mut seen = vec![false; x.shape.rank()];
            if perm.len() != x.shape.rank()
                || perm.iter().any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
            {
                bail!(
                    invalid,
                    "transpose permutation {perm:?} is not a permutation of the {} axes of {}",
                    x.shape.rank(),
                    x.shape
                );
            }
            one(Meta::new(x.dtype, Shape::from(perm.iter().map(|&p| x.shape[p]).collect::<Vec<_>>())))
        }
        Op::ExpandDims { axis } => {
            let x = &inputs[0];
            if *axis > x.shape.rank() {
                bail!(invalid, "expand_dims axis {axis} is out of range for shape {}", x.shape);
            }
            let mut dims = x.shape.to_vec();
            dims.insert(*axis, 1);
            one(Meta::new(x.dtype, Shape::from(dims)))
        }
        Op::Squeeze { axes } => {
            let x = &inputs[0];
            let mut dims = Vec::new();
            for (i, &d) in x.shape.iter().enumerate() {
                let drop = if axes.is_empty() { d == 1 } else { axes.contains(&i) };
                if drop && !axes.is_empty() && d != 1 && d != UNKNOWN {
                    bail!(shape, "cannot squeeze axis {i} of size {d} (shape {})", x.shape);
                }
                if !drop {
                    dims.push(d);
                }
            }
            if let Some(&a) = axes.iter().find(|&&a| a >= x.shape.rank()) {
                bail!(invalid, "squeeze axis {a} is out of range for shape {}", x.shape);
            }
            one(Meta::new(x.dtype, Shape::from(dims)))
        }
        Op::BroadcastTo { shape } => {
            let x = &inputs[0];
            let b = broadcast_shapes(&x.shape, shape)?;
            if b.rank() != shape.rank() || b.iter().zip(shape.iter()).any(|(&p, &q)| p != q && q != UNKNOWN) {
                bail!(shape, "cannot broadcast {} to {shape}", x.shape);
            }
            one(Meta::new(x.dtype, shape.clone()))
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                bail!(invalid, "concat needs at least one tensor");
            }
            let first = &inputs[0];
            let rank = first.shape.rank();
            if *axis >= rank {
                bail!(invalid, "concat axis {axis} is out of range for rank {rank}");
            }
            let mut dims = first.shape.to_vec();
            for (k, m) in inputs.iter().enumerate().skip(1) {
                if m.dtype != first.dtype {
                    bail!(dtype, "concat input {k} is {}, input 0 is {}", m.dtype, first.dtype);
                }
                if m.shape.rank() != rank {
                    bail!(shape, "concat input {k} has shape {}, input 0 has {}", m.shape, first.shape);
                }
                for (d, dim) in dims.iter_mut().enumerate() {
                    let other = m.shape[d];
                    if d == *axis {
                        *dim = match (*dim, other) {
                            (UNKNOWN, _) | (_, UNKNOWN) => UNKNOWN,
                            (p, q) => p
                                .checked_add(q)
                                .filter(|&n| n < UNKNOWN)
                                .ok_or_else(|| Error::shape(format!("concat along axis {axis} is too large")))?,
                        };
                    } else if other != *dim && other != UNKNOWN && *dim != UNKNOWN {
                        bail!(
                            shape,
                            "concat input {k} has shape {}, input 0 has {} (only axis {axis} may differ)",
                            m.shape,
                            first.shape
                        );
                    } else if *dim == UNKNOWN {
                        *dim = other;
                    }
                }
            }
            one(Meta::new(first.dtype, Shape::from(dims)))
        }
        Op::Split { axis, sizes } => {
            let x = &inputs[0];
            if *axis >= x.shape.rank() {
                bail!(invalid, "split axis {axis} is out of range for shape {}", x.shape);
            }
            if sizes.len() > super::MAX_OUTPUTS {
                bail!(invalid, "split into {} pieces: at most {} outputs", sizes.len(), super::MAX_OUTPUTS);
            }
            let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
            let Some(total) = total else { bail!(invalid, "split sizes {sizes:?} overflow") };
            if x.shape[*axis] != UNKNOWN && total != x.shape[*axis] {
                bail!(
                    shape,
                    "split sizes {sizes:?} add up to {total}, but axis {axis} of {} has {}",
                    x.shape,
                    x.shape[*axis]
                );
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut dims = x.shape.to_vec();
                    dims[*axis] = s;
                    Meta::new(x.dtype, Shape::from(dims))
                })
                .collect())
        }
        Op::Unstack { axis, num } => {
            let x = &inputs[0];
            if *axis >= x.shape.rank() {
                bail!(invalid, "unstack axis {axis} is out of range for shape {}", x.shape);
            }
            if x.shape[*axis] != *num {
                bail!(shape, "unstack of {} along axis {axis} gives {} tensors, not {num}", x.shape, x.shape[*axis]);
            }
            if *num > super::MAX_OUTPUTS {
                bail!(invalid, "unstack into {num} tensors: at most {} outputs", super::MAX_OUTPUTS);
            }
            let mut dims = x.shape.to_vec();
            dims.remove(*axis);
            Ok((0..*num).map(|_| Meta::new(x.dtype, Shape::from(dims.clone()))).collect())
        }
        Op::Slice { begin, size } => {
            let x = &inputs[0];
            if begin.len() != x.shape.rank() || size.len() != x.shape.rank() {
                bail!(invalid, "slice begin {begin:?} and size {size:?} need one entry per dimension of {}", x.shape);
            }
            let mut dims = Vec::with_capacity(begin.len());
            for i in 0..begin.len() {
                let n = x.shape[i];
                let s = size[i];
                if s < -1 {
                    bail!(invalid, "slice size {s} must be >= -1");
                }
                if n == UNKNOWN {
                    dims.push(if s == -1 { UNKNOWN } else { s as usize });
                    continue;
                }
                let len = if s == -1 { n.saturating_sub(begin[i]) } else { s as usize };
                if begin[i] > n || len > n - begin[i] {
                    bail!(
                        invalid,
                        "slice begin {} size {s} exceeds dimension {i} of size {n} (shape {})",
                        begin[i],
                        x.shape
                    );
                }
                dims.push(len);
            }
            one(Meta::new(x.dtype, Shape::from(dims)))
        }
        Op::StridedSlice { spec } => {
            let x = &inputs[0];
            let (dims, _) = resolve_strided(spec, &x.shape)?;
            let out: Vec<usize> = dims
                .iter()
                .map(|d| match d {
                    SliceDim::Input { len, .. } => *len,
                    SliceDim::New => 1,
                })
                .collect();
            one(Meta::new(x.dtype, Shape::from(out)))
        }
        Op::Gather { axis, batch_dims } => {
            let (p, i) = (&inputs[0], &inputs[1]);
            int_dtype("gather indices", i.dtype)?;
            if *axis >= p.shape.rank() {
                bail!(invalid, "gather axis {axis} is out of range for params of shape {}", p.shape);
            }
            if *batch_dims > *axis || *batch_dims > i.shape.rank() {
                bail!(
                    invalid,
                    "gather batch_dims {batch_dims} must not exceed axis {axis} nor the rank of indices {}",
                    i.shape
                );
            }
            for b in 0..*batch_dims {
                if p.shape[b] != i.shape[b] && p.shape[b] != UNKNOWN && i.shape[b] != UNKNOWN {
                    bail!(shape, "gather batch dimension {b} differs: params {} vs indices {}", p.shape, i.shape);
                }
            }
            let mut dims = p.shape[..*axis].to_vec();
            dims.extend_from_slice(&i.shape[*batch_dims..]);
            dims.extend_from_slice(&p.shape[axis + 1..]);
            one(Meta::new(p.dtype, Shape::from(dims)))
        }
        Op::GatherNd => {
            let (p, i) = (&inputs[0], &inputs[1]);
            int_dtype("gather_nd indices", i.dtype)?;
            let k = match i.shape.last() {
                Some(&k) if k != UNKNOWN => k,
                _ => bail!(shape, "gather_nd indices need a known last dimension, got {}", i.shape),
            };
            if k > p.shape.rank() {
                bail!(shape, "gather_nd index depth {k} exceeds the rank of params {}", p.shape);
            }
            let mut dims = i.shape[..i.shape.rank() - 1].to_vec();
            dims.extend_from_slice(&p.shape[k..]);
            one(Meta::new(p.dtype, Shape::from(dims)))
        }
        Op::ScatterNd { shape } => {
            let (i, u) = (&inputs[0], &inputs[1]);
            int_dtype("scatter_nd indices", i.dtype)?;
            if !u.dtype.is_numeric() {
                bail!(dtype, "scatter_nd updates must be numeric, got {}", u.dtype);
            }
            let k = match i.shape.last() {
                Some(&k) if k != UNKNOWN => k,
                _ => bail!(shape, "scatter_nd indices need a known last dimension, got {}", i.shape),
            };
            if k > shape.rank() {
                bail!(shape, "scatter_nd index depth {k} exceeds the rank of the output shape {shape}");
            }
            let mut expect = i.shape[..i.shape.rank() - 1].to_vec();
            expect.extend_from_slice(&shape[k..]);
            if !Shape::from(expect.clone()).is_compatible_with(&u.shape) {
                bail!(shape, "scatter_nd updates have shape {}, expected {}", u.shape, Shape::from(expect));
            }
            shape.checked_numel()?;
            one(Meta::new(u.dtype, shape.clone()))
        }
        Op::Tile { multiples } => {
            let x = &inputs[0];
            if multiples.len() != x.shape.rank() {
                bail!(invalid, "tile multiples {multiples:?} need one entry per dimension of {}", x.shape);
            }
            let mut dims = Vec::with_capacity(multiples.len());
            for (&d, &m) in x.shape.iter().zip(multiples) {
                dims.push(match d {
                    UNKNOWN => UNKNOWN,
                    _ => d
                        .checked_mul(m)
                        .ok_or_else(|| Error::shape(format!("tile of {} by {multiples:?} is too large", x.shape)))?,
                });
            }
            let out = Shape::from(dims);
            if out.is_fully_known() {
                out.checked_numel()?;
            }
            one(Meta::new(x.dtype, out))
        }
        Op::Pad { paddings, mode, .. } => {
            let x = &inputs[0];
            if paddings.len() != x.shape.rank() {
                bail!(
                    invalid,
                    "pad needs one (before, after) pair per dimension of {}, got {}",
                    x.shape,
                    paddings.len()
                );
            }
            let mut dims = Vec::with_capacity(paddings.len());
            for (i, (&d, &(b, a))) in x.shape.iter().zip(paddings).enumerate() {
                if d == UNKNOWN {
                    dims.push(UNKNOWN);
                    continue;
                }
                let limit = match mode {
                    PadMode::Constant => usize::MAX,
                    PadMode::Reflect => d.saturating_sub(1),
                    PadMode::Symmetric => d,
                };
                if b > limit || a > limit {
                    bail!(invalid, "{mode:?} padding ({b}, {a}) is too large for dimension {i} of size {d}");
                }
                let padded = d.checked_add(b).and_then(|v| v.checked_add(a));
                dims.push(
                    padded.ok_or_else(|| Error::shape(format!("padding {paddings:?} of {} is too large", x.shape)))?,
                );
            }
            let out = Shape::from(dims);
            if out.is_fully_known() {
                out.checked_numel()?;
            }
            one(Meta::new(x.dtype, out))
        }
        Op::Reverse { axes } => {
            let x = &inputs[0];
            if let Some(&a) = axes.iter().find(|&&a| a >= x.shape.rank()) {
                bail!(invalid, "reverse axis {a} is out of range for shape {}", x.shape);
            }
            one(x.clone())
        }
        Op::OneHot { depth, axis, dtype, .. } => {
            let i = &inputs[0];
            int_dtype("one_hot indices", i.dtype)?;
            if *axis > i.shape.rank() {
                bail!(invalid, "one_hot axis {axis} is out of range for indices of shape {}", i.shape);
            }
            let mut dims = i.shape.to_vec();
            dims.insert(*axis, *depth);
            let out = Shape::from(dims);
            if out.is_fully_known() {
                out.checked_numel()?;
            }
            one(Meta::new(*dtype, out))
        }
        Op::SumTo => {
            let (g, like) = (&inputs[0], &inputs[1]);
            let b = broadcast_shapes(&like.shape, &g.shape)?;
            if b.rank() != g.shape.rank() {
                bail!(shape, "cannot sum {} down to {}", g.shape, like.shape);
            }
            one(Meta::new(g.dtype, like.shape.clone()))
        }
        Op::BroadcastLike => {
            let (x, like) = (&inputs[0], &inputs[1]);
            one(Meta::new(x.dtype, broadcast_shapes(&x.shape, &like.shape)?))
        }
        Op::ReshapeLike => {
            let (x, like) = (&inputs[0], &inputs[1]);
            if let (Some(a), Some(b)) = (x.shape.numel(), like.shape.numel()) {
                if a != b {
                    bail!(shape, "cannot reshape {} ({a} elements) like {} ({b} elements)", x.shape, like.shape);
                }
            }
            one(Meta::new(x.dtype, like.shape.clone()))
        }
        Op::Size { dtype } => {
            if !matches!(dtype, DType::I32 | DType::I64 | DType::F32 | DType::F64) {
                bail!(dtype, "size can be i32, i64, f32 or f64, not {dtype}");
            }
            one(Meta::new(*dtype, Shape::scalar()))
        }
        Op::StridedSliceGrad { spec } => {
            let (g, like) = (&inputs[0], &inputs[1]);
            let (dims, _) = resolve_strided(spec, &like.shape)?;
            if dims.len() != g.shape.rank() {
                bail!(shape, "slice gradient of rank {} for a slice of rank {}", g.shape.rank(), dims.len());
            }
            one(Meta::new(g.dtype, like.shape.clone()))
        }
        Op::GatherGrad { .. } | Op::GatherNdGrad => {
            let (g, i, like) = (&inputs[0], &inputs[1], &inputs[2]);
            int_dtype("gather indices", i.dtype)?;
            if !g.dtype.is_numeric() {
                bail!(dtype, "gather gradient must be numeric, got {}", g.dtype);
            }
            one(Meta::new(g.dtype, like.shape.clone()))
        }
        Op::SplitLike { axis } => {
            let g = &inputs[0];
            if inputs.len() < 2 || *axis >= g.shape.rank() {
                bail!(invalid, "split_like needs pieces and an axis within the rank of {}", g.shape);
            }
            let mut total = Some(0usize);
            for like in &inputs[1..] {
                if like.shape.rank() != g.shape.rank() {
                    bail!(shape, "split_like piece {} has a different rank than {}", like.shape, g.shape);
                }
                total = match (total, like.shape[*axis]) {
                    (Some(t), d) if d != UNKNOWN => t.checked_add(d),
                    _ => None,
                };
            }
            if let (Some(t), d) = (total, g.shape[*axis]) {
                if d != UNKNOWN && d != t {
                    bail!(shape, "pieces add up to {t} along axis {axis}, but {} has {d}", g.shape);
                }
            }
            Ok(inputs[1..]
                .iter()
                .map(|like| {
                    let mut dims = g.shape.to_vec();
                    dims[*axis] = like.shape[*axis];
                    Meta::new(g.dtype, Shape::from(dims))
                })
                .collect())
        }
        other => bail!(unimplemented, "no shape inference for {}", other.type_name()),
    }
}

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
    let first = checked(super::elementwise::nonempty("concat", xs), "ConcatV2", xs)?[0];
    let axis = checked(normalize_axis(axis, first.rank()), "ConcatV2", xs)?;
    apply1(Op::Concat { axis }, xs)
}

/// Join tensors of equal shape along a new `axis`.
#[track_caller]
pub fn stack(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    checked(stack_parts(xs, axis), "Pack", xs)
}

fn stack_parts(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = super::elementwise::nonempty("stack", xs)?[0];
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
        Op::BroadcastLike => vec![Some(sum_to(&g()?, x)?), None],
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
        Op::OneHot { .. } | Op::Size { .. } => vec![None],
        other => bail!(unimplemented, "no gradient rule for {}", other.type_name()),
    })
}
