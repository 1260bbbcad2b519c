//! Data movement ops (reshape, transpose, expand_dims, squeeze,
//! broadcast_to, concat, split, unstack, slice, strided_slice, gather,
//! gather_nd, scatter_nd, tile, pad, reverse, one_hot, and the gradient
//! helpers): index specs, and the shapes they give.

use super::{Meta, Metas, Op};
use crate::error::{bail, Error, Result};
use crate::tensor::shape::{broadcast_shapes, UNKNOWN};
use crate::tensor::{DType, Shape};
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
        Op::ShapeOf { dtype } => {
            if !matches!(dtype, DType::I32 | DType::I64) {
                bail!(dtype, "shape can be i32 or i64, not {dtype}");
            }
            one(Meta::new(*dtype, Shape::new(&[inputs[0].shape.rank()])))
        }
        Op::BroadcastToDims => {
            let (x, dims) = (&inputs[0], &inputs[1]);
            let rank = dims_rank(dims)?;
            if x.shape.rank() > rank {
                bail!(shape, "cannot broadcast {} to a shape of rank {rank}", x.shape);
            }
            // The sizes are values: known when the op runs (see `broadcast_to_dims`).
            one(Meta::new(x.dtype, Shape::new(&vec![UNKNOWN; rank])))
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

/// The rank a shape vector describes: its length, which must be known.
fn dims_rank(dims: &Meta) -> Result<usize> {
    if !dims.dtype.is_int() || dims.shape.rank() != 1 {
        bail!(shape, "a shape must be an integer vector, got {}{}", dims.dtype, dims.shape);
    }
    match dims.shape.dim(0) {
        Some(rank) if rank <= MAX_SHAPE_RANK => Ok(rank),
        Some(rank) => bail!(shape, "a shape vector of length {rank}: at most {MAX_SHAPE_RANK} dimensions"),
        None => bail!(shape, "a shape vector's length must be known"),
    }
}

/// The most dimensions a shape held by a tensor may have (TensorFlow's limit).
const MAX_SHAPE_RANK: usize = 254;

/// The output of [`Op::BroadcastToDims`] once the shape's values are known:
/// `x` broadcast (NumPy's rules) to exactly `dims`.
pub(crate) fn broadcast_to_dims(x: &Meta, dims_meta: &Meta, dims: &[i64]) -> Result<Meta> {
    dims_rank(dims_meta)?;
    let mut target = Vec::with_capacity(dims.len());
    for &d in dims {
        match usize::try_from(d) {
            Ok(d) if d < UNKNOWN => target.push(d),
            _ => bail!(shape, "cannot broadcast to a negative dimension: {dims:?}"),
        }
    }
    let target = Shape::new(&target);
    let rank = x.shape.rank();
    let fits = rank <= target.rank()
        && x.shape.dims().iter().zip(&target.dims()[target.rank() - rank..]).all(|(&a, &b)| a == b || a == 1);
    if !fits {
        bail!(shape, "cannot broadcast {} to {target}", x.shape);
    }
    target.checked_numel()?;
    Ok(Meta::new(x.dtype, target))
}
