//! `tf.math` functions composed of the primitive ops: sums of lists,
//! counting, running log-sum-exp, polynomials, order checks, segment
//! reductions, bincount, confusion matrices and top-k membership. Each is
//! written with the public op functions, so it runs eagerly and in graphs,
//! on every device, and differentiates where TensorFlow's does.

use super::{creation as cr, elementwise as ew, movement as mv, nn, reduce as rd, Axes, Ctx};
use crate::error::{bail, Result};
use crate::graph::Tensor;
use crate::tensor::{DType, Scalar, Shape, UNKNOWN};

/// The sum of a list of tensors of one shape and dtype (TensorFlow's `add_n`
/// and `accumulate_n`).
#[doc(alias = "accumulate_n")]
#[track_caller]
pub fn add_n(xs: &[&Tensor]) -> Result<Tensor> {
    let Some((first, rest)) = xs.split_first() else {
        bail!(invalid, "add_n needs at least one tensor");
    };
    for x in rest {
        if x.shape() != first.shape() || x.dtype() != first.dtype() {
            bail!(
                shape,
                "add_n needs tensors of one shape and dtype, got {}{:?} and {}{:?}",
                first.dtype(),
                first.shape(),
                x.dtype(),
                x.shape()
            );
        }
    }
    rest.iter().try_fold(mv::identity(first)?, |acc, x| ew::add(&acc, *x))
}

/// The number of nonzero (for bool: true) elements over `axes`, as int64.
#[track_caller]
pub fn count_nonzero(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    let nonzero = if x.dtype() == DType::Bool { x.clone() } else { ew::not_equal(x, 0)? };
    rd::sum(&ew::cast(&nonzero, DType::I64)?, axes, keepdims)
}

/// The fraction of elements that are zero, as an f32 scalar.
#[track_caller]
pub fn zero_fraction(x: &Tensor) -> Result<Tensor> {
    rd::mean(&ew::cast(&ew::equal(x, 0)?, DType::F32)?, Axes::All, false)
}

/// `sqrt(sum(x^2))` over `axes`.
#[doc(alias = "reduce_euclidean_norm")]
#[track_caller]
pub fn euclidean_norm(x: &Tensor, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
    ew::sqrt(&rd::sum(&ew::square(x)?, axes, keepdims)?)
}

/// `log(cumsum(exp(x)))` along `axis`, shifted by the maximum so that it
/// does not overflow (see [`rd::cumsum`] for `exclusive` and `reverse`; the
/// exclusive first element is `-inf`).
#[track_caller]
pub fn cumulative_logsumexp(x: &Tensor, axis: i64, exclusive: bool, reverse: bool) -> Result<Tensor> {
    let m = rd::max(x, axis, true)?;
    let shift = mv::stop_gradient(&ew::select(&ew::is_finite(&m)?, &m, 0.0)?)?;
    let s = rd::cumsum(&ew::exp(&ew::sub(x, &shift)?)?, axis, exclusive, reverse)?;
    ew::add(&ew::log(&s)?, &shift)
}

/// The polynomial `c[0] x^(n-1) + ... + c[n-1]` by Horner's rule (zeros
/// for no coefficients).
#[track_caller]
pub fn polyval(coeffs: &[&Tensor], x: &Tensor) -> Result<Tensor> {
    let Some((first, rest)) = coeffs.split_first() else {
        return cr::zeros_like(x);
    };
    let mut p = ew::add(&ew::mul(&cr::zeros_like(x)?, *first)?, *first)?;
    for c in rest {
        p = ew::add(&ew::mul(&p, x)?, *c)?;
    }
    Ok(p)
}

/// Consecutive pairs of the flattened `x`: (all but the last, all but the first).
fn neighbours(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let flat = mv::reshape(x, &[-1])?;
    let n = flat.numel().map(|n| n as i64).unwrap_or(-1);
    if n < 0 {
        bail!(shape, "order checks need a known number of elements, got {:?}", x.shape());
    }
    let m = (n - 1).max(0);
    Ok((mv::slice(&flat, &[0], &[m])?, mv::slice(&flat, &[(n - m) as usize], &[m])?))
}

