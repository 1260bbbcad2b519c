//! Collective ops on tensors, eagerly and in graphs, with their gradients:
//! `all_reduce`, `broadcast`, `all_gather`, `reduce_scatter`, `barrier`, and
//! the bucketed all-reduce of gradients that data-parallel training uses.
//!
//! Every rank of the group must call the same collectives in the same
//! order (in a graph: run the same fetches). Gradients assume the objective
//! is the sum of every rank's loss, as in JAX's `psum` transposes: the
//! gradient of `all_reduce(x, Sum)` is `all_reduce(g, Sum)`, of
//! `all_gather` a `reduce_scatter`, and so on.

use super::{apply, apply1, creation, elementwise as ew, Op};
use crate::collective::{Group, Reduction};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::op::CollectiveOp;
use crate::tensor::DType;

/// Every rank's `x` combined elementwise (sum, mean, max or min), on every rank.
#[track_caller]
pub fn all_reduce(x: &Tensor, group: &Group, reduction: Reduction) -> Result<Tensor> {
    let c = CollectiveOp::AllReduce { group: group.key(), size: group.size(), reduction };
    apply1(Op::Collective { c }, &[x])
}

/// Rank `root`'s `x` on every rank (the others' `x` give the shape).
#[track_caller]
pub fn broadcast(x: &Tensor, group: &Group, root: usize) -> Result<Tensor> {
    let c = CollectiveOp::Broadcast { group: group.key(), size: group.size(), root };
    apply1(Op::Collective { c }, &[x])
}

/// Every rank's `x` concatenated along axis 0 in rank order (all of one shape).
#[track_caller]
pub fn all_gather(x: &Tensor, group: &Group) -> Result<Tensor> {
    let c = CollectiveOp::AllGather { group: group.key(), size: group.size() };
    apply1(Op::Collective { c }, &[x])
}

/// The all-reduce of `x` split along axis 0 into one part per rank; rank r gets part r.
#[track_caller]
pub fn reduce_scatter(x: &Tensor, group: &Group, reduction: Reduction) -> Result<Tensor> {
    let c = CollectiveOp::ReduceScatter { group: group.key(), size: group.size(), reduction };
    apply1(Op::Collective { c }, &[x])
}

/// `x`, once every rank has reached this point.
#[track_caller]
pub fn barrier(x: &Tensor, group: &Group) -> Result<Tensor> {
    let c = CollectiveOp::Barrier { group: group.key(), size: group.size() };
    apply1(Op::Collective { c }, &[x])
}

/// How [`all_reduce_bucketed`] groups tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketOptions {
    /// A bucket closes once it holds this many bytes (Horovod's fusion
    /// threshold; PyTorch DDP's `bucket_cap_mb` is 25 MB).
    pub bucket_bytes: usize,
    /// The first bucket (the last layers' gradients) closes at this many
    /// bytes, so that communication starts early in the backward pass
    /// (PyTorch DDP's first bucket is 1 MB).
    pub first_bucket_bytes: usize,
    /// Send float buckets as f16 or bf16 (halving the bytes, at their
    /// precision), or as they are (`None`).
    pub compression: Option<DType>,
    /// Start each bucket's all-reduce as soon as its tensors exist and wait
    /// for it only where its results are used, so that the communication
    /// overlaps the computation in between (the backward pass). Off: each
    /// bucket is one blocking all-reduce.
    pub overlap: bool,
}

impl Default for BucketOptions {
    fn default() -> BucketOptions {
        BucketOptions { bucket_bytes: 25 << 20, first_bucket_bytes: 1 << 20, compression: None, overlap: true }
    }
}

