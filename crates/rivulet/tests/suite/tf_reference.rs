//! The TensorFlow-generated reference suite: every case of
//! `tests/reference/tf_ops/manifest.json` (made by `tests/reference/tf_ops.py`
//! with real TensorFlow) is built here by name and run on every device
//! (the CPU, the reference backend, and a GPU where one is found), eagerly
//! and as a graph. Outputs must have TensorFlow's dtype and shape and its
//! values within the case's tolerance; gradients of the same weighted loss
//! must match TensorFlow's.

use rivulet::nn::{Loss, Optimizer, Reduction};
use rivulet::ops;
use rivulet::ops::UpdateRule;
use rivulet::{gradients, load_npy, Axes, DType, GradientTape, Graph, Result, Session, Tensor, Unconnected};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tf_ops")
}

type Build = Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>>;

/// How a case runs: its computation, and whether a graph can hold it.
struct Recipe {
    build: Build,
    /// Inputs that become graph constants instead of placeholders (values
    /// the op needs when it is built, such as sorted segment ids).
    consts: &'static [usize],
    /// The output size depends on the values: eager only.
    eager_only: bool,
}

fn r(build: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + 'static) -> Recipe {
    Recipe { build: Box::new(build), consts: &[], eager_only: false }
}

fn one(t: Result<Tensor>) -> Result<Vec<Tensor>> {
    Ok(vec![t?])
}

fn two((a, b): (Tensor, Tensor)) -> Result<Vec<Tensor>> {
    Ok(vec![a, b])
}

/// The decoded paths as dense matrices (-1 past each end), then the
/// log-probabilities.
fn beam((paths, log_probs): (Vec<ops::SparseLabels>, Tensor)) -> Result<Vec<Tensor>> {
    let mut out = paths.iter().map(|p| p.to_dense(-1)).collect::<Result<Vec<_>>>()?;
    out.push(log_probs);
    Ok(out)
}

/// A two-tap window sum along the first `n` spatial axes with `Valid`
/// padding (the generator's `pair_sum`).
fn pair_sum(x: &Tensor, n: usize, padding: ops::Padding) -> Result<Tensor> {
    assert_eq!(padding, ops::Padding::Valid);
    let mut y = x.clone();
    for axis in 1..=n {
        let len = y.shape().dims()[axis] as i64;
        let mut begin = vec![0usize; y.rank()];
        let mut size = vec![-1i64; y.rank()];
        size[axis] = len - 1;
        let head = ops::slice(&y, &begin, &size)?;
        begin[axis] = 1;
        let tail = ops::slice(&y, &begin, &size)?;
        y = ops::add(&head, &tail)?;
    }
    Ok(y)
}

/// The sampled losses' options with the generator's sampled values
/// (inputs 4 to 6).
fn sampled_options(x: &[Tensor], remove_accidental_hits: bool) -> ops::SampledLossOptions {
    ops::SampledLossOptions {
        num_sampled: 5,
        num_classes: 10,
        num_true: 2,
        sampled_values: Some(ops::SampledCandidates {
            sampled: x[4].clone(),
            true_expected_count: x[5].clone(),
            sampled_expected_count: x[6].clone(),
        }),
        remove_accidental_hits,
        seed: None,
    }
}

