//! Collective ops: all-reduce, broadcast, all-gather, reduce-scatter and
//! barrier across the ranks of a [`Group`](crate::collective::Group), named
//! by its key (TensorFlow's `CollectiveReduceV2` carries a `group_key` the
//! same way), and the split all-reduce of gradient buckets: a start that
//! hands a bucket to the communicator and a wait that takes the result, so
//! that the backward pass goes on in between.
//!
//! They are stateful: never folded, merged or reordered, and a plan runs
//! them in program order, since every rank must call its collectives in
//! the same order.

use super::{Meta, Metas};
use crate::collective::Reduction;
use crate::error::{bail, Result};
use crate::tensor::{DType, Shape, UNKNOWN};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// A collective op; `group` is the key of its group, `size` the group's size
/// when the op was made (for shapes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CollectiveOp {
    /// Every rank's input combined elementwise, on every rank.
    AllReduce { group: u64, size: usize, reduction: Reduction },
    /// Rank `root`'s input on every rank.
    Broadcast { group: u64, size: usize, root: usize },
    /// The ranks' inputs concatenated along axis 0, in rank order.
    AllGather { group: u64, size: usize },
    /// The all-reduce of the inputs split along axis 0 into `size` parts; rank r keeps part r.
    ReduceScatter { group: u64, size: usize, reduction: Reduction },
    /// Its input, once every rank has reached it.
    Barrier { group: u64, size: usize },
    /// Start an all-reduce of its inputs packed into one buffer (cast to
    /// `wire` on the way when set: fp16/bf16 compression); outputs an int64
    /// token for [`CollectiveOp::WaitAllReduce`].
    StartAllReduce { group: u64, size: usize, reduction: Reduction, wire: Option<DType> },
    /// Wait for the all-reduce started under the token (its one input) and
    /// unpack it into tensors of `outputs` (dtype and shape each).
    WaitAllReduce { outputs: Vec<(DType, Shape)> },
}

impl CollectiveOp {
    /// The op type as TensorFlow spells it (or a name in its style).
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            CollectiveOp::AllReduce { .. } => "CollectiveReduceV2",
            CollectiveOp::Broadcast { .. } => "CollectiveBcastV2",
            CollectiveOp::AllGather { .. } => "CollectiveGatherV2",
            CollectiveOp::ReduceScatter { .. } => "CollectiveReduceScatterV2",
            CollectiveOp::Barrier { .. } => "CollectiveBarrier",
            CollectiveOp::StartAllReduce { .. } => "CollectiveReduceStart",
            CollectiveOp::WaitAllReduce { .. } => "CollectiveReduceWait",
        }
    }

    /// Inputs it takes (`None`: any number, the start of a bucket).
    pub(crate) fn arity(&self) -> Option<usize> {
        match self {
            CollectiveOp::StartAllReduce { .. } => None,
            _ => Some(1),
        }
    }

    /// The key of the group it runs in (`None` for a wait, which finds its
    /// collective by token).
    pub fn group(&self) -> Option<u64> {
        match self {
            CollectiveOp::AllReduce { group, .. }
            | CollectiveOp::Broadcast { group, .. }
            | CollectiveOp::AllGather { group, .. }
            | CollectiveOp::ReduceScatter { group, .. }
            | CollectiveOp::Barrier { group, .. }
            | CollectiveOp::StartAllReduce { group, .. } => Some(*group),
            CollectiveOp::WaitAllReduce { .. } => None,
        }
    }

    /// The outputs' dtypes and shapes.
    pub(crate) fn infer(&self, inputs: &[Meta]) -> Result<Metas> {
        if let CollectiveOp::AllReduce { size: 0, .. }
        | CollectiveOp::Broadcast { size: 0, .. }
        | CollectiveOp::AllGather { size: 0, .. }
        | CollectiveOp::ReduceScatter { size: 0, .. }
        | CollectiveOp::Barrier { size: 0, .. }
        | CollectiveOp::StartAllReduce { size: 0, .. } = self
        {
            bail!(invalid, "{}: a group of 0 ranks", self.type_name());
        }
        let reducible = |m: &Meta, what: &str, r: Reduction| -> Result<()> {
            if !crate::collective::reducible(m.dtype) {
                bail!(dtype, "{what} of {} is not supported (real numbers only)", m.dtype);
            }
            if r == Reduction::Mean && !m.dtype.is_float() {
                bail!(dtype, "{what} Mean needs a floating-point dtype, got {} (use Sum)", m.dtype);
            }
            Ok(())
        };
        let leading = |m: &Meta, what: &str| -> Result<Vec<usize>> {
            if m.shape.rank() == 0 {
                bail!(shape, "{what} needs rank >= 1 (it works along axis 0), got a scalar");
            }
            Ok(m.shape.dims().to_vec())
        };
        Ok(match self {
            CollectiveOp::AllReduce { reduction, .. } => {
                reducible(&inputs[0], "all_reduce", *reduction)?;
                smallvec![inputs[0].clone()]
            }
            CollectiveOp::Broadcast { size, root, .. } => {
                if root >= size {
                    bail!(invalid, "broadcast from rank {root} in a group of {size}");
                }
                smallvec![inputs[0].clone()]
            }
            CollectiveOp::Barrier { .. } => smallvec![inputs[0].clone()],
            CollectiveOp::AllGather { size, .. } => {
                let mut dims = leading(&inputs[0], "all_gather")?;
                if dims[0] != UNKNOWN {
                    dims[0] = dims[0]
                        .checked_mul(*size)
                        .ok_or_else(|| crate::error::Error::shape("all_gather: size overflows"))?;
                }
                smallvec![Meta::new(inputs[0].dtype, Shape::from(dims))]
            }
            CollectiveOp::ReduceScatter { size, reduction, .. } => {
                reducible(&inputs[0], "reduce_scatter", *reduction)?;
                let mut dims = leading(&inputs[0], "reduce_scatter")?;
                if dims[0] != UNKNOWN {
                    if !dims[0].is_multiple_of(*size) {
                        bail!(shape, "reduce_scatter: axis 0 of length {} does not split over {size} ranks", dims[0]);
                    }
                    dims[0] /= *size;
                }
                smallvec![Meta::new(inputs[0].dtype, Shape::from(dims))]
            }
            CollectiveOp::StartAllReduce { reduction, wire, .. } => {
                let Some(first) = inputs.first() else {
                    bail!(invalid, "an all-reduce bucket needs at least one tensor");
                };
                for m in inputs {
                    if m.dtype != first.dtype {
                        bail!(dtype, "an all-reduce bucket holds one dtype, got {} and {}", first.dtype, m.dtype);
                    }
                    reducible(m, "all_reduce", *reduction)?;
                }
                if let Some(w) = wire {
                    if !matches!(w, DType::F16 | DType::BF16 | DType::F32) || !first.dtype.is_float() {
                        bail!(
                            dtype,
                            "all-reduce compression sends floats as f16, bf16 or f32, not {} as {w}",
                            first.dtype
                        );
                    }
                }
                smallvec![Meta::new(DType::I64, Shape::scalar())]
            }
            CollectiveOp::WaitAllReduce { outputs } => {
                if inputs[0].dtype != DType::I64 {
                    bail!(dtype, "an all-reduce wait takes the int64 token of its start, got {}", inputs[0].dtype);
                }
                if let Some((_, s)) = outputs.iter().find(|(_, s)| !s.is_fully_known()) {
                    bail!(shape, "a bucketed all-reduce needs static shapes, got {s} (use all_reduce)");
                }
                outputs.iter().map(|(d, s)| Meta::new(*d, s.clone())).collect()
            }
        })
    }
}
