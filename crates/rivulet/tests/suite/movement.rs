//! Data-movement ops: reshape, transpose, expand_dims, squeeze, broadcast_to,
//! concat, stack, unstack, split, slice, strided_slice, gather, gather_nd,
//! scatter_nd, tile, pad, reverse, one_hot and identity.
//!
//! Expected values are written out by hand or computed by index-level
//! reference code in this file (never by the library itself). Inputs include
//! rank-0 and empty tensors and non-contiguous views (transposes, strided
//! slices, reversals).

use crate::common::*;

use proptest::prelude::*;
use rivulet::ops::{self, PadMode, SliceItem};
use rivulet::{DType, ErrorKind, Tensor};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `0, 1, 2, ...` as f32 in `shape` (row-major).
fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<f32>>(), shape).unwrap()
}

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// Shape and values of an f32 tensor in one assertion.
#[track_caller]
fn check(t: &Tensor, shape: &[usize], expected: &[f32]) {
    assert_eq!(t.dtype(), DType::F32, "dtype");
    assert_eq!(dims(t), shape, "shape");
    assert_eq!(vals(t), expected, "values");
}

/// Reference transpose of row-major `data`: output dim `i` is input dim `perm[i]`.
fn permute_ref<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> (Vec<T>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let oi = unravel(i, &out_shape);
        let mut ii = vec![0; shape.len()];
        for (k, &p) in perm.iter().enumerate() {
            ii[p] = oi[k];
        }
        out.push(data[ravel(&ii, shape)]);
    }
    (out, out_shape)
}

/// A transposed (non-contiguous) view of `iota(rows x cols)`: shape
/// `[cols, rows]`, element `[i, j]` = `j * cols + i`.
fn transposed_iota(rows: usize, cols: usize) -> Tensor {
    let t = ops::transpose(&iota(&[rows, cols]), &[]).unwrap();
    assert_eq!(dims(&t), [cols, rows]);
    t
}