/// The Rust side of each case, by the manifest's name.
fn recipe(name: &str) -> Option<Recipe> {
    let unary: Option<fn(&Tensor) -> Result<Tensor>> = match name.rsplit_once(' ').map(|(op, _)| op) {
        Some("erfc") => Some(ops::erfc),
        Some("sinh") => Some(ops::sinh),
        Some("cosh") => Some(ops::cosh),
        Some("asin") => Some(ops::asin),
        Some("acos") => Some(ops::acos),
        Some("atan") => Some(ops::atan),
        Some("asinh") => Some(ops::asinh),
        Some("acosh") => Some(ops::acosh),
        Some("atanh") => Some(ops::atanh),
        Some("exp") => Some(ops::exp),
        Some("expm1") => Some(ops::expm1),
        Some("log") => Some(ops::log),
        Some("log1p") => Some(ops::log1p),
        Some("sqrt") => Some(ops::sqrt),
        Some("rsqrt") => Some(ops::rsqrt),
        Some("reciprocal") => Some(ops::reciprocal),
        Some("square") => Some(ops::square),
        Some("sin") => Some(ops::sin),
        Some("cos") => Some(ops::cos),
        Some("tan") => Some(ops::tan),
        Some("tanh") => Some(ops::tanh),
        Some("sigmoid") => Some(ops::sigmoid),
        Some("softplus") => Some(ops::softplus),
        Some("erf") => Some(ops::erf),
        Some("abs") => Some(ops::abs),
        Some("sign") => Some(ops::sign),
        Some("relu") => Some(ops::relu),
        Some("relu6") => Some(ops::relu6),
        Some("elu") => Some(ops::elu),
        Some("selu") => Some(ops::selu),
        Some("gelu") => Some(ops::gelu),
        Some("gelu_approximate") => Some(ops::gelu_approximate),
        Some("leaky_relu") => Some(|x| ops::leaky_relu(x, 0.2)),
        Some("log_sigmoid") => Some(ops::log_sigmoid),
        Some("softsign") => Some(ops::softsign),
        Some("silu") => Some(|x| ops::silu(x, 1.0)),
        Some("round") => Some(ops::round),
        Some("rint") => Some(ops::rint),
        Some("floor") => Some(ops::floor),
        Some("ceil") => Some(ops::ceil),
        Some("reciprocal_no_nan") => Some(ops::reciprocal_no_nan),
        Some("is_inf") => Some(ops::is_inf),
        Some("is_nan") => Some(ops::is_nan),
        Some("is_finite") => Some(ops::is_finite),
        Some("lgamma") => Some(ops::lgamma),
        Some("digamma") => Some(ops::digamma),
        Some("erfinv") => Some(ops::erfinv),
        Some("ndtri") => Some(ops::ndtri),
        Some("erfcinv") => Some(ops::erfcinv),
        Some("bessel_i0e") => Some(ops::bessel_i0e),
        Some("bessel_i1e") => Some(ops::bessel_i1e),
        Some("bessel_i0") => Some(ops::bessel_i0),
        Some("bessel_i1") => Some(ops::bessel_i1),
        _ => None,
    };
    if let Some(f) = unary {
        return Some(r(move |x| one(f(&x[0]))));
    }
    let segment_sorted = |b: fn(&[Tensor]) -> Result<Vec<Tensor>>| Recipe { consts: &[1], ..r(b) };
    let eager = |b: fn(&[Tensor]) -> Result<Vec<Tensor>>| Recipe { eager_only: true, ..r(b) };
    Some(match name {
        "bessel f64" => r(|x| Ok(vec![ops::bessel_i0e(&x[0])?, ops::bessel_i1e(&x[0])?])),
        "zeta f64" => r(|x| one(ops::zeta(&x[0], &x[1]))),
        "polygamma f64" => r(|x| one(ops::polygamma(&x[0], &x[1]))),
        "igamma f64" => r(|x| Ok(vec![ops::igamma(&x[0], &x[1])?, ops::igammac(&x[0], &x[1])?])),
        "zeta grad" => r(|x| one(ops::zeta(&Tensor::from([2.0f32, 3.5, 5.0]), &x[0]))),
        "polygamma grad" => r(|x| one(ops::polygamma(&Tensor::from([0.0f32, 1.0, 2.0]), &x[0]))),
        "igamma grad" => r(|x| {
            let a = Tensor::from([0.5f32, 1.0, 2.5]);
            Ok(vec![ops::igamma(&a, &x[0])?, ops::igammac(&a, &x[0])?])
        }),
        "nextafter" | "nextafter f64" => r(|x| one(ops::nextafter(&x[0], &x[1]))),
        "lbeta" => r(|x| one(ops::lbeta(&x[0]))),
        "invert_permutation" => r(|x| one(ops::invert_permutation(&x[0]))),
        "batch_norm_with_global_normalization" => {
            r(|x| one(ops::batch_norm_with_global_normalization(&x[0], &x[1], &x[2], &x[3], &x[4], 1e-3, true)))
        }
        "einsum three operands" => r(|x| one(ops::einsum("ij,jk,kl->il", &[&x[0], &x[1], &x[2]]))),
        "einsum trace and diagonal" => r(|x| Ok(vec![ops::einsum("ii->", &[&x[0]])?, ops::einsum("ii->i", &[&x[0]])?])),
        "einsum ellipsis" => r(|x| one(ops::einsum("...ij,...jk->...ik", &[&x[0], &x[1]]))),
        "einsum implicit output" => r(|x| one(ops::einsum("ij,jk", &[&x[0], &x[1]]))),
        "einsum outer and batch diagonal" => r(|x| one(ops::einsum("bii,k->bik", &[&x[0], &x[1]]))),
        "tensordot integer axes" => {
            r(|x| Ok(vec![ops::tensordot_n(&x[0], &x[1], 2)?, ops::tensordot_n(&x[0], &x[1], 0)?]))
        }
        "argmax output_type" => {
            r(|x| Ok(vec![ops::argmax_with(&x[0], 1, DType::I32)?, ops::argmin_with(&x[0], 0, DType::I32)?]))
        }
        "strided_slice masks" => r(|x| {
            Ok(vec![
                ops::strided_slice_with_masks(&x[0], &[1, 0, 4], &[3, 4, 0], &[1, 2, -2], 2, 0, 0, 0, 0)?,
                ops::strided_slice_with_masks(&x[0], &[0, 2, 0], &[0, 3, 0], &[1, 1, 1], 0, 0, 1, 0, 2)?,
                ops::strided_slice_with_masks(&x[0], &[1, 0, 0], &[4, 0, 0], &[2, 1, 1], 0, 4, 0, 2, 0)?,
            ])
        }),
        "ctc_loss" => r(|x| one(ops::ctc_loss(&x[0], &x[1], &x[2], &x[3], 0))),
        "ctc_loss blank last" => r(|x| one(ops::ctc_loss(&x[0], &x[1], &x[2], &x[3], 4))),
        "leaky_relu at 0" => r(|x| one(ops::leaky_relu(&x[0], 0.3))),
        "truediv int32" | "truediv int64" | "truediv int32 by zero" => r(|x| one(ops::div(&x[0], &x[1]))),
        "floordiv int32" => r(|x| one(ops::floor_div(&x[0], &x[1]))),
        "floormod int32" | "floormod f32" => r(|x| one(ops::floor_mod(&x[0], &x[1]))),
        "truncatediv int32" => r(|x| one(ops::truncate_div(&x[0], &x[1]))),
        "truncatemod int32" | "truncatemod f32" => r(|x| one(ops::truncate_mod(&x[0], &x[1]))),
        "div_no_nan zeros" | "div_no_nan grad" => r(|x| one(ops::div_no_nan(&x[0], &x[1]))),
        "xlogy zeros" | "xlogy grad" | "xlogy grad at x = 0" => r(|x| one(ops::xlogy(&x[0], &x[1]))),
        "xdivy zeros" | "xdivy grad" => r(|x| one(ops::xdivy(&x[0], &x[1]))),
        "xlog1py zeros" | "xlog1py grad" => r(|x| one(ops::xlog1py(&x[0], &x[1]))),
        "multiply_no_nan zeros" => r(|x| one(ops::multiply_no_nan(&x[0], &x[1]))),
        "squared_difference" => r(|x| one(ops::squared_difference(&x[0], &x[1]))),
        "atan2" => r(|x| one(ops::atan2(&x[0], &x[1]))),
        "pow" => r(|x| one(ops::pow(&x[0], &x[1]))),
        "maximum nan" => r(|x| Ok(vec![ops::maximum(&x[0], &x[1])?, ops::minimum(&x[0], &x[1])?])),
        "logical_xor" => r(|x| one(ops::logical_xor(&x[0], &x[1]))),
        "count_nonzero" => {
            r(|x| Ok(vec![ops::count_nonzero(&x[0], Axes::All, false)?, ops::count_nonzero(&x[0], 1, false)?]))
        }
        "reduce_euclidean_norm" => r(|x| one(ops::euclidean_norm(&x[0], 1, false))),
        "reduce_logsumexp" => r(|x| one(ops::logsumexp(&x[0], 0, false))),
        "reduce_std" => r(|x| one(ops::std_dev(&x[0], 1, false))),
        "reduce_variance" => r(|x| one(ops::variance(&x[0], [0i64, 1].as_slice(), false))),
        "cumulative_logsumexp" => r(|x| {
            Ok(vec![
                ops::cumulative_logsumexp(&x[0], 1, false, false)?,
                ops::cumulative_logsumexp(&x[0], 0, false, true)?,
            ])
        }),
        "reduce_mean int32" => r(|x| one(ops::mean(&x[0], Axes::All, false))),
        "argmax nan" => r(|x| Ok(vec![ops::argmax(&x[0], 1)?, ops::argmin(&x[0], 1)?])),
        "zero_fraction" => r(|x| one(ops::zero_fraction(&x[0]))),
        "add_n" => r(|x| one(ops::add_n(&[&x[0], &x[1], &x[2]]))),
        "polyval" => r(|x| one(ops::polyval(&[&x[0], &x[1], &x[2]], &x[3]))),
        "is_non_decreasing" => r(|x| Ok(vec![ops::is_non_decreasing(&x[0])?, ops::is_strictly_increasing(&x[0])?])),
        "unsorted_segment_sum" => r(|x| one(ops::unsorted_segment_sum(&x[0], &x[1], 5))),
        "unsorted_segment_max" => r(|x| one(ops::unsorted_segment_max(&x[0], &x[1], 5))),
        "unsorted_segment_min" => r(|x| one(ops::unsorted_segment_min(&x[0], &x[1], 5))),
        "unsorted_segment_prod" => r(|x| one(ops::unsorted_segment_prod(&x[0], &x[1], 5))),
        "unsorted_segment_mean" => r(|x| one(ops::unsorted_segment_mean(&x[0], &x[1], 5))),
        "unsorted_segment_sqrt_n" => r(|x| one(ops::unsorted_segment_sqrt_n(&x[0], &x[1], 5))),
        "segment_sum" => segment_sorted(|x| one(ops::segment_sum(&x[0], &x[1]))),
        "segment_max" => segment_sorted(|x| one(ops::segment_max(&x[0], &x[1]))),
        "segment_min" => segment_sorted(|x| one(ops::segment_min(&x[0], &x[1]))),
        "segment_prod" => segment_sorted(|x| one(ops::segment_prod(&x[0], &x[1]))),
        "segment_mean" => segment_sorted(|x| one(ops::segment_mean(&x[0], &x[1]))),
        "bincount" => eager(|x| one(ops::bincount(&x[0], None, None, None))),
        "bincount weights" => eager(|x| one(ops::bincount(&x[0], Some(&x[1]), Some(7), None))),
        "confusion_matrix" => r(|x| one(ops::confusion_matrix(&x[0], &x[1], 4, None))),
        "in_top_k" => r(|x| Ok(vec![ops::in_top_k(&x[0], &x[1], 1)?, ops::in_top_k(&x[0], &x[1], 2)?])),
        "l2_normalize" => r(|x| one(ops::l2_normalize(&x[0], 1, 1e-12))),
        "l2_loss" => r(|x| one(ops::l2_loss(&x[0]))),
        "moments" => r(|x| two(ops::moments(&x[0], 0, false)?)),
        "moments keepdims" => r(|x| two(ops::moments(&x[0], 1, true)?)),
        "weighted_moments" => r(|x| two(ops::weighted_moments(&x[0], 0, &x[1], false)?)),
        "batch_normalization" => {
            r(|x| one(ops::batch_normalization(&x[0], &x[1], &x[2], Some(&x[3]), Some(&x[4]), 1e-3)))
        }
        "sufficient_statistics" => r(|x| {
            let (c, s, ss) = ops::sufficient_statistics(&x[0], 0, None, false)?;
            Ok(vec![c, s, ss])
        }),
        "normalize_moments" => r(|x| two(ops::normalize_moments(&x[0], &x[1], &x[2], None)?)),
        "local_response_normalization" => r(|x| one(ops::local_response_normalization(&x[0], 2, 1.0, 0.5, 0.75))),
        "sigmoid_cross_entropy_with_logits" => r(|x| one(ops::sigmoid_cross_entropy_with_logits(&x[0], &x[1]))),
        "weighted_cross_entropy_with_logits" => r(|x| one(ops::weighted_cross_entropy_with_logits(&x[0], &x[1], 2.5))),
        "softmax_cross_entropy_with_logits" => r(|x| one(ops::softmax_cross_entropy_with_logits(&x[0], &x[1], -1))),
        "sparse_softmax_cross_entropy_with_logits" => {
            r(|x| one(ops::sparse_softmax_cross_entropy_with_logits(&x[0], &x[1])))
        }
        "log_poisson_loss" => r(|x| one(ops::log_poisson_loss(&x[0], &x[1], true))),
        "crelu" => r(|x| one(ops::crelu(&x[0], -1))),
        "bias_add" => r(|x| one(ops::bias_add(&x[0], &x[1]))),
        "softmax" => r(|x| one(ops::softmax(&x[0], -1))),
        "log_softmax" => r(|x| one(ops::log_softmax(&x[0], -1))),
        "compute_average_loss" => r(|x| one(ops::compute_average_loss(&x[0], Some(&x[1]), Some(8)))),
        "top_k" => r(|x| two(ops::top_k(&x[0], 2)?)),
        "meshgrid" => r(|x| ops::meshgrid(&[&x[0], &x[1]], true)),
        "meshgrid ij" => r(|x| ops::meshgrid(&[&x[0], &x[1]], false)),
        "repeat" => r(|x| Ok(vec![ops::repeat(&x[0], 2, Some(1))?, ops::repeat(&x[0], 3, None)?])),
        "sequence_mask" => r(|x| one(ops::sequence_mask(&x[0], 5))),
        "reverse_sequence" => r(|x| one(ops::reverse_sequence(&x[0], &x[1], 1, 0))),
        "searchsorted" => {
            r(|x| Ok(vec![ops::searchsorted(&x[0], &x[1], false)?, ops::searchsorted(&x[0], &x[1], true)?]))
        }
        "unravel_index" => r(|x| one(ops::unravel_index(&x[0], &[3, 4]))),
        "tensor_scatter_nd_add" => r(|x| one(ops::tensor_scatter_nd_add(&x[0], &x[1], &x[2]))),
        "tensor_scatter_nd_sub" => r(|x| one(ops::tensor_scatter_nd_sub(&x[0], &x[1], &x[2]))),
        "tensor_scatter_nd_max" => r(|x| one(ops::tensor_scatter_nd_max(&x[0], &x[1], &x[2]))),
        "tensor_scatter_nd_min" => r(|x| one(ops::tensor_scatter_nd_min(&x[0], &x[1], &x[2]))),
        "tensor_scatter_nd_update" => r(|x| one(ops::tensor_scatter_nd_update(&x[0], &x[1], &x[2]))),
        "where one argument" => eager(|x| one(ops::nonzero(&x[0]))),
        "boolean_mask" => eager(|x| one(ops::boolean_mask(&x[0], &x[1]))),
        "unique_with_counts" => eager(|x| {
            let (a, b, c) = ops::unique_with_counts(&x[0])?;
            Ok(vec![a, b, c])
        }),
        "space_to_batch_nd" => r(|x| one(ops::space_to_batch_nd(&x[0], &[2, 2], &[(0, 0), (0, 0)]))),
        "space_to_batch_nd padded" => r(|x| one(ops::space_to_batch_nd(&x[0], &[2, 2], &[(1, 0), (1, 1)]))),
        "batch_to_space" => r(|x| one(ops::batch_to_space(&x[0], &[2, 2], &[(0, 1), (1, 1)]))),
        "isotonic_regression" | "isotonic_regression f64" | "isotonic_regression int32" => {
            r(|x| two(ops::isotonic_regression(&x[0], true, -1)?))
        }
        "isotonic_regression increasing axis 0" => r(|x| two(ops::isotonic_regression(&x[0], false, 0)?)),
        "ctc_unique_labels" => r(|x| two(ops::ctc_unique_labels(&x[0])?)),
        "collapse_repeated" => eager(|x| two(ops::collapse_repeated(&x[0], &x[1])?)),
        "ctc_greedy_decoder" => eager(|x| {
            let (d, n) = ops::ctc_greedy_decoder(&x[0], &x[1], true, None)?;
            Ok(vec![d.to_dense(-1)?, n])
        }),
        "ctc_greedy_decoder unmerged blank 0" => eager(|x| {
            let (d, n) = ops::ctc_greedy_decoder(&x[0], &x[1], false, Some(0))?;
            Ok(vec![d.to_dense(-1)?, n])
        }),
        "ctc_beam_search_decoder" => eager(|x| beam(ops::ctc_beam_search_decoder(&x[0], &x[1], 100, 3)?)),
        "ctc_beam_search_decoder narrow beam" => eager(|x| beam(ops::ctc_beam_search_decoder(&x[0], &x[1], 3, 2)?)),
        "with_space_to_batch valid" => {
            r(|x| one(ops::with_space_to_batch(&x[0], &[2], ops::Padding::Valid, None, |y, p| pair_sum(y, 1, p))))
        }
        "with_space_to_batch same" => {
            r(|x| one(ops::with_space_to_batch(&x[0], &[3], ops::Padding::Same, Some(&[2]), |y, p| pair_sum(y, 1, p))))
        }
        "with_space_to_batch 2d" => {
            r(|x| one(ops::with_space_to_batch(&x[0], &[2, 3], ops::Padding::Valid, None, |y, p| pair_sum(y, 2, p))))
        }
        "log_uniform_candidate_sampler counts" => {
            eager(|x| one(Ok(ops::log_uniform_candidate_sampler(&x[0], 2, 4, false, 10, Some(1))?.true_expected_count)))
        }
        "uniform_candidate_sampler counts" => {
            eager(|x| one(Ok(ops::uniform_candidate_sampler(&x[0], 2, 4, false, 10, Some(1))?.true_expected_count)))
        }
        "learned_unigram_candidate_sampler counts" => eager(|x| {
            one(Ok(ops::learned_unigram_candidate_sampler(&x[0], 2, 4, false, 10, Some(1))?.true_expected_count))
        }),
        "fixed_unigram_candidate_sampler counts" => eager(|x| {
            let unigrams = [5.0, 1.0, 2.0, 8.0, 3.0, 1.0, 4.0, 6.0];
            let s = ops::fixed_unigram_candidate_sampler(&x[0], 2, 4, false, 10, &unigrams, 0.5, 2, Some(1))?;
            one(Ok(s.true_expected_count))
        }),
        "all_candidate_sampler" => r(|x| {
            let s = ops::all_candidate_sampler(&x[0], 2, 5)?;
            Ok(vec![s.sampled, s.true_expected_count, s.sampled_expected_count])
        }),
        "compute_accidental_hits" => eager(|x| {
            let (a, b, c) = ops::compute_accidental_hits(&x[0], &x[1], 2)?;
            Ok(vec![a, b, c])
        }),
        "nce_loss" => r(|x| one(ops::nce_loss(&x[0], &x[1], &x[2], &x[3], &sampled_options(x, false)))),
        "nce_loss without hits" => r(|x| one(ops::nce_loss(&x[0], &x[1], &x[2], &x[3], &sampled_options(x, true)))),
        "sampled_softmax_loss" => {
            r(|x| one(ops::sampled_softmax_loss(&x[0], &x[1], &x[2], &x[3], &sampled_options(x, true))))
        }
        "sampled_softmax_loss repeated sample" => {
            r(|x| one(ops::sampled_softmax_loss(&x[0], &x[1], &x[2], &x[3], &sampled_options(x, true))))
        }
        "ctc_greedy_decoder ties" => eager(|x| {
            let (d, n) = ops::ctc_greedy_decoder(&x[0], &x[1], true, Some(0))?;
            Ok(vec![d.to_dense(-1)?, n])
        }),
        "sampled_softmax_loss with hits" => {
            r(|x| one(ops::sampled_softmax_loss(&x[0], &x[1], &x[2], &x[3], &sampled_options(x, false))))
        }
        "truediv int8" | "truediv uint16" | "truediv uint32" | "truediv uint64" => r(|x| one(ops::div(&x[0], &x[1]))),
        "int8 arithmetic wraps" => r(|x| {
            let (a, b) = (&x[0], &x[1]);
            Ok(vec![ops::add(a, b)?, ops::sub(a, b)?, ops::mul(a, b)?, ops::abs(a)?, ops::neg(a)?, ops::maximum(a, b)?])
        }),
        "int16 floordiv floormod" => r(|x| Ok(vec![ops::floor_div(&x[0], &x[1])?, ops::floor_mod(&x[0], &x[1])?])),
        "uint16 sum wraps mean exact" => r(|x| {
            Ok(vec![
                ops::sum(&x[0], 1, false)?,
                ops::mean(&x[0], 1, false)?,
                ops::max(&x[0], 0, false)?,
                ops::argmax(&x[0], 1)?,
            ])
        }),
        "uint32 uint64 arithmetic" => r(|x| {
            let c32 = Tensor::from_slice(&[1u32, 7], [2])?;
            let c64 = Tensor::from_slice(&[1u64, 1 << 63], [2])?;
            Ok(vec![
                ops::add(&x[0], &c32)?,
                ops::add(&x[1], &c64)?,
                ops::cast(&x[1], DType::F64)?,
                ops::cast(&x[1], DType::F32)?,
            ])
        }),
        "casts across signedness" => r(|x| {
            let mut out = Vec::new();
            for d in [DType::U8, DType::U16, DType::U32, DType::U64, DType::I16] {
                out.push(ops::cast(&x[0], d)?);
            }
            out.push(ops::cast(&ops::cast(&x[0], DType::U64)?, DType::I8)?);
            Ok(out)
        }),
        "igamma grad a f64" => r(|x| {
            let x64 = Tensor::from(vec![0.2f64, 1.0, 4.0, 9.0, 45.0, 2.0, 0.5, 30.0]);
            Ok(vec![ops::igamma(&x[0], &x64)?, ops::igammac(&x[0], &x64)?])
        }),
        "igamma grad a" => r(|x| one(ops::igamma(&x[0], &Tensor::from(vec![0.3f32, 2.0, 1.5, 6.0, 0.8, 5.5])))),
        "fill run-time shape" => r(|x| one(ops::fill_dims(&x[0], &x[1]))),
        "broadcast_to run-time shape" => r(|x| one(ops::broadcast_to_dims(&x[0], &x[1]))),
        "conv2d same stride2" => r(|x| one(ops::conv2d(&x[0], &x[1], &[2], ops::Padding::Same))),
        "conv2d valid dilation2" => {
            r(|x| one(ops::convolution(&x[0], &x[1], &ops::ConvOptions::new(ops::Padding::Valid).dilations(&[2]))))
        }
        "conv2d same dilation2 stride1" => {
            r(|x| one(ops::convolution(&x[0], &x[1], &ops::ConvOptions::new(ops::Padding::Same).dilations(&[2, 2]))))
        }
        "conv2d explicit" => r(|x| {
            let padding = ops::Padding::Explicit { pads: vec![(1, 2), (0, 1)] };
            one(ops::conv2d(&x[0], &x[1], &[2, 1], padding))
        }),
        "conv2d 1x1" => r(|x| one(ops::conv2d(&x[0], &x[1], &[1], ops::Padding::Valid))),
        "conv1d same stride2" => r(|x| one(ops::conv1d(&x[0], &x[1], 2, ops::Padding::Same))),
        "conv3d same" => r(|x| one(ops::conv3d(&x[0], &x[1], &[1, 2, 1], ops::Padding::Same))),
        "depthwise_conv2d same" => r(|x| one(ops::depthwise_conv2d(&x[0], &x[1], &[1], ops::Padding::Same))),
        "separable_conv2d" => r(|x| one(ops::separable_conv2d(&x[0], &x[1], &x[2], &[1], ops::Padding::Valid))),
        "conv2d_transpose same stride2" => {
            r(|x| one(ops::conv2d_transpose(&x[0], &x[1], &[2, 8, 6, 2], &[2], ops::Padding::Same)))
        }
        "conv3d_transpose valid" => {
            r(|x| one(ops::conv3d_transpose(&x[0], &x[1], &[1, 4, 4, 3, 3], &[1], ops::Padding::Valid)))
        }
        "max_pool2d same stride2" => r(|x| one(ops::max_pool2d(&x[0], &[3], &[2], ops::Padding::Same))),
        "avg_pool2d same stride2" => r(|x| one(ops::avg_pool2d(&x[0], &[3], &[2], ops::Padding::Same))),
        "max_pool1d valid" => r(|x| one(ops::max_pool(&x[0], &ops::PoolOptions::new(&[2], ops::Padding::Valid)))),
        "avg_pool3d valid" => r(|x| one(ops::avg_pool(&x[0], &ops::PoolOptions::new(&[2], ops::Padding::Valid)))),
        "depth_to_space" => r(|x| one(ops::depth_to_space(&x[0], 2))),
        "space_to_depth" => r(|x| one(ops::space_to_depth(&x[0], 2))),
        "max_pool3d same" => {
            r(|x| one(ops::max_pool(&x[0], &ops::PoolOptions::new(&[2], ops::Padding::Same).strides(&[1, 2, 1]))))
        }
        "resize bilinear up" => r(|x| one(ops::resize(&x[0], [7, 8], ops::ResizeMethod::Bilinear))),
        "resize bilinear down" => r(|x| one(ops::resize(&x[0], [4, 3], ops::ResizeMethod::Bilinear))),
        "resize nearest" => r(|x| one(ops::resize(&x[0], [7, 2], ops::ResizeMethod::Nearest))),
        "resize bilinear 3d" => r(|x| one(ops::resize(&x[0], [5, 9], ops::ResizeMethod::Bilinear))),
        "extract_patches valid" => r(|x| one(ops::extract_patches(&x[0], [3, 2], [2, 1], [1, 1], ops::Padding::Valid))),
        "fused_batch_norm train" => r(|x| {
            let (y, m, v) = ops::fused_batch_norm(&x[0], &x[1], &x[2], None, None, &ops::BatchNormOptions::default())?;
            Ok(vec![y, m, v])
        }),
        "fused_batch_norm running" => r(|x| {
            let o = ops::BatchNormOptions { epsilon: 1e-2, exponential_avg_factor: 0.1, ..Default::default() };
            let (y, m, v) = ops::fused_batch_norm(&x[0], &x[1], &x[2], Some(&x[3]), Some(&x[4]), &o)?;
            Ok(vec![y, m, v])
        }),
        "fused_batch_norm inference nchw" => r(|x| {
            let o = ops::BatchNormOptions { training: false, channels_first: true, ..Default::default() };
            let (y, m, v) = ops::fused_batch_norm(&x[0], &x[1], &x[2], Some(&x[3]), Some(&x[4]), &o)?;
            Ok(vec![ops::transpose(&y, &[0, 2, 3, 1])?, m, v])
        }),
        // Keras's gamma and beta are variables assigned from the inputs: no gradient reaches those.
        "keras GroupNormalization" => r(|x| {
            let (g, b) = (ops::stop_gradient(&x[1])?, ops::stop_gradient(&x[2])?);
            one(ops::group_normalization(&x[0], 3, Some(&g), Some(&b), 1e-3))
        }),
        "keras BatchNormalization" => eager(|x| {
            use rivulet::nn::{BatchNormalization, Layer};
            let layer = BatchNormalization::with(0.9, 1e-3);
            layer.call(&x[0], false)?; // creates the variables
            let vars = layer.variables();
            vars[0].assign(&x[1])?;
            vars[1].assign(&x[2])?;
            let train = layer.call(&x[0], true)?;
            let moved = [vars[2].current(), vars[3].current()];
            let infer = layer.call(&ops::add(&ops::mul(&x[0], 0.5)?, 1.0)?, false)?;
            Ok(vec![train, moved[0].clone(), moved[1].clone(), infer])
        }),
        "extract_patches same rates" => {
            r(|x| one(ops::extract_patches(&x[0], [2, 3], [3, 2], [2, 1], ops::Padding::Same)))
        }
        _ => return keras_loss(name),
    })
}

