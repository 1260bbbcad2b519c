//! Ops whose algorithm is sequential along each row (isotonic regression's
//! pool-adjacent-violators, a row's distinct values in order of first
//! appearance): one kernel on the CPU; any other backend copies the inputs
//! to the host, runs it there and copies the outputs back. Their shapes are
//! known from the input's, so they run in graphs as well as eagerly.

use super::{Meta, Metas};
use crate::error::{bail, Result};
use crate::tensor::{DType, Shape};
use serde::{Deserialize, Serialize};
use smallvec::smallvec;

/// The dtype isotonic regression computes and answers in for input `d`:
/// floats keep theirs, int8 and int16 give float32, the other integers
/// float64 (TensorFlow's promotion).
pub(crate) fn isotonic_dtype(d: DType) -> DType {
    match d {
        d if d.is_float() => d,
        DType::I8 | DType::I16 => DType::F32,
        _ => DType::F64,
    }
}

/// A row-sequential algorithm, over the last axis of its one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostOp {
    /// The non-increasing sequence closest to each row in least squares,
    /// and each element's segment (the run of elements pooled to one mean,
    /// numbered from 0 along the row): TensorFlow's `IsotonicRegression`.
    IsotonicRegression,
    /// Each row's distinct values in order of first appearance, padded with
    /// zeros to the row's length (int64), and each element's index among
    /// them (int32): `tf.nn.ctc_unique_labels`.
    UniqueRows,
}

impl HostOp {
    /// The op type as TensorFlow spells it (or a name in its style).
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            HostOp::IsotonicRegression => "IsotonicRegression",
            HostOp::UniqueRows => "UniqueRows",
        }
    }

    /// The outputs' dtypes and shapes (isotonic regression's first output
    /// in [`isotonic_dtype`]).
    pub(crate) fn infer(self, x: &Meta) -> Result<Metas> {
        if x.shape.rank() == 0 {
            bail!(shape, "{} needs rank >= 1, got a scalar", self.type_name());
        }
        let shape: Shape = x.shape.clone();
        Ok(match self {
            HostOp::IsotonicRegression => {
                if !x.dtype.is_numeric() {
                    bail!(dtype, "isotonic_regression needs a numeric dtype, got {}", x.dtype);
                }
                let out = isotonic_dtype(x.dtype);
                smallvec![Meta::new(out, shape.clone()), Meta::new(DType::I32, shape)]
            }
            HostOp::UniqueRows => {
                if !x.dtype.is_int() {
                    bail!(dtype, "ctc_unique_labels needs integer labels, got {}", x.dtype);
                }
                smallvec![Meta::new(DType::I64, shape.clone()), Meta::new(DType::I32, shape)]
            }
        })
    }
}
