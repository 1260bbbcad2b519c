//! Reductions (`sum`, `mean`, `max`, `min`, `prod`, `any`, `all`), index
//! reductions (`argmax`, `argmin`), scans (`cumsum`, `cumprod`) and the
//! composites (`logsumexp`, `variance`, `std_dev`), checked against
//! nested-loop float64 / i128 references computed here.

use crate::common::*;

use half::{bf16, f16};
use proptest::prelude::*;
use rivulet::ops::{self, SliceItem};
use rivulet::{Axes, DType, ErrorKind, Tensor};

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

/// A tensor of `dtype` holding `vals` converted to it.
fn tensor_of(vals: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    let s = shape.to_vec();
    match dtype {
        DType::F32 => Tensor::from_vec(vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), s),
        DType::F64 => Tensor::from_vec(vals.to_vec(), s),
        DType::F16 => Tensor::from_vec(vals.iter().map(|&v| f16::from_f32(v as f32)).collect::<Vec<_>>(), s),
        DType::BF16 => Tensor::from_vec(vals.iter().map(|&v| bf16::from_f32(v as f32)).collect::<Vec<_>>(), s),
        DType::I32 => Tensor::from_vec(vals.iter().map(|&v| v as i32).collect::<Vec<_>>(), s),
        DType::I64 => Tensor::from_vec(vals.iter().map(|&v| v as i64).collect::<Vec<_>>(), s),
        DType::U8 => Tensor::from_vec(vals.iter().map(|&v| v as u8).collect::<Vec<_>>(), s),
        DType::I8 => Tensor::from_vec(vals.iter().map(|&v| v as i8).collect::<Vec<_>>(), s),
        DType::I16 => Tensor::from_vec(vals.iter().map(|&v| v as i16).collect::<Vec<_>>(), s),
        DType::U16 => Tensor::from_vec(vals.iter().map(|&v| v as u16).collect::<Vec<_>>(), s),
        DType::U32 => Tensor::from_vec(vals.iter().map(|&v| v as u32).collect::<Vec<_>>(), s),
        DType::U64 => Tensor::from_vec(vals.iter().map(|&v| v as u64).collect::<Vec<_>>(), s),
        DType::Bool => Tensor::from_vec(vals.iter().map(|&v| v != 0.0).collect::<Vec<_>>(), s),
        DType::C64 => {
            Tensor::from_vec(vals.iter().map(|&v| rivulet::Complex::<f32>::new(v as f32, 0.0)).collect::<Vec<_>>(), s)
        }
        DType::C128 => {
            Tensor::from_vec(vals.iter().map(|&v| rivulet::Complex::<f64>::new(v, 0.0)).collect::<Vec<_>>(), s)
        }
    }
    .unwrap()
}

/// Bit patterns (NaNs all equal), for bitwise comparisons.
fn bits(t: &Tensor) -> Vec<u64> {
    let nan = u64::MAX;
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| if v.is_nan() { nan } else { u64::from(v.to_bits()) })
            .collect(),
        DType::F64 => {
            t.to_vec::<f64>().unwrap().into_iter().map(|v| if v.is_nan() { nan } else { v.to_bits() }).collect()
        }
        DType::F16 => t
            .to_vec::<f16>()
            .unwrap()
            .into_iter()
            .map(|v| if v.is_nan() { nan } else { u64::from(v.to_bits()) })
            .collect(),
        DType::BF16 => t
            .to_vec::<bf16>()
            .unwrap()
            .into_iter()
            .map(|v| if v.is_nan() { nan } else { u64::from(v.to_bits()) })
            .collect(),
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(|v| u64::from(v as u32)).collect(),
        DType::I64 => t.to_vec::<i64>().unwrap().into_iter().map(|v| v as u64).collect(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(u64::from).collect(),
        DType::I8 => t.to_vec::<i8>().unwrap().into_iter().map(|v| u64::from(v as u8)).collect(),
        DType::I16 => t.to_vec::<i16>().unwrap().into_iter().map(|v| u64::from(v as u16)).collect(),
        DType::U16 => t.to_vec::<u16>().unwrap().into_iter().map(u64::from).collect(),
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(u64::from).collect(),
        DType::U64 => t.to_vec::<u64>().unwrap(),
        DType::Bool => t.to_vec::<bool>().unwrap().into_iter().map(u64::from).collect(),
        DType::C64 => t
            .to_vec::<rivulet::Complex<f32>>()
            .unwrap()
            .into_iter()
            .flat_map(|z| [u64::from(z.re.to_bits()), u64::from(z.im.to_bits())])
            .collect(),
        DType::C128 => t
            .to_vec::<rivulet::Complex<f64>>()
            .unwrap()
            .into_iter()
            .flat_map(|z| [z.re.to_bits(), z.im.to_bits()])
            .collect(),
    }
}

#[track_caller]
fn assert_same(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(bits(got), bits(want), "{what}: elements");
}

/// Deterministic pseudo-random numbers (64-bit LCG, top 53 bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn random_vals(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    // Rounded to f32 so that f32 tensors hold exactly these values.
    (0..n).map(|_| f64::from(rng.range(lo, hi) as f32)).collect()
}

/// Multiples of 1/8 in [-4, 4): every partial sum of up to thousands of them
/// is exact in f32, so sums do not depend on the order of accumulation.
fn eighths(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    (0..n).map(|_| (rng.next() % 64) as f64 / 8.0 - 4.0).collect()
}

/// +-1/2, +-1, +-2: products of any number of them are exact.
fn powers_of_two(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    let choices = [0.5, 1.0, 2.0, -0.5, -1.0, -2.0, 1.0, 1.0];
    (0..n).map(|_| choices[(rng.next() % 8) as usize]).collect()
}

fn err_kind(r: rivulet::Result<Tensor>) -> ErrorKind {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {} ({})", t.shape(), t.dtype()),
        Err(e) => e.kind(),
    }
}

/// Sorted non-negative axes (`None`: all of them).
fn resolve_axes(axes: &Option<Vec<i64>>, rank: usize) -> Vec<usize> {
    match axes {
        None => (0..rank).collect(),
        Some(v) => {
            let mut r: Vec<usize> =
                v.iter().map(|&a| if a < 0 { (a + rank as i64) as usize } else { a as usize }).collect();
            r.sort_unstable();
            r
        }
    }
}

fn to_axes(axes: &Option<Vec<i64>>) -> Axes {
    match axes {
        None => Axes::All,
        Some(v) => Axes::List(v.clone()),
    }
}

/// Output shape of a reduction of `axes` (sorted) of `shape`.
fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    let mut out = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if axes.contains(&d) {
            if keepdims {
                out.push(1);
            }
        } else {
            out.push(n);
        }
    }
    out
}

/// Nested-loop reference: fold every input element into the output element
/// it belongs to. Returns the output shape and per-output (folded value, count).
fn ref_fold(
    data: &[f64],
    shape: &[usize],
    axes: &[usize],
    keepdims: bool,
    init: f64,
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f64>, usize) {
    let kept = reduced_shape(shape, axes, true);
    let n_out: usize = kept.iter().product();
    let mut acc = vec![init; n_out];
    for (i, &v) in data.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        acc[o] = f(acc[o], v);
    }
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    (reduced_shape(shape, axes, keepdims), acc, count)
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a >= b {
        a
    } else {
        b
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a <= b {
        a
    } else {
        b
    }
}

/// Float64 reference of reduction `name`.
fn ref_reduce(name: &str, data: &[f64], shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<f64>) {
    let (s, v, count) = match name {
        "sum" | "mean" => ref_fold(data, shape, axes, keepdims, 0.0, |a, b| a + b),
        "prod" => ref_fold(data, shape, axes, keepdims, 1.0, |a, b| a * b),
        "max" => ref_fold(data, shape, axes, keepdims, f64::NEG_INFINITY, nan_max),
        "min" => ref_fold(data, shape, axes, keepdims, f64::INFINITY, nan_min),
        other => panic!("{other}"),
    };
    if name == "mean" {
        (s, v.into_iter().map(|x| x / count as f64).collect())
    } else {
        (s, v)
    }
}