/// The Keras loss cases: per example, the default reduction, and the
/// weighted sum.
fn keras_loss(name: &str) -> Option<Recipe> {
    let loss = match name.strip_prefix("keras ")? {
        "MeanSquaredError" => Loss::MeanSquaredError,
        "MeanAbsoluteError" => Loss::MeanAbsoluteError,
        "MeanAbsolutePercentageError" => Loss::MeanAbsolutePercentageError,
        "MeanSquaredLogarithmicError" => Loss::MeanSquaredLogarithmicError,
        "Huber" => Loss::Huber { delta: 0.7 },
        "LogCosh" => Loss::LogCosh,
        "Hinge" | "Hinge pm1" => Loss::Hinge,
        "SquaredHinge" => Loss::SquaredHinge,
        "CategoricalHinge" => Loss::CategoricalHinge,
        "CosineSimilarity" => Loss::CosineSimilarity { axis: -1 },
        "KLDivergence" => Loss::KLDivergence,
        "Poisson" => Loss::Poisson,
        "BinaryCrossentropy" => Loss::BinaryCrossentropy { from_logits: false, label_smoothing: 0.0 },
        "BinaryCrossentropy logits" => Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 },
        "BinaryFocalCrossentropy" => Loss::BinaryFocalCrossentropy {
            apply_class_balancing: true,
            alpha: 0.25,
            gamma: 1.5,
            from_logits: false,
            label_smoothing: 0.0,
        },
        "BinaryFocalCrossentropy logits" => Loss::BinaryFocalCrossentropy {
            apply_class_balancing: false,
            alpha: 0.25,
            gamma: 2.0,
            from_logits: true,
            label_smoothing: 0.1,
        },
        "CategoricalCrossentropy" => Loss::CategoricalCrossentropy { from_logits: false, label_smoothing: 0.0 },
        "CategoricalCrossentropy logits" => Loss::CategoricalCrossentropy { from_logits: true, label_smoothing: 0.0 },
        "CategoricalFocalCrossentropy" => {
            Loss::CategoricalFocalCrossentropy { alpha: 0.25, gamma: 2.0, from_logits: false, label_smoothing: 0.0 }
        }
        "CategoricalFocalCrossentropy logits" => {
            Loss::CategoricalFocalCrossentropy { alpha: 0.5, gamma: 2.0, from_logits: true, label_smoothing: 0.2 }
        }
        "SparseCategoricalCrossentropy" => Loss::SparseCategoricalCrossentropy { from_logits: false },
        "SparseCategoricalCrossentropy logits" => Loss::SparseCategoricalCrossentropy { from_logits: true },
        "CategoricalGeneralizedCrossEntropy" => Loss::CategoricalGeneralizedCrossEntropy { q: 0.7 },
        "Dice" => Loss::Dice,
        "Tversky" => Loss::Tversky { alpha: 0.3, beta: 0.7 },
        "CTC" => Loss::Ctc,
        "Circle" => Loss::Circle { gamma: 10.0, margin: 0.3, remove_diagonal: true },
        "BinaryCrossentropy smoothed logits" => Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.2 },
        "CategoricalCrossentropy smoothed" => {
            Loss::CategoricalCrossentropy { from_logits: false, label_smoothing: 0.1 }
        }
        "CategoricalCrossentropy smoothed logits" => {
            Loss::CategoricalCrossentropy { from_logits: true, label_smoothing: 0.3 }
        }
        _ => return None,
    };
    Some(r(move |x| {
        Ok(vec![
            loss.compute_with(&x[0], &x[1], Reduction::None, None)?,
            loss.compute(&x[0], &x[1])?,
            loss.compute_with(&x[0], &x[1], Reduction::Sum, Some(&x[2]))?,
        ])
    }))
}

