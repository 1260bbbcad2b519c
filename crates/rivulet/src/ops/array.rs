//! TensorFlow's array functions composed of the primitive ops: shapes as
//! tensors, meshgrid, repeat, sequence masks and reversal, sorted search,
//! index unravelling, tensor scatters, space-to-batch, and the functions
//! whose output size depends on the values (`boolean_mask`, `unique`,
//! one-argument `where`), which need the values when they are called.

use super::math::{unsorted_segment_max, unsorted_segment_min};
use super::{apply1, checked, creation as cr, elementwise as ew, movement as mv, reduce as rd, Ctx, Op};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{DType, Shape};

/// Each tensor of the list, as a new node (TensorFlow's `identity_n`).
#[track_caller]
pub fn identity_n(xs: &[&Tensor]) -> Result<Vec<Tensor>> {
    xs.iter().map(|x| mv::identity(x)).collect()
}

/// A constant like `x`'s context: eager, or in `x`'s graph.
fn constant_like(x: &Tensor, value: Tensor) -> Result<Tensor> {
    match x.graph() {
        Some(g) => g.constant(value),
        None => Ok(value),
    }
}

/// The shape of `x` as an int32 vector: a constant where the shape is
/// known, else taken when the graph runs (dimensions known only at run
/// time, such as an unknown batch).
#[track_caller]
pub fn shape(x: &Tensor) -> Result<Tensor> {
    if !x.shape().is_fully_known() {
        return apply1(Op::ShapeOf { dtype: DType::I32 }, &[x]);
    }
    let dims: Vec<i32> = x.shape().dims().iter().map(|&d| d as i32).collect();
    constant_like(x, Tensor::from_slice(&dims, [dims.len()])?)
}

/// The value of `t` when it is known without running a graph: an eager
/// tensor, or a graph constant (TensorFlow's `get_static_value`, without
/// its folding).
pub fn static_value(t: &Tensor) -> Option<Tensor> {
    match t.op() {
        None => Some(t.clone()),
        Some(op) => match &op.graph.read().nodes.get(op.id)?.op {
            Op::Const { value } => Some(Tensor::from_value(value.0.clone())),
            _ => None,
        },
    }
}

/// `x` broadcast to the shape held by `dims`, an integer vector
/// (TensorFlow's `broadcast_to` with a shape tensor). A known `dims` gives
/// a static shape; one computed in a graph (say from `shape` of an unknown
/// batch) is read when the graph runs.
#[track_caller]
pub fn broadcast_to_dims(x: &Tensor, dims: &Tensor) -> Result<Tensor> {
    if let Some(v) = static_value(dims) {
        if !v.dtype().is_int() || v.rank() != 1 {
            bail!(shape, "broadcast_to_dims needs an integer vector of dimensions, got {}{}", v.dtype(), v.shape());
        }
        let mut target = Vec::with_capacity(v.numel().unwrap_or(0));
        for d in ops_cast_i64(&v)? {
            match usize::try_from(d) {
                Ok(d) if d < crate::tensor::UNKNOWN => target.push(d),
                _ => bail!(shape, "broadcast_to_dims: a negative dimension in {v:?}"),
            }
        }
        return mv::broadcast_to(x, Shape::new(&target));
    }
    apply1(Op::BroadcastToDims, &[x, dims])
}

/// A tensor of the shape held by `dims` (an integer vector, possibly known
/// only when the graph runs) with every element the scalar `value`
/// (TensorFlow's `fill`; the gradient for `value` is the sum of the
/// upstream gradient).
#[track_caller]
pub fn fill_dims(dims: &Tensor, value: &Tensor) -> Result<Tensor> {
    if value.rank() != 0 {
        bail!(shape, "fill needs a scalar value, got {}", value.shape());
    }
    broadcast_to_dims(value, dims)
}

/// `v`'s elements as i64s (an eager integer tensor).
fn ops_cast_i64(v: &Tensor) -> Result<Vec<i64>> {
    ew::cast(v, DType::I64)?.to_vec::<i64>()
}

