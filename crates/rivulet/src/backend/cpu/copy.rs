//! Contiguous copies of strided values: the one place a layout becomes a
//! fresh row-major buffer (tiled for transposed matrices).

use super::elementwise::map_unary;
use crate::error::Result;
use crate::tensor::dtype::Element;
use crate::tensor::storage::HostBuffer;
use crate::tensor::{DType, Value};
use rayon::prelude::*;

/// A contiguous copy of `v` (or `v` itself when already contiguous).
pub(crate) fn materialize(v: &Value) -> Result<Value> {
    if v.layout.is_contiguous() {
        return Ok(v.clone());
    }
    copy(v)
}

/// A fresh contiguous copy of `v`.
pub(crate) fn copy(v: &Value) -> Result<Value> {
    fn typed<T: Element>(v: &Value) -> Result<Value> {
        copy_transposed::<T>(v).unwrap_or_else(|| map_unary(v, |x: T| x))
    }
    // Copies only move bytes: dispatch on element size, not dtype.
    let r = match v.dtype.size() {
        1 => typed::<u8>(&v.retyped(DType::U8)),
        2 => typed::<half::f16>(&v.retyped(DType::F16)),
        4 => typed::<i32>(&v.retyped(DType::I32)),
        8 => typed::<i64>(&v.retyped(DType::I64)),
        _ => typed::<crate::tensor::Complex<f64>>(&v.retyped(DType::C128)),
    }?;
    Ok(r.retyped(v.dtype))
}

/// Destination rows per task of [`copy_transposed`].
const TILE: usize = 64;
/// Edge of the square blocks [`transpose_band`] moves at once (a whole
/// 64-byte line of f32), through AVX-512 registers or a local array.
const BLOCK: usize = 16;

/// A contiguous copy of a batch of column-major matrices (the view of a
/// contiguous tensor with its last two axes swapped), tile by tile: an
/// element-by-element copy would read with a stride of a whole row and miss
/// the cache on nearly every element. `None` for other layouts.
fn copy_transposed<T: Element>(v: &Value) -> Option<Result<Value>> {
    let l = &v.layout;
    let r = l.shape.rank();
    if r < 2 {
        return None;
    }
    let (rows, cols) = (l.shape[r - 2], l.shape[r - 1]);
    let size = rows * cols;
    // Batch axes laid out contiguously, one column-major matrix after another.
    let mut expect = size as isize;
    for a in (0..r - 2).rev() {
        if l.shape[a] > 1 && l.strides[a] != expect {
            return None;
        }
        expect *= l.shape[a] as isize;
    }
    if l.strides[r - 2] != 1 || l.strides[r - 1] != rows as isize || rows < BLOCK || cols < BLOCK {
        return None;
    }
    let src = v.buffer::<T>().get(l.offset..l.offset + size * l.shape[..r - 2].iter().product::<usize>())?;
    let mut buf = match HostBuffer::for_elements::<T>(src.len()) {
        Ok(b) => b,
        Err(e) => return Some(Err(e)),
    };
    // Tasks of TILE destination rows of one matrix; within a task, 16 x 16
    // blocks (whole cache lines of f32) at a time.
    buf.as_mut_slice::<T>().par_chunks_mut(size).zip(src.par_chunks(size)).for_each(|(dst, m)| {
        dst.par_chunks_mut(TILE * cols).enumerate().for_each(|(t, band)| {
            transpose_band(m, band, t * TILE, rows, cols);
        });
    });
    Some(Ok(Value::from_buffer(T::DTYPE, l.shape.clone(), buf)))
}

