//! Matrix products: the shapes they give.

use super::Meta;
use crate::error::{bail, Result};
use crate::tensor::shape::{broadcast_shapes, UNKNOWN};
use crate::tensor::{DType, Shape};

pub(crate) fn infer_matmul(ta: bool, tb: bool, a: &Meta, b: &Meta) -> Result<Meta> {
    if a.dtype != b.dtype {
        bail!(dtype, "matmul needs equal dtypes, got {} and {}", a.dtype, b.dtype);
    }
    if a.dtype == DType::Bool || (a.dtype.is_int() && !matches!(a.dtype, DType::I32 | DType::I64)) {
        bail!(dtype, "matmul does not accept {}", a.dtype);
    }
    if a.shape.rank() < 2 || b.shape.rank() < 2 {
        bail!(shape, "matmul needs rank >= 2 on both sides, got {} and {}", a.shape, b.shape);
    }
    let (ra, rb) = (a.shape.rank(), b.shape.rank());
    let (m, ka) = if ta { (a.shape[ra - 1], a.shape[ra - 2]) } else { (a.shape[ra - 2], a.shape[ra - 1]) };
    let (kb, n) = if tb { (b.shape[rb - 1], b.shape[rb - 2]) } else { (b.shape[rb - 2], b.shape[rb - 1]) };
    if ka != kb && ka != UNKNOWN && kb != UNKNOWN {
        bail!(
            shape,
            "matmul inner dimensions differ: {} x {} (transpose_a={ta}, transpose_b={tb}) contracts {ka} with {kb}",
            a.shape,
            b.shape
        );
    }
    let batch = broadcast_shapes(&Shape::new(&a.shape[..ra - 2]), &Shape::new(&b.shape[..rb - 2]))?;
    let mut dims = batch.to_vec();
    dims.push(m);
    dims.push(n);
    Ok(Meta::new(a.dtype, Shape::from(dims)))
}
