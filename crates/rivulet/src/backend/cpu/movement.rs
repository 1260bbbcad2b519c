//! Movement kernels. Views (reshape of contiguous data, transpose,
//! expand_dims, squeeze, broadcast_to, slice, strided_slice, split, unstack,
//! reverse) only build a new layout; the rest copy with element-size-generic
//! loops (and AVX-512 register transposes for 4-byte elements).

use super::copy::{copy, materialize};
use super::parallel::GRAIN;
use crate::error::{bail, Result};
use crate::op::Meta;
use crate::tensor::dtype::{with_dtype, Element};
use crate::tensor::layout::{Layout, Strides};
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Scalar, Shape, Value};
use rayon::prelude::*;

pub(crate) use crate::backend::views::{
    broadcast_to, expand_dims, reverse, slice, split, squeeze, strided_layout, strided_slice, transpose, unstack,
};

/// Reshape: a view where the layout allows one, else a contiguous copy.
pub(crate) fn reshape(x: &Value, spec: &[i64]) -> Result<Value> {
    crate::backend::views::reshape(x, spec, copy)
}

/// Copy the elements of `src` into the region of `dst` described by `dst_layout`
/// (a view into `dst`'s contiguous buffer of the same shape as `src`).
fn copy_into<T: Element>(src: &Value, dst: &mut [T], dst_layout: &Layout) {
    if src.numel() == 0 {
        return;
    }
    let sl = &src.layout;
    let rows = super::strided::Rows::new(sl.shape(), [dst_layout, sl]);
    let (sd, ss) = (rows.inner_stride(0), rows.inner_stride(1));
    let inner = rows.inner();
    let sbuf = src.buffer::<T>();
    if sd == 1 && ss == 1 {
        // Rows contiguous on both sides (pad, concat, slices): row copies,
        // in parallel over blocks of rows when there is enough to copy.
        let n = rows.rows();
        let per = (COPY_GRAIN / inner.max(1)).max(1);
        if n <= per {
            rows.for_rows(0, n, |_, [od, os]| {
                dst[od as usize..od as usize + inner].copy_from_slice(&sbuf[os as usize..os as usize + inner]);
            });
            return;
        }
        let out = SharedOut(dst.as_mut_ptr(), dst.len());
        (0..n.div_ceil(per)).into_par_iter().for_each(|b| {
            let out = &out;
            rows.for_rows(b * per, ((b + 1) * per).min(n), |_, [od, os]| {
                let src_row = &sbuf[os as usize..os as usize + inner];
                assert!(od >= 0 && od as usize + inner <= out.1, "copy_into: row outside the output");
                // SAFETY: in bounds (checked above); the destination layout
                // maps distinct rows of the source to disjoint ranges of the
                // output (a region of a row-major buffer), so blocks of rows
                // on different threads never write the same element.
                unsafe { std::ptr::copy_nonoverlapping(src_row.as_ptr(), out.0.add(od as usize), inner) };
            });
        });
        return;
    }
    rows.for_rows(0, rows.rows(), |_, [od, os]| {
        for j in 0..inner as isize {
            dst[(od + j * sd) as usize] = sbuf[(os + j * ss) as usize];
        }
    });
}

/// Elements per parallel block of a row copy.
const COPY_GRAIN: usize = 1 << 16;

