//! Reductions (`sum`, `mean`, `max`, `min`, `prod`, `any`, `all`), index
//! reductions (`argmax`, `argmin`) and scans (`cumsum`, `cumprod`): the
//! kinds there are and the shapes they give.

use super::Meta;
use crate::error::{bail, Result};
use crate::tensor::{DType, Shape};
use serde::{Deserialize, Serialize};

/// A reduction: how elements along the reduced axes combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    Any,
    All,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 7] =
        [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod, ReduceOp::Any, ReduceOp::All];
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "Sum",
            ReduceOp::Mean => "Mean",
            ReduceOp::Max => "Max",
            ReduceOp::Min => "Min",
            ReduceOp::Prod => "Prod",
            ReduceOp::Any => "Any",
            ReduceOp::All => "All",
        }
    }
    /// The public function's name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
            ReduceOp::Any => "any",
            ReduceOp::All => "all",
        }
    }
    fn is_logical(self) -> bool {
        matches!(self, ReduceOp::Any | ReduceOp::All)
    }
}

/// Shape after reducing `axes` (kept as size 1 with `keepdims`).
pub(crate) fn reduced_shape(shape: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    let mut dims = Vec::with_capacity(shape.rank());
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keepdims {
                dims.push(1);
            }
        } else {
            dims.push(d);
        }
    }
    Shape::from(dims)
}

pub(crate) fn infer_reduce(f: ReduceOp, axes: &[usize], keepdims: bool, x: &Meta) -> Result<Meta> {
    if x.dtype.is_complex() {
        bail!(dtype, "{} takes real tensors, got {} (the public functions reduce complex parts)", f.name(), x.dtype);
    }
    if f.is_logical() != (x.dtype == DType::Bool) {
        if f.is_logical() {
            bail!(dtype, "{} needs bool, got {}", f.name(), x.dtype);
        }
        bail!(dtype, "{} needs a numeric dtype, got bool (cast it first)", f.name());
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= x.shape.rank()) {
        bail!(invalid, "axis {a} is out of range for shape {}", x.shape);
    }
    // The kernels rely on the form the public functions give (a loaded
    // graph may hold anything).
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        bail!(invalid, "reduction axes {axes:?} must be distinct and in increasing order");
    }
    Ok(Meta::new(x.dtype, reduced_shape(&x.shape, axes, keepdims)))
}

/// Index reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgOp {
    ArgMax,
    ArgMin,
}

impl ArgOp {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            ArgOp::ArgMax => "ArgMax",
            ArgOp::ArgMin => "ArgMin",
        }
    }
}

pub(crate) fn infer_arg(axis: usize, output: DType, x: &Meta) -> Result<Meta> {
    if !x.dtype.is_numeric() {
        bail!(dtype, "argmax/argmin need a numeric dtype, got {}", x.dtype);
    }
    if !matches!(output, DType::I32 | DType::I64) {
        bail!(dtype, "argmax/argmin output must be i32 or i64, got {output}");
    }
    if axis >= x.shape.rank() {
        bail!(invalid, "axis {axis} is out of range for shape {}", x.shape);
    }
    if x.shape[axis] == 0 {
        bail!(invalid, "argmax/argmin over axis {axis} of size 0 (shape {})", x.shape);
    }
    Ok(Meta::new(output, reduced_shape(&x.shape, &[axis], false)))
}

/// Scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanOp {
    Cumsum,
    Cumprod,
}

impl ScanOp {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            ScanOp::Cumsum => "Cumsum",
            ScanOp::Cumprod => "Cumprod",
        }
    }
}

pub(crate) fn infer_scan(axis: usize, x: &Meta) -> Result<Meta> {
    if !x.dtype.is_numeric() {
        bail!(dtype, "cumsum/cumprod need a numeric dtype, got {}", x.dtype);
    }
    if axis >= x.shape.rank() {
        bail!(invalid, "axis {axis} is out of range for shape {}", x.shape);
    }
    Ok(x.clone())
}