/// True when the flattened `x` never decreases (true for fewer than two elements).
#[track_caller]
pub fn is_non_decreasing(x: &Tensor) -> Result<Tensor> {
    let (a, b) = neighbours(x)?;
    rd::all(&ew::less_equal(&a, &b)?, Axes::All, false)
}

/// True when the flattened `x` strictly increases (true for fewer than two elements).
#[track_caller]
pub fn is_strictly_increasing(x: &Tensor) -> Result<Tensor> {
    let (a, b) = neighbours(x)?;
    rd::all(&ew::less(&a, &b)?, Axes::All, false)
}

/// The real part: `x` itself for the real dtypes (complex dtypes are #16's).
#[track_caller]
pub fn real(x: &Tensor) -> Result<Tensor> {
    mv::identity(x)
}

/// The imaginary part: zeros for the real dtypes.
#[track_caller]
pub fn imag(x: &Tensor) -> Result<Tensor> {
    cr::zeros_like(x)
}

/// The complex conjugate: `x` itself for the real dtypes.
#[track_caller]
pub fn conj(x: &Tensor) -> Result<Tensor> {
    mv::identity(x)
}

/// The argument: 0 for nonnegative reals, pi for negative ones (`atan2(0, x)`).
#[track_caller]
pub fn angle(x: &Tensor) -> Result<Tensor> {
    ew::atan2(&cr::zeros_like(x)?, x)
}

// ---------------------------------------------------------------------------
// Segment reductions
// ---------------------------------------------------------------------------

/// Which reduction a segment op applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Segment {
    Sum,
    Max,
    Min,
    Prod,
    Mean,
    SqrtN,
}

/// `data` flattened to `[N, rest...]` and `ids` to `[N]`, where `ids.shape`
/// is a prefix of `data.shape`. Dimensions of the prefix may be known only
/// at run time (an unknown batch); the rest must be known.
fn flatten_segments(data: &Tensor, ids: &Tensor, what: &str) -> Result<(Tensor, Tensor, Vec<usize>)> {
    if !ids.dtype().is_int() {
        bail!(dtype, "{what} needs integer segment ids, got {}", ids.dtype());
    }
    let (d, i) = (data.shape().dims(), ids.shape().dims());
    let same = |a: usize, b: usize| a == b || a == UNKNOWN || b == UNKNOWN;
    if i.len() > d.len() || d.iter().zip(i).any(|(&a, &b)| !same(a, b)) || d[i.len()..].contains(&UNKNOWN) {
        bail!(
            shape,
            "{what}: the segment ids' shape {:?} must be a prefix of the data's {:?} (past it, known)",
            ids.shape(),
            data.shape()
        );
    }
    let rest = d[i.len()..].to_vec();
    // The row count: known from the ids, or (a dimension known only at run
    // time) -1, checked at run time against the data's rows.
    let n = ids.shape().numel().map_or(-1, |n| n as i64);
    let mut flat_shape = vec![n];
    flat_shape.extend(rest.iter().map(|&r| r as i64));
    let mut flat_ids = mv::reshape(&ew::cast(ids, DType::I64)?, &[n])?;
    let flat_data = mv::reshape(data, &flat_shape)?;
    if n < 0 {
        // One row's first element per row: as many elements as rows, so
        // that ids of another count fail instead of broadcasting.
        let mut size = vec![-1i64];
        size.extend(rest.iter().map(|_| 1));
        let firsts = mv::reshape(&mv::slice(&flat_data, &vec![0; 1 + rest.len()], &size)?, &[-1])?;
        // Stacking needs equal lengths (a reshape check would be folded away).
        let both = mv::stack(&[&flat_ids, &ew::cast(&firsts, DType::I64)?], 0)?;
        flat_ids = mv::reshape(&mv::slice(&both, &[0, 0], &[1, -1])?, &[-1])?;
    }
    Ok((flat_data, flat_ids, rest))
}