/// One case of the manifest.
#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    file: String,
    inputs: usize,
    outputs: usize,
    grads: Vec<bool>,
    rtol: f64,
    atol: f64,
}

#[derive(serde::Deserialize)]
struct Manifest {
    tensorflow: String,
    cases: Vec<Entry>,
    optimizers: Vec<Trajectory>,
}

/// A Keras optimizer's weights after each step.
#[derive(serde::Deserialize)]
struct Trajectory {
    name: String,
    scale: f64,
    file: String,
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("tests/reference/tf_ops/manifest.json");
    serde_json::from_str(&text).expect("a valid manifest")
}

fn load(file: &str) -> Tensor {
    load_npy(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `got` has `want`'s dtype and shape, and its values within `rtol`/`atol`
/// (NaN where TensorFlow has NaN, the same infinities); the failures as text.
fn compare(what: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Option<String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Some(format!(
            "{what}: {} {:?}, TensorFlow has {} {:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let (g, w) = (crate::common::values(got), crate::common::values(want));
    let bad: Vec<String> = g
        .iter()
        .zip(&w)
        .enumerate()
        .filter(|(_, (p, q))| {
            let same = (p.is_nan() && q.is_nan()) || p == q;
            let near = p.is_finite() && q.is_finite() && (*p - *q).abs() <= atol + rtol * q.abs();
            !(same || near)
        })
        .map(|(i, (p, q))| format!("[{i}] {p:e} vs TensorFlow {q:e}"))
        .take(4)
        .collect();
    (!bad.is_empty()).then(|| format!("{what}: {}", bad.join(", ")))
}

/// `sum_k sum(cast(y_k, f32) * w_k)` over the float outputs, with the
/// generator's weights.
fn weighted_loss(ys: &[Tensor]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (k, y) in ys.iter().enumerate().filter(|(_, y)| y.dtype().is_float()) {
        let y = ops::cast(y, DType::F32)?;
        let w = match y.numel() {
            Some(n) => {
                let w: Vec<f32> = (0..n).map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.1 - 0.5).collect();
                Tensor::from_slice(&w, y.shape().clone())?
            }
            // A shape known only when the graph runs: the same weights as ops.
            None => {
                let flat = ops::reshape(&y, &[-1])?;
                let i = ops::cumsum(&ops::ones_like(&ops::cast(&flat, DType::I64)?)?, 0, true, false)?;
                let slot = ops::floor_mod(&ops::add(&ops::mul(&i, 7i64)?, (k * 3) as i64)?, 11i64)?;
                let w = ops::sub(&ops::mul(&ops::cast(&slot, DType::F32)?, 0.1)?, 0.5)?;
                ops::reshape_like(&w, &y)?
            }
        };
        let term = ops::sum(&ops::mul(&y, &w)?, Axes::All, false)?;
        total = Some(match total {
            Some(t) => ops::add(&t, &term)?,
            None => term,
        });
    }
    total.ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::InvalidArgument, "no float output"))
}

/// Outputs and gradients of one case, eagerly on `device`.
fn eager(rc: &Recipe, inputs: &[Tensor], device: &str, grads: bool) -> Result<(Vec<Tensor>, Vec<Option<Tensor>>)> {
    let xs: Vec<Tensor> = inputs.iter().map(|t| t.to_device(device)).collect::<Result<_>>()?;
    rivulet::device(device, || {
        let tape = GradientTape::new();
        for x in xs.iter().filter(|x| x.dtype().is_float()) {
            tape.watch(x);
        }
        let ys = (rc.build)(&xs)?;
        let g = if grads {
            let l = weighted_loss(&ys)?;
            tape.gradient(&l, &xs.iter().collect::<Vec<_>>())?
        } else {
            Vec::new()
        };
        Ok((ys, g))
    })?
}

/// Outputs and gradients of one case as a graph placed on `device`.
fn graph(rc: &Recipe, inputs: &[Tensor], device: &str, grads: bool) -> Result<(Vec<Tensor>, Vec<Option<Tensor>>)> {
    let g = Graph::new();
    let (xs, ys, gs) = rivulet::device(device, || -> Result<_> {
        let xs: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if rc.consts.contains(&i) {
                    g.constant(t.clone())
                } else {
                    g.placeholder(&format!("x{i}"), t.dtype(), t.shape().clone())
                }
            })
            .collect::<Result<_>>()?;
        let ys = (rc.build)(&xs)?;
        let gs = if grads {
            let l = weighted_loss(&ys)?;
            gradients(&[&l], &xs.iter().collect::<Vec<_>>(), None, Unconnected::None)?
        } else {
            Vec::new()
        };
        Ok((xs, ys, gs))
    })??;
    let feeds: Vec<(&Tensor, &Tensor)> =
        xs.iter().zip(inputs).enumerate().filter(|(i, _)| !rc.consts.contains(i)).map(|(_, p)| p).collect();
    let mut fetches: Vec<&Tensor> = ys.iter().collect();
    fetches.extend(gs.iter().flatten());
    let mut out = Session::new(&g).run(&fetches, &feeds)?.into_iter();
    let ys: Vec<Tensor> = out.by_ref().take(ys.len()).collect();
    let gs = gs.iter().map(|g| g.as_ref().and_then(|_| out.next())).collect();
    Ok((ys, gs))
}

