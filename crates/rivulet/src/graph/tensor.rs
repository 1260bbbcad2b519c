//! Tensors: immutable n-dimensional values, and their symbolic counterparts
//! in a graph.
//!
//! A [`Tensor`] is either a *value* (a buffer, a layout and a dtype: what eager
//! code computes with) or *symbolic* (an output of a node in a [`Graph`],
//! whose value exists only while a [`Session`](crate::Session) runs). Every op
//! accepts both: with values it runs at once, with symbolic tensors it adds a
//! node. This is TensorFlow 2's model, where a traced function sees the same
//! tensor type as eager code.

use super::{Graph, NodeId, Operation};
use crate::error::{bail, Error, Result};
use crate::tensor::storage::{self, HostBuffer};
use crate::tensor::{dtype, DType, Device, Element, Scalar, Shape, Value};
use std::sync::Arc;

/// An n-dimensional array of one dtype: a value, or a symbolic output of a graph node.
///
/// Cloning is cheap (reference counted); tensors are immutable.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) repr: Repr,
}

#[derive(Clone)]
pub(crate) enum Repr {
    Value(Arc<Value>),
    Symbolic(Arc<Symbolic>),
}

/// Output `index` of node `node` in `graph`, with its static dtype and shape.
pub(crate) struct Symbolic {
    pub graph: Graph,
    pub node: NodeId,
    pub index: usize,
    pub dtype: DType,
    pub shape: Shape,
}