/// The largest finite value of a float dtype, or the largest value of an integer one.
fn extreme(dtype: DType, largest: bool) -> Scalar {
    let sign = if largest { 1.0 } else { -1.0 };
    match dtype {
        DType::F64 => Scalar::F64(sign * f64::MAX),
        DType::F32 => Scalar::F64(sign * f64::from(f32::MAX)),
        DType::F16 => Scalar::F64(sign * 65504.0),
        DType::BF16 => Scalar::F64(sign * f64::from(half::bf16::MAX)),
        DType::I32 => Scalar::I64(if largest { i64::from(i32::MAX) } else { i64::from(i32::MIN) }),
        DType::I64 => Scalar::I64(if largest { i64::MAX } else { i64::MIN }),
        _ => Scalar::I64(if largest { 255 } else { 0 }),
    }
}

fn unsorted_segment(f: Segment, data: &Tensor, ids: &Tensor, num_segments: usize, what: &str) -> Result<Tensor> {
    let (data, ids, rest) = flatten_segments(data, ids, what)?;
    // Negative ids are dropped, as TensorFlow does; ids past the end are an error.
    let keep = ew::greater_equal(&ids, 0i64)?;
    let ids = ew::select(&keep, &ids, 0i64)?;
    let mut out_shape = vec![num_segments];
    out_shape.extend(&rest);
    // `keep` per row, broadcast over the row's own axes.
    let row_shape =
        |lead: &[i64]| -> Vec<i64> { lead.iter().copied().chain(std::iter::repeat_n(1, rest.len())).collect() };
    let keep_b = mv::reshape(&keep, &row_shape(&[-1]))?;
    let sum_of = |values: &Tensor| -> Result<Tensor> {
        let masked = ew::select(&keep_b, values, 0)?;
        mv::scatter_nd(&mv::expand_dims(&ids, -1)?, &masked, Shape::new(&out_shape))
    };
    let count = || segment_sizes(&ids, &ew::cast(&keep, data.dtype())?, num_segments, rest.len());
    match f {
        Segment::Sum => sum_of(&data),
        Segment::Mean => ew::div_no_nan(&sum_of(&data)?, &count()?),
        Segment::SqrtN => ew::div_no_nan(&sum_of(&data)?, &ew::sqrt(&count()?)?),
        Segment::Max | Segment::Min | Segment::Prod => {
            if num_segments == 0 {
                return cr::zeros(Ctx::of(&data), Shape::new(&out_shape), data.dtype());
            }
            // [S, N, rest...]: each segment sees its members and the identity elsewhere.
            let segs = cr::range(Ctx::of(&data), 0i64, num_segments as i64, 1i64, DType::I64)?;
            let member = ew::logical_and(
                &ew::equal(&mv::expand_dims(&segs, 1)?, &mv::expand_dims(&ids, 0)?)?,
                &mv::expand_dims(&keep, 0)?,
            )?;
            let member = mv::reshape(&member, &row_shape(&[num_segments as i64, -1]))?;
            let identity = match f {
                Segment::Max => extreme(data.dtype(), false),
                Segment::Min => extreme(data.dtype(), true),
                _ => Scalar::I64(1),
            };
            let spread = ew::select(&member, &mv::expand_dims(&data, 0)?, ew::Operand::Scalar(identity))?;
            match f {
                Segment::Max => rd::max(&spread, 1, false),
                Segment::Min => rd::min(&spread, 1, false),
                _ => rd::prod(&spread, 1, false),
            }
        }
    }
}