/// Destination rows `i0..` (as many as `band` holds) of the transpose of the
/// column-major `rows x cols` matrix `m`.
fn transpose_band<T: Element>(m: &[T], band: &mut [T], i0: usize, rows: usize, cols: usize) {
    let band_rows = band.len() / cols;
    #[cfg(target_arch = "x86_64")]
    let registers = std::mem::size_of::<T>() == 4 && super::simd::has_avx512();
    for ib in (0..band_rows).step_by(BLOCK) {
        for jb in (0..cols).step_by(BLOCK) {
            #[cfg(target_arch = "x86_64")]
            if registers && ib + BLOCK <= band_rows && jb + BLOCK <= cols {
                // The block reads up to (jb + 15) * rows + i0 + ib + 16 and
                // writes up to (ib + 15) * cols + jb + 16.
                let src = m.get(jb * rows + i0 + ib..).filter(|s| s.len() >= (BLOCK - 1) * rows + BLOCK);
                let dst = band.get_mut(ib * cols + jb..).filter(|d| d.len() >= (BLOCK - 1) * cols + BLOCK);
                if let (Some(src), Some(dst)) = (src, dst) {
                    // SAFETY: AVX-512F is present (simd_level), the element
                    // type is 4 bytes of plain data, and the bounds are
                    // checked just above.
                    unsafe {
                        x86::transpose_16x16(src.as_ptr().cast(), rows, dst.as_mut_ptr().cast(), cols);
                    }
                    continue;
                }
            }
            if ib + BLOCK <= band_rows && jb + BLOCK <= cols {
                let mut block = [[T::default(); BLOCK]; BLOCK];
                for (jj, col) in block.iter_mut().enumerate() {
                    let start = (jb + jj) * rows + i0 + ib;
                    col.copy_from_slice(&m[start..start + BLOCK]);
                }
                for ii in 0..BLOCK {
                    let row = &mut band[(ib + ii) * cols + jb..(ib + ii) * cols + jb + BLOCK];
                    for (jj, o) in row.iter_mut().enumerate() {
                        *o = block[jj][ii];
                    }
                }
            } else {
                for ii in ib..(ib + BLOCK).min(band_rows) {
                    for jj in jb..(jb + BLOCK).min(cols) {
                        band[ii * cols + jj] = m[jj * rows + i0 + ii];
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Transpose a 16 x 16 block of 4-byte elements in registers:
    /// `dst[i * dst_stride + j] = src[j * src_stride + i]` for `i, j < 16`
    /// (the 16 contiguous runs of the source become the columns of the
    /// destination). Shuffles move bits unchanged, so any 4-byte type goes
    /// through as f32.
    ///
    /// # Safety
    /// AVX-512F must be available; the 16 source columns and 16 destination
    /// rows of 16 elements must be in bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_16x16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY (loads and stores): in bounds by the caller's contract.
        let r: [__m512; 16] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(src.add(j * src_stride)) });
        // Interleave pairs, then quads: u[4g + q] holds, in 128-bit lane L,
        // element 4L + q of inputs 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let (t0, t1) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
            let (t2, t3) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
            u[4 * g] = _mm512_shuffle_ps::<0x44>(t0, t2);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t0, t2);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t1, t3);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t1, t3);
        }
        // Gather the lanes: v[q] holds lanes 0 and 2 of u[q], u[4 + q];
        // v[4 + q] lanes 1 and 3 (and v[8..] the same for u[8..]).
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for q in 0..4 {
                let (a, b) = (u[8 * h + q], u[8 * h + 4 + q]);
                v[8 * h + q] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + q] = _mm512_shuffle_f32x4::<0xDD>(a, b);
            }
        }
        for q in 0..4 {
            let rows = [
                (q, _mm512_shuffle_f32x4::<0x88>(v[q], v[8 + q])),
                (8 + q, _mm512_shuffle_f32x4::<0xDD>(v[q], v[8 + q])),
                (4 + q, _mm512_shuffle_f32x4::<0x88>(v[4 + q], v[12 + q])),
                (12 + q, _mm512_shuffle_f32x4::<0xDD>(v[4 + q], v[12 + q])),
            ];
            for (row, x) in rows {
                unsafe { _mm512_storeu_ps(dst.add(row * dst_stride), x) };
            }
        }
    }
}