/// The output of a parallel row copy, shared by the threads that write its
/// disjoint rows.
struct SharedOut<T>(*mut T, usize);
// SAFETY: the threads write disjoint ranges (see `copy_into`).
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// A new value of `out` filled with `fill`, each piece copied into the
/// region of the row-major output its layout describes.
pub(crate) fn assemble(out: &Meta, fill: Scalar, pieces: &[(Layout, &Value)]) -> Result<Value> {
    with_dtype!(out.dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(out.shape.numel_known())?;
        let o = buf.as_mut_slice::<T>();
        o.fill(fill.to_element::<T>());
        for (region, v) in pieces {
            if v.dtype != out.dtype || region.shape() != v.shape() {
                bail!(invalid, "assemble: a {}{} piece for a {}{} region", v.dtype, v.shape(), out.dtype, region.shape());
            }
            copy_into::<T>(v, o, region);
        }
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

pub(crate) fn concat(xs: &[&Value], axis: usize, out: &Meta) -> Result<Value> {
    with_dtype!(out.dtype, T => concat_typed::<T>(xs, axis, &out.shape))
}

fn concat_typed<T: Element>(xs: &[&Value], axis: usize, shape: &Shape) -> Result<Value> {
    let mut buf = HostBuffer::for_elements::<T>(shape.numel_known())?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let row = shape[axis] * inner;
    let parts: Vec<Value> = xs.iter().map(|x| materialize(x)).collect::<Result<_>>()?;
    let out = buf.as_mut_slice::<T>();
    if row > 0 {
        let mut col = 0;
        let pieces: Vec<(&[T], usize, usize)> = parts
            .iter()
            .map(|p| {
                let w = p.shape()[axis] * inner;
                let s = p.contiguous_slice::<T>().unwrap_or(&[]);
                let at = col;
                col += w;
                (s, w, at)
            })
            .collect();
        let fill_row = |o: usize, orow: &mut [T]| {
            for &(s, w, at) in &pieces {
                orow[at..at + w].copy_from_slice(&s[o * w..(o + 1) * w]);
            }
        };
        if outer * row <= GRAIN {
            out.chunks_mut(row).enumerate().for_each(|(o, r)| fill_row(o, r));
        } else {
            out.par_chunks_mut(row).enumerate().for_each(|(o, r)| fill_row(o, r));
        }
    }
    Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
}

/// Integer indices as i64.
fn indices_i64(v: &Value) -> Result<Vec<i64>> {
    let c = materialize(v)?;
    let mut out = crate::tensor::storage::try_vec_with_capacity(c.numel())?;
    match v.dtype {
        DType::I32 => out.extend(c.contiguous_slice::<i32>().unwrap_or(&[]).iter().map(|&i| i as i64)),
        DType::I64 => out.extend_from_slice(c.contiguous_slice::<i64>().unwrap_or(&[])),
        DType::U8 => out.extend(c.contiguous_slice::<u8>().unwrap_or(&[]).iter().map(|&i| i as i64)),
        d => bail!(dtype, "indices must be integers, got {d}"),
    }
    Ok(out)
}

pub(crate) fn gather(params: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value> {
    with_dtype!(params.dtype, T => gather_typed::<T>(params, indices, axis, batch_dims, &out.shape))
}

fn gather_typed<T: Element>(
    params: &Value,
    indices: &Value,
    axis: usize,
    batch_dims: usize,
    shape: &Shape,
) -> Result<Value> {
    let p = materialize(params)?;
    let src = p.contiguous_slice::<T>().unwrap_or(&[]);
    let idx = indices_i64(indices)?;
    let pd = params.shape();
    let n_axis = pd[axis];
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= n_axis) {
        bail!(invalid, "gather index {bad} is out of range [0, {n_axis}) for axis {axis} of params {}", pd);
    }
    let batch: usize = pd[..batch_dims].iter().product();
    let outer: usize = pd[batch_dims..axis].iter().product(); // per batch
    let inner: usize = pd[axis + 1..].iter().product();
    let per_batch_idx = if batch == 0 { 0 } else { idx.len() / batch.max(1) };
    let mut buf = HostBuffer::for_elements::<T>(shape.numel_known())?;
    let out = buf.as_mut_slice::<T>();
    // Output order: batch, outer, index, inner.
    let block = per_batch_idx * inner;
    if block > 0 {
        out.par_chunks_mut(block).enumerate().for_each(|(bo, o)| {
            let (b, m) = (bo / outer.max(1), bo % outer.max(1));
            let src_base = ((b * outer + m) * n_axis) * inner;
            for (k, &ix) in idx[b * per_batch_idx..(b + 1) * per_batch_idx].iter().enumerate() {
                let s = src_base + ix as usize * inner;
                o[k * inner..(k + 1) * inner].copy_from_slice(&src[s..s + inner]);
            }
        });
    }
    Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
}

/// Row-major offset of each index vector (depth `k`) into the leading dims of `dims`, checked.
fn nd_offsets(idx: &[i64], k: usize, dims: &[usize], what: &str) -> Result<Vec<usize>> {
    let inner: usize = dims[k..].iter().product();
    let count = idx.len().checked_div(k).unwrap_or(0);
    let mut offs = Vec::with_capacity(count);
    for v in idx.chunks(k.max(1)).take(if k == 0 { 0 } else { count }) {
        let mut o = 0usize;
        for (d, &i) in v.iter().enumerate() {
            if i < 0 || i as usize >= dims[d] {
                bail!(invalid, "{what} index {v:?} is out of range for shape {}", Shape::new(dims));
            }
            o = o * dims[d] + i as usize;
        }
        offs.push(o * inner);
    }
    Ok(offs)
}

pub(crate) fn gather_nd(params: &Value, indices: &Value, out: &Meta) -> Result<Value> {
    with_dtype!(params.dtype, T => {
        let p = materialize(params)?;
        let src = p.contiguous_slice::<T>().unwrap_or(&[]);
        let k = *indices.shape().last().unwrap_or(&0);
        let idx = indices_i64(indices)?;
        let inner: usize = params.shape()[k..].iter().product();
        let mut buf = HostBuffer::for_elements::<T>(out.shape.numel_known())?;
        let o = buf.as_mut_slice::<T>();
        if k == 0 {
            // Each (empty) index selects the whole of params.
            for chunk in o.chunks_mut(inner.max(1)) {
                chunk.copy_from_slice(&src[..chunk.len()]);
            }
        } else {
            let offs = nd_offsets(&idx, k, params.shape(), "gather_nd")?;
            for (i, &s) in offs.iter().enumerate() {
                o[i * inner..(i + 1) * inner].copy_from_slice(&src[s..s + inner]);
            }
        }
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

pub(crate) fn scatter_nd(indices: &Value, updates: &Value, out: &Meta) -> Result<Value> {
    with_dtype!(updates.dtype, T => scatter_typed::<T>(indices, updates, &out.shape),
    [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], {
        let up = super::elementwise::cast(updates, DType::F32)?;
        let r = scatter_typed::<f32>(indices, &up, &out.shape)?;
        super::elementwise::cast(&r, updates.dtype)
    })
}

fn scatter_typed<T: super::reduce::Num>(indices: &Value, updates: &Value, shape: &Shape) -> Result<Value> {
    let k = *indices.shape().last().unwrap_or(&0);
    let idx = indices_i64(indices)?;
    let u = materialize(updates)?;
    let src = u.contiguous_slice::<T>().unwrap_or(&[]);
    let inner: usize = shape[k..].iter().product();
    let mut buf = HostBuffer::zeroed::<T>(shape.numel_known())?;
    let o = buf.as_mut_slice::<T>();
    if k == 0 {
        for chunk in src.chunks(inner.max(1)) {
            for (d, &v) in o.iter_mut().zip(chunk) {
                *d = d.add(v);
            }
        }
    } else {
        let offs = nd_offsets(&idx, k, shape, "scatter_nd")?;
        for (i, &s) in offs.iter().enumerate() {
            for j in 0..inner {
                o[s + j] = o[s + j].add(src[i * inner + j]);
            }
        }
    }
    Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
}

pub(crate) fn tile(x: &Value, multiples: &[usize], out: &Meta) -> Result<Value> {
    // View x as [m0, d0, m1, d1, ...] with stride 0 on the repeats, then copy.
    let mut shape = Vec::with_capacity(2 * multiples.len());
    let mut strides = Strides::new();
    for (i, &m) in multiples.iter().enumerate() {
        shape.push(m);
        strides.push(0);
        shape.push(x.shape()[i]);
        strides.push(x.layout.strides[i]);
    }
    let view = x.view(Layout { shape: Shape::from(shape), strides, offset: x.layout.offset });
    let c = copy(&view)?;
    Ok(c.view(Layout::contiguous(out.shape.clone())))
}

/// Constant padding: the value everywhere, then `x` copied into the interior.
pub(crate) fn pad(x: &Value, paddings: &[(usize, usize)], value: Scalar, out: &Meta) -> Result<Value> {
    with_dtype!(x.dtype, T => {
        let mut buf = HostBuffer::for_elements::<T>(out.shape.numel_known())?;
        let o = buf.as_mut_slice::<T>();
        let fill = value.to_element::<T>();
        o.par_chunks_mut(COPY_GRAIN).for_each(|c| c.fill(fill));
        let full = Layout::contiguous(out.shape.clone());
        let begin: Vec<usize> = paddings.iter().map(|p| p.0).collect();
        let interior = Layout {
            shape: x.shape().clone(),
            strides: full.strides.clone(),
            offset: if x.numel() == 0 { 0 } else { full.offset_of(&begin) },
        };
        copy_into::<T>(x, o, &interior);
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

pub(crate) fn one_hot(
    indices: &Value,
    depth: usize,
    on: Scalar,
    off: Scalar,
    axis: usize,
    out: &Meta,
) -> Result<Value> {
    let idx = indices_i64(indices)?;
    with_dtype!(out.dtype, T => {
        let (on, off) = (on.to_element::<T>(), off.to_element::<T>());
        let mut buf = HostBuffer::for_elements::<T>(out.shape.numel_known())?;
        let o = buf.as_mut_slice::<T>();
        o.fill(off);
        // Output [outer, depth, inner] where indices are [outer, inner].
        let outer: usize = indices.shape()[..axis].iter().product();
        let inner: usize = indices.shape()[axis..].iter().product();
        for a in 0..outer {
            for b in 0..inner {
                let i = idx[a * inner + b];
                if i >= 0 && (i as usize) < depth {
                    o[(a * depth + i as usize) * inner + b] = on;
                }
            }
        }
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

/// Sum `g` down to `out`'s shape (undoing NumPy broadcasting).
pub(crate) fn sum_to(g: &Value, out: &Meta) -> Result<Value> {
    let (gr, lr) = (g.shape().rank(), out.shape.rank());
    let lead = gr - lr;
    let axes: Vec<usize> = (0..gr).filter(|&d| d < lead || (out.shape[d - lead] == 1 && g.shape()[d] != 1)).collect();
    let summed = if axes.is_empty() {
        g.clone()
    } else {
        let keep = crate::op::reduce::reduced_shape(g.shape(), &axes, true);
        super::reduce::reduce(crate::op::reduce::ReduceOp::Sum, g, &axes, &Meta::new(g.dtype, keep))?
    };
    let spec: Vec<i64> = out.shape.iter().map(|&d| d as i64).collect();
    reshape(&summed, &spec)
}

/// Zeros shaped like `out`, with `g` written into the region `spec` selects.
pub(crate) fn strided_slice_grad(g: &Value, spec: &[crate::op::movement::SliceItem], out: &Meta) -> Result<Value> {
    with_dtype!(g.dtype, T => {
        let mut buf = HostBuffer::zeroed::<T>(out.shape.numel_known())?;
        let region = strided_layout(&Layout::contiguous(out.shape.clone()), spec)?;
        if region.shape() != g.shape() {
            bail!(shape, "slice gradient of shape {} for a slice of shape {}", g.shape(), region.shape());
        }
        copy_into::<T>(g, buf.as_mut_slice::<T>(), &region);
        Ok(Value::from_buffer(T::DTYPE, out.shape.clone(), buf))
    })
}

/// Zeros shaped like `out` (the params of a gather), with `g` added where it was gathered from.
pub(crate) fn gather_grad(g: &Value, indices: &Value, axis: usize, batch_dims: usize, out: &Meta) -> Result<Value> {
    with_dtype!(g.dtype, T => gather_grad_typed::<T>(g, indices, axis, batch_dims, &out.shape),
    [F32, F64, I32, I64, U8, I8, I16, U16, U32, U64], {
        let up = super::elementwise::cast(g, DType::F32)?;
        let r = gather_grad_typed::<f32>(&up, indices, axis, batch_dims, &out.shape)?;
        super::elementwise::cast(&r, g.dtype)
    })
}

fn gather_grad_typed<T: super::reduce::Num>(
    g: &Value,
    indices: &Value,
    axis: usize,
    batch_dims: usize,
    shape: &Shape,
) -> Result<Value> {
    let idx = indices_i64(indices)?;
    let n_axis = shape[axis];
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= n_axis) {
        bail!(invalid, "gather index {bad} is out of range [0, {n_axis}) for axis {axis} of {shape}");
    }
    let gc = materialize(g)?;
    let src = gc.contiguous_slice::<T>().unwrap_or(&[]);
    let batch: usize = shape[..batch_dims].iter().product();
    let outer: usize = shape[batch_dims..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let per_batch_idx = idx.len().checked_div(batch).unwrap_or(0);
    if src.len() != batch * outer * per_batch_idx * inner {
        bail!(
            shape,
            "gather gradient of shape {} does not match indices {} and params {shape}",
            g.shape(),
            indices.shape()
        );
    }
    let mut buf = HostBuffer::zeroed::<T>(shape.numel_known())?;
    let o = buf.as_mut_slice::<T>();
    // Nothing to add (no gradient elements): no walk over empty rows.
    let batch = if src.is_empty() { 0 } else { batch };
    for b in 0..batch {
        for m in 0..outer {
            let base = ((b * outer + m) * n_axis) * inner;
            let gbase = (b * outer + m) * per_batch_idx * inner;
            for (k, &ix) in idx[b * per_batch_idx..(b + 1) * per_batch_idx].iter().enumerate() {
                let d = base + ix as usize * inner;
                let s = gbase + k * inner;
                for j in 0..inner {
                    o[d + j] = o[d + j].add(src[s + j]);
                }
            }
        }
    }
    Ok(Value::from_buffer(T::DTYPE, shape.clone(), buf))
}

/// Views of `g` along `axis` as long as each of `likes` is.
pub(crate) fn split_like(g: &Value, likes: &[&Value], axis: usize) -> Result<Vec<Value>> {
    let sizes: Vec<usize> = likes.iter().map(|l| l.shape()[axis]).collect();
    if sizes.iter().sum::<usize>() != g.shape()[axis] {
        bail!(shape, "pieces of sizes {sizes:?} do not add up to axis {axis} of {}", g.shape());
    }
    Ok(split(g, axis, &sizes))
}