fn i32s(data: &[i32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

fn i64s(data: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

// ---------------------------------------------------------------------------
// reshape
// ---------------------------------------------------------------------------

#[test]
fn reshape_with_inferred_dimension() {
    let x = iota(&[2, 3]);
    check(&ops::reshape(&x, &[3, -1]).unwrap(), &[3, 2], &[0., 1., 2., 3., 4., 5.]);
    check(&ops::reshape(&x, &[-1]).unwrap(), &[6], &[0., 1., 2., 3., 4., 5.]);
    check(&ops::reshape(&x, &[1, -1, 1]).unwrap(), &[1, 6, 1], &[0., 1., 2., 3., 4., 5.]);
    check(&ops::reshape(&x, &[2, 1, 3]).unwrap(), &[2, 1, 3], &[0., 1., 2., 3., 4., 5.]);
    // Method syntax forwards to the same op.
    check(&x.reshape(&[6, 1]).unwrap(), &[6, 1], &[0., 1., 2., 3., 4., 5.]);
}

#[test]
fn reshape_to_and_from_scalars() {
    let s = Tensor::scalar(5.0f32);
    assert_eq!(s.rank(), 0);
    check(&ops::reshape(&s, &[1, 1]).unwrap(), &[1, 1], &[5.0]);
    check(&ops::reshape(&s, &[-1]).unwrap(), &[1], &[5.0]);
    let one = f32s(&[7.0], &[1, 1, 1]);
    let back = ops::reshape(&one, &[]).unwrap();
    check(&back, &[], &[7.0]);
    assert_eq!(back.to_scalar::<f32>().unwrap(), 7.0);
    assert_eq!(kind(ops::reshape(&s, &[2])), ErrorKind::Shape);
    assert_eq!(kind(ops::reshape(&iota(&[2]), &[])), ErrorKind::Shape);
}

#[test]
fn reshape_empty() {
    let e = Tensor::zeros([0, 3], DType::F32).unwrap();
    check(&ops::reshape(&e, &[3, 0]).unwrap(), &[3, 0], &[]);
    check(&ops::reshape(&e, &[-1, 3]).unwrap(), &[0, 3], &[]);
    check(&ops::reshape(&e, &[0]).unwrap(), &[0], &[]);
    assert_eq!(kind(ops::reshape(&e, &[1])), ErrorKind::Shape);
}

/// Materialising swapped last axes of large batched tensors (the tiled
/// transpose path) for every element size, with edges that are not whole
/// tiles, against index arithmetic.
#[test]
fn reshape_of_large_transposed_batches_every_element_size() {
    for &(batch, rows, cols) in
        &[(1usize, 16usize, 16usize), (1, 37, 53), (3, 130, 70), (2, 64, 17), (1, 512, 256), (2, 48, 80)]
    {
        let n = batch * rows * cols;
        let want = |b: usize, i: usize, j: usize| (b * rows * cols + j * cols + i) as i64;
        let mut expected = Vec::with_capacity(n);
        for b in 0..batch {
            for i in 0..cols {
                for j in 0..rows {
                    expected.push(want(b, i, j));
                }
            }
        }
        let base: Vec<i64> = (0..n as i64).collect();
        for dtype in [DType::U8, DType::F16, DType::F32, DType::I64] {
            let x = Tensor::from_vec(base.clone(), [batch, rows, cols]).unwrap().cast(dtype).unwrap();
            let t = ops::transpose(&x, &[0, 2, 1]).unwrap();
            let flat = ops::reshape(&t, &[-1]).unwrap().cast(DType::I64).unwrap().to_vec::<i64>().unwrap();
            let wrap = |v: i64| match dtype {
                DType::U8 => v % 256,
                DType::F16 => half::f16::from_f64(v as f64).to_f64() as i64,
                _ => v,
            };
            let exp: Vec<i64> = expected.iter().map(|&v| wrap(v)).collect();
            assert_eq!(flat, exp, "{dtype} batch {batch} of {rows}x{cols}");
        }
    }
}

#[test]
fn reshape_of_transposed_view_uses_logical_order() {
    // iota(2x3)^T = [[0,3],[1,4],[2,5]]
    let t = transposed_iota(2, 3);
    check(&ops::reshape(&t, &[6]).unwrap(), &[6], &[0., 3., 1., 4., 2., 5.]);
    check(&ops::reshape(&t, &[2, 3]).unwrap(), &[2, 3], &[0., 3., 1., 4., 2., 5.]);
    check(&ops::reshape(&t, &[-1, 2]).unwrap(), &[3, 2], &[0., 3., 1., 4., 2., 5.]);
    // And a reshape of the result transposed again.
    let r = ops::reshape(&t, &[2, 3]).unwrap();
    check(&ops::transpose(&r, &[]).unwrap(), &[3, 2], &[0., 4., 3., 2., 1., 5.]);
}

#[test]
fn reshape_of_strided_slice() {
    // iota(4x4)[::2, 1:3] = [[1,2],[9,10]]
    let x = iota(&[4, 4]);
    let v = ops::strided_slice(&x, &[SliceItem::stepped(None, None, 2), (1..3).into()]).unwrap();
    check(&v, &[2, 2], &[1., 2., 9., 10.]);
    check(&ops::reshape(&v, &[4]).unwrap(), &[4], &[1., 2., 9., 10.]);
    check(&ops::reshape(&v, &[1, 4, 1]).unwrap(), &[1, 4, 1], &[1., 2., 9., 10.]);
    // A reversed view.
    let r = ops::reverse(&iota(&[2, 3]), &[1]).unwrap();
    check(&ops::reshape(&r, &[3, 2]).unwrap(), &[3, 2], &[2., 1., 0., 5., 4., 3.]);
    // A broadcast view (stride 0).
    let b = ops::broadcast_to(&f32s(&[1., 2., 3.], &[3]), [2, 3]).unwrap();
    check(&ops::reshape(&b, &[6]).unwrap(), &[6], &[1., 2., 3., 1., 2., 3.]);
    check(&ops::reshape(&b, &[3, 2]).unwrap(), &[3, 2], &[1., 2., 3., 1., 2., 3.]);
    // An expanded transposed view.
    let e = ops::expand_dims(&transposed_iota(2, 3), 0).unwrap();
    check(&ops::reshape(&e, &[2, 3]).unwrap(), &[2, 3], &[0., 3., 1., 4., 2., 5.]);
}

#[test]
fn reshape_errors() {
    let x = iota(&[2, 3]);
    assert_eq!(kind(ops::reshape(&x, &[4])), ErrorKind::Shape);
    assert_eq!(kind(ops::reshape(&x, &[4, -1])), ErrorKind::Shape);
    assert_eq!(kind(ops::reshape(&x, &[2, 2, 2])), ErrorKind::Shape);
    assert_eq!(kind(ops::reshape(&x, &[-1, -1])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::reshape(&x, &[-2, -3])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::reshape(&x, &[3, -2])), ErrorKind::InvalidArgument);
}

#[test]
fn reshape_keeps_integer_dtype() {
    let x = i64s(&[1, 2, 3, 4], &[4]);
    let r = ops::reshape(&x, &[2, 2]).unwrap();
    assert_eq!(r.dtype(), DType::I64);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------
// transpose
// ---------------------------------------------------------------------------

#[test]
fn transpose_matrix_by_hand() {
    let x = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    check(&ops::transpose(&x, &[1, 0]).unwrap(), &[3, 2], &[1., 4., 2., 5., 3., 6.]);
    check(&ops::transpose(&x, &[]).unwrap(), &[3, 2], &[1., 4., 2., 5., 3., 6.]);
    check(&ops::transpose(&x, &[0, 1]).unwrap(), &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    check(&x.t().unwrap(), &[3, 2], &[1., 4., 2., 5., 3., 6.]);
}

#[test]
fn transpose_rank3_perm() {
    let x = iota(&[2, 3, 4]);
    let y = ops::transpose(&x, &[2, 0, 1]).unwrap();
    assert_eq!(dims(&y), [4, 2, 3]);
    // y[i, j, k] = x[j, k, i] = 12 j + 4 k + i
    let v = vals(&y);
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(v[i * 6 + j * 3 + k], (12 * j + 4 * k + i) as f32, "y[{i},{j},{k}]");
            }
        }
    }
    // Hand-written first row of the output: y[0, 0, :] = x[0, :, 0] = 0, 4, 8.
    assert_eq!(&v[..3], &[0., 4., 8.]);
}

#[test]
fn transpose_empty_perm_reverses_dims() {
    let x = iota(&[2, 3, 4]);
    let y = ops::transpose(&x, &[]).unwrap();
    let (expect, shape) = permute_ref(&vals(&x), &[2, 3, 4], &[2, 1, 0]);
    check(&y, &shape, &expect);
    assert_eq!(shape, [4, 3, 2]);
    // y[1, 2, 0] = x[0, 2, 1] = 9
    assert_eq!(vals(&y)[6 + 2 * 2], 9.0);
}

#[test]
fn transpose_scalar_empty_and_views() {
    let s = Tensor::scalar(3.0f32);
    check(&ops::transpose(&s, &[]).unwrap(), &[], &[3.0]);
    let e = Tensor::zeros([0, 3], DType::F32).unwrap();
    check(&ops::transpose(&e, &[]).unwrap(), &[3, 0], &[]);
    // Transpose of a transposed view is the original.
    let t = transposed_iota(3, 4);
    check(&ops::transpose(&t, &[1, 0]).unwrap(), &[3, 4], &vals(&iota(&[3, 4])));
    // Transpose of a strided slice: iota(4x4)[::2, ::3] = [[0,3],[8,11]].
    let v = ops::strided_slice(&iota(&[4, 4]), &[SliceItem::stepped(None, None, 2), SliceItem::stepped(None, None, 3)])
        .unwrap();
    check(&ops::transpose(&v, &[]).unwrap(), &[2, 2], &[0., 8., 3., 11.]);
}

#[test]
fn transpose_invalid_perm() {
    let x = iota(&[2, 3]);
    assert_eq!(kind(ops::transpose(&x, &[0, 0])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::transpose(&x, &[0])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::transpose(&x, &[0, 1, 2])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::transpose(&x, &[0, 2])), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// expand_dims / squeeze
// ---------------------------------------------------------------------------

#[test]
fn expand_dims_positions() {
    let x = iota(&[2, 3]);
    let all = [0., 1., 2., 3., 4., 5.];
    check(&ops::expand_dims(&x, 0).unwrap(), &[1, 2, 3], &all);
    check(&ops::expand_dims(&x, 1).unwrap(), &[2, 1, 3], &all);
    check(&ops::expand_dims(&x, 2).unwrap(), &[2, 3, 1], &all);
    check(&ops::expand_dims(&x, -1).unwrap(), &[2, 3, 1], &all);
    check(&ops::expand_dims(&x, -2).unwrap(), &[2, 1, 3], &all);
    check(&ops::expand_dims(&x, -3).unwrap(), &[1, 2, 3], &all);
    assert_eq!(kind(ops::expand_dims(&x, 3)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::expand_dims(&x, -4)), ErrorKind::InvalidArgument);
}

#[test]
fn expand_dims_scalar_empty_and_view() {
    check(&ops::expand_dims(&Tensor::scalar(2.0f32), 0).unwrap(), &[1], &[2.0]);
    check(&ops::expand_dims(&Tensor::scalar(2.0f32), -1).unwrap(), &[1], &[2.0]);
    let e = Tensor::zeros([0], DType::F32).unwrap();
    check(&ops::expand_dims(&e, 0).unwrap(), &[1, 0], &[]);
    let t = transposed_iota(2, 3); // [[0,3],[1,4],[2,5]]
    let y = ops::expand_dims(&t, 1).unwrap();
    check(&y, &[3, 1, 2], &[0., 3., 1., 4., 2., 5.]);
    // Use the expanded view in a copying op (concat along the new axis).
    check(&ops::concat(&[&y, &y], 1).unwrap(), &[3, 2, 2], &[0., 3., 0., 3., 1., 4., 1., 4., 2., 5., 2., 5.]);
}

#[test]
fn squeeze_all_and_listed() {
    let x = iota(&[1, 2, 1, 3, 1]);
    let all = [0., 1., 2., 3., 4., 5.];
    check(&ops::squeeze(&x, &[]).unwrap(), &[2, 3], &all);
    check(&ops::squeeze(&x, &[0, -1]).unwrap(), &[2, 1, 3], &all);
    check(&ops::squeeze(&x, &[2]).unwrap(), &[1, 2, 3, 1], &all);
    check(&ops::squeeze(&x, &[-3, 0, 4]).unwrap(), &[2, 3], &all);
    // All ones squeeze to a scalar.
    let s = ops::squeeze(&f32s(&[4.0], &[1, 1]), &[]).unwrap();
    check(&s, &[], &[4.0]);
    // Nothing to squeeze.
    check(&ops::squeeze(&iota(&[2, 3]), &[]).unwrap(), &[2, 3], &all);
    // Empty tensors keep their zero dimension.
    let e = Tensor::zeros([0, 1], DType::F32).unwrap();
    check(&ops::squeeze(&e, &[]).unwrap(), &[0], &[]);
}

#[test]
fn squeeze_view_input() {
    // iota(2x3)[:, 1:2] = [[1],[4]] (strided view) -> [1, 4]
    let v = ops::strided_slice(&iota(&[2, 3]), &[SliceItem::ALL, (1..2).into()]).unwrap();
    check(&ops::squeeze(&v, &[1]).unwrap(), &[2], &[1., 4.]);
    let t = ops::transpose(&iota(&[1, 3]), &[]).unwrap(); // [3, 1]
    check(&ops::squeeze(&t, &[]).unwrap(), &[3], &[0., 1., 2.]);
}

#[test]
fn squeeze_errors() {
    let x = iota(&[1, 2, 1]);
    assert_eq!(kind(ops::squeeze(&x, &[1])), ErrorKind::Shape);
    assert_eq!(kind(ops::squeeze(&x, &[3])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::squeeze(&x, &[-4])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::squeeze(&x, &[0, 0])), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// broadcast_to
// ---------------------------------------------------------------------------

#[test]
fn broadcast_to_by_hand() {
    let x = f32s(&[1., 2., 3.], &[3]);
    check(&ops::broadcast_to(&x, [2, 3]).unwrap(), &[2, 3], &[1., 2., 3., 1., 2., 3.]);
    let c = f32s(&[1., 2., 3.], &[3, 1]);
    check(&ops::broadcast_to(&c, [3, 2]).unwrap(), &[3, 2], &[1., 1., 2., 2., 3., 3.]);
    check(&ops::broadcast_to(&c, [2, 3, 2]).unwrap(), &[2, 3, 2], &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
    let s = Tensor::scalar(9.0f32);
    check(&ops::broadcast_to(&s, [2, 2]).unwrap(), &[2, 2], &[9.; 4]);
    check(&ops::broadcast_to(&s, [0]).unwrap(), &[0], &[]);
    check(&ops::broadcast_to(&f32s(&[5.], &[1]), [0, 2]).unwrap(), &[0, 2], &[]);
    // Same shape is the identity.
    check(&ops::broadcast_to(&x, [3]).unwrap(), &[3], &[1., 2., 3.]);
}

#[test]
fn broadcast_to_from_views() {
    let t = transposed_iota(2, 3); // [[0,3],[1,4],[2,5]]
    check(&ops::broadcast_to(&t, [2, 3, 2]).unwrap(), &[2, 3, 2], &[0., 3., 1., 4., 2., 5., 0., 3., 1., 4., 2., 5.]);
    // iota(2x3)[:, ::-2] = [[2,0],[5,3]] then as [2,1,2] broadcast to [2,2,2]
    let v =
        ops::strided_slice(&iota(&[2, 3]), &[SliceItem::ALL, SliceItem::NewAxis, SliceItem::stepped(None, None, -2)])
            .unwrap();
    check(&v, &[2, 1, 2], &[2., 0., 5., 3.]);
    check(&ops::broadcast_to(&v, [2, 2, 2]).unwrap(), &[2, 2, 2], &[2., 0., 2., 0., 5., 3., 5., 3.]);
}

#[test]
fn broadcast_to_invalid() {
    let x = iota(&[3]);
    assert_eq!(kind(ops::broadcast_to(&x, [4])), ErrorKind::Shape);
    assert_eq!(kind(ops::broadcast_to(&x, [3, 2])), ErrorKind::Shape);
    assert_eq!(kind(ops::broadcast_to(&iota(&[2, 3]), [3])), ErrorKind::Shape);
    assert_eq!(kind(ops::broadcast_to(&iota(&[2, 3]), [2, 1])), ErrorKind::Shape);
}

// ---------------------------------------------------------------------------
// concat / stack / unstack
// ---------------------------------------------------------------------------

#[test]
fn concat_axis0_and_axis1_different_sizes() {
    let a = Tensor::from([[1.0f32, 2.0]]);
    let b = Tensor::from([[3.0f32, 4.0], [5.0, 6.0]]);
    check(&ops::concat(&[&a, &b], 0).unwrap(), &[3, 2], &[1., 2., 3., 4., 5., 6.]);
    check(&ops::concat(&[&b, &a], -2).unwrap(), &[3, 2], &[3., 4., 5., 6., 1., 2.]);
    let c = f32s(&[1., 2.], &[2, 1]);
    check(&ops::concat(&[&c, &b], 1).unwrap(), &[2, 3], &[1., 3., 4., 2., 5., 6.]);
    check(&ops::concat(&[&b, &c, &c], -1).unwrap(), &[2, 4], &[3., 4., 1., 1., 5., 6., 2., 2.]);
    // One input is the identity.
    check(&ops::concat(&[&b], 0).unwrap(), &[2, 2], &[3., 4., 5., 6.]);
}

#[test]
fn concat_rank3_all_axes_vs_reference() {
    let a = iota(&[2, 3, 4]);
    let b = ops::add(&iota(&[2, 3, 4]), 100.0f32).unwrap();
    let (av, bv) = (vals(&a), vals(&b));
    for axis in 0..3 {
        let y = ops::concat(&[&a, &b], axis as i64).unwrap();
        let mut shape = vec![2, 3, 4];
        shape[axis] *= 2;
        let n: usize = shape.iter().product();
        let expect: Vec<f32> = (0..n)
            .map(|i| {
                let mut idx = unravel(i, &shape);
                if idx[axis] < [2, 3, 4][axis] {
                    av[ravel(&idx, &[2, 3, 4])]
                } else {
                    idx[axis] -= [2, 3, 4][axis];
                    bv[ravel(&idx, &[2, 3, 4])]
                }
            })
            .collect();
        check(&y, &shape, &expect);
    }
}

#[test]
fn concat_non_contiguous_and_empty_inputs() {
    let t = transposed_iota(2, 3); // [[0,3],[1,4],[2,5]]
    let r = ops::reverse(&iota(&[3, 2]), &[0]).unwrap(); // [[4,5],[2,3],[0,1]]
    check(&ops::concat(&[&t, &r], 1).unwrap(), &[3, 4], &[0., 3., 4., 5., 1., 4., 2., 3., 2., 5., 0., 1.]);
    check(&ops::concat(&[&t, &r], 0).unwrap(), &[6, 2], &[0., 3., 1., 4., 2., 5., 4., 5., 2., 3., 0., 1.]);
    let e = Tensor::zeros([0, 2], DType::F32).unwrap();
    check(&ops::concat(&[&e, &t, &e], 0).unwrap(), &[3, 2], &[0., 3., 1., 4., 2., 5.]);
    let e1 = Tensor::zeros([3, 0], DType::F32).unwrap();
    check(&ops::concat(&[&e1, &t], 1).unwrap(), &[3, 2], &[0., 3., 1., 4., 2., 5.]);
    check(&ops::concat(&[&e, &e], 0).unwrap(), &[0, 2], &[]);
}

#[test]
fn concat_integer_and_bool() {
    let a = i64s(&[1, 2], &[2]);
    let b = i64s(&[3], &[1]);
    let y = ops::concat(&[&a, &b], 0).unwrap();
    assert_eq!(y.dtype(), DType::I64);
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![1, 2, 3]);
    let p = Tensor::from([true, false]);
    let q = Tensor::from([true]);
    assert_eq!(ops::concat(&[&q, &p], 0).unwrap().to_vec::<bool>().unwrap(), vec![true, true, false]);
}

#[test]
fn concat_errors() {
    let a = iota(&[2, 2]);
    let b = iota(&[2, 3]);
    assert_eq!(kind(ops::concat(&[&a, &b], 0)), ErrorKind::Shape);
    assert_eq!(kind(ops::concat(&[&a, &iota(&[4])], 0)), ErrorKind::Shape);
    let ai = i32s(&[1, 2, 3, 4], &[2, 2]);
    assert_eq!(kind(ops::concat(&[&a, &ai], 0)), ErrorKind::DType);
    assert_eq!(kind(ops::concat(&[&a, &a], 2)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::concat(&[], 0)), ErrorKind::InvalidArgument);
    let s = Tensor::scalar(1.0f32);
    assert!(ops::concat(&[&s, &s], 0).is_err(), "scalars have no axis to concatenate along");
}

#[test]
fn stack_axes() {
    let a = f32s(&[1., 2.], &[2]);
    let b = f32s(&[3., 4.], &[2]);
    check(&ops::stack(&[&a, &b], 0).unwrap(), &[2, 2], &[1., 2., 3., 4.]);
    check(&ops::stack(&[&a, &b], 1).unwrap(), &[2, 2], &[1., 3., 2., 4.]);
    check(&ops::stack(&[&a, &b], -1).unwrap(), &[2, 2], &[1., 3., 2., 4.]);
    check(&ops::stack(&[&a, &b, &a], 0).unwrap(), &[3, 2], &[1., 2., 3., 4., 1., 2.]);
    let s = [Tensor::scalar(1.0f32), Tensor::scalar(2.0f32), Tensor::scalar(3.0f32)];
    check(&ops::stack(&[&s[0], &s[1], &s[2]], 0).unwrap(), &[3], &[1., 2., 3.]);
    // Matrices (one a transposed view) along the middle axis.
    let m = iota(&[3, 2]);
    let t = transposed_iota(2, 3);
    check(&ops::stack(&[&m, &t], 1).unwrap(), &[3, 2, 2], &[0., 1., 0., 3., 2., 3., 1., 4., 4., 5., 2., 5.]);
    assert_eq!(kind(ops::stack(&[&a, &iota(&[3])], 0)), ErrorKind::Shape);
    assert_eq!(kind(ops::stack(&[&a, &b], 2)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::stack(&[], 0)), ErrorKind::InvalidArgument);
}

#[test]
fn unstack_axes() {
    let x = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let rows = ops::unstack(&x, 0).unwrap();
    assert_eq!(rows.len(), 2);
    check(&rows[0], &[3], &[1., 2., 3.]);
    check(&rows[1], &[3], &[4., 5., 6.]);
    let cols = ops::unstack(&x, -1).unwrap();
    assert_eq!(cols.len(), 3);
    check(&cols[0], &[2], &[1., 4.]);
    check(&cols[1], &[2], &[2., 5.]);
    check(&cols[2], &[2], &[3., 6.]);
    // Rank 1 gives scalars.
    let s = ops::unstack(&f32s(&[7., 8.], &[2]), 0).unwrap();
    check(&s[0], &[], &[7.]);
    check(&s[1], &[], &[8.]);
    // Transposed input: rows of the transpose are columns of the original.
    let t = transposed_iota(2, 3);
    let r = ops::unstack(&t, 0).unwrap();
    check(&r[2], &[2], &[2., 5.]);
    // Empty axis gives no tensors.
    assert!(ops::unstack(&Tensor::zeros([0, 3], DType::F32).unwrap(), 0).unwrap().is_empty());
    assert_eq!(kind(ops::unstack(&x, 2)), ErrorKind::InvalidArgument);
    assert!(ops::unstack(&Tensor::scalar(1.0f32), 0).is_err());
}

// Views of tensors with zero elements but a nonzero leading dimension: the
// view's offset moves past the end of the (empty) buffer; reading them back
// (or feeding them to other ops) must still give empty tensors.

#[test]
fn unstack_of_empty_tensor_reads_back() {
    let e = ops::unstack(&Tensor::zeros([2, 0], DType::F32).unwrap(), 0).unwrap();
    assert_eq!(e.len(), 2);
    check(&e[0], &[0], &[]);
    check(&e[1], &[0], &[]);
    let e = ops::unstack(&Tensor::zeros([3, 2, 0], DType::F32).unwrap(), 1).unwrap();
    assert_eq!(e.len(), 2);
    check(&e[1], &[3, 0], &[]);
}

#[test]
fn reverse_of_empty_tensor_reads_back() {
    let y = ops::reverse(&Tensor::zeros([2, 0], DType::F32).unwrap(), &[0]).unwrap();
    check(&y, &[2, 0], &[]);
    check(&ops::concat(&[&y, &y], 1).unwrap(), &[2, 0], &[]);
}

#[test]
fn slice_of_empty_tensor_reads_back() {
    let e = Tensor::zeros([3, 0], DType::F32).unwrap();
    let y = ops::split_sizes(&e, &[1, 2], 0).unwrap();
    check(&y[1], &[2, 0], &[]);
    let y = ops::gather(&e, &i32s(&[2, 1], &[2]), 0, 0).unwrap();
    check(&y, &[2, 0], &[]);
    let y = ops::slice(&e, &[2, 0], &[1, 0]).unwrap();
    check(&y, &[1, 0], &[]);
}

#[test]
fn empty_pieces_at_the_end_of_reversed_views() {
    // A reversed view has a negative stride; an empty piece that starts one
    // past its last element must still read back as empty.
    let r = ops::reverse(&iota(&[4]), &[0]).unwrap();
    check(&r, &[4], &[3., 2., 1., 0.]);
    check(&ops::slice(&r, &[1], &[-1]).unwrap(), &[3], &[2., 1., 0.]);
    check(&ops::slice(&r, &[4], &[0]).unwrap(), &[0], &[]);
    let p = ops::split_sizes(&r, &[4, 0], 0).unwrap();
    check(&p[0], &[4], &[3., 2., 1., 0.]);
    check(&p[1], &[0], &[]);
}

// ---------------------------------------------------------------------------
// split / split_sizes
// ---------------------------------------------------------------------------

#[test]
fn split_equal() {
    let p = ops::split(&iota(&[6]), 3, 0).unwrap();
    assert_eq!(p.len(), 3);
    check(&p[0], &[2], &[0., 1.]);
    check(&p[1], &[2], &[2., 3.]);
    check(&p[2], &[2], &[4., 5.]);
    let q = ops::split(&iota(&[2, 4]), 2, 1).unwrap();
    check(&q[0], &[2, 2], &[0., 1., 4., 5.]);
    check(&q[1], &[2, 2], &[2., 3., 6., 7.]);
    let r = ops::split(&iota(&[2, 4]), 2, -2).unwrap();
    check(&r[0], &[1, 4], &[0., 1., 2., 3.]);
    check(&r[1], &[1, 4], &[4., 5., 6., 7.]);
    // One piece is the whole.
    check(&ops::split(&iota(&[3]), 1, 0).unwrap()[0], &[3], &[0., 1., 2.]);
    // Transposed input [[0,3],[1,4],[2,5]] split along axis 0.
    let t = ops::split(&transposed_iota(2, 3), 3, 0).unwrap();
    check(&t[1], &[1, 2], &[1., 4.]);
}

#[test]
fn split_equal_errors() {
    let x = iota(&[6]);
    assert_eq!(kind(ops::split(&x, 4, 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::split(&x, 0, 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::split(&x, 2, 1)), ErrorKind::InvalidArgument);
}

#[test]
fn split_sizes_with_inferred_piece() {
    let x = iota(&[6]);
    let p = ops::split_sizes(&x, &[1, -1, 2], 0).unwrap();
    assert_eq!(p.len(), 3);
    check(&p[0], &[1], &[0.]);
    check(&p[1], &[3], &[1., 2., 3.]);
    check(&p[2], &[2], &[4., 5.]);
    let z = ops::split_sizes(&x, &[0, 6], 0).unwrap();
    check(&z[0], &[0], &[]);
    check(&z[1], &[6], &[0., 1., 2., 3., 4., 5.]);
    let w = ops::split_sizes(&x, &[6, -1], 0).unwrap();
    check(&w[1], &[0], &[]);
    // Along a column axis of a matrix.
    let m = ops::split_sizes(&iota(&[2, 5]), &[2, -1], 1).unwrap();
    check(&m[0], &[2, 2], &[0., 1., 5., 6.]);
    check(&m[1], &[2, 3], &[2., 3., 4., 7., 8., 9.]);
    // Strided input: iota(3x4)[:, ::-1] split rows [2, 1].
    let r = ops::strided_slice(&iota(&[3, 4]), &[SliceItem::ALL, SliceItem::stepped(None, None, -1)]).unwrap();
    let s = ops::split_sizes(&r, &[2, 1], 0).unwrap();
    check(&s[1], &[1, 4], &[11., 10., 9., 8.]);
}

#[test]
fn split_sizes_errors() {
    let x = iota(&[6]);
    assert_eq!(kind(ops::split_sizes(&x, &[1, 2], 0)), ErrorKind::Shape);
    assert_eq!(kind(ops::split_sizes(&x, &[-1, -1], 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::split_sizes(&x, &[7, -1], 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::split_sizes(&x, &[-2, 8], 0)), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// slice
// ---------------------------------------------------------------------------

#[test]
fn slice_boxes() {
    let x = iota(&[3, 4]);
    check(&ops::slice(&x, &[1, 1], &[2, -1]).unwrap(), &[2, 3], &[5., 6., 7., 9., 10., 11.]);
    check(&ops::slice(&x, &[0, 2], &[-1, 1]).unwrap(), &[3, 1], &[2., 6., 10.]);
    check(&ops::slice(&x, &[0, 0], &[-1, -1]).unwrap(), &[3, 4], &vals(&x));
    check(&ops::slice(&x, &[2, 3], &[1, 1]).unwrap(), &[1, 1], &[11.]);
    check(&ops::slice(&x, &[1, 0], &[0, 4]).unwrap(), &[0, 4], &[]);
    check(&ops::slice(&x, &[3, 0], &[-1, -1]).unwrap(), &[0, 4], &[]);
    // Rank 0: empty begin and size.
    check(&ops::slice(&Tensor::scalar(1.5f32), &[], &[]).unwrap(), &[], &[1.5]);
    // Slice of a transposed view [[0,4,8],[1,5,9],[2,6,10],[3,7,11]].
    let t = transposed_iota(3, 4);
    check(&ops::slice(&t, &[1, 1], &[2, 2]).unwrap(), &[2, 2], &[5., 9., 6., 10.]);
    // Slice of a slice.
    let s = ops::slice(&x, &[1, 0], &[2, 4]).unwrap();
    check(&ops::slice(&s, &[1, 1], &[1, -1]).unwrap(), &[1, 3], &[9., 10., 11.]);
}

#[test]
fn slice_errors() {
    let x = iota(&[3, 4]);
    assert_eq!(kind(ops::slice(&x, &[2, 0], &[2, 1])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::slice(&x, &[4, 0], &[-1, 1])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::slice(&x, &[0], &[1])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::slice(&x, &[0, 0], &[1, -2])), ErrorKind::InvalidArgument);
    // Overflowing begin + size is an error, not a wrap-around.
    assert_eq!(kind(ops::slice(&x, &[usize::MAX, 0], &[2, 1])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::slice(&x, &[1, 0], &[i64::MAX, 1])), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// strided_slice (NumPy semantics)
// ---------------------------------------------------------------------------

fn ss(x: &Tensor, spec: &[SliceItem]) -> Tensor {
    ops::strided_slice(x, spec).unwrap()
}

fn st(start: Option<i64>, stop: Option<i64>, step: i64) -> SliceItem {
    SliceItem::stepped(start, stop, step)
}

#[test]
fn strided_slice_1d_numpy_cases() {
    let x = iota(&[10]);
    // x[1:5:2]
    check(&ss(&x, &[st(Some(1), Some(5), 2)]), &[2], &[1., 3.]);
    // x[::-1]
    check(&ss(&x, &[st(None, None, -1)]), &[10], &[9., 8., 7., 6., 5., 4., 3., 2., 1., 0.]);
    // x[-3:]
    check(&ss(&x, &[(-3..).into()]), &[3], &[7., 8., 9.]);
    // x[:3]
    check(&ss(&x, &[(..3).into()]), &[3], &[0., 1., 2.]);
    // x[:-7]
    check(&ss(&x, &[(..-7).into()]), &[3], &[0., 1., 2.]);
    // x[2:100] and x[-100:3]: out-of-range bounds clamp
    check(&ss(&x, &[(2..100).into()]), &[8], &[2., 3., 4., 5., 6., 7., 8., 9.]);
    check(&ss(&x, &[(-100..3).into()]), &[3], &[0., 1., 2.]);
    check(&ss(&x, &[(50..60).into()]), &[0], &[]);
    // x[8:2:-2]
    check(&ss(&x, &[st(Some(8), Some(2), -2)]), &[3], &[8., 6., 4.]);
    // x[::-3]
    check(&ss(&x, &[st(None, None, -3)]), &[4], &[9., 6., 3., 0.]);
    // x[::3]
    check(&ss(&x, &[st(None, None, 3)]), &[4], &[0., 3., 6., 9.]);
    // x[100:-100:-4]: start clamps to the last element, stop to before the first
    check(&ss(&x, &[st(Some(100), Some(-100), -4)]), &[3], &[9., 5., 1.]);
    // x[-2::-1]
    check(&ss(&x, &[st(Some(-2), None, -1)]), &[9], &[8., 7., 6., 5., 4., 3., 2., 1., 0.]);
    // x[3:0:-1] excludes 0
    check(&ss(&x, &[st(Some(3), Some(0), -1)]), &[3], &[3., 2., 1.]);
    // x[-100::-1] is empty in NumPy
    check(&ss(&x, &[st(Some(-100), None, -1)]), &[0], &[]);
    // x[5:5], x[7:2], x[2:7:-1]: empty
    check(&ss(&x, &[(5..5).into()]), &[0], &[]);
    check(&ss(&x, &[SliceItem::range(7, 2)]), &[0], &[]);
    check(&ss(&x, &[st(Some(2), Some(7), -1)]), &[0], &[]);
    // Huge steps take one element.
    check(&ss(&x, &[st(None, None, i64::MAX)]), &[1], &[0.]);
    check(&ss(&x, &[st(Some(3), None, i64::MAX)]), &[1], &[3.]);
    check(&ss(&x, &[st(None, None, -i64::MAX)]), &[1], &[9.]);
    check(&ss(&x, &[st(None, None, i64::MIN)]), &[1], &[9.]);
    check(&ss(&x, &[st(Some(i64::MAX), Some(i64::MIN), -1)]), &[10], &[9., 8., 7., 6., 5., 4., 3., 2., 1., 0.]);
    check(&ss(&x, &[st(Some(i64::MIN), Some(i64::MAX), 1)]), &[10], &vals(&x));
    // x[:]
    check(&ss(&x, &[SliceItem::ALL]), &[10], &vals(&x));
    check(&ss(&x, &[(..).into()]), &[10], &vals(&x));
}

#[test]
fn strided_slice_index_removes_dimension() {
    let x = iota(&[10]);
    check(&ss(&x, &[(-1).into()]), &[], &[9.]);
    check(&ss(&x, &[0.into()]), &[], &[0.]);
    let m = iota(&[3, 4]);
    check(&ss(&m, &[1.into()]), &[4], &[4., 5., 6., 7.]);
    check(&ss(&m, &[SliceItem::ALL, (-1).into()]), &[3], &[3., 7., 11.]);
    check(&ss(&m, &[2.into(), 1.into()]), &[], &[9.]);
    check(&m.index(&[(-2).into(), (1..3).into()]).unwrap(), &[2], &[5., 6.]);
}

#[test]
fn strided_slice_new_axis_and_ellipsis() {
    let m = iota(&[3, 4]);
    // m[np.newaxis, 1:, ::2]
    check(&ss(&m, &[SliceItem::NewAxis, (1..).into(), st(None, None, 2)]), &[1, 2, 2], &[4., 6., 8., 10.]);
    // m[:, np.newaxis, 0]
    check(&ss(&m, &[SliceItem::ALL, SliceItem::NewAxis, 0.into()]), &[3, 1], &[0., 4., 8.]);
    // m[..., 1]
    check(&ss(&m, &[SliceItem::Ellipsis, 1.into()]), &[3], &[1., 5., 9.]);
    // m[..., np.newaxis]
    check(&ss(&m, &[SliceItem::Ellipsis, SliceItem::NewAxis]), &[3, 4, 1], &vals(&m));
    // m[np.newaxis, ...] and m[...]
    check(&ss(&m, &[SliceItem::NewAxis, SliceItem::Ellipsis]), &[1, 3, 4], &vals(&m));
    check(&ss(&m, &[SliceItem::Ellipsis]), &[3, 4], &vals(&m));
    // m[1] with trailing dimensions implied
    check(&ss(&m, &[]), &[3, 4], &vals(&m));

    let c = iota(&[2, 3, 4]);
    // c[1, ..., ::-2]: c[1, j, 3] and c[1, j, 1]
    check(&ss(&c, &[1.into(), SliceItem::Ellipsis, st(None, None, -2)]), &[3, 2], &[15., 13., 19., 17., 23., 21.]);
    // c[..., 1, :] = c[:, 1, :]
    check(&ss(&c, &[SliceItem::Ellipsis, 1.into(), SliceItem::ALL]), &[2, 4], &[4., 5., 6., 7., 16., 17., 18., 19.]);
    // c[0, ..., 2] : ellipsis covers the middle dimension
    check(&ss(&c, &[0.into(), SliceItem::Ellipsis, 2.into()]), &[3], &[2., 6., 10.]);
    // c[:, np.newaxis, -1, np.newaxis, 1:3]
    check(
        &ss(&c, &[SliceItem::ALL, SliceItem::NewAxis, (-1).into(), SliceItem::NewAxis, (1..3).into()]),
        &[2, 1, 1, 2],
        &[9., 10., 21., 22.],
    );
}

#[test]
fn strided_slice_rank0_and_empty() {
    let s = Tensor::scalar(3.0f32);
    check(&ss(&s, &[]), &[], &[3.]);
    check(&ss(&s, &[SliceItem::NewAxis]), &[1], &[3.]);
    check(&ss(&s, &[SliceItem::Ellipsis]), &[], &[3.]);
    let e = Tensor::zeros([0], DType::F32).unwrap();
    check(&ss(&e, &[st(None, None, -1)]), &[0], &[]);
    check(&ss(&e, &[(1..5).into()]), &[0], &[]);
    let e2 = Tensor::zeros([2, 0], DType::F32).unwrap();
    check(&ss(&e2, &[1.into()]), &[0], &[]);
    assert_eq!(kind(ops::strided_slice(&e, &[0.into()])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&s, &[0.into()])), ErrorKind::InvalidArgument);
}

#[test]
fn strided_slice_of_views() {
    // Transposed view of iota(3x4): t[i, j] = 4 j + i, shape [4, 3].
    let t = transposed_iota(3, 4);
    // t[1:3, ::-1]
    check(&ss(&t, &[(1..3).into(), st(None, None, -1)]), &[2, 3], &[9., 5., 1., 10., 6., 2.]);
    // t[-1]
    check(&ss(&t, &[(-1).into()]), &[3], &[3., 7., 11.]);
    // x[::2][::-1] on a 1-D range
    let x = iota(&[10]);
    let evens = ss(&x, &[st(None, None, 2)]);
    check(&ss(&evens, &[st(None, None, -1)]), &[5], &[8., 6., 4., 2., 0.]);
    // x[::-1][1:8:3] = [8, 5, 2]
    let rev = ss(&x, &[st(None, None, -1)]);
    check(&ss(&rev, &[st(Some(1), Some(8), 3)]), &[3], &[8., 5., 2.]);
    // Materialize a doubly-reversed strided view through an op that copies.
    let y = ops::concat(&[&ss(&rev, &[st(None, None, -2)])], 0).unwrap();
    check(&y, &[5], &[0., 2., 4., 6., 8.]);
}

#[test]
fn strided_slice_reference_sweep() {
    // Every (start, stop, step) over a small range vs a direct port of
    // Python's slice.indices semantics.
    fn py_slice(n: i64, start: Option<i64>, stop: Option<i64>, step: i64) -> Vec<i64> {
        let (lo, hi) = if step > 0 { (0, n) } else { (-1, n - 1) };
        let fix = |v: i64| {
            let v = if v < 0 { v + n } else { v };
            v.clamp(lo, hi)
        };
        let s = start.map(fix).unwrap_or(if step > 0 { lo } else { hi });
        let e = stop.map(fix).unwrap_or(if step > 0 { hi } else { lo });
        let mut out = Vec::new();
        let mut i = s;
        while (step > 0 && i < e) || (step < 0 && i > e) {
            out.push(i);
            i += step;
        }
        out
    }
    let n = 6i64;
    let x = iota(&[n as usize]);
    let ends: Vec<Option<i64>> = std::iter::once(None).chain((-8..=8).map(Some)).collect();
    for &start in &ends {
        for &stop in &ends {
            for step in [-3i64, -2, -1, 1, 2, 3] {
                let expect: Vec<f32> = py_slice(n, start, stop, step).into_iter().map(|i| i as f32).collect();
                let y = ops::strided_slice(&x, &[st(start, stop, step)]).unwrap();
                assert_eq!(vals(&y), expect, "x[{start:?}:{stop:?}:{step}]");
                assert_eq!(dims(&y), [expect.len()]);
            }
        }
    }
}

#[test]
fn strided_slice_errors() {
    let x = iota(&[10]);
    assert_eq!(kind(ops::strided_slice(&x, &[10.into()])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&x, &[(-11).into()])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&x, &[st(None, None, 0)])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&x, &[st(Some(1), Some(3), 0)])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&x, &[SliceItem::Ellipsis, SliceItem::Ellipsis])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::strided_slice(&x, &[0.into(), 0.into()])), ErrorKind::InvalidArgument);
    let m = iota(&[3, 4]);
    assert_eq!(kind(ops::strided_slice(&m, &[SliceItem::ALL, 4.into()])), ErrorKind::InvalidArgument);
    assert_eq!(
        kind(ops::strided_slice(&m, &[SliceItem::ALL, SliceItem::ALL, SliceItem::ALL])),
        ErrorKind::InvalidArgument
    );
}

// ---------------------------------------------------------------------------
// gather / gather_nd / scatter_nd
// ---------------------------------------------------------------------------

#[test]
fn gather_axis0_i32_and_i64() {
    let p = Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    let expect = [5., 6., 1., 2., 5., 6.];
    check(&ops::gather(&p, &i32s(&[2, 0, 2], &[3]), 0, 0).unwrap(), &[3, 2], &expect);
    check(&ops::gather(&p, &i64s(&[2, 0, 2], &[3]), 0, 0).unwrap(), &[3, 2], &expect);
    check(&ops::gather(&p, &Tensor::from(vec![2u8, 0, 2]), 0, 0).unwrap(), &[3, 2], &expect);
    // A scalar index removes the axis.
    check(&ops::gather(&p, &Tensor::scalar(1i32), 0, 0).unwrap(), &[2], &[3., 4.]);
    // No indices: empty result.
    check(&ops::gather(&p, &i32s(&[], &[0]), 0, 0).unwrap(), &[0, 2], &[]);
    // Integer params.
    let pi = i64s(&[10, 20, 30], &[3]);
    assert_eq!(ops::gather(&pi, &i32s(&[1, 1, 0], &[3]), 0, 0).unwrap().to_vec::<i64>().unwrap(), vec![20, 20, 10]);
}

#[test]
fn gather_axis1_and_negative_axis() {
    let p = Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    check(&ops::gather(&p, &i32s(&[1, 0], &[2]), 1, 0).unwrap(), &[3, 2], &[2., 1., 4., 3., 6., 5.]);
    check(&ops::gather(&p, &i64s(&[1, 1, 1], &[3]), -1, 0).unwrap(), &[3, 3], &[2., 2., 2., 4., 4., 4., 6., 6., 6.]);
    check(&ops::gather(&p, &Tensor::scalar(0i64), 1, 0).unwrap(), &[3], &[1., 3., 5.]);
}

#[test]
fn gather_multi_dim_indices() {
    let p = Tensor::from([[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
    let idx = i32s(&[0, 1, 2, 2], &[2, 2]);
    check(&ops::gather(&p, &idx, 0, 0).unwrap(), &[2, 2, 2], &[1., 2., 3., 4., 5., 6., 5., 6.]);
    // Axis 1 of a rank-3 params with rank-2 indices vs an index-level reference.
    let params = iota(&[2, 3, 4]);
    let pv = vals(&params);
    let ix = [3i64, 0, 1, 1, 2, 3];
    let y = ops::gather(&params, &i64s(&ix, &[2, 3]), 2, 0).unwrap();
    assert_eq!(dims(&y), [2, 3, 2, 3]);
    let yv = vals(&y);
    for a in 0..2 {
        for b in 0..3 {
            for i in 0..2 {
                for j in 0..3 {
                    let want = pv[a * 12 + b * 4 + ix[i * 3 + j] as usize];
                    assert_eq!(yv[((a * 3 + b) * 2 + i) * 3 + j], want);
                }
            }
        }
    }
    let y1 = ops::gather(&params, &i32s(&[2, 0], &[2, 1]), 1, 0).unwrap();
    check(&y1, &[2, 2, 1, 4], &[8., 9., 10., 11., 0., 1., 2., 3., 20., 21., 22., 23., 12., 13., 14., 15.]);
}

#[test]
fn gather_batch_dims() {
    let p = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let idx = i32s(&[2, 0, 1, 1], &[2, 2]);
    check(&ops::gather(&p, &idx, 1, 1).unwrap(), &[2, 2], &[3., 1., 5., 5.]);
    // Rank-3 params [2, 3, 2] with batch_dims=1 along axis 1.
    let params = iota(&[2, 3, 2]);
    let idx = i64s(&[2, 0, 1, 2], &[2, 2]);
    // out[b, i, :] = params[b, idx[b, i], :]
    check(&ops::gather(&params, &idx, 1, 1).unwrap(), &[2, 2, 2], &[4., 5., 0., 1., 8., 9., 10., 11.]);
    // batch_dims=1 along axis 2 of [2, 2, 3] (an outer dimension between batch and axis).
    let params = iota(&[2, 2, 3]);
    let idx = i32s(&[2, 0, 1, 1], &[2, 2]);
    // out[b, m, i] = params[b, m, idx[b, i]]
    check(&ops::gather(&params, &idx, 2, 1).unwrap(), &[2, 2, 2], &[2., 0., 5., 3., 7., 7., 10., 10.]);
    assert!(ops::gather(&p, &idx, 0, 1).is_err(), "batch_dims may not exceed axis");
    assert_eq!(kind(ops::gather(&p, &i32s(&[0, 0, 0], &[3, 1]), 1, 1)), ErrorKind::Shape);
}

#[test]
fn gather_non_contiguous_inputs() {
    let t = transposed_iota(3, 4); // [[0,4,8],[1,5,9],[2,6,10],[3,7,11]]
    check(&ops::gather(&t, &i32s(&[3, 0], &[2]), 0, 0).unwrap(), &[2, 3], &[3., 7., 11., 0., 4., 8.]);
    check(&ops::gather(&t, &i32s(&[2], &[1]), 1, 0).unwrap(), &[4, 1], &[8., 9., 10., 11.]);
    // Indices as a reversed view: [0, 1, 3] reversed = [3, 1, 0].
    let idx = ops::reverse(&i32s(&[0, 1, 3], &[3]), &[0]).unwrap();
    check(&ops::gather(&t, &idx, 0, 0).unwrap(), &[3, 3], &[3., 7., 11., 1., 5., 9., 0., 4., 8.]);
}

#[test]
fn gather_errors() {
    let p = iota(&[3, 2]);
    assert_eq!(kind(ops::gather(&p, &i32s(&[3], &[1]), 0, 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::gather(&p, &i64s(&[0, 2], &[2]), 1, 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::gather(&p, &i32s(&[-1], &[1]), 0, 0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::gather(&p, &f32s(&[0.], &[1]), 0, 0)), ErrorKind::DType);
    assert_eq!(kind(ops::gather(&p, &i32s(&[0], &[1]), 2, 0)), ErrorKind::InvalidArgument);
}

#[test]
fn gather_nd_full_and_partial_depth() {
    let p = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    check(&ops::gather_nd(&p, &i32s(&[0, 0, 1, 1], &[2, 2])).unwrap(), &[2], &[1., 4.]);
    check(&ops::gather_nd(&p, &i64s(&[1, 0], &[2])).unwrap(), &[], &[3.]);
    check(&ops::gather_nd(&p, &i32s(&[1, 0], &[2, 1])).unwrap(), &[2, 2], &[3., 4., 1., 2.]);
    let c = iota(&[2, 3, 4]);
    check(&ops::gather_nd(&c, &i64s(&[1, 2, 0, 1], &[2, 2])).unwrap(), &[2, 4], &[20., 21., 22., 23., 4., 5., 6., 7.]);
    // Extra batch dimensions in indices: [2, 1, 3] -> [2, 1].
    check(&ops::gather_nd(&c, &i32s(&[1, 0, 3, 0, 2, 1], &[2, 1, 3])).unwrap(), &[2, 1], &[15., 9.]);
    // Non-contiguous params: transposed view t[i, j] = 4 j + i.
    let t = transposed_iota(3, 4);
    check(&ops::gather_nd(&t, &i32s(&[3, 2, 0, 1], &[2, 2])).unwrap(), &[2], &[11., 4.]);
}

#[test]
fn gather_nd_errors() {
    let p = iota(&[2, 2]);
    assert_eq!(kind(ops::gather_nd(&p, &i32s(&[2, 0], &[1, 2]))), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::gather_nd(&p, &i32s(&[0, -1], &[1, 2]))), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::gather_nd(&p, &i32s(&[0, 0, 0], &[1, 3]))), ErrorKind::Shape);
    assert_eq!(kind(ops::gather_nd(&p, &f32s(&[0., 0.], &[1, 2]))), ErrorKind::DType);
}

#[test]
fn scatter_nd_duplicates_add() {
    let idx = i32s(&[1, 3, 1], &[3, 1]);
    let up = f32s(&[10., 20., 5.], &[3]);
    check(&ops::scatter_nd(&idx, &up, [5]).unwrap(), &[5], &[0., 15., 0., 20., 0.]);
    let idx2 = i64s(&[0, 1, 1, 0, 0, 1], &[3, 2]);
    check(&ops::scatter_nd(&idx2, &f32s(&[1., 2., 3.], &[3]), [2, 2]).unwrap(), &[2, 2], &[0., 4., 2., 0.]);
    // Slice updates (partial depth): rows of a 3x3.
    let rows = i32s(&[1, 1], &[2, 1]);
    let up = f32s(&[1., 2., 3., 10., 20., 30.], &[2, 3]);
    check(&ops::scatter_nd(&rows, &up, [3, 3]).unwrap(), &[3, 3], &[0., 0., 0., 11., 22., 33., 0., 0., 0.]);
    // Integer updates.
    let y = ops::scatter_nd(&i32s(&[0, 0, 2], &[3, 1]), &i32s(&[1, 2, 7], &[3]), [3]).unwrap();
    assert_eq!(y.dtype(), DType::I32);
    assert_eq!(y.to_vec::<i32>().unwrap(), vec![3, 0, 7]);
    // Half-precision updates keep their dtype; duplicates still add.
    let uh = Tensor::from_vec(vec![half::f16::from_f32(1.5), half::f16::from_f32(2.5)], [2]).unwrap();
    let yh = ops::scatter_nd(&i32s(&[1, 1], &[2, 1]), &uh, [2]).unwrap();
    assert_eq!(yh.dtype(), DType::F16);
    assert_eq!(yh.to_vec::<half::f16>().unwrap(), vec![half::f16::ZERO, half::f16::from_f32(4.0)]);
    // Non-contiguous updates: transpose of [[1,2],[3,4]] = [[1,3],[2,4]] into rows 2 and 0.
    let ut = ops::transpose(&Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]), &[]).unwrap();
    check(&ops::scatter_nd(&i32s(&[2, 0], &[2, 1]), &ut, [3, 2]).unwrap(), &[3, 2], &[2., 4., 0., 0., 1., 3.]);
}

#[test]
fn scatter_nd_errors() {
    let idx = i32s(&[5], &[1, 1]);
    assert_eq!(kind(ops::scatter_nd(&idx, &f32s(&[1.], &[1]), [5])), ErrorKind::InvalidArgument);
    let idx = i32s(&[-1], &[1, 1]);
    assert_eq!(kind(ops::scatter_nd(&idx, &f32s(&[1.], &[1]), [5])), ErrorKind::InvalidArgument);
    let idx = i32s(&[0, 1], &[2, 1]);
    assert_eq!(kind(ops::scatter_nd(&idx, &f32s(&[1., 2., 3.], &[3]), [5])), ErrorKind::Shape);
    assert_eq!(kind(ops::scatter_nd(&f32s(&[0., 1.], &[2, 1]), &f32s(&[1., 2.], &[2]), [5])), ErrorKind::DType);
    assert_eq!(kind(ops::scatter_nd(&i32s(&[0], &[1, 1]), &Tensor::from([true]), [2])), ErrorKind::DType);
}

// ---------------------------------------------------------------------------
// tile
// ---------------------------------------------------------------------------

#[test]
fn tile_by_hand_and_reference() {
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    check(
        &ops::tile(&x, &[2, 3]).unwrap(),
        &[4, 6],
        &[
            1., 2., 1., 2., 1., 2., //
            3., 4., 3., 4., 3., 4., //
            1., 2., 1., 2., 1., 2., //
            3., 4., 3., 4., 3., 4.,
        ],
    );
    check(&ops::tile(&x, &[1, 1]).unwrap(), &[2, 2], &[1., 2., 3., 4.]);
    check(&ops::tile(&x, &[0, 2]).unwrap(), &[0, 4], &[]);
    check(&ops::tile(&f32s(&[1., 2.], &[2]), &[3]).unwrap(), &[6], &[1., 2., 1., 2., 1., 2.]);
    check(&ops::tile(&Tensor::scalar(4.0f32), &[]).unwrap(), &[], &[4.]);
    // Rank-3 vs reference: out[i, j, k] = x[i % d0, j % d1, k % d2].
    let c = iota(&[2, 1, 3]);
    let cv = vals(&c);
    let y = ops::tile(&c, &[2, 3, 2]).unwrap();
    let shape = [4, 3, 6];
    let expect: Vec<f32> = (0..72)
        .map(|i| {
            let ix = unravel(i, &shape);
            cv[ravel(&[ix[0] % 2, 0, ix[2] % 3], &[2, 1, 3])]
        })
        .collect();
    check(&y, &shape, &expect);
    // Transposed input [[0,3],[1,4],[2,5]].
    check(
        &ops::tile(&transposed_iota(2, 3), &[1, 2]).unwrap(),
        &[3, 4],
        &[0., 3., 0., 3., 1., 4., 1., 4., 2., 5., 2., 5.],
    );
    assert_eq!(kind(ops::tile(&x, &[2])), ErrorKind::InvalidArgument);
    // Sizes that overflow are errors, not wrap-arounds.
    assert!(ops::tile(&x, &[usize::MAX, 2]).is_err());
    assert!(ops::tile(&x, &[1 << 40, 1 << 40]).is_err());
}

// ---------------------------------------------------------------------------
// pad
// ---------------------------------------------------------------------------

#[test]
fn pad_constant() {
    let x = f32s(&[1., 2., 3.], &[3]);
    check(&ops::pad(&x, &[(1, 2)], PadMode::Constant, 9.0).unwrap(), &[6], &[9., 1., 2., 3., 9., 9.]);
    check(&ops::pad(&x, &[(0, 0)], PadMode::Constant, 9.0).unwrap(), &[3], &[1., 2., 3.]);
    let m = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    check(
        &ops::pad(&m, &[(1, 0), (0, 2)], PadMode::Constant, 0.0).unwrap(),
        &[3, 4],
        &[0., 0., 0., 0., 1., 2., 0., 0., 3., 4., 0., 0.],
    );
    // Integer dtype with an integer value.
    let xi = i32s(&[5, 6], &[2]);
    let yi = ops::pad(&xi, &[(2, 1)], PadMode::Constant, 7).unwrap();
    assert_eq!(yi.dtype(), DType::I32);
    assert_eq!(yi.to_vec::<i32>().unwrap(), vec![7, 7, 5, 6, 7]);
    // Empty input: only padding.
    check(
        &ops::pad(&Tensor::zeros([0], DType::F32).unwrap(), &[(2, 1)], PadMode::Constant, 5.0).unwrap(),
        &[3],
        &[5.; 3],
    );
    check(
        &ops::pad(&Tensor::zeros([0, 2], DType::F32).unwrap(), &[(1, 0), (0, 1)], PadMode::Constant, -1.0).unwrap(),
        &[1, 3],
        &[-1.; 3],
    );
    // Scalar with no paddings.
    check(&ops::pad(&Tensor::scalar(2.0f32), &[], PadMode::Constant, 0.0).unwrap(), &[], &[2.]);
    // Transposed input [[0,3],[1,4],[2,5]].
    check(
        &ops::pad(&transposed_iota(2, 3), &[(0, 1), (1, 0)], PadMode::Constant, -1.0).unwrap(),
        &[4, 3],
        &[-1., 0., 3., -1., 1., 4., -1., 2., 5., -1., -1., -1.],
    );
}

#[test]
fn pad_reflect_and_symmetric_1d() {
    let x = f32s(&[1., 2., 3.], &[3]);
    // np.pad([1,2,3], (2,2), 'reflect') / 'symmetric'
    check(&ops::pad(&x, &[(2, 2)], PadMode::Reflect, 0.0).unwrap(), &[7], &[3., 2., 1., 2., 3., 2., 1.]);
    check(&ops::pad(&x, &[(2, 2)], PadMode::Symmetric, 0.0).unwrap(), &[7], &[2., 1., 1., 2., 3., 3., 2.]);
    // Asymmetric amounts.
    check(&ops::pad(&x, &[(1, 0)], PadMode::Reflect, 0.0).unwrap(), &[4], &[2., 1., 2., 3.]);
    check(&ops::pad(&x, &[(0, 1)], PadMode::Reflect, 0.0).unwrap(), &[4], &[1., 2., 3., 2.]);
    check(&ops::pad(&x, &[(0, 2)], PadMode::Symmetric, 0.0).unwrap(), &[5], &[1., 2., 3., 3., 2.]);
    check(&ops::pad(&x, &[(3, 0)], PadMode::Symmetric, 0.0).unwrap(), &[6], &[3., 2., 1., 1., 2., 3.]);
    check(&ops::pad(&x, &[(1, 3)], PadMode::Symmetric, 0.0).unwrap(), &[7], &[1., 1., 2., 3., 3., 2., 1.]);
    let y = f32s(&[1., 2., 3., 4., 5.], &[5]);
    check(&ops::pad(&y, &[(3, 1)], PadMode::Reflect, 0.0).unwrap(), &[9], &[4., 3., 2., 1., 2., 3., 4., 5., 4.]);
    // Zero padding in these modes is the identity, even on a size-1 dimension.
    check(&ops::pad(&f32s(&[4.], &[1]), &[(0, 0)], PadMode::Reflect, 0.0).unwrap(), &[1], &[4.]);
    check(&ops::pad(&f32s(&[4.], &[1]), &[(1, 1)], PadMode::Symmetric, 0.0).unwrap(), &[3], &[4., 4., 4.]);
}

#[test]
fn pad_reflect_and_symmetric_2d() {
    let m = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    // np.pad(m, ((1,1),(2,1)), 'reflect')
    check(
        &ops::pad(&m, &[(1, 1), (2, 1)], PadMode::Reflect, 0.0).unwrap(),
        &[4, 6],
        &[
            6., 5., 4., 5., 6., 5., //
            3., 2., 1., 2., 3., 2., //
            6., 5., 4., 5., 6., 5., //
            3., 2., 1., 2., 3., 2.,
        ],
    );
    // np.pad(m, ((1,1),(2,1)), 'symmetric')
    check(
        &ops::pad(&m, &[(1, 1), (2, 1)], PadMode::Symmetric, 0.0).unwrap(),
        &[4, 6],
        &[
            2., 1., 1., 2., 3., 3., //
            2., 1., 1., 2., 3., 3., //
            5., 4., 4., 5., 6., 6., //
            5., 4., 4., 5., 6., 6.,
        ],
    );
    // Transposed input [[1,4],[2,5],[3,6]], reflect rows by (1, 0) and columns by (0, 1).
    let t = ops::transpose(&m, &[]).unwrap();
    check(
        &ops::pad(&t, &[(1, 0), (0, 1)], PadMode::Reflect, 0.0).unwrap(),
        &[4, 3],
        &[2., 5., 2., 1., 4., 1., 2., 5., 2., 3., 6., 3.],
    );
    // Integer reflect.
    let xi = i64s(&[1, 2, 3], &[3]);
    assert_eq!(
        ops::pad(&xi, &[(2, 2)], PadMode::Reflect, 0).unwrap().to_vec::<i64>().unwrap(),
        vec![3, 2, 1, 2, 3, 2, 1]
    );
}

#[test]
fn pad_errors() {
    let x = f32s(&[1., 2., 3.], &[3]);
    assert_eq!(kind(ops::pad(&x, &[(3, 0)], PadMode::Reflect, 0.0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::pad(&x, &[(0, 3)], PadMode::Reflect, 0.0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::pad(&x, &[(4, 0)], PadMode::Symmetric, 0.0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::pad(&f32s(&[4.], &[1]), &[(1, 0)], PadMode::Reflect, 0.0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::pad(&x, &[(1, 1), (1, 1)], PadMode::Constant, 0.0)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::pad(&x, &[], PadMode::Constant, 0.0)), ErrorKind::InvalidArgument);
    // Sizes that overflow are errors, not wrap-arounds.
    assert!(ops::pad(&x, &[(usize::MAX, 1)], PadMode::Constant, 0.0).is_err());
    assert!(ops::pad(&x, &[(1 << 50, 0)], PadMode::Constant, 0.0).is_err());
}

// ---------------------------------------------------------------------------
// reverse
// ---------------------------------------------------------------------------

#[test]
fn reverse_axes() {
    let x = iota(&[2, 3]);
    check(&ops::reverse(&x, &[0]).unwrap(), &[2, 3], &[3., 4., 5., 0., 1., 2.]);
    check(&ops::reverse(&x, &[1]).unwrap(), &[2, 3], &[2., 1., 0., 5., 4., 3.]);
    check(&ops::reverse(&x, &[-1]).unwrap(), &[2, 3], &[2., 1., 0., 5., 4., 3.]);
    check(&ops::reverse(&x, &[0, 1]).unwrap(), &[2, 3], &[5., 4., 3., 2., 1., 0.]);
    check(&ops::reverse(&x, &[1, 0]).unwrap(), &[2, 3], &[5., 4., 3., 2., 1., 0.]);
    check(&ops::reverse(&x, &[]).unwrap(), &[2, 3], &[0., 1., 2., 3., 4., 5.]);
    // Twice is the identity.
    let r = ops::reverse(&x, &[0, 1]).unwrap();
    check(&ops::reverse(&r, &[1, 0]).unwrap(), &[2, 3], &[0., 1., 2., 3., 4., 5.]);
    // Rank 3, axes 0 and 2, vs reference.
    let c = iota(&[2, 3, 4]);
    let y = ops::reverse(&c, &[0, 2]).unwrap();
    let expect: Vec<f32> = (0..24)
        .map(|i| {
            let ix = unravel(i, &[2, 3, 4]);
            ravel(&[1 - ix[0], ix[1], 3 - ix[2]], &[2, 3, 4]) as f32
        })
        .collect();
    check(&y, &[2, 3, 4], &expect);
    // Scalar and empty.
    check(&ops::reverse(&Tensor::scalar(1.0f32), &[]).unwrap(), &[], &[1.]);
    check(&ops::reverse(&Tensor::zeros([0, 2], DType::F32).unwrap(), &[0, 1]).unwrap(), &[0, 2], &[]);
    // Transposed input [[0,3],[1,4],[2,5]].
    check(&ops::reverse(&transposed_iota(2, 3), &[0]).unwrap(), &[3, 2], &[2., 5., 1., 4., 0., 3.]);
    assert_eq!(kind(ops::reverse(&x, &[2])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::reverse(&x, &[0, 0])), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::reverse(&x, &[1, -1])), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// one_hot
// ---------------------------------------------------------------------------

#[test]
fn one_hot_default() {
    let y = ops::one_hot(&i32s(&[0, 2, -1, 3], &[4]), 3).unwrap();
    check(&y, &[4, 3], &[1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0.]);
    let y = ops::one_hot(&i64s(&[1], &[1]), 2).unwrap();
    check(&y, &[1, 2], &[0., 1.]);
    // Scalar index gives a vector.
    check(&ops::one_hot(&Tensor::scalar(1i32), 4).unwrap(), &[4], &[0., 1., 0., 0.]);
    // Depth 0 and empty indices.
    check(&ops::one_hot(&i32s(&[0, 1], &[2]), 0).unwrap(), &[2, 0], &[]);
    check(&ops::one_hot(&i32s(&[], &[0]), 3).unwrap(), &[0, 3], &[]);
    // Rank-2 indices, default (last) axis.
    let y = ops::one_hot(&i32s(&[0, 1, 2, 0], &[2, 2]), 3).unwrap();
    check(&y, &[2, 2, 3], &[1., 0., 0., 0., 1., 0., 0., 0., 1., 1., 0., 0.]);
    // u8 indices.
    check(&ops::one_hot(&Tensor::from(vec![2u8]), 3).unwrap(), &[1, 3], &[0., 0., 1.]);
}

#[test]
fn one_hot_axis_and_values() {
    // axis 0: out[d, i] = (idx[i] == d)
    let y = ops::one_hot_with(&i32s(&[0, 2, 1], &[3]), 3, 1.0, 0.0, 0, DType::F32).unwrap();
    check(&y, &[3, 3], &[1., 0., 0., 0., 0., 1., 0., 1., 0.]);
    // Rank-2 indices with axis 1: out[a, d, b] = (idx[a, b] == d)
    let y = ops::one_hot_with(&i32s(&[0, 1, 2, 0], &[2, 2]), 3, 1.0, 0.0, 1, DType::F32).unwrap();
    check(&y, &[2, 3, 2], &[1., 0., 0., 1., 0., 0., 0., 1., 0., 0., 1., 0.]);
    // On/off values and an integer dtype; index 5 is out of range (all off).
    let y = ops::one_hot_with(&i64s(&[1, 5, 0], &[3]), 2, 5, -1, -1, DType::I64).unwrap();
    assert_eq!(y.dtype(), DType::I64);
    assert_eq!(dims(&y), [3, 2]);
    assert_eq!(y.to_vec::<i64>().unwrap(), vec![-1, 5, -1, -1, 5, -1]);
    // f64 with fractional values, axis 0, negative index all-off column.
    let y = ops::one_hot_with(&i32s(&[1, -2], &[2]), 2, 0.5, 0.25, 0, DType::F64).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), vec![0.25, 0.25, 0.5, 0.25]);
    // Non-contiguous indices: transposed [[0,1],[2,0]] -> [[0,2],[1,0]].
    let it = ops::transpose(&i32s(&[0, 1, 2, 0], &[2, 2]), &[]).unwrap();
    let y = ops::one_hot(&it, 3).unwrap();
    check(&y, &[2, 2, 3], &[1., 0., 0., 0., 0., 1., 0., 1., 0., 1., 0., 0.]);
    assert_eq!(kind(ops::one_hot(&f32s(&[0.], &[1]), 3)), ErrorKind::DType);
    assert_eq!(kind(ops::one_hot_with(&i32s(&[0], &[1]), 3, 1.0, 0.0, 2, DType::F32)), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// identity
// ---------------------------------------------------------------------------

#[test]
fn identity_passes_through() {
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    let y = ops::identity(&x).unwrap();
    check(&y, &[2, 2], &[1., 2., 3., 4.]);
    assert!(y.bitwise_eq(&x));
    check(&ops::identity(&Tensor::scalar(5.0f32)).unwrap(), &[], &[5.]);
    check(&ops::identity(&transposed_iota(2, 3)).unwrap(), &[3, 2], &[0., 3., 1., 4., 2., 5.]);
    let b = ops::identity(&Tensor::from([true, false])).unwrap();
    assert_eq!(b.dtype(), DType::Bool);
    assert_eq!(b.to_vec::<bool>().unwrap(), vec![true, false]);
    check(&ops::identity(&Tensor::zeros([0, 3], DType::F32).unwrap()).unwrap(), &[0, 3], &[]);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0usize..5, 1..=4).prop_flat_map(|shape| {
        let n = shape.len();
        (Just(shape), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_transpose_then_inverse_is_identity((shape, perm) in shape_and_perm()) {
        let x = iota(&shape);
        let y = ops::transpose(&x, &perm).unwrap();
        let (expect, out_shape) = permute_ref(&vals(&x), &shape, &perm);
        prop_assert_eq!(dims(&y), out_shape);
        prop_assert_eq!(vals(&y), expect);
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let z = ops::transpose(&y, &inverse).unwrap();
        prop_assert_eq!(dims(&z), shape);
        prop_assert_eq!(vals(&z), vals(&x));
    }

    #[test]
    fn prop_reshape_round_trip((shape, perm) in shape_and_perm(), flat_first in any::<bool>()) {
        // Start from a (usually non-contiguous) transposed view.
        let x = ops::transpose(&iota(&shape), &perm).unwrap();
        let (expect, xshape) = permute_ref(&vals(&iota(&shape)), &shape, &perm);
        let spec: Vec<i64> = if flat_first { vec![-1] } else { xshape.iter().rev().map(|&d| d as i64).collect() };
        let y = ops::reshape(&x, &spec).unwrap();
        prop_assert_eq!(vals(&y), expect.clone());
        let back: Vec<i64> = xshape.iter().map(|&d| d as i64).collect();
        let z = ops::reshape(&y, &back).unwrap();
        prop_assert_eq!(dims(&z), xshape);
        prop_assert_eq!(vals(&z), expect);
    }

    #[test]
    fn prop_concat_of_split_is_identity(
        shape in prop::collection::vec(1usize..6, 1..=3),
        axis_pick in 0usize..3,
        cuts in prop::collection::vec(0usize..6, 0..4),
    ) {
        let axis = axis_pick % shape.len();
        let n = shape[axis];
        // Piece sizes from sorted cut points in 0..=n.
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (n + 1)).collect();
        points.push(0);
        points.push(n);
        points.sort_unstable();
        let sizes: Vec<i64> = points.windows(2).map(|w| (w[1] - w[0]) as i64).collect();
        let x = iota(&shape);
        let parts = ops::split_sizes(&x, &sizes, axis as i64).unwrap();
        prop_assert_eq!(parts.len(), sizes.len());
        for (p, &s) in parts.iter().zip(&sizes) {
            prop_assert_eq!(p.shape()[axis], s as usize);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let y = ops::concat(&refs, axis as i64).unwrap();
        prop_assert_eq!(dims(&y), shape.clone());
        prop_assert_eq!(vals(&y), vals(&x));
        // Equal split too, when it divides.
        if n % 2 == 0 {
            let halves = ops::split(&x, 2, axis as i64).unwrap();
            let y2 = ops::concat(&[&halves[0], &halves[1]], axis as i64).unwrap();
            prop_assert_eq!(vals(&y2), vals(&x));
        }
    }
}

/// Large pads and concats copy rows in parallel blocks: every element lands
/// where the row-major formula says.
#[test]
fn large_pads_and_concats_copy_every_row_to_its_place() -> rivulet::Result<()> {
    let (r, c) = (300usize, 700usize);
    let data: Vec<f32> = (0..r * c).map(|k| k as f32).collect();
    let x = Tensor::from_slice(&data, [r, c])?;
    let p = ops::pad(&x, &[(2, 1), (3, 4)], ops::PadMode::Constant, -1.0)?;
    let (pr, pc) = (r + 3, c + 7);
    assert_eq!(p.shape().dims(), &[pr, pc]);
    let got = p.to_vec::<f32>()?;
    for i in 0..pr {
        for j in 0..pc {
            let want =
                if (2..2 + r).contains(&i) && (3..3 + c).contains(&j) { ((i - 2) * c + (j - 3)) as f32 } else { -1.0 };
            assert_eq!(got[i * pc + j], want, "pad at ({i}, {j})");
        }
    }
    let y = ops::mul(&x, 2.0)?;
    let cat = ops::concat(&[&x, &y], 1)?.to_vec::<f32>()?;
    for i in 0..r {
        for j in 0..2 * c {
            let want = if j < c { (i * c + j) as f32 } else { 2.0 * (i * c + j - c) as f32 };
            assert_eq!(cat[i * 2 * c + j], want, "concat at ({i}, {j})");
        }
    }
    Ok(())
}