/// The all-reduce of each tensor, fused into buckets: the tensors are taken
/// in reverse order (gradients in reverse layer order, the order the
/// backward pass produces them), grouped by dtype into buckets of about
/// `bucket_bytes` (the first of `first_bucket_bytes`), and each bucket is
/// reduced as one buffer. The results
/// come back in the order of `tensors`. Shapes must be static.
#[track_caller]
pub fn all_reduce_bucketed(
    tensors: &[Tensor],
    group: &Group,
    reduction: Reduction,
    options: &BucketOptions,
) -> Result<Vec<Tensor>> {
    if let Some(w) = options.compression {
        if !matches!(w, DType::F16 | DType::BF16) {
            bail!(invalid, "all-reduce compression is f16 or bf16, got {w}");
        }
    }
    let mut out: Vec<Option<Tensor>> = vec![None; tensors.len()];
    let mut bucket: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    let mut limit = options.first_bucket_bytes.min(options.bucket_bytes);
    let mut flush = |bucket: &mut Vec<usize>, bytes: &mut usize| -> Result<()> {
        if bucket.is_empty() {
            return Ok(());
        }
        let members: Vec<&Tensor> = bucket.iter().map(|&i| &tensors[i]).collect();
        let dtype = members[0].dtype();
        let wire = options.compression.filter(|_| dtype.is_float() && dtype.size() > 2);
        let reduced: Vec<Tensor> = if options.overlap {
            let start = CollectiveOp::StartAllReduce { group: group.key(), size: group.size(), reduction, wire };
            let token = apply1(Op::Collective { c: start }, &members)?;
            let outputs = members.iter().map(|t| (t.dtype(), t.shape().clone())).collect();
            apply(Op::Collective { c: CollectiveOp::WaitAllReduce { outputs } }, &[&token])?.into_vec()
        } else {
            // One blocking all-reduce of the bucket packed flat.
            let flat: Vec<Tensor> = members
                .iter()
                .map(|t| {
                    let t = match wire {
                        Some(w) => ew::cast(t, w)?,
                        None => (*t).clone(),
                    };
                    super::reshape(&t, &[-1])
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = flat.iter().collect();
            let packed = if refs.len() == 1 { flat[0].clone() } else { super::concat(&refs, 0)? };
            let reduced = all_reduce(&packed, group, reduction)?;
            let sizes: Vec<usize> = members.iter().map(|t| t.shape().numel().unwrap_or(0)).collect();
            let sizes: Vec<i64> = sizes.iter().map(|&n| n as i64).collect();
            let parts = if sizes.len() == 1 { vec![reduced] } else { super::split_sizes(&reduced, &sizes, 0)? };
            parts
                .iter()
                .zip(&members)
                .map(|(p, t)| {
                    let dims: Vec<i64> = t.shape().dims().iter().map(|&d| d as i64).collect();
                    let p = super::reshape(p, &dims)?;
                    if p.dtype() == t.dtype() {
                        Ok(p)
                    } else {
                        ew::cast(&p, t.dtype())
                    }
                })
                .collect::<Result<_>>()?
        };
        for (&i, r) in bucket.iter().zip(reduced) {
            out[i] = Some(r);
        }
        bucket.clear();
        *bytes = 0;
        Ok(())
    };
    for i in (0..tensors.len()).rev() {
        let t = &tensors[i];
        let Some(n) = t.shape().numel().filter(|_| t.shape().is_fully_known()) else {
            bail!(shape, "all_reduce_bucketed needs static shapes, tensor {i} has {}", t.shape());
        };
        if bucket.first().is_some_and(|&j| tensors[j].dtype() != t.dtype()) {
            flush(&mut bucket, &mut bytes)?;
            limit = options.bucket_bytes;
        }
        bucket.push(i);
        bytes += n * t.dtype().size();
        if bytes >= limit {
            flush(&mut bucket, &mut bytes)?;
            limit = options.bucket_bytes;
        }
    }
    flush(&mut bucket, &mut bytes)?;
    out.into_iter().map(|t| t.ok_or_else(|| crate::error::Error::graph("all_reduce_bucketed lost a tensor"))).collect()
}

/// Gradients of the collective `c` (input `x`, output `y`, upstream `g`).
pub(crate) fn collective_grad(c: &CollectiveOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let group = Group::from_key;
    Ok(match c {
        CollectiveOp::AllReduce { group: key, reduction, .. } => {
            let gr = group(*key)?;
            match reduction {
                Reduction::Sum | Reduction::Mean => vec![Some(all_reduce(g, &gr, *reduction)?)],
                Reduction::Max | Reduction::Min => {
                    // The ranks whose value was taken get the summed gradient.
                    let total = all_reduce(g, &gr, Reduction::Sum)?;
                    let hit = ew::cast(&ew::equal(x, y)?, g.dtype())?;
                    vec![Some(ew::mul(&total, &hit)?)]
                }
            }
        }
        CollectiveOp::Broadcast { group: key, root, .. } => {
            let gr = group(*key)?;
            let total = all_reduce(g, &gr, Reduction::Sum)?;
            vec![Some(if gr.rank() == *root { total } else { creation::zeros_like(x)? })]
        }
        CollectiveOp::AllGather { group: key, .. } => vec![Some(reduce_scatter(g, &group(*key)?, Reduction::Sum)?)],
        CollectiveOp::ReduceScatter { group: key, reduction, .. } => {
            let gr = group(*key)?;
            let gathered = all_gather(g, &gr)?;
            vec![Some(match reduction {
                Reduction::Sum => gathered,
                Reduction::Mean => ew::div(&gathered, gr.size() as f64)?,
                // The elements whose value was taken get the gradient.
                Reduction::Max | Reduction::Min => {
                    let hit = ew::cast(&ew::equal(x, &all_gather(y, &gr)?)?, g.dtype())?;
                    ew::mul(&gathered, &hit)?
                }
            })]
        }
        CollectiveOp::Barrier { .. } => vec![Some(g.clone())],
        // The bucketed all-reduce carries gradients; it is not differentiated.
        CollectiveOp::StartAllReduce { .. } | CollectiveOp::WaitAllReduce { .. } => {
            bail!(graph, "internal: a bucketed all-reduce has no gradient rule")
        }
    })
}