macro_rules! unsorted_segment_fns {
    ($( $(#[$doc:meta])* $name:ident => $f:ident; )*) => {$(
        $(#[$doc])*
        ///
        /// `segment_ids` has a prefix of `data`'s shape; negative ids are dropped.
        #[track_caller]
        pub fn $name(data: &Tensor, segment_ids: &Tensor, num_segments: usize) -> Result<Tensor> {
            unsorted_segment(Segment::$f, data, segment_ids, num_segments, stringify!($name))
        }
    )*};
}

unsorted_segment_fns! {
    /// The sum of `data`'s rows per segment id (0 for empty segments).
    unsorted_segment_sum => Sum;
    /// The maximum per segment (the dtype's lowest finite value for empty
    /// segments); ties share the gradient. Compares all rows with all
    /// segments: memory grows as segments x rows.
    unsorted_segment_max => Max;
    /// The minimum per segment (the dtype's largest finite value for empty segments).
    unsorted_segment_min => Min;
    /// The product per segment (1 for empty segments).
    unsorted_segment_prod => Prod;
    /// The mean per segment (0 for empty segments).
    unsorted_segment_mean => Mean;
    /// The sum per segment divided by the square root of its size (0 for empty segments).
    unsorted_segment_sqrt_n => SqrtN;
}

/// The segment count of sorted segment ids: their last value plus one. The
/// ids must be known now (eagerly, or a graph constant).
fn sorted_segments(ids: &Tensor, what: &str) -> Result<usize> {
    let constant = ids.op().and_then(|op| match op.graph().node(op.id()).map(|n| n.op) {
        Some(super::Op::Const { value }) => Some(Tensor::from_value(value.0)),
        _ => None,
    });
    let values = match (ids.is_symbolic(), constant) {
        (false, _) => ew::cast(ids, DType::I64)?.to_vec::<i64>()?,
        (true, Some(c)) => ew::cast(&c, DType::I64)?.to_vec::<i64>()?,
        _ => bail!(
            invalid,
            "{what} takes the segment count from the ids' values, which a graph only has at run time: \
             use unsorted_{what} with num_segments"
        ),
    };
    for w in values.windows(2) {
        if w[1] < w[0] {
            bail!(invalid, "{what} needs sorted segment ids, got {} after {}", w[1], w[0]);
        }
    }
    if values.first().is_some_and(|&v| v < 0) {
        bail!(invalid, "{what} needs nonnegative segment ids, got {}", values[0]);
    }
    Ok(values.last().map_or(0, |&v| v as usize + 1))
}

/// How many rows each of `n` segments holds (`present`: 1 for a row that
/// counts, 0 for a dropped one), shaped `[n, 1, ...]` to broadcast against
/// rows of rank `rest_rank`.
fn segment_sizes(ids: &Tensor, present: &Tensor, n: usize, rest_rank: usize) -> Result<Tensor> {
    let c = mv::scatter_nd(&mv::expand_dims(ids, -1)?, present, Shape::new(&[n]))?;
    let mut shape = vec![n as i64];
    shape.extend(std::iter::repeat_n(1i64, rest_rank));
    mv::reshape(&c, &shape)
}

fn sorted_segment(f: Segment, data: &Tensor, ids: &Tensor, what: &str) -> Result<Tensor> {
    let n = sorted_segments(ids, what)?;
    let r = unsorted_segment(f, data, ids, n, what)?;
    if matches!(f, Segment::Max | Segment::Min) {
        // TensorFlow's sorted max and min give 0 for an empty segment.
        let (_, flat_ids, rest) = flatten_segments(data, ids, what)?;
        let sizes = segment_sizes(&flat_ids, &ew::cast(&cr::ones_like(&flat_ids)?, data.dtype())?, n, rest.len())?;
        return ew::select(&ew::greater(&sizes, 0)?, &r, 0);
    }
    Ok(r)
}

macro_rules! sorted_segment_fns {
    ($( $(#[$doc:meta])* $name:ident => $f:ident; )*) => {$(
        $(#[$doc])*
        ///
        /// `segment_ids` is sorted, with a prefix of `data`'s shape; there are
        /// `last id + 1` segments, so the ids must be known when the op is
        /// built (eagerly, or a graph constant).
        #[track_caller]
        pub fn $name(data: &Tensor, segment_ids: &Tensor) -> Result<Tensor> {
            sorted_segment(Segment::$f, data, segment_ids, stringify!($name))
        }
    )*};
}

sorted_segment_fns! {
    /// The sum per segment of sorted ids.
    segment_sum => Sum;
    /// The maximum per segment of sorted ids (0 for empty segments).
    segment_max => Max;
    /// The minimum per segment of sorted ids (0 for empty segments).
    segment_min => Min;
    /// The product per segment of sorted ids (1 for empty segments).
    segment_prod => Prod;
    /// The mean per segment of sorted ids (0 for empty segments).
    segment_mean => Mean;
}

/// Counts of each value of the nonnegative integers `x` (or the sums of
/// their `weights`), of length `max(x) + 1`, at least `minlength` and at most
/// `maxlength` (values past it are dropped). The length comes from the
/// values unless `minlength == maxlength`.
#[track_caller]
pub fn bincount(
    x: &Tensor,
    weights: Option<&Tensor>,
    minlength: Option<usize>,
    maxlength: Option<usize>,
) -> Result<Tensor> {
    if !x.dtype().is_int() {
        bail!(dtype, "bincount needs integer values, got {}", x.dtype());
    }
    let len = match (minlength, maxlength) {
        (Some(a), Some(b)) if a == b => a,
        _ => {
            if x.is_symbolic() {
                bail!(invalid, "bincount in a graph needs minlength == maxlength (the length comes from the values)");
            }
            let v = ew::cast(x, DType::I64)?.to_vec::<i64>()?;
            if let Some(&neg) = v.iter().find(|&&v| v < 0) {
                bail!(invalid, "bincount needs nonnegative values, got {neg}");
            }
            let top = v.iter().max().map_or(0, |&m| m as usize + 1);
            top.max(minlength.unwrap_or(0)).min(maxlength.unwrap_or(usize::MAX))
        }
    };
    let flat = mv::reshape(x, &[-1])?;
    let values = match weights {
        Some(w) => mv::reshape(w, &[-1])?,
        None => ew::cast(&cr::ones_like(&flat)?, DType::I32)?,
    };
    // Values at or past the length are dropped (negative segment ids are).
    let ids = ew::select(&ew::less(&flat, len as i64)?, &flat, -1)?;
    unsorted_segment_sum(&values, &ids, len)
}

/// The `num_classes x num_classes` matrix whose entry `[i, j]` counts (or
/// sums the `weights` of) the examples with label `i` predicted as `j`.
#[track_caller]
pub fn confusion_matrix(
    labels: &Tensor,
    predictions: &Tensor,
    num_classes: usize,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let l = ew::cast(&mv::reshape(labels, &[-1])?, DType::I64)?;
    let p = ew::cast(&mv::reshape(predictions, &[-1])?, DType::I64)?;
    let values = match weights {
        Some(w) => mv::reshape(w, &[-1])?,
        None => ew::cast(&cr::ones_like(&l)?, DType::I32)?,
    };
    let Some(cells) = num_classes.checked_mul(num_classes) else {
        bail!(invalid, "confusion_matrix: {num_classes} classes is too many");
    };
    let flat = ew::add(&ew::mul(&l, num_classes as i64)?, &p)?;
    let in_range = ew::logical_and(
        &ew::logical_and(&ew::greater_equal(&l, 0i64)?, &ew::less(&l, num_classes as i64)?)?,
        &ew::logical_and(&ew::greater_equal(&p, 0i64)?, &ew::less(&p, num_classes as i64)?)?,
    )?;
    if !labels.is_symbolic()
        && !predictions.is_symbolic()
        && !rd::all(&in_range, Axes::All, false)?.to_scalar::<bool>()?
    {
        bail!(invalid, "confusion_matrix: labels and predictions must lie in [0, {num_classes})");
    }
    let ids = ew::select(&in_range, &flat, -1i64)?;
    let m = unsorted_segment_sum(&values, &ids, cells)?;
    mv::reshape(&m, &[num_classes as i64, num_classes as i64])
}

/// Whether each target class is among the `k` largest predictions of its
/// row (`predictions: [batch, classes]`, `targets: [batch]`); classes tied at
/// the boundary all count as in, and a non-finite prediction or an
/// out-of-range target is not.
#[track_caller]
pub fn in_top_k(targets: &Tensor, predictions: &Tensor, k: usize) -> Result<Tensor> {
    if predictions.rank() != 2 || targets.rank() != 1 {
        bail!(
            shape,
            "in_top_k needs predictions [batch, classes] and targets [batch], got {:?} and {:?}",
            predictions.shape(),
            targets.shape()
        );
    }
    let classes = predictions.shape().dim(1).unwrap_or(0) as i64;
    let t = ew::cast(targets, DType::I64)?;
    let valid = ew::logical_and(&ew::greater_equal(&t, 0i64)?, &ew::less(&t, classes)?)?;
    let safe = ew::select(&valid, &t, 0i64)?;
    let picked = mv::gather(predictions, &mv::expand_dims(&safe, -1)?, 1, 1)?;
    let above = rd::sum(&ew::cast(&ew::greater(predictions, &picked)?, DType::I64)?, 1, false)?;
    let finite = ew::is_finite(&mv::squeeze(&picked, &[1])?)?;
    ew::logical_and(&ew::logical_and(&ew::less(&above, i64::try_from(k).unwrap_or(i64::MAX))?, &finite)?, &valid)
}

/// The `k` largest entries along the last axis (TensorFlow's `approx_max_k`,
/// computed exactly).
#[track_caller]
pub fn approx_max_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    nn::top_k(x, k)
}

/// The `k` smallest entries along the last axis, smallest first (TensorFlow's
/// `approx_min_k`, computed exactly).
#[track_caller]
pub fn approx_min_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let (v, i) = nn::top_k(&ew::neg(x)?, k)?;
    Ok((ew::neg(&v)?, i))
}

/// The inverse complementary error function on `[0, 2]`: `-ndtri(x / 2) / sqrt(2)`.
#[track_caller]
pub fn erfcinv(x: &Tensor) -> Result<Tensor> {
    ew::mul(&ew::ndtri(&ew::mul(x, 0.5)?)?, -std::f64::consts::FRAC_1_SQRT_2)
}

/// `ln |B(x)|` of the last axis: `sum(lgamma(x)) - lgamma(sum(x))`.
#[track_caller]
pub fn lbeta(x: &Tensor) -> Result<Tensor> {
    ew::sub(&rd::sum(&ew::lgamma(x)?, -1, false)?, &ew::lgamma(&rd::sum(x, -1, false)?)?)
}

/// The modified Bessel function of the first kind of order 0, `I0(x)`.
#[track_caller]
pub fn bessel_i0(x: &Tensor) -> Result<Tensor> {
    ew::mul(&ew::bessel_i0e(x)?, &ew::exp(&ew::abs(x)?)?)
}

/// The modified Bessel function of the first kind of order 1, `I1(x)`.
#[track_caller]
pub fn bessel_i1(x: &Tensor) -> Result<Tensor> {
    ew::mul(&ew::bessel_i1e(x)?, &ew::exp(&ew::abs(x)?)?)
}

/// The inverse of the permutation vector `x`: `y[x[i]] = i`. Eagerly, a
/// vector that is not a permutation of `0..n` is an error.
#[track_caller]
pub fn invert_permutation(x: &Tensor) -> Result<Tensor> {
    let n = match (x.rank(), x.shape().dim(0)) {
        (1, Some(n)) if x.dtype().is_int() => n,
        _ => bail!(
            shape,
            "invert_permutation needs an integer vector of known length, got {} {:?}",
            x.dtype(),
            x.shape()
        ),
    };
    if !x.is_symbolic() {
        let mut seen = vec![false; n];
        for v in ew::cast(x, DType::I64)?.to_vec::<i64>()? {
            match usize::try_from(v).ok().filter(|&v| v < n) {
                Some(i) if !seen[i] => seen[i] = true,
                _ => bail!(invalid, "invert_permutation: {v} is repeated or outside 0..{n}"),
            }
        }
    }
    let positions = cr::range(Ctx::of(x), 0i64, n as i64, 1i64, x.dtype())?;
    mv::scatter_nd(&mv::expand_dims(x, -1)?, &positions, Shape::new(&[n]))
}