fn reduce_fn(name: &str, x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> rivulet::Result<Tensor> {
    match name {
        "sum" => ops::sum(x, axes, keepdims),
        "mean" => ops::mean(x, axes, keepdims),
        "max" => ops::max(x, axes, keepdims),
        "min" => ops::min(x, axes, keepdims),
        "prod" => ops::prod(x, axes, keepdims),
        "any" => ops::any(x, axes, keepdims),
        "all" => ops::all(x, axes, keepdims),
        "logsumexp" => ops::logsumexp(x, axes, keepdims),
        "variance" => ops::variance(x, axes, keepdims),
        "std_dev" => ops::std_dev(x, axes, keepdims),
        other => panic!("{other}"),
    }
}

const NUMERIC: [&str; 5] = ["sum", "mean", "max", "min", "prod"];

/// Axis choices for a rank-3 tensor: all, none, single (positive and
/// negative), adjacent and non-adjacent pairs (in any order), all three.
/// Axis choices: `None` is every axis, `Some(list)` those axes.
type AxesChoices = Vec<Option<Vec<i64>>>;

fn axes_rank3() -> AxesChoices {
    vec![
        None,
        Some(vec![]),
        Some(vec![0]),
        Some(vec![1]),
        Some(vec![2]),
        Some(vec![-1]),
        Some(vec![-2]),
        Some(vec![-3]),
        Some(vec![0, 1]),
        Some(vec![1, 2]),
        Some(vec![0, 2]),
        Some(vec![2, 0]),
        Some(vec![-1, 0]),
        Some(vec![0, 1, 2]),
        Some(vec![2, -2, 0]),
    ]
}

fn axes_rank4() -> AxesChoices {
    vec![
        None,
        Some(vec![0, 2]),
        Some(vec![1, 3]),
        Some(vec![0, 3]),
        Some(vec![0, 1, 3]),
        Some(vec![1, 2]),
        Some(vec![0, 2, 3]),
        Some(vec![-1, -3]),
        Some(vec![3]),
    ]
}

/// Check reduction `name` of `data` (shape `shape`, held in `dtype`) over
/// every axis choice, with and without keepdims; `tol` is relative to
/// `scale(output)` (`None`: exactly the rounded reference).
fn check_reduction(
    name: &str,
    dtype: DType,
    data: &[f64],
    shape: &[usize],
    axes_list: &[Option<Vec<i64>>],
    tol: Option<f64>,
) {
    let x = tensor_of(data, shape, dtype);
    let held = values(&x);
    let abs: Vec<f64> = held.iter().map(|v| v.abs()).collect();
    for axes in axes_list {
        let resolved = resolve_axes(axes, shape.len());
        for keepdims in [false, true] {
            let what = format!("{dtype} {name} of {shape:?} over {axes:?} keepdims={keepdims}");
            let y = reduce_fn(name, &x, to_axes(axes), keepdims).unwrap_or_else(|e| panic!("{what}: {e}"));
            let (want_shape, want) = ref_reduce(name, &held, shape, &resolved, keepdims);
            assert_eq!(y.dtype(), dtype, "{what}");
            assert_eq!(y.shape().dims(), &want_shape[..], "{what}: shape");
            // Scale for tolerances: the sum of magnitudes folded into each output.
            let (_, scale) = ref_reduce("sum", &abs, shape, &resolved, keepdims);
            for (i, (g, w)) in values(&y).into_iter().zip(&want).enumerate() {
                let ok = if w.is_nan() {
                    g.is_nan()
                } else {
                    match tol {
                        None => g == round_to(dtype, *w),
                        Some(t) => (g - w).abs() <= t * scale[i].max(w.abs()) || g == *w,
                    }
                };
                assert!(ok, "{what}: element {i} is {g}, reference {w}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// sum, mean, max, min, prod.
// ---------------------------------------------------------------------------

#[test]
fn reductions_rank3_exact_data() {
    let shape = [3, 4, 5];
    let e = eighths(60, 1);
    let p = powers_of_two(60, 2);
    for dtype in [DType::F32, DType::F64] {
        for name in ["sum", "mean", "max", "min"] {
            check_reduction(name, dtype, &e, &shape, &axes_rank3(), None);
        }
        check_reduction("prod", dtype, &p, &shape, &axes_rank3(), None);
    }
}

#[test]
fn reductions_rank4_exact_data() {
    let shape = [2, 3, 4, 5];
    let e = eighths(120, 3);
    let p = powers_of_two(120, 4);
    for dtype in [DType::F32, DType::F64] {
        for name in ["sum", "mean", "max", "min"] {
            check_reduction(name, dtype, &e, &shape, &axes_rank4(), None);
        }
        check_reduction("prod", dtype, &p, &shape, &axes_rank4(), None);
    }
}

/// Dimensions of size 1 between reduced axes, and rank 1 and 2.
#[test]
fn reductions_with_unit_dimensions() {
    let cases: Vec<(Vec<usize>, AxesChoices)> = vec![
        (vec![2, 1, 3], vec![Some(vec![0, 2]), Some(vec![1]), Some(vec![0, 1]), None]),
        (vec![3, 1, 1, 4], vec![Some(vec![0, 3]), Some(vec![1, 2]), Some(vec![0, 1, 2]), Some(vec![2, 3])]),
        (vec![1, 5], vec![Some(vec![0]), Some(vec![1]), None]),
        (vec![7], vec![Some(vec![0]), Some(vec![-1]), None, Some(vec![])]),
        (vec![1], vec![Some(vec![0]), None]),
        (vec![4, 6], vec![Some(vec![0]), Some(vec![1]), Some(vec![1, 0]), None]),
    ];
    for (shape, axes) in cases {
        let n: usize = shape.iter().product();
        for name in NUMERIC {
            let data = if name == "prod" { powers_of_two(n, 5) } else { eighths(n, 6) };
            check_reduction(name, DType::F32, &data, &shape, &axes, None);
        }
    }
}

/// Random data: the reference is the exact (f64) result; f32 may differ by
/// rounding, relative to the sum of the magnitudes folded together.
#[test]
fn reductions_random_data_within_rounding() {
    let shape = [6, 7, 8];
    let data = random_vals(7, 336, -10.0, 10.0);
    for name in ["sum", "mean", "max", "min"] {
        check_reduction(name, DType::F32, &data, &shape, &axes_rank3(), Some(2e-6));
        check_reduction(name, DType::F64, &data, &shape, &axes_rank3(), Some(1e-14));
    }
    let near_one = random_vals(8, 336, 0.9, 1.1);
    check_reduction("prod", DType::F32, &near_one, &shape, &axes_rank3(), Some(1e-5));
    check_reduction("prod", DType::F64, &near_one, &shape, &axes_rank3(), Some(1e-13));
}

/// f16/bf16: reduced in f32 and rounded once.
#[test]
fn reductions_half_precision() {
    let shape = [3, 4, 5];
    let e = eighths(60, 9);
    let p = powers_of_two(60, 10);
    for dtype in [DType::F16, DType::BF16] {
        for name in ["sum", "mean", "max", "min"] {
            check_reduction(name, dtype, &e, &shape, &axes_rank3(), None);
        }
        check_reduction("prod", dtype, &p, &shape, &axes_rank3(), None);
    }
    // A sum that needs rounding in f16: 2048 + 1 + 1 + 1 is 2051, which f16
    // (spacing 2 above 2048) rounds to 2052 (ties to even).
    let h = tensor_of(&[2048.0, 1.0, 1.0, 1.0], &[4], DType::F16);
    assert_eq!(values(&ops::sum(&h, Axes::All, false).unwrap()), vec![2052.0]);
    let b = tensor_of(&[256.0, 1.0, 0.5], &[3], DType::BF16);
    assert_eq!(values(&ops::sum(&b, Axes::All, false).unwrap()), vec![258.0]);
}

/// Integer reference on i128 with the dtype's wrapping.
fn wrap_int(dtype: DType, v: i128) -> i128 {
    let (bits, signed) = match dtype {
        DType::I32 => (32, true),
        DType::I64 => (64, true),
        DType::U8 => (8, false),
        other => panic!("{other}"),
    };
    let m = 1i128 << bits;
    let r = v.rem_euclid(m);
    if signed && r >= m / 2 {
        r - m
    } else {
        r
    }
}

fn ref_reduce_int(name: &str, dtype: DType, data: &[i128], shape: &[usize], axes: &[usize]) -> Vec<i128> {
    let kept = reduced_shape(shape, axes, true);
    let n_out: usize = kept.iter().product();
    let (lo, hi) = match dtype {
        DType::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        DType::I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        _ => (0, 255),
    };
    let init = match name {
        "sum" | "mean" => 0,
        "prod" => 1,
        "max" => lo,
        _ => hi,
    };
    let mut acc = vec![init; n_out];
    for (i, &v) in data.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        acc[o] = match name {
            "sum" | "mean" => acc[o] + v,
            "prod" => acc[o].wrapping_mul(v),
            "max" => acc[o].max(v),
            _ => acc[o].min(v),
        };
    }
    let count: i128 = axes.iter().map(|&a| shape[a] as i128).product();
    acc.into_iter()
        .map(|a| {
            let a = wrap_int(dtype, a);
            // Integer mean: the (wrapped) sum divided by the count, truncating.
            if name == "mean" {
                if count == 0 {
                    0
                } else {
                    a / count
                }
            } else {
                a
            }
        })
        .collect()
}

#[test]
fn reductions_integers() {
    let shape = [3, 4, 5];
    let mut rng = Lcg(11);
    let small: Vec<i128> = (0..60).map(|_| (rng.next() % 41) as i128 - 20).collect();
    let tiny: Vec<i128> = (0..60).map(|_| [1, 1, 2, -1, 3, 1][(rng.next() % 6) as usize]).collect();
    let bytes: Vec<i128> = (0..60).map(|_| (rng.next() % 256) as i128).collect();
    // u8 data whose sums never wrap (for the mean: an arithmetic mean of
    // wrapped sums would be meaningless).
    let small_bytes: Vec<i128> = (0..60).map(|_| (rng.next() % 5) as i128).collect();
    for dtype in [DType::I32, DType::I64, DType::U8] {
        for name in NUMERIC {
            let data: Vec<i128> = match (dtype, name) {
                (DType::U8, "mean") => small_bytes.clone(),
                (DType::U8, _) => bytes.clone(),
                (_, "prod") => tiny.clone(),
                _ => small.clone(),
            };
            let fdata: Vec<f64> = data.iter().map(|&v| v as f64).collect();
            let x = tensor_of(&fdata, &shape, dtype);
            for axes in axes_rank3() {
                let resolved = resolve_axes(&axes, 3);
                for keepdims in [false, true] {
                    let y = reduce_fn(name, &x, to_axes(&axes), keepdims).unwrap();
                    assert_eq!(y.dtype(), dtype);
                    assert_eq!(y.shape().dims(), &reduced_shape(&shape, &resolved, keepdims)[..]);
                    // u8 sums and products wrap.
                    let want = ref_reduce_int(name, dtype, &data, &shape, &resolved);
                    assert_eq!(ints(&y), want, "{dtype} {name} over {axes:?}");
                }
            }
        }
    }
    // Spelled out.
    let w = Tensor::from([i32::MAX, 1]);
    assert_eq!(ops::sum(&w, Axes::All, false).unwrap().to_scalar::<i32>().unwrap(), i32::MIN, "wrapping sum");
    let u = Tensor::from([200u8, 100]);
    assert_eq!(ops::sum(&u, 0, false).unwrap().to_scalar::<u8>().unwrap(), 44, "wrapping u8 sum");
    let m = Tensor::from([[1i32, 2, 3, 4], [-7, 0, 1, 1]]);
    // Integer mean truncates toward zero (as TensorFlow): 10/4 = 2, -5/4 = -1.
    assert_eq!(ops::mean(&m, 1, false).unwrap().to_vec::<i32>().unwrap(), vec![2, -1]);
    assert_eq!(ops::mean(&Tensor::from([-7i64, 0]), 0, false).unwrap().to_vec::<i64>().unwrap(), vec![-3]);
    assert_eq!(ops::prod(&Tensor::from([65536i32, 65536]), 0, false).unwrap().to_scalar::<i32>().unwrap(), 0);
    assert_eq!(ops::max(&Tensor::from([3u8, 250, 7]), 0, false).unwrap().to_scalar::<u8>().unwrap(), 250);
    assert_eq!(
        ops::min(&Tensor::from([i64::MIN, 0, i64::MAX]), 0, false).unwrap().to_scalar::<i64>().unwrap(),
        i64::MIN
    );
    // A mean over more than 255 elements of a u8 tensor (the count does not
    // fit in u8): 250 ones and 50 zeros have mean 250 / 300 = 0; 256 zeros, 0.
    let mut z = vec![1u8; 250];
    z.extend([0u8; 50]);
    let z = Tensor::from_vec(z, [300]).unwrap();
    assert_eq!(ops::mean(&z, 0, false).unwrap().to_scalar::<u8>().unwrap(), 0);
    let z = Tensor::from_vec(vec![0u8; 256], [256]).unwrap();
    assert_eq!(ops::mean(&z, 0, false).unwrap().to_scalar::<u8>().unwrap(), 0);
    let z = Tensor::from_vec(vec![3u8; 512], [2, 256]).unwrap();
    assert_eq!(ops::mean(&z, 0, false).unwrap().to_vec::<u8>().unwrap(), vec![3; 256]);
    let z = Tensor::from_vec(vec![1i32; 70_000], [70_000]).unwrap();
    assert_eq!(ops::mean(&z, 0, false).unwrap().to_scalar::<i32>().unwrap(), 1);
}

#[test]
fn any_all_over_axes() {
    let shape = [3, 4, 5];
    let mut rng = Lcg(12);
    // Sparse trues and sparse falses so that both outcomes occur.
    let sparse_true: Vec<f64> = (0..60).map(|_| if rng.next().is_multiple_of(7) { 1.0 } else { 0.0 }).collect();
    let sparse_false: Vec<f64> = (0..60).map(|_| if rng.next().is_multiple_of(7) { 0.0 } else { 1.0 }).collect();
    for data in [&sparse_true, &sparse_false] {
        let x = tensor_of(data, &shape, DType::Bool);
        for axes in axes_rank3() {
            let resolved = resolve_axes(&axes, 3);
            for keepdims in [false, true] {
                let (ws, any_ref, _) = ref_fold(data, &shape, &resolved, keepdims, 0.0, |a, b| a.max(b));
                let (_, all_ref, _) = ref_fold(data, &shape, &resolved, keepdims, 1.0, |a, b| a.min(b));
                let a = ops::any(&x, to_axes(&axes), keepdims).unwrap();
                let l = ops::all(&x, to_axes(&axes), keepdims).unwrap();
                assert_eq!((a.dtype(), l.dtype()), (DType::Bool, DType::Bool));
                assert_eq!(a.shape().dims(), &ws[..]);
                assert_eq!(values(&a), any_ref, "any over {axes:?}");
                assert_eq!(values(&l), all_ref, "all over {axes:?}");
            }
        }
    }
    let b = Tensor::from([[true, false, false], [true, true, true]]);
    assert_eq!(ops::any(&b, 1, false).unwrap().to_vec::<bool>().unwrap(), vec![true, true]);
    assert_eq!(ops::all(&b, 1, false).unwrap().to_vec::<bool>().unwrap(), vec![false, true]);
    assert_eq!(ops::all(&b, 0, false).unwrap().to_vec::<bool>().unwrap(), vec![true, false, false]);
    // Empty: any is false, all is true.
    let e = tensor_of(&[], &[2, 0], DType::Bool);
    assert_eq!(ops::any(&e, 1, false).unwrap().to_vec::<bool>().unwrap(), vec![false, false]);
    assert_eq!(ops::all(&e, 1, false).unwrap().to_vec::<bool>().unwrap(), vec![true, true]);
    assert!(!ops::any(&e, Axes::All, false).unwrap().to_scalar::<bool>().unwrap());
    assert!(ops::all(&e, Axes::All, false).unwrap().to_scalar::<bool>().unwrap());
    // Views.
    let t = ops::transpose(&b, &[1, 0]).unwrap();
    assert_eq!(ops::all(&t, 1, false).unwrap().to_vec::<bool>().unwrap(), vec![true, false, false]);
}

#[test]
fn reduction_methods_and_scalars() {
    let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.5]]);
    assert_eq!(x.sum_all().unwrap().to_scalar::<f32>().unwrap(), 10.5);
    assert_eq!(x.mean_all().unwrap().to_scalar::<f32>().unwrap(), 2.625);
    let s = x.sum(1, true).unwrap();
    assert_eq!((s.shape().dims(), s.to_vec::<f32>().unwrap()), (&[2usize, 1][..], vec![3.0, 7.5]));
    assert_eq!(x.max(0, false).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 4.5]);
    assert_eq!(x.prod([0, 1], false).unwrap().to_scalar::<f32>().unwrap(), 27.0);
    // Axes given as i64, usize, slices and Vec.
    assert_eq!(ops::sum(&x, 0i64, false).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 6.5]);
    assert_eq!(ops::sum(&x, 1usize, false).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 7.5]);
    assert_eq!(ops::sum(&x, &[0i64, 1][..], false).unwrap().to_scalar::<f32>().unwrap(), 10.5);
    assert_eq!(ops::sum(&x, vec![-1i64], false).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 7.5]);
    // All axes with keepdims keeps rank 2.
    let k = ops::min(&x, Axes::All, true).unwrap();
    assert_eq!((k.shape().dims(), k.to_vec::<f32>().unwrap()), (&[1usize, 1][..], vec![1.0]));
    // Rank 0: a reduction over all (no) axes is the value itself.
    let s = Tensor::from(2.5f64);
    for name in NUMERIC {
        let r = reduce_fn(name, &s, Axes::All, false).unwrap();
        assert_eq!((r.rank(), r.to_scalar::<f64>().unwrap()), (0, 2.5), "{name} of a scalar");
    }
    assert_eq!(err_kind(ops::sum(&s, 0, false)), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// Views.
// ---------------------------------------------------------------------------

#[test]
fn reductions_of_views_equal_contiguous_copies() {
    let base = tensor_of(&random_vals(13, 240, -3.0, 3.0), &[4, 6, 10], DType::F32);
    let views = vec![
        ("transposed", ops::transpose(&base, &[2, 0, 1]).unwrap()),
        ("transposed 2", ops::transpose(&base, &[1, 2, 0]).unwrap()),
        (
            "stepped",
            ops::strided_slice(
                &base,
                &[SliceItem::ALL, SliceItem::stepped(None, None, 2), SliceItem::stepped(Some(1), None, 3)],
            )
            .unwrap(),
        ),
        ("reversed", ops::reverse(&base, &[0, 2]).unwrap()),
        (
            "negative steps",
            ops::strided_slice(
                &base,
                &[SliceItem::stepped(None, None, -2), SliceItem::ALL, SliceItem::stepped(None, None, -1)],
            )
            .unwrap(),
        ),
        (
            "window",
            ops::strided_slice(&base, &[SliceItem::range(1, 3), SliceItem::range(2, 5), SliceItem::ALL]).unwrap(),
        ),
        (
            "broadcast",
            ops::broadcast_to(&ops::strided_slice(&base, &[SliceItem::range(0, 1)]).unwrap(), [3, 6, 10]).unwrap(),
        ),
    ];
    for (vname, v) in &views {
        let c = contiguous_copy(v);
        let rank = v.rank();
        let axes_list = axes_rank3();
        for axes in &axes_list {
            if axes.as_ref().is_some_and(|a| a.iter().any(|&x| x >= rank as i64 || x < -(rank as i64))) {
                continue;
            }
            for name in NUMERIC.iter().chain(&["logsumexp", "variance", "std_dev"]) {
                for keepdims in [false, true] {
                    let what = format!("{name} of {vname} over {axes:?} keepdims={keepdims}");
                    let got = reduce_fn(name, v, to_axes(axes), keepdims).unwrap();
                    let want = reduce_fn(name, &c, to_axes(axes), keepdims).unwrap();
                    assert_same(&got, &want, &what);
                }
            }
            // And against the reference.
            let held = values(&c);
            let resolved = resolve_axes(axes, rank);
            let (_, want) = ref_reduce("sum", &held, c.shape().dims(), &resolved, false);
            let got = values(&ops::sum(v, to_axes(axes), false).unwrap());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 2e-6 * 3.0 * 240.0, "sum of {vname} over {axes:?}: {g} vs {w}");
            }
        }
        for axis in 0..rank as i64 {
            assert_same(
                &ops::argmax(v, axis).unwrap(),
                &ops::argmax(&c, axis).unwrap(),
                &format!("argmax {vname} {axis}"),
            );
            assert_same(
                &ops::argmin(v, axis).unwrap(),
                &ops::argmin(&c, axis).unwrap(),
                &format!("argmin {vname} {axis}"),
            );
            for (ex, rev) in [(false, false), (true, true)] {
                assert_same(
                    &ops::cumsum(v, axis, ex, rev).unwrap(),
                    &ops::cumsum(&c, axis, ex, rev).unwrap(),
                    &format!("cumsum {vname} {axis}"),
                );
            }
        }
    }
    // Integer and bool views.
    let ib = ops::cast(&ops::mul(&base, 10.0).unwrap(), DType::I32).unwrap();
    let iv = ops::transpose(&ib, &[2, 1, 0]).unwrap();
    let bv = ops::greater(&iv, 0).unwrap();
    for axes in axes_rank3() {
        assert_same(
            &ops::sum(&iv, to_axes(&axes), false).unwrap(),
            &ops::sum(&contiguous_copy(&iv), to_axes(&axes), false).unwrap(),
            "i32 sum",
        );
        assert_same(
            &ops::any(&bv, to_axes(&axes), true).unwrap(),
            &ops::any(&contiguous_copy(&bv), to_axes(&axes), true).unwrap(),
            "any",
        );
        assert_same(
            &ops::all(&bv, to_axes(&axes), false).unwrap(),
            &ops::all(&contiguous_copy(&bv), to_axes(&axes), false).unwrap(),
            "all",
        );
    }
}

