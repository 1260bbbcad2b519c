//! Method syntax for the ops: `x.exp()?`, `a.matmul(&b)?`, `x.sum(1, true)?`.
//! Each method forwards to the one definition in [`crate::ops`].

use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::{self, Axes, Operand, SliceItem};
use crate::tensor::{DType, Shape};

macro_rules! unary_methods {
    ($($name:ident),*) => {
        impl Tensor {
    /// This tensor on the device named `device` (`/cpu:0`, `/reference:0`,
    /// ...): an identity op placed there, so that eagerly it is a copy (the
    /// tensor itself where it lives there already) and in a graph a node on
    /// that device; tapes and gradients see it like any op.
    #[track_caller]
    pub fn to_device(&self, device: &str) -> Result<Tensor> {
        let _scope = crate::context::device_scope(device)?;
        match self.value() {
            Ok(v) if Some(v.device()) == crate::context::current_device() => Ok(self.clone()),
            _ => ops::identity(self),
        }
    }


            $(
                #[doc = concat!("[`ops::", stringify!($name), "`] as a method.")]
                #[track_caller]
                pub fn $name(&self) -> Result<Tensor> {
                    ops::$name(self)
                }
            )*
        }
    };
}
unary_methods!(
    neg,
    abs,
    sign,
    square,
    relu,
    relu6,
    exp,
    expm1,
    log,
    log1p,
    sqrt,
    rsqrt,
    reciprocal,
    sin,
    cos,
    tan,
    tanh,
    sigmoid,
    elu,
    selu,
    gelu,
    softplus,
    erf,
    floor,
    ceil,
    round,
    logical_not,
    is_nan,
    is_finite
);

macro_rules! binary_methods {
    ($($name:ident),*) => {
        impl Tensor {
            $(
                #[doc = concat!("[`ops::", stringify!($name), "`] as a method.")]
                #[track_caller]
                pub fn $name<'a>(&self, other: impl Into<Operand<'a>>) -> Result<Tensor> {
                    ops::$name(self, other)
                }
            )*
        }
    };
}
binary_methods!(
    add,
    sub,
    mul,
    div,
    floor_div,
    floor_mod,
    pow,
    maximum,
    minimum,
    equal,
    not_equal,
    less,
    less_equal,
    greater,
    greater_equal,
    logical_and,
    logical_or
);

macro_rules! reduce_methods {
    ($($name:ident),*) => {
        impl Tensor {
            $(
                #[doc = concat!("[`ops::", stringify!($name), "`] as a method.")]
                #[track_caller]
                pub fn $name(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
                    ops::$name(self, axes, keepdims)
                }
            )*
        }
    };
}
reduce_methods!(sum, mean, max, min, prod, any, all, logsumexp, variance, std_dev);

impl Tensor {
    /// Sum of all elements (a scalar).
    #[track_caller]
    pub fn sum_all(&self) -> Result<Tensor> {
        ops::sum(self, Axes::All, false)
    }
    /// Mean of all elements (a scalar).
    #[track_caller]
    pub fn mean_all(&self) -> Result<Tensor> {
        ops::mean(self, Axes::All, false)
    }
    /// [`ops::argmax`] as a method.
    #[track_caller]
    pub fn argmax(&self, axis: i64) -> Result<Tensor> {
        ops::argmax(self, axis)
    }
    /// [`ops::argmin`] as a method.
    #[track_caller]
    pub fn argmin(&self, axis: i64) -> Result<Tensor> {
        ops::argmin(self, axis)
    }
    /// [`ops::matmul`] as a method.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        ops::matmul(self, other)
    }
    /// [`ops::reshape`] as a method.
    #[track_caller]
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor> {
        ops::reshape(self, shape)
    }
    /// [`ops::transpose`] as a method.
    #[track_caller]
    pub fn transpose(&self, perm: &[usize]) -> Result<Tensor> {
        ops::transpose(self, perm)
    }
    /// Swap the last two dimensions (matrix transpose, batched).
    #[track_caller]
    pub fn t(&self) -> Result<Tensor> {
        let r = self.rank();
        if r < 2 {
            return ops::transpose(self, &(0..r).collect::<Vec<_>>());
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        ops::transpose(self, &perm)
    }
    /// [`ops::expand_dims`] as a method.
    #[track_caller]
    pub fn expand_dims(&self, axis: i64) -> Result<Tensor> {
        ops::expand_dims(self, axis)
    }
    /// [`ops::squeeze`] as a method.
    #[track_caller]
    pub fn squeeze(&self, axes: &[i64]) -> Result<Tensor> {
        ops::squeeze(self, axes)
    }
    /// [`ops::broadcast_to`] as a method.
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        ops::broadcast_to(self, shape)
    }
    /// [`ops::cast`] as a method.
    #[track_caller]
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        ops::cast(self, dtype)
    }
    /// [`ops::softmax`] as a method.
    #[track_caller]
    pub fn softmax(&self, axis: i64) -> Result<Tensor> {
        ops::softmax(self, axis)
    }
    /// [`ops::log_softmax`] as a method.
    #[track_caller]
    pub fn log_softmax(&self, axis: i64) -> Result<Tensor> {
        ops::log_softmax(self, axis)
    }
    /// NumPy-style indexing ([`ops::strided_slice`]).
    #[track_caller]
    pub fn index(&self, spec: &[SliceItem]) -> Result<Tensor> {
        ops::strided_slice(self, spec)
    }
    /// [`ops::clip_by_value`] as a method.
    #[track_caller]
    pub fn clip<'a, 'b>(&self, lo: impl Into<Operand<'a>>, hi: impl Into<Operand<'b>>) -> Result<Tensor> {
        ops::clip_by_value(self, lo, hi)
    }
}