impl Tensor {
    /// Whether both are the very same tensor (not merely equal values).
    pub(crate) fn is_same_value(&self, other: &Tensor) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Value(a), Repr::Value(b)) => Arc::ptr_eq(a, b) || a.is_same(b),
            (Repr::Symbolic(a), Repr::Symbolic(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// A tensor of `shape` holding `data` in row-major order.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_slice(&data, shape)
    }

    /// A tensor of `shape` holding a copy of `data` in row-major order.
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_numel()?;
        if n != data.len() {
            bail!(shape, "{} elements cannot fill shape {shape} ({n} elements)", data.len());
        }
        Ok(Value::from_buffer(T::DTYPE, shape, HostBuffer::from_slice(data)?).into_tensor())
    }

    /// A tensor of `dtype` and `shape` from its elements' little-endian
    /// bytes in row-major order (any dtype; the byte count and bool bytes
    /// are checked, as for untrusted input).
    pub fn from_le_bytes(dtype: DType, shape: impl Into<Shape>, bytes: &[u8]) -> Result<Tensor> {
        Value::from_le_bytes(dtype, shape.into(), bytes).map(Value::into_tensor)
    }

    /// The elements as little-endian bytes in row-major order, whatever the
    /// dtype and layout (a device value is copied back).
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        self.value()?.to_le_bytes()
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_known(&[v], Shape::scalar())
    }

    /// A rank-0 tensor of `dtype` holding `v` converted to it.
    pub fn scalar_of(v: impl Into<Scalar>, dtype: DType) -> Tensor {
        let v = v.into();
        dtype::with_dtype!(dtype, T => Tensor::scalar::<T>(v.to_element::<T>()))
    }

    /// For data whose size is known to fit (built from Rust arrays).
    pub(crate) fn from_known<T: Element>(data: &[T], shape: Shape) -> Tensor {
        let buffer = match HostBuffer::from_slice(data) {
            Ok(b) => b,
            // Only reachable when the allocator itself fails: behave like Vec.
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()),
        };
        Value::from_buffer(T::DTYPE, shape, buffer).into_tensor()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.repr {
            Repr::Value(v) => v.dtype,
            Repr::Symbolic(s) => s.dtype,
        }
    }

    /// The shape. For a symbolic tensor, the static shape: dimensions known
    /// only at run time are [`UNKNOWN`] (printed `?`).
    pub fn shape(&self) -> &Shape {
        match &self.repr {
            Repr::Value(v) => &v.layout.shape,
            Repr::Symbolic(s) => &s.shape,
        }
    }

    /// The device the value lives on; for a symbolic tensor, the device its
    /// node asked for (the CPU where it asked for none: automatic placement
    /// decides such a node's device when a session compiles it).
    pub fn device(&self) -> Device {
        match &self.repr {
            Repr::Value(v) => v.device(),
            Repr::Symbolic(s) => s.graph.read().nodes[s.node].device.unwrap_or(Device::CPU),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape().rank()
    }

    /// Number of elements; `None` for a symbolic tensor with unknown dimensions.
    pub fn numel(&self) -> Option<usize> {
        self.shape().numel()
    }

    /// True for an output of a graph node (no value until a session runs it).
    pub fn is_symbolic(&self) -> bool {
        matches!(self.repr, Repr::Symbolic(_))
    }

    /// The graph node that produces this tensor, when it is symbolic.
    pub fn op(&self) -> Option<Operation> {
        match &self.repr {
            Repr::Symbolic(s) => Some(Operation { graph: s.graph.clone(), id: s.node }),
            Repr::Value(_) => None,
        }
    }

    /// The graph of a symbolic tensor.
    pub fn graph(&self) -> Option<&Graph> {
        match &self.repr {
            Repr::Symbolic(s) => Some(&s.graph),
            Repr::Value(_) => None,
        }
    }

    /// Name of the producing node and output index, `node:index`, for symbolic tensors.
    pub fn name(&self) -> Option<String> {
        match &self.repr {
            Repr::Symbolic(s) => Some(format!("{}:{}", s.graph.node_name(s.node), s.index)),
            Repr::Value(_) => None,
        }
    }

    pub(crate) fn value(&self) -> Result<&Value> {
        match &self.repr {
            Repr::Value(v) => Ok(v),
            Repr::Symbolic(s) => Err(Error::graph(format!(
                "tensor {}:{} is symbolic (a node of a graph); run it in a Session to get its value",
                s.graph.node_name(s.node),
                s.index
            ))),
        }
    }

    pub(crate) fn from_value(v: Value) -> Tensor {
        v.into_tensor()
    }

    /// Whether this handle is the only one to its value and to its buffer.
    pub(crate) fn is_unique(&self) -> bool {
        match &self.repr {
            Repr::Value(v) => {
                Arc::strong_count(v) == 1
                    && Arc::weak_count(v) == 0
                    && Arc::strong_count(&v.storage) == 1
                    && Arc::weak_count(&v.storage) == 0
            }
            Repr::Symbolic(_) => false,
        }
    }

    /// The value, if this handle is the only one to it and to its buffer
    /// (no clone, view or read of either exists); else the tensor back.
    pub(crate) fn into_unique_value(self) -> std::result::Result<Value, Tensor> {
        if !self.is_unique() {
            return Err(self);
        }
        match self.repr {
            Repr::Value(v) => Arc::try_unwrap(v).map_err(|v| Tensor { repr: Repr::Value(v) }),
            repr => Err(Tensor { repr }),
        }
    }

    pub(crate) fn symbolic(graph: Graph, node: NodeId, index: usize, dtype: DType, shape: Shape) -> Tensor {
        Tensor { repr: Repr::Symbolic(Arc::new(Symbolic { graph, node, index, dtype, shape })) }
    }

    /// The elements in row-major order. `T` must be the tensor's dtype
    /// (use [`cast`](crate::op::cast) to convert). Running out of memory
    /// is an error, not an abort.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let v = self.value()?;
        if T::DTYPE != v.dtype {
            bail!(dtype, "to_vec::<{}>() on a {} tensor; cast it first", T::DTYPE, v.dtype);
        }
        // A GPU value is read back here (waiting for its kernels).
        v.storage.sync_host()?;
        let copy = |s: &[T]| -> Result<Vec<T>> {
            let mut out = storage::try_vec_with_capacity(s.len())?;
            out.extend_from_slice(s);
            Ok(out)
        };
        if let Some(s) = v.contiguous_slice::<T>() {
            return copy(s);
        }
        let c = crate::backend::cpu::copy::materialize(v)?;
        copy(c.contiguous_slice::<T>().unwrap_or_default())
    }

    /// The single element of a tensor with one element (any rank).
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        let v = self.value()?;
        if v.numel() != 1 {
            bail!(shape, "to_scalar() on a tensor of shape {} ({} elements)", v.shape(), v.numel());
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The elements of a rank-2 tensor as rows.
    pub fn to_vec2<T: Element>(&self) -> Result<Vec<Vec<T>>> {
        let s = self.shape().clone();
        if s.rank() != 2 {
            bail!(shape, "to_vec2() on a tensor of rank {} (shape {s})", s.rank());
        }
        let flat = self.to_vec::<T>()?;
        let mut rows = storage::try_vec_with_capacity(s[0])?;
        if s[1] == 0 {
            rows.resize(s[0], Vec::new());
        } else {
            rows.extend(flat.chunks(s[1]).map(|c| c.to_vec()));
        }
        Ok(rows)
    }

    /// True when both are values with equal dtype, shape and bitwise-equal
    /// elements. Compares in place, whatever the layouts (no copies).
    pub fn bitwise_eq(&self, other: &Tensor) -> bool {
        match (self.value(), other.value()) {
            (Ok(a), Ok(b)) => a.bitwise_eq(b),
            _ => false,
        }
    }
}

impl Value {
    /// This value as an eager tensor.
    pub fn into_tensor(self) -> Tensor {
        Tensor { repr: Repr::Value(Arc::new(self)) }
    }
}