/// The shapes of several tensors (TensorFlow's `shape_n`).
#[track_caller]
pub fn shape_n(xs: &[&Tensor]) -> Result<Vec<Tensor>> {
    xs.iter().map(|x| shape(x)).collect()
}

/// The rank of `x` as an int32 scalar.
#[track_caller]
pub fn rank(x: &Tensor) -> Result<Tensor> {
    constant_like(x, Tensor::scalar(x.rank() as i32))
}

/// The shape two shapes broadcast to (TensorFlow's `broadcast_static_shape`).
pub fn broadcast_static_shape(a: &Shape, b: &Shape) -> Result<Shape> {
    broadcast_shapes(a, b)
}

/// Coordinate grids of the vectors `xs`: with `ij` indexing the `i`-th
/// output varies along axis `i`; with `xy` (the default in TensorFlow and
/// NumPy) the first two axes swap.
#[track_caller]
pub fn meshgrid(xs: &[&Tensor], xy: bool) -> Result<Vec<Tensor>> {
    let mut dims = Vec::with_capacity(xs.len());
    for x in xs {
        match (x.rank(), x.shape().dim(0)) {
            (1, Some(n)) => dims.push(n),
            _ => bail!(shape, "meshgrid needs vectors of known length, got {:?}", x.shape()),
        }
    }
    let swap = xy && xs.len() >= 2;
    let mut out_dims = dims.clone();
    if swap {
        out_dims.swap(0, 1);
    }
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            let mut axis = i;
            if swap && i < 2 {
                axis = 1 - i;
            }
            let mut shape = vec![1i64; xs.len()];
            shape[axis] = dims[i] as i64;
            mv::broadcast_to(&mv::reshape(x, &shape)?, Shape::new(&out_dims))
        })
        .collect()
}

/// Repeat each element of `x` along `axis` `repeats` times (`None`: `x` flattened).
#[track_caller]
pub fn repeat(x: &Tensor, repeats: usize, axis: Option<i64>) -> Result<Tensor> {
    let (x, axis) = match axis {
        Some(a) => (x.clone(), x.shape().axis(a)?),
        None => (mv::reshape(x, &[-1])?, 0),
    };
    let dims = x.shape().dims().to_vec();
    if !x.shape().is_fully_known() {
        bail!(shape, "repeat needs a known shape, got {:?}", x.shape());
    }
    let expanded = mv::expand_dims(&x, axis as i64 + 1)?;
    let mut multiples = vec![1usize; dims.len() + 1];
    multiples[axis + 1] = repeats;
    let tiled = mv::tile(&expanded, &multiples)?;
    let mut shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    shape[axis] *= repeats as i64;
    mv::reshape(&tiled, &shape)
}

/// `[..., maxlen]` booleans, true below each length.
#[track_caller]
pub fn sequence_mask(lengths: &Tensor, maxlen: usize) -> Result<Tensor> {
    let steps = cr::range(Ctx::of(lengths), 0i64, maxlen as i64, 1i64, DType::I64)?;
    ew::less(&steps, &mv::expand_dims(&ew::cast(lengths, DType::I64)?, -1)?)
}

/// Reverse the first `seq_lengths[b]` elements along `seq_axis` of each
/// batch entry `b` along `batch_axis`; the rest stay in place.
#[track_caller]
pub fn reverse_sequence(x: &Tensor, seq_lengths: &Tensor, seq_axis: i64, batch_axis: i64) -> Result<Tensor> {
    let (s, b) = (x.shape().axis(seq_axis)?, x.shape().axis(batch_axis)?);
    let (Some(steps), Some(_)) = (x.shape().dim(s), x.shape().dim(b)) else {
        bail!(shape, "reverse_sequence needs known sequence and batch axes, got {:?}", x.shape());
    };
    // Move the batch axis first and the sequence axis second, gather along it per batch entry.
    let rank = x.rank();
    let mut perm = vec![b, s];
    perm.extend((0..rank).filter(|&a| a != b && a != s));
    let moved = mv::transpose(x, &perm)?;
    let t = cr::range(Ctx::of(x), 0i64, steps as i64, 1i64, DType::I64)?;
    let len = mv::expand_dims(&ew::cast(seq_lengths, DType::I64)?, -1)?;
    let idx = ew::select(&ew::less(&t, &len)?, &ew::sub(&ew::sub(&len, 1i64)?, &t)?, &t)?;
    let picked = mv::gather(&moved, &idx, 1, 1)?;
    let mut inverse = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    mv::transpose(&picked, &inverse)
}