// ---------------------------------------------------------------------------
// Empty reductions.
// ---------------------------------------------------------------------------

#[test]
fn empty_reductions_give_identities() {
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let e = tensor_of(&[], &[0], dtype);
        let expect = [("sum", 0.0), ("prod", 1.0), ("max", f64::NEG_INFINITY), ("min", f64::INFINITY)];
        for (name, want) in expect {
            let r = reduce_fn(name, &e, Axes::All, false).unwrap();
            assert_eq!((r.dtype(), r.rank()), (dtype, 0), "{name} {dtype}");
            assert_eq!(values(&r), vec![want], "{name} of empty {dtype}");
        }
        let m = ops::mean(&e, Axes::All, false).unwrap();
        assert!(values(&m)[0].is_nan(), "mean of empty {dtype} is NaN");
        // [2, 0] over axis 1: one identity per row; over axis 0: empty.
        let e2 = tensor_of(&[], &[2, 0], dtype);
        for (name, want) in expect {
            let r = reduce_fn(name, &e2, 1, false).unwrap();
            assert_eq!(r.shape().dims(), &[2]);
            assert_eq!(values(&r), vec![want; 2], "{name} of [2, 0] over 1, {dtype}");
            let r = reduce_fn(name, &e2, 1, true).unwrap();
            assert_eq!(r.shape().dims(), &[2, 1]);
            let r = reduce_fn(name, &e2, 0, false).unwrap();
            assert_eq!((r.shape().dims(), r.numel()), (&[0usize][..], Some(0)));
            let r = reduce_fn(name, &e2, Axes::All, true).unwrap();
            assert_eq!((r.shape().dims(), values(&r)), (&[1usize, 1][..], vec![want]));
        }
        assert!(values(&ops::mean(&e2, 1, false).unwrap()).iter().all(|v| v.is_nan()));
        // A zero dimension that is kept: empty results.
        let e4 = tensor_of(&[], &[3, 0, 2], dtype);
        for (axes, shape) in [(vec![0i64, 2], vec![0usize]), (vec![2], vec![3, 0]), (vec![0], vec![0, 2])] {
            for name in NUMERIC {
                let r = reduce_fn(name, &e4, axes.clone(), false).unwrap();
                assert_eq!((r.shape().dims(), r.numel()), (&shape[..], Some(0)), "{name} of [3, 0, 2] over {axes:?}");
            }
        }
        // The zero dimension reduced, others kept.
        let r = ops::sum(&e4, [1], false).unwrap();
        assert_eq!((r.shape().dims(), values(&r)), (&[3usize, 2][..], vec![0.0; 6]));
        let r = ops::prod(&e4, [0, 1], true).unwrap();
        assert_eq!((r.shape().dims(), values(&r)), (&[1usize, 1, 2][..], vec![1.0; 2]));
        // [0, 3] over axis 0 (reduced axis first, inner axis kept).
        let e3 = tensor_of(&[], &[0, 3], dtype);
        assert_eq!(values(&ops::sum(&e3, 0, false).unwrap()), vec![0.0; 3]);
        assert_eq!(values(&ops::max(&e3, 0, false).unwrap()), vec![f64::NEG_INFINITY; 3]);
        assert_eq!(values(&ops::prod(&e3, 0, false).unwrap()), vec![1.0; 3]);
    }
    // Integers: sum 0, prod 1, max the lowest value, min the highest (as TensorFlow).
    let ei = tensor_of(&[], &[0], DType::I32);
    assert_eq!(ops::sum(&ei, Axes::All, false).unwrap().to_scalar::<i32>().unwrap(), 0);
    assert_eq!(ops::prod(&ei, Axes::All, false).unwrap().to_scalar::<i32>().unwrap(), 1);
    assert_eq!(ops::max(&ei, Axes::All, false).unwrap().to_scalar::<i32>().unwrap(), i32::MIN);
    assert_eq!(ops::min(&ei, Axes::All, false).unwrap().to_scalar::<i32>().unwrap(), i32::MAX);
    let eu = tensor_of(&[], &[0, 2], DType::U8);
    assert_eq!(ops::min(&eu, 0, false).unwrap().to_vec::<u8>().unwrap(), vec![255, 255]);
    // logsumexp of nothing is log(0) = -inf.
    let lse = ops::logsumexp(&tensor_of(&[], &[2, 0], DType::F32), 1, false).unwrap();
    assert_eq!(lse.to_vec::<f32>().unwrap(), vec![f32::NEG_INFINITY; 2]);
}

