//! Elementwise ops (plain or fused) that write their result into an input
//! buffer that dies at that op (the plan marks such steps; the executor
//! hands the input over).
//! The same scalar functions as the ordinary kernels: the same bits.

use super::elementwise::{f32_unary, float_binary_fn};
use super::loops::{Update, ZipInPlace};
use super::simd::vectorize;
use crate::op::{Meta, Op};
use crate::tensor::layout::Layout;
use crate::tensor::{DType, Value};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// Run `op` writing into `inputs[pos]`'s buffer, when that buffer is an f32
/// array of exactly the output's shape that nobody else holds. `None` when
/// that is not the case (the caller runs the op normally).
pub(crate) fn try_in_place(op: &Op, inputs: &[&Value], pos: usize, out: &Meta) -> Option<Value> {
    let x = inputs.get(pos)?;
    let n = out.shape.numel()?;
    let unique = std::sync::Arc::strong_count(&x.storage) == 1;
    let whole = x.layout.offset == 0 && x.layout.is_contiguous() && x.storage.host().len_bytes() == n * 4;
    if !unique || !whole || x.dtype != DType::F32 || out.dtype != DType::F32 || x.shape() != &out.shape {
        return None;
    }
    // SAFETY: the buffer holds n f32 values; the strong count of 1 (checked
    // above, and the executor holds that one reference) means no other view
    // can read or write it while we do; chunks below are disjoint. Made only
    // by the arms that use it (the fused one reads and writes through its own
    // pointer).
    let data = || unsafe { std::slice::from_raw_parts_mut(x.storage.host().raw_ptr() as *mut f32, n) };
    let done = match op {
        Op::Unary { f } => f32_unary!(*f, g => {
            data().par_chunks_mut(CHUNK).for_each(|c| vectorize(Update { x: c, f: g }));
            true
        }, false),
        Op::Binary { f } => {
            let other = inputs[1 - pos];
            let (y, stride): (&[f32], usize) = match (other.dtype, other.contiguous_slice::<f32>()) {
                (DType::F32, Some(s)) if s.len() == n => (s, 1),
                (DType::F32, Some(s)) if s.len() == 1 => (s, 0),
                _ => return None,
            };
            float_binary_fn!(f32, *f, g => {
                data().par_chunks_mut(CHUNK).enumerate().for_each(|(k, c)| {
                    let ys = if stride == 1 { &y[k * CHUNK..k * CHUNK + c.len()] } else { y };
                    if pos == 0 {
                        vectorize(ZipInPlace { x: c, y: ys, stride, f: g });
                    } else {
                        vectorize(ZipInPlace { x: c, y: ys, stride, f: |b: f32, a: f32| g(a, b) });
                    }
                });
                true
            }, false)
        }
        Op::FusedElementwise { program } => super::fused::fused_elementwise_in_place(program, inputs, pos).is_some(),
        _ => false,
    };
    done.then(|| Value { dtype: DType::F32, layout: Layout::contiguous(out.shape.clone()), storage: x.storage.clone() })
}