/// Where each of `values` would go in the sorted last axis of
/// `sorted_sequence` (`right`: after equal entries), as int32, per row.
#[track_caller]
pub fn searchsorted(sorted_sequence: &Tensor, values: &Tensor, right: bool) -> Result<Tensor> {
    if sorted_sequence.rank() == 0 || sorted_sequence.rank() != values.rank() {
        bail!(
            shape,
            "searchsorted needs a sequence and values of one rank (>= 1), got {:?} and {:?}",
            sorted_sequence.shape(),
            values.shape()
        );
    }
    let seq = mv::expand_dims(sorted_sequence, -2)?;
    let v = mv::expand_dims(values, -1)?;
    let before = if right { ew::less_equal(&seq, &v)? } else { ew::less(&seq, &v)? };
    rd::sum(&ew::cast(&before, DType::I32)?, -1, false)
}

/// The multi-indices of flat `indices` in an array of shape `dims`, as a
/// `[rank, ...]` tensor (TensorFlow's `unravel_index`).
#[track_caller]
pub fn unravel_index(indices: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let Some(total) = dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d)) else {
        bail!(invalid, "unravel_index: the shape {dims:?} has too many elements");
    };
    if !indices.dtype().is_int() {
        bail!(dtype, "unravel_index needs integer indices, got {}", indices.dtype());
    }
    if !indices.is_symbolic() {
        let v = ew::cast(indices, DType::I64)?.to_vec::<i64>()?;
        if let Some(bad) = v.iter().find(|&&i| i < 0 || i as usize >= total) {
            bail!(invalid, "unravel_index: index {bad} is outside an array of {total} elements");
        }
    }
    let mut stride = total;
    let mut parts = Vec::with_capacity(dims.len());
    for &d in dims {
        stride /= d.max(1);
        parts.push(ew::floor_mod(&ew::floor_div(indices, stride.max(1) as i64)?, d.max(1) as i64)?);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    mv::stack(&refs, 0)
}

/// The flat positions of the index vectors `indices` (`[..., k]`) in `shape`.
fn flat_positions(indices: &Tensor, shape: &[usize]) -> Result<(Tensor, usize)> {
    let Some(k) = indices.rank().checked_sub(1).and_then(|a| indices.shape().dim(a)) else {
        bail!(shape, "tensor scatters need index vectors in the last axis, got {:?}", indices.shape());
    };
    if k > shape.len() {
        bail!(shape, "index vectors of length {k} for a tensor of rank {}", shape.len());
    }
    let mut strides = vec![0i64; k];
    let mut s = 1i64;
    for a in (0..k).rev() {
        strides[a] = s;
        s *= shape[a] as i64;
    }
    let strides = constant_like(indices, Tensor::from_slice(&strides, [k])?)?;
    let flat = rd::sum(&ew::mul(&ew::cast(indices, DType::I64)?, &strides)?, -1, false)?;
    Ok((flat, shape[..k].iter().product()))
}

/// `x` with the slices at `indices` replaced by `updates` (TensorFlow's
/// `tensor_scatter_nd_update`; duplicate indices add their updates).
#[track_caller]
pub fn tensor_scatter_nd_update(x: &Tensor, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
    let hit = mv::scatter_nd(indices, &cr::ones_like(updates)?, x.shape().clone())?;
    let placed = mv::scatter_nd(indices, updates, x.shape().clone())?;
    ew::select(&ew::greater(&hit, 0)?, &placed, x)
}

