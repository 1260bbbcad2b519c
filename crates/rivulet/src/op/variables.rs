//! Variable ops: how an `Assign` node changes its variable, and the shapes
//! it accepts.

use super::Meta;
use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};

/// How an `Assign` node changes its variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignOp {
    /// `var = value`
    Assign,
    /// `var += value`
    AssignAdd,
    /// `var -= value`
    AssignSub,
}

impl AssignOp {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            AssignOp::Assign => "Assign",
            AssignOp::AssignAdd => "AssignAdd",
            AssignOp::AssignSub => "AssignSub",
        }
    }
}

pub(crate) fn infer_assign(f: AssignOp, var: &Meta, value: &Meta) -> Result<Meta> {
    if var.dtype != value.dtype {
        bail!(dtype, "{} of a {} variable with a {} value", f.type_name(), var.dtype, value.dtype);
    }
    if !var.shape.is_compatible_with(&value.shape) {
        bail!(shape, "{} of a variable of shape {} with a value of shape {}", f.type_name(), var.shape, value.shape);
    }
    Ok(var.clone())
}