/// Every case of the manifest has a recipe, on every device, in both modes,
/// with TensorFlow's outputs and gradients.
#[test]
fn tensorflow_reference_suite_on_every_device_in_both_modes() {
    let m = manifest();
    let devices: Vec<String> = rivulet::devices().iter().map(|d| d.to_string()).collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for e in &m.cases {
        let Some(rc) = recipe(&e.name) else {
            failures.push(format!("{}: no recipe in tests/suite/tf_reference.rs", e.name));
            continue;
        };
        let inputs: Vec<Tensor> = (0..e.inputs).map(|i| load(&format!("{}.in{i}.npy", e.file))).collect();
        let outputs: Vec<Tensor> = (0..e.outputs).map(|k| load(&format!("{}.out{k}.npy", e.file))).collect();
        let grads: Vec<Option<Tensor>> =
            e.grads.iter().enumerate().map(|(i, &has)| has.then(|| load(&format!("{}.grad{i}.npy", e.file)))).collect();
        let with_grads = !e.grads.is_empty();
        for device in &devices {
            let modes: &[&str] = if rc.eager_only { &["eager"] } else { &["eager", "graph"] };
            for &mode in modes {
                let what = format!("{} ({mode}, {device})", e.name);
                let run = if mode == "eager" { eager } else { graph };
                let (ys, gs) = match run(&rc, &inputs, device, with_grads) {
                    Ok(r) => r,
                    Err(err) => {
                        failures.push(format!("{what}: {err}"));
                        continue;
                    }
                };
                checked += 1;
                if ys.len() != outputs.len() {
                    failures.push(format!("{what}: {} outputs, TensorFlow has {}", ys.len(), outputs.len()));
                    continue;
                }
                for (k, (y, want)) in ys.iter().zip(&outputs).enumerate() {
                    failures.extend(compare(&format!("{what} output {k}"), y, want, e.rtol, e.atol));
                }
                for (i, want) in grads.iter().enumerate() {
                    let got = gs.get(i).cloned().flatten();
                    match (got, want) {
                        (Some(g), Some(w)) => {
                            let g = ops::cast(&g, w.dtype()).unwrap();
                            failures.extend(compare(
                                &format!("{what} gradient {i}"),
                                &g,
                                w,
                                e.rtol.max(1e-5) * 4.0,
                                e.atol.max(1e-6) * 4.0,
                            ));
                        }
                        (None, None) => {}
                        (Some(_), None) => {
                            failures.push(format!("{what}: a gradient for input {i}; TensorFlow has none"))
                        }
                        (None, Some(_)) => {
                            failures.push(format!("{what}: no gradient for input {i}; TensorFlow has one"))
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures against TensorFlow {}:\n{}",
        failures.len(),
        m.tensorflow,
        failures.join("\n")
    );
    assert!(checked >= 2 * m.cases.len(), "only {checked} runs");
}

/// The optimizer of a trajectory, as Keras's constructor in the generator makes it.
fn keras_optimizer(name: &str) -> Option<Optimizer> {
    Some(match name {
        "SGD" => Optimizer::sgd(0.03125),
        "SGD momentum" => Optimizer::momentum(0.03125, 0.9, false),
        "SGD nesterov" => Optimizer::momentum(0.03125, 0.9, true),
        "Adam" => Optimizer::adam(0.01),
        "AdamW" => Optimizer::adamw(0.01, 0.1),
        "RMSprop" => Optimizer::rmsprop(0.01),
        "Adagrad" => Optimizer::adagrad(0.1),
        "Adamax" => Optimizer::adamax(0.01),
        "Nadam" => Optimizer::nadam(0.01),
        "Adadelta" => Optimizer::adadelta(1.0),
        "Ftrl" => Optimizer::ftrl(0.1),
        "Ftrl regularized" => Optimizer::new(
            UpdateRule::Ftrl { learning_rate_power: -0.7, l1: 0.01, l2: 0.02, l2_shrinkage: 0.03, beta: 0.5 },
            0.1,
        ),
        "Lion" => Optimizer::lion(0.01),
        "RMSprop centered momentum" => Optimizer::rmsprop_with(0.01, 0.5, true),
        "RMSprop momentum" => Optimizer::rmsprop_with(0.01, 0.9, false),
        "Adam amsgrad" => Optimizer::adam_amsgrad(0.01),
        "Lamb" | "Lamb matrix" => Optimizer::lamb(0.01),
        "Adafactor" | "Adafactor matrix" => Optimizer::adafactor(0.1),
        "Muon" | "Muon matrix" | "Muon matrix tall" => Optimizer::muon(0.01),
        "ScheduleFreeAdamW" => Optimizer::schedule_free_adamw(0.01),
        "LossScaleOptimizer Adam" => Optimizer::adam(0.01).with_loss_scale(4.0, 3),
        _ => return None,
    })
}

/// `scale * sum(w^3 + w^2 / 2)`, the generator's loss.
fn trajectory_loss(w: &Tensor, scale: f64) -> Result<Tensor> {
    let cube = ops::mul(&ops::mul(w, w)?, w)?;
    let l = ops::add(&cube, &ops::mul(&ops::mul(w, w)?, 0.5)?)?;
    ops::mul(&ops::sum(&l, Axes::All, false)?, scale)
}

/// Ten steps of every Keras optimizer (two scales of gradient) land on
/// Keras's weights, eagerly and in a graph, on every device. Keras holds
/// hyper-parameters in f32 (0.01 is 0.0099999998), hence 1e-6 (2e-5 for
/// Muon's matrices, which Keras can only update in f32).
#[test]
fn keras_optimizer_trajectories_on_every_device_in_both_modes() {
    let m = manifest();
    let devices: Vec<String> = rivulet::devices().iter().map(|d| d.to_string()).collect();
    let mut failures = Vec::new();
    for t in &m.optimizers {
        let want = load(&t.file);
        let steps = want.shape().dims()[0];
        let want = crate::common::values(&want);
        // The generator's start: a vector, or a matrix (Muon's in f32).
        let mut start = Tensor::from_slice(&[1.0f64, -0.5, 2.0, 0.25], [4]).unwrap();
        let matrix = [1.0f64, -0.5, 2.0, 0.25, -1.5, 0.75];
        if t.name.ends_with(" matrix") {
            start = Tensor::from_slice(&matrix, [2, 3]).unwrap();
        } else if t.name.ends_with(" matrix tall") {
            start = Tensor::from_slice(&matrix, [3, 2]).unwrap();
        }
        let f32_run = t.name.starts_with("Muon matrix");
        if f32_run {
            start = ops::cast(&start, DType::F32).unwrap();
        }
        let (n, tolerance) = (start.shape().numel().unwrap_or(0), if f32_run { 2e-5 } else { 1e-6 });
        for device in &devices {
            for graph_mode in [false, true] {
                let what = format!(
                    "{} at scale {} ({}, {device})",
                    t.name,
                    t.scale,
                    if graph_mode { "graph" } else { "eager" }
                );
                let opt = keras_optimizer(&t.name).unwrap_or_else(|| panic!("no optimizer for {}", t.name));
                let run = || -> Result<Vec<Vec<f64>>> {
                    rivulet::device(device, || -> Result<Vec<Vec<f64>>> {
                        let mut path = Vec::new();
                        if graph_mode {
                            let g = Graph::new();
                            let w = rivulet::Variable::in_graph(&g, "w", &start, true)?;
                            let step = opt.minimize(&trajectory_loss(&w.read(), t.scale)?, &[&w])?;
                            let s = Session::new(&g);
                            s.run_targets(&[&g.global_variables_initializer()?])?;
                            for _ in 0..steps {
                                s.run_targets(&[&step])?;
                                path.push(crate::common::values(&s.run(&[&w.read()], &[])?[0]));
                            }
                        } else {
                            let w = rivulet::Variable::new(&what, &start, true)?;
                            for _ in 0..steps {
                                let tape = GradientTape::new();
                                let l = opt.scale_loss(&trajectory_loss(&w.read(), t.scale)?)?;
                                let grad = tape.gradient_vars(&l, &[&w])?.remove(0).expect("a gradient");
                                opt.apply_gradients(&[(grad, &w)])?;
                                path.push(crate::common::values(&w.read()));
                            }
                        }
                        Ok(path)
                    })?
                };
                match run() {
                    Err(e) => failures.push(format!("{what}: {e}")),
                    Ok(path) => {
                        for (k, row) in path.iter().enumerate() {
                            let tf = &want[k * n..k * n + n];
                            if row.iter().zip(tf).any(|(a, b)| (a - b).abs() > tolerance * (1.0 + b.abs())) {
                                failures.push(format!("{what}: step {}: {row:?}, Keras {tf:?}", k + 1));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures against Keras:\n{}", failures.len(), failures.join("\n"));
}