/// `x` plus `updates` scattered at `indices`.
#[track_caller]
pub fn tensor_scatter_nd_add(x: &Tensor, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
    ew::add(x, &mv::scatter_nd(indices, updates, x.shape().clone())?)
}

/// `x` minus `updates` scattered at `indices`.
#[track_caller]
pub fn tensor_scatter_nd_sub(x: &Tensor, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
    ew::sub(x, &mv::scatter_nd(indices, updates, x.shape().clone())?)
}

fn tensor_scatter_extreme(x: &Tensor, indices: &Tensor, updates: &Tensor, largest: bool) -> Result<Tensor> {
    if !x.shape().is_fully_known() {
        bail!(shape, "tensor scatters need a known shape, got {:?}", x.shape());
    }
    let dims = x.shape().dims().to_vec();
    let (flat, slots) = flat_positions(indices, &dims)?;
    let k = indices.shape().dim(indices.rank() - 1).unwrap_or(0);
    let mut slot_shape = vec![slots as i64];
    slot_shape.extend(dims[k..].iter().map(|&d| d as i64));
    let xs = mv::reshape(x, &slot_shape)?;
    let mut upd_shape = vec![-1i64];
    upd_shape.extend(dims[k..].iter().map(|&d| d as i64));
    let upd = mv::reshape(updates, &upd_shape)?;
    let ids = mv::reshape(&flat, &[-1])?;
    let m = if largest { unsorted_segment_max(&upd, &ids, slots)? } else { unsorted_segment_min(&upd, &ids, slots)? };
    let hit = mv::scatter_nd(&mv::expand_dims(&ids, -1)?, &cr::ones_like(&ids)?, Shape::new(&[slots]))?;
    let mut hit_shape = vec![slots as i64];
    hit_shape.extend(dims[k..].iter().map(|_| 1i64));
    let hit = ew::greater(&mv::reshape(&hit, &hit_shape)?, 0i64)?;
    let merged = if largest { ew::maximum(&xs, &m)? } else { ew::minimum(&xs, &m)? };
    let out = ew::select(&hit, &merged, &xs)?;
    mv::reshape(&out, &dims.iter().map(|&d| d as i64).collect::<Vec<_>>())
}

/// `x` with each slice at `indices` raised to the update where that is larger.
#[track_caller]
pub fn tensor_scatter_nd_max(x: &Tensor, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
    tensor_scatter_extreme(x, indices, updates, true)
}

/// `x` with each slice at `indices` lowered to the update where that is smaller.
#[track_caller]
pub fn tensor_scatter_nd_min(x: &Tensor, indices: &Tensor, updates: &Tensor) -> Result<Tensor> {
    tensor_scatter_extreme(x, indices, updates, false)
}

/// The values of `x` a host-side function needs now: the output size of
/// the value-dependent functions below.
pub(super) fn host_values<T: crate::tensor::Element>(x: &Tensor, what: &str) -> Result<Vec<T>> {
    if x.is_symbolic() {
        bail!(
            invalid,
            "{what}'s output size depends on the values, which a graph only has at run time; call it eagerly"
        );
    }
    x.to_vec::<T>()
}

/// The coordinates of the true (nonzero) elements, `[count, rank]` int64
/// (TensorFlow's one-argument `where`).
#[doc(alias = "where")]
#[track_caller]
pub fn nonzero(x: &Tensor) -> Result<Tensor> {
    let flags = if x.dtype() == DType::Bool { x.clone() } else { ew::not_equal(x, 0)? };
    let v = host_values::<bool>(&flags, "nonzero")?;
    let dims = x.shape().dims().to_vec();
    let mut coords = Vec::new();
    for (i, &f) in v.iter().enumerate() {
        if f {
            let mut rem = i;
            let start = coords.len();
            coords.resize(start + dims.len(), 0i64);
            for a in (0..dims.len()).rev() {
                coords[start + a] = (rem % dims[a]) as i64;
                rem /= dims[a];
            }
        }
    }
    let count = coords.len() / dims.len().max(1);
    let count = if dims.is_empty() { v.iter().filter(|&&f| f).count() } else { count };
    Tensor::from_vec(coords, [count, dims.len()])
}