// ---------------------------------------------------------------------------
// NaN propagation, argmax/argmin.
// ---------------------------------------------------------------------------

#[test]
fn max_min_propagate_nan() {
    let x = Tensor::from([[1.0f32, f32::NAN, 3.0], [f32::NEG_INFINITY, 2.0, f32::INFINITY]]);
    let mx = ops::max(&x, 1, false).unwrap().to_vec::<f32>().unwrap();
    assert!(mx[0].is_nan());
    assert_eq!(mx[1], f32::INFINITY);
    let mn = ops::min(&x, 1, false).unwrap().to_vec::<f32>().unwrap();
    assert!(mn[0].is_nan());
    assert_eq!(mn[1], f32::NEG_INFINITY);
    // Over axis 0 (the column-accumulation path).
    let mx = ops::max(&x, 0, false).unwrap().to_vec::<f32>().unwrap();
    assert_eq!((mx[0], mx[2]), (1.0, f32::INFINITY));
    assert!(mx[1].is_nan());
    let mn = ops::min(&x, 0, false).unwrap().to_vec::<f32>().unwrap();
    assert_eq!((mn[0], mn[2]), (f32::NEG_INFINITY, 3.0));
    assert!(mn[1].is_nan());
    // NaN first, last, and at every position of a row longer than the lanes.
    for n in [1usize, 5, 31, 32, 33, 100, 1000] {
        for pos in [0, n / 2, n - 1] {
            let mut v = eighths(n, n as u64);
            v[pos] = f64::NAN;
            for dtype in [DType::F32, DType::F64, DType::F16] {
                let t = tensor_of(&v, &[n], dtype);
                assert!(values(&ops::max(&t, Axes::All, false).unwrap())[0].is_nan(), "max {dtype} n={n} pos={pos}");
                assert!(values(&ops::min(&t, Axes::All, false).unwrap())[0].is_nan(), "min {dtype} n={n} pos={pos}");
                assert!(values(&ops::sum(&t, Axes::All, false).unwrap())[0].is_nan(), "sum {dtype} n={n} pos={pos}");
            }
        }
    }
    // In a large tensor (parallel blocks), and in one column of a large matrix.
    let mut v = eighths(200_000, 14);
    v[77_777] = f64::NAN;
    let t = tensor_of(&v, &[200_000], DType::F32);
    assert!(ops::max(&t, Axes::All, false).unwrap().to_scalar::<f32>().unwrap().is_nan());
    assert!(ops::min(&t, Axes::All, false).unwrap().to_scalar::<f32>().unwrap().is_nan());
    let m = tensor_of(&v, &[400, 500], DType::F32);
    let cm = ops::max(&m, 0, false).unwrap().to_vec::<f32>().unwrap();
    let nan_col = 77_777 % 500;
    for (j, c) in cm.iter().enumerate() {
        assert_eq!(c.is_nan(), j == nan_col, "column {j}");
    }
    let rm = ops::min(&m, 1, false).unwrap().to_vec::<f32>().unwrap();
    for (i, r) in rm.iter().enumerate() {
        assert_eq!(r.is_nan(), i == 77_777 / 500, "row {i}");
    }
}