/// The entries of `x` where `mask` is true, the mask covering `x`'s leading
/// axes; the result has one axis for them (TensorFlow's `boolean_mask`).
#[track_caller]
pub fn boolean_mask(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (m, d) = (mask.shape().dims(), x.shape().dims());
    if mask.dtype() != DType::Bool || m.len() > d.len() || d[..m.len()] != *m || m.is_empty() {
        bail!(
            shape,
            "boolean_mask needs a bool mask of the leading axes of {:?}, got {} {:?}",
            x.shape(),
            mask.dtype(),
            mask.shape()
        );
    }
    let keep = host_values::<bool>(mask, "boolean_mask")?;
    let positions: Vec<i64> = keep.iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i as i64).collect();
    let mut flat_shape = vec![-1i64];
    flat_shape.extend(d[m.len()..].iter().map(|&v| v as i64));
    let flat = mv::reshape(x, &flat_shape)?;
    let n = positions.len();
    mv::gather(&flat, &Tensor::from_vec(positions, [n])?, 0, 0)
}

/// The distinct values of the vector `x` in order of first appearance, and
/// for each element the index of its value among them (int32).
#[track_caller]
pub fn unique(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (y, idx, _) = unique_with_counts(x)?;
    Ok((y, idx))
}

/// [`unique`], and how often each distinct value occurs.
#[track_caller]
pub fn unique_with_counts(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    if x.rank() != 1 {
        bail!(shape, "unique needs a vector, got {:?}", x.shape());
    }
    // Keys: integers by value, floats by bits with -0.0 as 0.0 and each NaN
    // its own value (NaN != NaN, as in TensorFlow's hash map), bools as 0/1.
    let keys: Vec<Option<u64>> = if x.dtype().is_float() {
        host_values::<f64>(&ew::cast(x, DType::F64)?, "unique")?
            .into_iter()
            .map(|v| {
                if v.is_nan() {
                    None
                } else if v == 0.0 {
                    Some(0)
                } else {
                    Some(v.to_bits())
                }
            })
            .collect()
    } else {
        host_values::<i64>(&ew::cast(x, DType::I64)?, "unique")?.into_iter().map(|v| Some(v as u64)).collect()
    };
    let mut firsts: Vec<i64> = Vec::new();
    let mut seen: std::collections::HashMap<u64, i32> = std::collections::HashMap::new();
    let mut idx = Vec::with_capacity(keys.len());
    let mut counts: Vec<i32> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut fresh = || {
            firsts.push(i as i64);
            counts.push(0);
            (firsts.len() - 1) as i32
        };
        let k = match key {
            Some(key) => *seen.entry(*key).or_insert_with(fresh),
            None => fresh(),
        };
        counts[k as usize] += 1;
        idx.push(k);
    }
    let n = firsts.len();
    let values = mv::gather(x, &Tensor::from_vec(firsts, [n])?, 0, 0)?;
    let len = idx.len();
    Ok((values, Tensor::from_vec(idx, [len])?, Tensor::from_vec(counts, [n])?))
}

/// Zero-pad the spatial axes (1 to `block.len()`) by `paddings` and move
/// each `block` of them into the batch (TensorFlow's `space_to_batch_nd`).
#[track_caller]
pub fn space_to_batch_nd(x: &Tensor, block: &[usize], paddings: &[(usize, usize)]) -> Result<Tensor> {
    let m = block.len();
    let dims = x.shape().dims().to_vec();
    if paddings.len() != m || x.rank() < m + 1 || !x.shape().is_fully_known() || block.contains(&0) {
        bail!(shape, "space_to_batch_nd: {m} block sizes and paddings for {:?}", x.shape());
    }
    let mut pads = vec![(0, 0); x.rank()];
    pads[1..=m].copy_from_slice(paddings);
    let padded = mv::pad(x, &pads, mv::PadMode::Constant, 0)?;
    let mut shape = vec![dims[0] as i64];
    for i in 0..m {
        let p = dims[i + 1].saturating_add(paddings[i].0).saturating_add(paddings[i].1);
        if !p.is_multiple_of(block[i]) {
            bail!(shape, "space_to_batch_nd: padded axis {} ({p}) is not a multiple of the block {}", i + 1, block[i]);
        }
        shape.push((p / block[i]) as i64);
        shape.push(block[i] as i64);
    }
    shape.extend(dims[m + 1..].iter().map(|&d| d as i64));
    let r = mv::reshape(&padded, &shape)?;
    // [b, o1, k1, o2, k2, ..., rest] -> [k1, k2, ..., b, o1, o2, ..., rest]
    let mut perm: Vec<usize> = (0..m).map(|i| 2 + 2 * i).collect();
    perm.push(0);
    perm.extend((0..m).map(|i| 1 + 2 * i));
    perm.extend(2 * m + 1..shape.len());
    let t = mv::transpose(&r, &perm)?;
    let Some(batch) = block.iter().try_fold(dims[0], |acc, &k| acc.checked_mul(k)) else {
        bail!(shape, "space_to_batch_nd: the batch {} times the blocks {block:?} overflows", dims[0]);
    };
    let mut out = vec![batch as i64];
    out.extend((0..m).map(|i| shape[1 + 2 * i]));
    out.extend(dims[m + 1..].iter().map(|&d| d as i64));
    mv::reshape(&t, &out)
}

/// The inverse of [`space_to_batch_nd`]: move blocks of the batch back into
/// the spatial axes, then crop (TensorFlow's `batch_to_space`).
#[doc(alias = "batch_to_space_nd")]
#[track_caller]
pub fn batch_to_space(x: &Tensor, block: &[usize], crops: &[(usize, usize)]) -> Result<Tensor> {
    let m = block.len();
    let dims = x.shape().dims().to_vec();
    let prod: usize = block.iter().product();
    if crops.len() != m || x.rank() < m + 1 || !x.shape().is_fully_known() || prod == 0 || !dims[0].is_multiple_of(prod)
    {
        bail!(shape, "batch_to_space: {m} block sizes and crops for {:?}", x.shape());
    }
    let b = dims[0] / prod;
    let mut shape: Vec<i64> = block.iter().map(|&k| k as i64).collect();
    shape.push(b as i64);
    shape.extend(dims[1..].iter().map(|&d| d as i64));
    let r = mv::reshape(x, &shape)?;
    // [k1, ..., km, b, o1, ..., om, rest] -> [b, o1, k1, ..., om, km, rest]
    let mut perm = vec![m];
    for i in 0..m {
        perm.push(m + 1 + i);
        perm.push(i);
    }
    perm.extend(2 * m + 1..shape.len());
    let t = mv::transpose(&r, &perm)?;
    let mut merged = vec![b as i64];
    merged.extend((0..m).map(|i| (dims[i + 1] * block[i]) as i64));
    merged.extend(dims[m + 1..].iter().map(|&d| d as i64));
    let full = mv::reshape(&t, &merged)?;
    let mut begin = vec![0usize; x.rank()];
    let mut size: Vec<i64> = merged.clone();
    for i in 0..m {
        let (lo, hi) = crops[i];
        if lo.saturating_add(hi) > merged[i + 1] as usize {
            bail!(shape, "batch_to_space: crops {lo} + {hi} exceed axis {} ({})", i + 1, merged[i + 1]);
        }
        begin[i + 1] = lo;
        size[i + 1] = merged[i + 1] - (lo + hi) as i64;
    }
    mv::slice(&full, &begin, &size)
}