#[test]
fn argmax_argmin_ties_nan_and_dtype() {
    let x = Tensor::from([[1.0f32, 3.0, 3.0], [2.0, 2.0, 1.0]]);
    let a = ops::argmax(&x, 1).unwrap();
    assert_eq!((a.dtype(), a.shape().dims()), (DType::I64, &[2usize][..]));
    assert_eq!(a.to_vec::<i64>().unwrap(), vec![1, 0], "first index on ties");
    assert_eq!(ops::argmin(&x, 1).unwrap().to_vec::<i64>().unwrap(), vec![0, 2]);
    assert_eq!(ops::argmax(&x, 0).unwrap().to_vec::<i64>().unwrap(), vec![1, 0, 0]);
    assert_eq!(ops::argmin(&x, 0).unwrap().to_vec::<i64>().unwrap(), vec![0, 1, 1]);
    assert_eq!(ops::argmax(&x, -1).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
    assert_eq!(ops::argmin(&x, -2).unwrap().to_vec::<i64>().unwrap(), vec![0, 1, 1]);
    assert_eq!(x.argmax(1).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
    // All equal: index 0.
    assert_eq!(ops::argmax(&Tensor::from([5i32; 7]), 0).unwrap().to_scalar::<i64>().unwrap(), 0);
    assert_eq!(ops::argmin(&Tensor::from([5u8; 7]), 0).unwrap().to_scalar::<i64>().unwrap(), 0);
    // NaN is skipped, as in TensorFlow (tests/suite/fidelity.rs has its values).
    let n = Tensor::from([1.0f64, f64::NAN, 3.0, f64::NAN]);
    assert_eq!(ops::argmax(&n, 0).unwrap().to_scalar::<i64>().unwrap(), 2);
    let n = Tensor::from([f32::NAN, 7.0, f32::INFINITY]);
    assert_eq!(ops::argmax(&n, 0).unwrap().to_scalar::<i64>().unwrap(), 2);
    let n = Tensor::from([[f32::INFINITY, 7.0, f32::NAN], [0.0, -1.0, 0.0]]);
    assert_eq!(ops::argmax(&n, 1).unwrap().to_vec::<i64>().unwrap(), vec![0, 0]);
    // Integers, extremes, f16.
    assert_eq!(ops::argmax(&Tensor::from([i64::MIN, i64::MAX, 0]), 0).unwrap().to_scalar::<i64>().unwrap(), 1);
    assert_eq!(ops::argmin(&Tensor::from([i64::MIN, i64::MAX, i64::MIN]), 0).unwrap().to_scalar::<i64>().unwrap(), 0);
    let h = tensor_of(&[0.5, -2.0, 4.0, 4.0], &[4], DType::F16);
    assert_eq!(ops::argmax(&h, 0).unwrap().to_scalar::<i64>().unwrap(), 2);
    assert_eq!(ops::argmin(&h, 0).unwrap().to_scalar::<i64>().unwrap(), 1);
    // Errors: an axis of size 0, an axis out of range, bool input.
    let e = tensor_of(&[], &[2, 0], DType::F32);
    assert_eq!(err_kind(ops::argmax(&e, 1)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::argmin(&e, -1)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::argmax(&tensor_of(&[], &[0, 3], DType::I32), 0)), ErrorKind::InvalidArgument);
    let ok = ops::argmax(&e, 0).unwrap(); // 2 rows, 0 columns: an empty result
    assert_eq!((ok.dtype(), ok.shape().dims()), (DType::I64, &[0usize][..]));
    assert_eq!(err_kind(ops::argmax(&x, 2)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::argmin(&x, -3)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::argmax(&Tensor::from([true, false]), 0)), ErrorKind::DType);
}

/// argmax/argmin of a 3-D tensor along every axis against a nested-loop
/// reference, including a large case (parallel path).
#[test]
fn argmax_argmin_against_reference() {
    for (shape, seed) in [(vec![3usize, 4, 5], 15u64), (vec![40, 300, 9], 16)] {
        let n: usize = shape.iter().product();
        // Few distinct values: many ties.
        let mut rng = Lcg(seed);
        let data: Vec<f64> = (0..n).map(|_| (rng.next() % 13) as f64 - 6.0).collect();
        for dtype in [DType::F32, DType::I32, DType::F64] {
            let x = tensor_of(&data, &shape, dtype);
            for axis in 0..3 {
                let out_shape = reduced_shape(&shape, &[axis], false);
                let n_out: usize = out_shape.iter().product();
                let mut want_max = vec![0i64; n_out];
                let mut want_min = vec![0i64; n_out];
                for (o, (wmax, wmin)) in want_max.iter_mut().zip(want_min.iter_mut()).enumerate() {
                    let mut idx = unravel(o, &out_shape);
                    idx.insert(axis, 0);
                    let (mut best_hi, mut best_lo) = (f64::NEG_INFINITY, f64::INFINITY);
                    for k in 0..shape[axis] {
                        idx[axis] = k;
                        let v = data[ravel(&idx, &shape)];
                        if v > best_hi {
                            best_hi = v;
                            *wmax = k as i64;
                        }
                        if v < best_lo {
                            best_lo = v;
                            *wmin = k as i64;
                        }
                    }
                }
                assert_eq!(
                    ops::argmax(&x, axis as i64).unwrap().to_vec::<i64>().unwrap(),
                    want_max,
                    "{dtype} {shape:?} {axis}"
                );
                assert_eq!(
                    ops::argmin(&x, axis as i64).unwrap().to_vec::<i64>().unwrap(),
                    want_min,
                    "{dtype} {shape:?} {axis}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scans.
// ---------------------------------------------------------------------------

#[test]
fn cumsum_cumprod_flags_by_hand() {
    let x = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let c = |axis: i64, ex: bool, rev: bool| ops::cumsum(&x, axis, ex, rev).unwrap().to_vec2::<f32>().unwrap();
    let p = |axis: i64, ex: bool, rev: bool| ops::cumprod(&x, axis, ex, rev).unwrap().to_vec2::<f32>().unwrap();
    // Inner axis.
    assert_eq!(c(1, false, false), vec![vec![1.0, 3.0, 6.0], vec![4.0, 9.0, 15.0]]);
    assert_eq!(c(1, true, false), vec![vec![0.0, 1.0, 3.0], vec![0.0, 4.0, 9.0]]);
    assert_eq!(c(1, false, true), vec![vec![6.0, 5.0, 3.0], vec![15.0, 11.0, 6.0]]);
    assert_eq!(c(1, true, true), vec![vec![5.0, 3.0, 0.0], vec![11.0, 6.0, 0.0]]);
    assert_eq!(c(-1, false, false), c(1, false, false));
    // Outer axis.
    assert_eq!(c(0, false, false), vec![vec![1.0, 2.0, 3.0], vec![5.0, 7.0, 9.0]]);
    assert_eq!(c(0, true, false), vec![vec![0.0, 0.0, 0.0], vec![1.0, 2.0, 3.0]]);
    assert_eq!(c(0, false, true), vec![vec![5.0, 7.0, 9.0], vec![4.0, 5.0, 6.0]]);
    assert_eq!(c(0, true, true), vec![vec![4.0, 5.0, 6.0], vec![0.0, 0.0, 0.0]]);
    assert_eq!(c(-2, true, true), c(0, true, true));
    // Products.
    assert_eq!(p(1, false, false), vec![vec![1.0, 2.0, 6.0], vec![4.0, 20.0, 120.0]]);
    assert_eq!(p(1, true, false), vec![vec![1.0, 1.0, 2.0], vec![1.0, 4.0, 20.0]]);
    assert_eq!(p(1, false, true), vec![vec![6.0, 6.0, 3.0], vec![120.0, 30.0, 6.0]]);
    assert_eq!(p(1, true, true), vec![vec![6.0, 3.0, 1.0], vec![30.0, 6.0, 1.0]]);
    assert_eq!(p(0, false, false), vec![vec![1.0, 2.0, 3.0], vec![4.0, 10.0, 18.0]]);
    assert_eq!(p(0, true, false), vec![vec![1.0, 1.0, 1.0], vec![1.0, 2.0, 3.0]]);
    assert_eq!(p(0, false, true), vec![vec![4.0, 10.0, 18.0], vec![4.0, 5.0, 6.0]]);
    assert_eq!(p(0, true, true), vec![vec![4.0, 5.0, 6.0], vec![1.0, 1.0, 1.0]]);
    // Integer dtypes (wrapping) and f64, f16.
    let i = Tensor::from([i32::MAX, 1, 1]);
    assert_eq!(
        ops::cumsum(&i, 0, false, false).unwrap().to_vec::<i32>().unwrap(),
        vec![i32::MAX, i32::MIN, i32::MIN + 1]
    );
    let u = Tensor::from([16u8, 16, 2]);
    assert_eq!(ops::cumprod(&u, 0, false, false).unwrap().to_vec::<u8>().unwrap(), vec![16, 0, 0]);
    let l = Tensor::from([[1i64, -2], [3, 4]]);
    assert_eq!(ops::cumsum(&l, 0, true, true).unwrap().to_vec2::<i64>().unwrap(), vec![vec![3, 4], vec![0, 0]]);
    let d = Tensor::from([0.5f64, 0.25, 4.0]);
    assert_eq!(ops::cumprod(&d, 0, false, true).unwrap().to_vec::<f64>().unwrap(), vec![0.5, 1.0, 4.0]);
    let h = tensor_of(&[1.0, 2.0, 3.0], &[3], DType::F16);
    let hc = ops::cumsum(&h, 0, true, false).unwrap();
    assert_eq!((hc.dtype(), values(&hc)), (DType::F16, vec![0.0, 1.0, 3.0]));
    // Shapes are kept; empty and scalar-like inputs work.
    let e = tensor_of(&[], &[2, 0], DType::F32);
    assert_eq!(ops::cumsum(&e, 1, false, false).unwrap().shape().dims(), &[2, 0]);
    assert_eq!(ops::cumprod(&e, 0, true, true).unwrap().shape().dims(), &[2, 0]);
    let one = Tensor::from([[7.0f32]]);
    assert_eq!(ops::cumsum(&one, 1, true, false).unwrap().to_vec::<f32>().unwrap(), vec![0.0]);
    // Errors.
    assert_eq!(err_kind(ops::cumsum(&x, 2, false, false)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::cumprod(&x, -3, false, false)), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(ops::cumsum(&Tensor::from([true, false]), 0, false, false)), ErrorKind::DType);
}

/// Scans of a 3-D tensor along every axis with every flag, against a
/// sequential reference (integer-valued data: exact), small and large.
#[test]
fn scans_against_reference() {
    for (shape, seed) in [(vec![3usize, 4, 5], 17u64), (vec![20, 50, 40], 18)] {
        let n: usize = shape.iter().product();
        let mut rng = Lcg(seed);
        let data: Vec<f64> = (0..n).map(|_| (rng.next() % 7) as f64 - 3.0).collect();
        let pdata: Vec<f64> = (0..n).map(|_| [1.0, -1.0, 2.0, 0.5, 1.0][(rng.next() % 5) as usize]).collect();
        for dtype in [DType::F32, DType::F64, DType::I64] {
            for axis in 0..3usize {
                for (ex, rev) in [(false, false), (true, false), (false, true), (true, true)] {
                    for (name, d) in [("cumsum", &data), ("cumprod", &pdata)] {
                        if dtype == DType::I64 && name == "cumprod" {
                            continue; // 0.5 is not an integer
                        }
                        let x = tensor_of(d, &shape, dtype);
                        let y = if name == "cumsum" {
                            ops::cumsum(&x, axis as i64, ex, rev).unwrap()
                        } else {
                            ops::cumprod(&x, axis as i64, ex, rev).unwrap()
                        };
                        assert_eq!((y.dtype(), y.shape().dims()), (dtype, &shape[..]));
                        let mut want = vec![0.0; n];
                        let len = shape[axis];
                        let mut lines = shape.clone();
                        lines[axis] = 1;
                        for o in 0..n / len {
                            let mut idx = unravel(o, &lines);
                            let mut acc = if name == "cumsum" { 0.0 } else { 1.0 };
                            for step in 0..len {
                                idx[axis] = if rev { len - 1 - step } else { step };
                                let at = ravel(&idx, &shape);
                                let before = acc;
                                acc = if name == "cumsum" { acc + d[at] } else { acc * d[at] };
                                want[at] = if ex { before } else { acc };
                            }
                        }
                        assert_eq!(
                            values(&y),
                            want,
                            "{dtype} {name} {shape:?} axis {axis} exclusive={ex} reverse={rev}"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// logsumexp, variance, std_dev.
// ---------------------------------------------------------------------------

/// Float64 logsumexp of each output's elements.
fn ref_logsumexp(data: &[f64], shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<f64>) {
    let (s, m, _) = ref_fold(data, shape, axes, keepdims, f64::NEG_INFINITY, nan_max);
    let kept = reduced_shape(shape, axes, true);
    let mut acc = vec![0.0; m.len()];
    for (i, &v) in data.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        let shift = if m[o].is_finite() { m[o] } else { 0.0 };
        acc[o] += (v - shift).exp();
    }
    let out = acc.iter().zip(&m).map(|(&s, &mx)| s.ln() + if mx.is_finite() { mx } else { 0.0 }).collect();
    (s, out)
}

#[test]
fn logsumexp_against_reference() {
    let shape = [4, 5, 6];
    let data = random_vals(19, 120, -8.0, 8.0);
    for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-14)] {
        let x = tensor_of(&data, &shape, dtype);
        for axes in axes_rank3() {
            let resolved = resolve_axes(&axes, 3);
            for keepdims in [false, true] {
                let y = ops::logsumexp(&x, to_axes(&axes), keepdims).unwrap();
                let (ws, want) = ref_logsumexp(&data, &shape, &resolved, keepdims);
                assert_eq!((y.dtype(), y.shape().dims()), (dtype, &ws[..]), "{axes:?} {keepdims}");
                for (g, w) in values(&y).into_iter().zip(&want) {
                    // Absolute error scales with the shift (up to 8) as well.
                    assert!((g - w).abs() <= tol * (w.abs() + 8.0), "{dtype} logsumexp over {axes:?}: {g} vs {w}");
                }
            }
        }
    }
    // Large values do not overflow, -inf entries contribute nothing, all -inf
    // gives -inf, +inf gives +inf, NaN propagates.
    let x = Tensor::from([
        [1000.0f32, 1000.0, f32::NEG_INFINITY],
        [1000.0, -1000.0, 0.0],
        [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY],
        [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY],
        [f32::INFINITY, 1.0, 2.0],
        [-1000.0, -1000.0, -1000.0],
    ]);
    let y = ops::logsumexp(&x, 1, false).unwrap().to_vec::<f32>().unwrap();
    let ln2 = std::f64::consts::LN_2;
    let want = [1000.0 + ln2, 1000.0, 0.0, f64::NEG_INFINITY, f64::INFINITY, -1000.0 + 3f64.ln()];
    for (g, w) in y.iter().zip(want) {
        let g = f64::from(*g);
        assert!(g == w || (g - w).abs() <= 2e-6 * w.abs(), "logsumexp {g} vs {w}");
    }
    // f16: each step rounds to f16.
    let h = tensor_of(&[1.0, 2.0, 3.0, f64::NEG_INFINITY], &[4], DType::F16);
    let lh = values(&ops::logsumexp(&h, 0, false).unwrap())[0];
    let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    assert!((lh - want).abs() <= 4e-3 * want, "f16 logsumexp {lh} vs {want}");
    let n = ops::logsumexp(&Tensor::from([1.0f64, f64::NAN]), 0, false).unwrap().to_scalar::<f64>().unwrap();
    assert!(n.is_nan());
    let big = ops::logsumexp(&Tensor::from([1e4f64, 1e4 - 1.0]), Axes::All, false).unwrap().to_scalar::<f64>().unwrap();
    assert!((big - (1e4 + (1.0 + (-1f64).exp()).ln())).abs() < 1e-11);
    // Shapes: all axes to a scalar, keepdims to ones, an empty axis list is the identity.
    let k = ops::logsumexp(&x, Axes::All, true).unwrap();
    assert_eq!(k.shape().dims(), &[1, 1]);
    assert_eq!(ops::logsumexp(&x, Axes::All, false).unwrap().rank(), 0);
    let v = Tensor::from([0.5f64, -3.0]);
    assert_eq!(ops::logsumexp(&v, Axes::List(vec![]), false).unwrap().to_vec::<f64>().unwrap(), vec![0.5, -3.0]);
    assert_eq!(err_kind(ops::logsumexp(&x, 2, false)), ErrorKind::InvalidArgument);
}

fn ref_variance(data: &[f64], shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<f64>) {
    let (_, mean) = ref_reduce("mean", data, shape, axes, true);
    let kept = reduced_shape(shape, axes, true);
    let mut acc = vec![0.0; mean.len()];
    for (i, &v) in data.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        acc[o] += (v - mean[o]) * (v - mean[o]);
    }
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    (reduced_shape(shape, axes, keepdims), acc.into_iter().map(|a| a / count as f64).collect())
}

#[test]
fn variance_and_std_against_reference() {
    let shape = [4, 5, 6];
    // An offset mean, so that a one-pass formula would lose digits.
    let data = random_vals(20, 120, 95.0, 105.0);
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        let x = tensor_of(&data, &shape, dtype);
        for axes in axes_rank3() {
            let resolved = resolve_axes(&axes, 3);
            if resolved.is_empty() {
                // Over no axes: every element is its own mean.
                assert!(values(&ops::variance(&x, to_axes(&axes), false).unwrap()).iter().all(|&v| v == 0.0));
                continue;
            }
            for keepdims in [false, true] {
                let (ws, var) = ref_variance(&data, &shape, &resolved, keepdims);
                let v = ops::variance(&x, to_axes(&axes), keepdims).unwrap();
                let s = ops::std_dev(&x, to_axes(&axes), keepdims).unwrap();
                assert_eq!((v.dtype(), v.shape().dims()), (dtype, &ws[..]));
                assert_eq!(s.shape().dims(), &ws[..]);
                for ((g, gs), w) in values(&v).into_iter().zip(values(&s)).zip(&var) {
                    assert!((g - w).abs() <= tol * w, "{dtype} variance over {axes:?}: {g} vs {w}");
                    assert!((gs - w.sqrt()).abs() <= tol * w.sqrt(), "{dtype} std over {axes:?}: {gs} vs {}", w.sqrt());
                }
            }
        }
    }
    // Hand values: population variance and standard deviation.
    let x = Tensor::from([2.0f32, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    assert_eq!(ops::variance(&x, 0, false).unwrap().to_scalar::<f32>().unwrap(), 4.0);
    assert_eq!(ops::std_dev(&x, 0, false).unwrap().to_scalar::<f32>().unwrap(), 2.0);
    let m = Tensor::from([[1.0f64, 3.0], [10.0, 10.0]]);
    assert_eq!(m.variance(1, false).unwrap().to_vec::<f64>().unwrap(), vec![1.0, 0.0]);
    assert_eq!(m.std_dev(0, true).unwrap().to_vec2::<f64>().unwrap(), vec![vec![4.5, 3.5]]);
    // Empty: NaN.
    let e = tensor_of(&[], &[0], DType::F32);
    assert!(ops::variance(&e, Axes::All, false).unwrap().to_scalar::<f32>().unwrap().is_nan());
}

// ---------------------------------------------------------------------------
// Accuracy, large inputs, determinism.
// ---------------------------------------------------------------------------

#[test]
fn sum_of_a_million_f32_is_accurate() {
    let n = 1_000_003;
    let data = random_vals(21, n, 0.0, 1.0);
    let x = tensor_of(&data, &[n], DType::F32);
    let want: f64 = data.iter().sum();
    let got = f64::from(ops::sum(&x, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
    assert!((got - want).abs() <= 1e-5 * want, "sum {got} vs {want}");
    let mean = f64::from(ops::mean(&x, 0, false).unwrap().to_scalar::<f32>().unwrap());
    assert!((mean - want / n as f64).abs() <= 1e-5 * want / n as f64, "mean {mean}");
    // Mixed signs: relative to the sum of magnitudes.
    let data = random_vals(22, n, -1.0, 1.0);
    let x = tensor_of(&data, &[n], DType::F32);
    let want: f64 = data.iter().sum();
    let mag: f64 = data.iter().map(|v| v.abs()).sum();
    let got = f64::from(ops::sum(&x, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
    assert!((got - want).abs() <= 1e-6 * mag, "mixed sum {got} vs {want}");
    // A constant: 1_000_003 * 0.1 (naive f32 accumulation would be off by ~1%).
    let x = Tensor::from_vec(vec![0.1f32; n], [n]).unwrap();
    let got = f64::from(ops::sum(&x, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
    let want = n as f64 * f64::from(0.1f32);
    assert!((got - want).abs() <= 1e-5 * want, "constant sum {got} vs {want}");
}

/// Large reductions along each axis (the parallel row and column paths),
/// with exact data so that the reference is exact.
#[test]
fn large_reductions_against_reference() {
    for shape in [vec![300usize, 400], vec![3, 10, 5000], vec![2, 40_000], vec![40_000, 3]] {
        let n: usize = shape.iter().product();
        let data = eighths(n, 23);
        let x = tensor_of(&data, &shape, DType::F32);
        let rank = shape.len();
        let mut axes_list: AxesChoices = (0..rank as i64).map(|a| Some(vec![a])).collect();
        axes_list.push(None);
        if rank == 3 {
            axes_list.push(Some(vec![0, 2]));
        }
        for name in ["sum", "max", "min", "mean"] {
            for axes in &axes_list {
                let resolved = resolve_axes(axes, rank);
                let y = reduce_fn(name, &x, to_axes(axes), false).unwrap();
                let (ws, want) = ref_reduce(name, &data, &shape, &resolved, false);
                assert_eq!(y.shape().dims(), &ws[..]);
                let got = values(&y);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(*g, round_to(DType::F32, *w), "{name} of {shape:?} over {axes:?} at {i}");
                }
            }
        }
    }
}

fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Sums and means over 3_000_000 elements give the same bits whatever the
/// number of threads.
#[test]
fn reductions_are_deterministic_across_thread_counts() {
    let n = 3_000_000;
    let data = random_vals(24, n, -1.0, 1.0);
    let x = tensor_of(&data, &[n], DType::F32);
    let m = ops::reshape(&x, &[3000, 1000]).unwrap();
    let t = ops::reshape(&x, &[1000, 3000]).unwrap();
    let xd = ops::cast(&x, DType::F64).unwrap();
    let compute = || -> Vec<Vec<u64>> {
        vec![
            bits(&ops::sum(&x, Axes::All, false).unwrap()),
            bits(&ops::mean(&x, Axes::All, false).unwrap()),
            bits(&ops::sum(&xd, Axes::All, false).unwrap()),
            bits(&ops::mean(&xd, 0, false).unwrap()),
            bits(&ops::sum(&m, 0, false).unwrap()),
            bits(&ops::sum(&m, 1, false).unwrap()),
            bits(&ops::mean(&t, 0, false).unwrap()),
            bits(&ops::mean(&t, 1, false).unwrap()),
            bits(&ops::sum(&ops::transpose(&m, &[1, 0]).unwrap(), 1, false).unwrap()),
            bits(&ops::logsumexp(&m, 1, false).unwrap()),
            bits(&ops::variance(&x, Axes::All, false).unwrap()),
        ]
    };
    let one = run_in_pool(1, compute);
    let two = run_in_pool(2, compute);
    let three = run_in_pool(3, compute);
    let default = compute();
    for (k, r) in one.iter().enumerate() {
        assert_eq!(r, &two[k], "result {k}: 1 thread vs 2 threads");
        assert_eq!(r, &three[k], "result {k}: 1 thread vs 3 threads");
        assert_eq!(r, &default[k], "result {k}: 1 thread vs the global pool");
    }
    // And the sum is accurate.
    let want: f64 = data.iter().sum();
    let mag: f64 = data.iter().map(|v| v.abs()).sum();
    let got = f64::from(ops::sum(&x, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
    assert!((got - want).abs() <= 1e-6 * mag, "{got} vs {want}");
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

#[test]
fn reduction_errors() {
    let x = tensor_of(&eighths(24, 25), &[2, 3, 4], DType::F32);
    for name in NUMERIC.iter().chain(&["logsumexp", "variance", "std_dev"]) {
        assert_eq!(err_kind(reduce_fn(name, &x, Axes::from(3), false)), ErrorKind::InvalidArgument, "{name} axis 3");
        assert_eq!(err_kind(reduce_fn(name, &x, Axes::from(-4), false)), ErrorKind::InvalidArgument, "{name} axis -4");
        assert_eq!(
            err_kind(reduce_fn(name, &x, Axes::from([0, 0]), true)),
            ErrorKind::InvalidArgument,
            "{name} [0, 0]"
        );
        assert_eq!(
            err_kind(reduce_fn(name, &x, Axes::from([1, -2]), false)),
            ErrorKind::InvalidArgument,
            "{name} [1, -2]"
        );
        assert_eq!(
            err_kind(reduce_fn(name, &x, Axes::from([0, 5]), false)),
            ErrorKind::InvalidArgument,
            "{name} [0, 5]"
        );
    }
    let b = tensor_of(&[1.0, 0.0, 1.0], &[3], DType::Bool);
    for name in NUMERIC {
        assert_eq!(err_kind(reduce_fn(name, &b, Axes::All, false)), ErrorKind::DType, "{name} of bool");
    }
    for name in ["any", "all"] {
        for dtype in [DType::F32, DType::I32, DType::U8] {
            let t = tensor_of(&[1.0, 0.0], &[2], dtype);
            assert_eq!(err_kind(reduce_fn(name, &t, Axes::All, false)), ErrorKind::DType, "{name} of {dtype}");
        }
        assert_eq!(err_kind(reduce_fn(name, &b, 1, false)), ErrorKind::InvalidArgument, "{name} axis 1 of rank 1");
    }
    assert_eq!(err_kind(ops::logsumexp(&tensor_of(&[1.0], &[1], DType::I32), 0, false)), ErrorKind::DType);
}

// ---------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------

/// A small shape (rank 1..=4, dims 0..=4), a seed, and two distinct axes.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, u64, usize, usize)> {
    prop::collection::vec(0usize..5, 1..5).prop_flat_map(|shape| {
        let r = shape.len();
        (Just(shape), any::<u64>(), 0..r, 0..r)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_sum_all_equals_axis0_then_rest((shape, seed, _, _) in shape_and_axes()) {
        let n: usize = shape.iter().product();
        let data = random_vals(seed, n, -100.0, 100.0);
        let x = tensor_of(&data, &shape, DType::F32);
        let all = f64::from(ops::sum(&x, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
        let first = ops::sum(&x, 0, false).unwrap();
        let rest = f64::from(ops::sum(&first, Axes::All, false).unwrap().to_scalar::<f32>().unwrap());
        let mag: f64 = data.iter().map(|v| v.abs()).sum();
        prop_assert!((all - rest).abs() <= 2e-6 * mag + 1e-30, "{} vs {}", all, rest);
        let exact: f64 = data.iter().sum();
        prop_assert!((all - exact).abs() <= 1e-6 * mag + 1e-30, "{} vs exact {}", all, exact);
    }

    #[test]
    fn prop_max_over_two_axes_is_max_of_max((shape, seed, a, b) in shape_and_axes()) {
        prop_assume!(a != b);
        let n: usize = shape.iter().product();
        let x = tensor_of(&random_vals(seed, n, -100.0, 100.0), &shape, DType::F32);
        let both = ops::max(&x, [a as i64, b as i64], false).unwrap();
        // Keeping the first reduced axis, then reducing the second.
        let step = ops::max(&ops::max(&x, a as i64, true).unwrap(), b as i64, true).unwrap();
        let step = ops::squeeze(&step, &[a as i64, b as i64]).unwrap();
        prop_assert_eq!(bits(&both), bits(&step));
        // Without keepdims the second axis shifts down when it came after the first.
        let b2 = if b > a { b - 1 } else { b };
        let step2 = ops::max(&ops::max(&x, a as i64, false).unwrap(), b2 as i64, false).unwrap();
        prop_assert_eq!(bits(&both), bits(&step2));
        let mn = ops::min(&x, [b as i64, a as i64], false).unwrap();
        let a2 = if a > b { a - 1 } else { a };
        let mstep = ops::min(&ops::min(&x, b as i64, false).unwrap(), a2 as i64, false).unwrap();
        prop_assert_eq!(bits(&mn), bits(&mstep));
    }

    #[test]
    fn prop_mean_times_count_is_sum((shape, seed, a, _) in shape_and_axes()) {
        let n: usize = shape.iter().product();
        let data = random_vals(seed, n, -100.0, 100.0);
        let x = tensor_of(&data, &shape, DType::F32);
        let count = shape[a] as f64;
        let mean = values(&ops::mean(&x, a as i64, false).unwrap());
        let sum = values(&ops::sum(&x, a as i64, false).unwrap());
        let (_, mag) = ref_reduce("sum", &data.iter().map(|v| v.abs()).collect::<Vec<_>>(), &shape, &[a], false);
        prop_assert_eq!(mean.len(), sum.len());
        for i in 0..mean.len() {
            if count == 0.0 {
                prop_assert!(mean[i].is_nan() && sum[i] == 0.0);
            } else {
                prop_assert!((mean[i] * count - sum[i]).abs() <= 2e-7 * mag[i] + 1e-30, "{} * {} vs {}", mean[i], count, sum[i]);
            }
        }
    }

    #[test]
    fn prop_keepdims_shape((shape, seed, a, b) in shape_and_axes()) {
        let n: usize = shape.iter().product();
        let x = tensor_of(&random_vals(seed, n, -1.0, 1.0), &shape, DType::F32);
        let mut axes = vec![a];
        if b != a {
            axes.push(b);
        }
        axes.sort_unstable();
        let list: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
        for name in NUMERIC {
            let k = reduce_fn(name, &x, Axes::List(list.clone()), true).unwrap();
            let f = reduce_fn(name, &x, Axes::List(list.clone()), false).unwrap();
            let want_k: Vec<usize> = shape.iter().enumerate().map(|(d, &s)| if axes.contains(&d) { 1 } else { s }).collect();
            let want_f: Vec<usize> = shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect();
            prop_assert_eq!(k.shape().dims(), &want_k[..]);
            prop_assert_eq!(f.shape().dims(), &want_f[..]);
            // Same elements either way.
            prop_assert_eq!(bits(&k), bits(&f));
        }
        let all = ops::sum(&x, Axes::All, true).unwrap();
        prop_assert_eq!(all.shape().dims(), &vec![1; shape.len()][..]);
    }
}

// The tests of this file pass at every instruction-set level (RIVULET_SIMD).
tests_at_every_simd_level!("reduce::");