/// Move `block × block` tiles of the channels into space (TensorFlow's
/// `depth_to_space`, NHWC, "DCR" order): `[n, h, w, c]` becomes
/// `[n, h·block, w·block, c / block²]`, output channel `k` of tile position
/// `(i, j)` being input channel `(i·block + j)·c/block² + k`.
#[track_caller]
pub fn depth_to_space(x: &Tensor, block: usize) -> Result<Tensor> {
    let dims = x.shape().dims().to_vec();
    if x.rank() != 4 || !x.shape().is_fully_known() || block < 2 || !dims[3].is_multiple_of(block * block) {
        return checked(
            Err(crate::error::Error::shape(format!(
                "depth_to_space needs a known [batch, height, width, channels] input with channels divisible by block² \
                 (block >= 2), got {} with block {block}",
                x.shape()
            ))),
            "DepthToSpace",
            &[x],
        );
    }
    let (n, h, w, c) = (dims[0] as i64, dims[1] as i64, dims[2] as i64, (dims[3] / (block * block)) as i64);
    let b = block as i64;
    let r = mv::reshape(x, &[n, h, w, b, b, c])?;
    let t = mv::transpose(&r, &[0, 1, 3, 2, 4, 5])?;
    mv::reshape(&t, &[n, h * b, w * b, c])
}

/// The inverse of [`depth_to_space`] (TensorFlow's `space_to_depth`):
/// `[n, h, w, c]` becomes `[n, h / block, w / block, c·block²]`.
#[track_caller]
pub fn space_to_depth(x: &Tensor, block: usize) -> Result<Tensor> {
    let dims = x.shape().dims().to_vec();
    let ok = x.rank() == 4
        && x.shape().is_fully_known()
        && block >= 2
        && dims[1].is_multiple_of(block)
        && dims[2].is_multiple_of(block);
    if !ok {
        return checked(
            Err(crate::error::Error::shape(format!(
                "space_to_depth needs a known [batch, height, width, channels] input with height and width divisible \
                 by the block (>= 2), got {} with block {block}",
                x.shape()
            ))),
            "SpaceToDepth",
            &[x],
        );
    }
    let b = block as i64;
    let (n, h, w, c) = (dims[0] as i64, dims[1] as i64 / b, dims[2] as i64 / b, dims[3] as i64);
    let r = mv::reshape(x, &[n, h, b, w, b, c])?;
    let t = mv::transpose(&r, &[0, 1, 3, 2, 4, 5])?;
    mv::reshape(&t, &[n, h, w, b * b * c])
}

/// `(before, after)` amounts per axis.
pub type Paddings = Vec<(usize, usize)>;

/// The paddings (and crops) that make each spatial axis of `input_shape`
/// a multiple of its block, after `base_paddings` (TensorFlow's
/// `required_space_to_batch_paddings`).
pub fn required_space_to_batch_paddings(
    input_shape: &[usize],
    block: &[usize],
    base_paddings: Option<&[(usize, usize)]>,
) -> Result<(Paddings, Paddings)> {
    if input_shape.len() != block.len() || block.contains(&0) {
        bail!(shape, "required_space_to_batch_paddings: {} dims and {} block sizes", input_shape.len(), block.len());
    }
    let mut paddings = Vec::new();
    let mut crops = Vec::new();
    for (i, (&d, &k)) in input_shape.iter().zip(block).enumerate() {
        let (lo, hi) = base_paddings.map_or((0, 0), |p| p.get(i).copied().unwrap_or((0, 0)));
        let full = d.saturating_add(lo).saturating_add(hi);
        let extra = (k - full % k) % k;
        paddings.push((lo, hi + extra));
        crops.push((0, extra));
    }
    Ok((paddings, crops))
}

/// Zero-pad and move spatial blocks of a 4-D `[batch, height, width, depth]`
/// tensor into the batch (TensorFlow's `space_to_batch`).
#[track_caller]
pub fn space_to_batch(x: &Tensor, block_size: usize, paddings: &[(usize, usize)]) -> Result<Tensor> {
    space_to_batch_nd(x, &[block_size, block_size], paddings)
}
