"""Generate docs/TF_COVERAGE.md: each public function of TensorFlow's
everyday modules with its status in Rivulet.

The function lists come from an installed TensorFlow (run in a throwaway
virtualenv, never in CI):

    /tmp/tfvenv/bin/python docs/tf_coverage.py

The statuses are the table STATUS below, kept by hand as ops land. For
every "supported" or "composed" entry the script checks that the Rivulet
name it gives exists in crates/rivulet/src (a `fn`, a table entry or an
enum variant), so the table cannot claim a function that is not there.
A TensorFlow name missing from STATUS is listed as "planned" with no note
and counted against the coverage.
"""

import inspect
import os
import re
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "crates", "rivulet", "src")

# status: S supported (a Rivulet op or function of its own), C composed
# (built from other ops, or the same function under Rivulet's name), P
# planned (the issue that brings it), O out of scope (why).
STATUS = """
saved_model.Asset C SaveOptions | files listed in `SaveOptions::assets`, found again with `SavedModel::asset`
saved_model.LoadOptions S LoadOptions | graph passes at load (`LoadOptions::exact` for no rounding-changing fold)
saved_model.SaveOptions S SaveOptions | assets
saved_model.contains_saved_model S contains_saved_model
saved_model.load S load | signatures callable with `SavedModel::call`; variables frozen unless assigned
saved_model.save S save | `Session`, `ConcreteFunction` or `Sequential`; served by `rivulet serve`
data.Dataset.apply O - | call the function on the dataset
data.Dataset.as_numpy_iterator C iter | elements as tensors
data.Dataset.batch S batch
data.Dataset.bucket_by_sequence_length P - | later
data.Dataset.cache S cache | `cache_to_file` for a file
data.Dataset.cardinality S cardinality
data.Dataset.choose_from_datasets P - | later
data.Dataset.concatenate S concatenate
data.Dataset.counter C range | `range(start, i64::MAX, step)`
data.Dataset.enumerate S enumerate
data.Dataset.filter S filter
data.Dataset.fingerprint O - | tf.data service internals
data.Dataset.flat_map C interleave | `interleave(f, 1, 1)`
data.Dataset.from_generator S from_generator
data.Dataset.from_tensor_slices S from_tensor_slices
data.Dataset.from_tensors S from_tensors
data.Dataset.get_single_element C collect
data.Dataset.group_by_window P - | later
data.Dataset.ignore_errors S ignore_errors
data.Dataset.interleave S interleave
data.Dataset.list_files P - | later (pass the paths)
data.Dataset.load C cache_to_file | our own file format, with checksums
data.Dataset.map S map | `map_parallel` for num_parallel_calls, in order
data.Dataset.options O - | no graph rewrites of pipelines
data.Dataset.padded_batch S padded_batch
data.Dataset.prefetch S prefetch
data.Dataset.ragged_batch O - | no ragged tensors
data.Dataset.random P - | later
data.Dataset.range S range
data.Dataset.rebatch S rebatch
data.Dataset.reduce C iter | a fold over the iterator
data.Dataset.rejection_resample P - | later
data.Dataset.repeat S repeat
data.Dataset.sample_from_datasets P - | later
data.Dataset.save C cache_to_file | our own file format, with checksums
data.Dataset.scan P - | later
data.Dataset.shard S shard
data.Dataset.shuffle S shuffle | TensorFlow's buffer algorithm, reshuffled each epoch
data.Dataset.skip S skip
data.Dataset.snapshot C cache_to_file
data.Dataset.sparse_batch O - | no sparse tensors
data.Dataset.take S take
data.Dataset.take_while P - | later
data.Dataset.unbatch S unbatch
data.Dataset.unique P - | later
data.Dataset.window S window | each window one element of stacked tensors
data.Dataset.with_options O - | no graph rewrites of pipelines
data.TextLineDataset S text_lines
data.TFRecordDataset P - | later
data.FixedLengthRecordDataset P - | later
data.experimental.CsvDataset S csv | with a schema (`CsvOptions::schema`)
data.experimental.make_csv_dataset C csv | types inferred; batch and shuffle are transforms
math.abs S abs
math.accumulate_n C add_n
math.acos S acos
math.acosh S acosh
math.add S add
math.add_n S add_n
math.angle S angle | real and complex dtypes
math.approx_max_k C approx_max_k | exact top-k
math.approx_min_k C approx_min_k | exact top-k
math.argmax S argmax
math.argmin S argmin
math.asin S asin
math.asinh S asinh
math.atan S atan
math.atan2 S atan2
math.atanh S atanh
math.bessel_i0 S bessel_i0
math.bessel_i0e S bessel_i0e
math.bessel_i1 S bessel_i1
math.bessel_i1e S bessel_i1e
math.betainc P - | the three-argument incomplete beta function
math.bincount C bincount | length from the values: eager, or minlength == maxlength in a graph
math.ceil S ceil
math.confusion_matrix C confusion_matrix
math.conj S conj | real and complex dtypes
math.cos S cos
math.cosh S cosh
math.count_nonzero C count_nonzero
math.cumprod S cumprod
math.cumsum S cumsum
math.cumulative_logsumexp C cumulative_logsumexp
math.digamma S digamma
math.divide C div
math.divide_no_nan S div_no_nan
math.equal S equal
math.erf S erf
math.erfc S erfc
math.erfcinv C erfcinv
math.erfinv S erfinv
math.exp S exp
math.expm1 S expm1
math.floor S floor
math.floordiv S floor_div
math.floormod S floor_mod
math.greater S greater
math.greater_equal S greater_equal
math.igamma S igamma
math.igammac S igammac
math.imag S imag | real and complex dtypes
math.in_top_k C in_top_k
math.invert_permutation C invert_permutation
math.is_finite S is_finite
math.is_inf S is_inf
math.is_nan S is_nan
math.is_non_decreasing C is_non_decreasing
math.is_strictly_increasing C is_strictly_increasing
math.l2_normalize C l2_normalize
math.lbeta C lbeta
math.less S less
math.less_equal S less_equal
math.lgamma S lgamma
math.log S log
math.log1p S log1p
math.log_sigmoid C log_sigmoid
math.log_softmax S log_softmax
math.logical_and S logical_and
math.logical_not S logical_not
math.logical_or S logical_or
math.logical_xor C logical_xor
math.maximum S maximum
math.minimum S minimum
math.mod C floor_mod
math.multiply S mul
math.multiply_no_nan S multiply_no_nan
math.ndtri S ndtri
math.negative S neg
math.nextafter S nextafter
math.not_equal S not_equal
math.polygamma S polygamma
math.polyval C polyval
math.pow S pow
math.real S real | real and complex dtypes
math.reciprocal S reciprocal
math.reciprocal_no_nan C reciprocal_no_nan
math.reduce_all S all
math.reduce_any S any
math.reduce_euclidean_norm C euclidean_norm
math.reduce_logsumexp C logsumexp
math.reduce_max S max
math.reduce_mean S mean
math.reduce_min S min
math.reduce_prod S prod
math.reduce_std C std_dev
math.reduce_sum S sum
math.reduce_variance C variance
math.rint C rint
math.round S round
math.rsqrt S rsqrt
math.scalar_mul C mul
math.segment_max C segment_max | ids known when built (eager or constant)
math.segment_mean C segment_mean | ids known when built (eager or constant)
math.segment_min C segment_min | ids known when built (eager or constant)
math.segment_prod C segment_prod | ids known when built (eager or constant)
math.segment_sum C segment_sum | ids known when built (eager or constant)
math.sigmoid S sigmoid
math.sign S sign
math.sin S sin
math.sinh S sinh
math.sobol_sample O - | quasi-random sequences need Joe and Kuo's direction-number tables; not an everyday op
math.softmax S softmax
math.softplus S softplus
math.softsign C softsign
math.sqrt S sqrt
math.square S square
math.squared_difference C squared_difference
math.subtract S sub
math.tan S tan
math.tanh S tanh
math.top_k S top_k
math.truediv C div
math.unsorted_segment_max C unsorted_segment_max | memory grows as segments x rows
math.unsorted_segment_mean C unsorted_segment_mean
math.unsorted_segment_min C unsorted_segment_min | memory grows as segments x rows
math.unsorted_segment_prod C unsorted_segment_prod | memory grows as segments x rows
math.unsorted_segment_sqrt_n C unsorted_segment_sqrt_n
math.unsorted_segment_sum C unsorted_segment_sum
math.xdivy S xdivy
math.xlog1py S xlog1py
math.xlogy S xlogy
math.zero_fraction C zero_fraction
math.zeta S zeta

nn.all_candidate_sampler S all_candidate_sampler
nn.approx_max_k C approx_max_k | exact top-k
nn.approx_min_k C approx_min_k | exact top-k
nn.atrous_conv2d C convolution | `ConvOptions::dilations` (the rate)
nn.atrous_conv2d_transpose C conv_transpose | `ConvOptions::dilations` (the rate)
nn.avg_pool S avg_pool
nn.avg_pool1d C avg_pool
nn.avg_pool2d S avg_pool2d
nn.avg_pool3d C avg_pool
nn.batch_norm_with_global_normalization C batch_norm_with_global_normalization
nn.batch_normalization C batch_normalization
nn.bias_add C bias_add | channels last
nn.collapse_repeated S collapse_repeated | eager (the output length depends on the values)
nn.compute_accidental_hits S compute_accidental_hits | eager (the hit count depends on the values)
nn.compute_average_loss C compute_average_loss
nn.conv1d S conv1d
nn.conv1d_transpose C conv_transpose
nn.conv2d S conv2d
nn.conv2d_transpose S conv2d_transpose
nn.conv3d S conv3d
nn.conv3d_transpose S conv3d_transpose
nn.conv_transpose S conv_transpose
nn.convolution S convolution
nn.crelu C crelu
nn.ctc_beam_search_decoder S ctc_beam_search_decoder | eager; decoded paths as SparseLabels
nn.ctc_greedy_decoder S ctc_greedy_decoder | eager; decoded paths as SparseLabels
nn.ctc_loss C ctc_loss | dense labels, batch-major logits
nn.ctc_unique_labels S ctc_unique_labels
nn.depth_to_space C depth_to_space
nn.depthwise_conv2d C depthwise_conv2d | a grouped convolution
nn.depthwise_conv2d_backprop_filter P - | #17 (convolutions)
nn.depthwise_conv2d_backprop_input P - | #17 (convolutions)
nn.dilation2d P - | #17 (morphological convolutions)
nn.dropout C dropout
nn.elu S elu
nn.embedding_lookup C embedding_lookup
nn.embedding_lookup_sparse O - | sparse tensors are not a Rivulet type
nn.erosion2d P - | #17 (morphological convolutions)
nn.fixed_unigram_candidate_sampler S fixed_unigram_candidate_sampler | eager; unigrams in memory (no vocab_file, num_shards)
nn.fractional_avg_pool P - | #17 (pooling)
nn.fractional_max_pool P - | #17 (pooling)
nn.gelu S gelu | approximate=True is gelu_approximate
nn.in_top_k C in_top_k
nn.isotonic_regression S isotonic_regression | a host kernel on every device
nn.l2_loss C l2_loss
nn.l2_normalize C l2_normalize
nn.leaky_relu C leaky_relu
nn.learned_unigram_candidate_sampler S learned_unigram_candidate_sampler | eager; LearnedUnigramSampler keeps the counts across calls
nn.local_response_normalization C local_response_normalization
nn.log_poisson_loss C log_poisson_loss
nn.log_softmax S log_softmax
nn.lrn C local_response_normalization
nn.max_pool S max_pool
nn.max_pool1d C max_pool
nn.max_pool2d S max_pool2d
nn.max_pool3d C max_pool
nn.max_pool_with_argmax P - | #17 (pooling)
nn.moments C moments
nn.nce_loss C nce_loss | in graphs with sampled_values given
nn.normalize_moments C normalize_moments
nn.pool P - | #17 (pooling)
nn.relu S relu
nn.relu6 S relu6
nn.safe_embedding_lookup_sparse O - | sparse tensors are not a Rivulet type
nn.sampled_softmax_loss C sampled_softmax_loss | in graphs with sampled_values given
nn.scale_regularization_loss C scale_regularization_loss | one replica until #20
nn.selu S selu
nn.separable_conv2d C separable_conv2d
nn.sigmoid S sigmoid
nn.sigmoid_cross_entropy_with_logits C sigmoid_cross_entropy_with_logits
nn.silu C silu
nn.softmax S softmax
nn.softmax_cross_entropy_with_logits C softmax_cross_entropy_with_logits
nn.softplus S softplus
nn.softsign C softsign
nn.space_to_batch C space_to_batch
nn.space_to_depth C space_to_depth
nn.sparse_softmax_cross_entropy_with_logits C sparse_softmax_cross_entropy_with_logits
nn.sufficient_statistics C sufficient_statistics
nn.swish C silu
nn.tanh S tanh
nn.top_k S top_k
nn.weighted_cross_entropy_with_logits C weighted_cross_entropy_with_logits
nn.weighted_moments C weighted_moments
nn.with_space_to_batch C with_space_to_batch | the op is a Rust closure
nn.zero_fraction C zero_fraction

array.batch_to_space C batch_to_space
array.bitcast P - | reinterpreting bytes across dtypes
array.boolean_mask C boolean_mask | output size from the values: eager
array.broadcast_dynamic_shape C broadcast_static_shape | shapes are known when built
array.broadcast_static_shape C broadcast_static_shape
array.broadcast_to S broadcast_to | a shape tensor, read when the graph runs: broadcast_to_dims
array.concat S concat
array.edit_distance O - | sparse tensors are not a Rivulet type
array.expand_dims S expand_dims
array.extract_volume_patches P - | #17
array.fill S fill | a shape tensor, read when the graph runs: fill_dims
array.fingerprint O - | string and byte hashing (see #18's Hashing layer)
array.gather S gather
array.gather_nd S gather_nd
array.guarantee_const C identity
array.identity S identity
array.identity_n C identity_n
array.meshgrid C meshgrid
array.one_hot S one_hot_with
array.ones S ones
array.ones_like S ones_like
array.pad S pad
array.parallel_stack C stack
array.ragged_fill_empty_rows O - | ragged tensors are not a Rivulet type
array.ragged_fill_empty_rows_grad O - | ragged tensors are not a Rivulet type
array.rank C rank
array.repeat C repeat | one repeat count for every element
array.required_space_to_batch_paddings C required_space_to_batch_paddings
array.reshape S reshape
array.reverse S reverse
array.reverse_sequence C reverse_sequence
array.scatter_nd S scatter_nd
array.searchsorted C searchsorted
array.sequence_mask C sequence_mask
array.shape S shape | a constant where the shape is known, else taken when the graph runs
array.shape_n C shape_n | shape of each
array.size S size
array.slice S slice
array.space_to_batch C space_to_batch
array.space_to_batch_nd C space_to_batch_nd
array.split S split
array.squeeze S squeeze
array.stack S stack
array.stop_gradient S stop_gradient
array.strided_slice S strided_slice | begin/end/ellipsis/new-axis/shrink masks as SliceItem lists
array.tensor_scatter_nd_add C tensor_scatter_nd_add
array.tensor_scatter_nd_max C tensor_scatter_nd_max
array.tensor_scatter_nd_min C tensor_scatter_nd_min
array.tensor_scatter_nd_sub C tensor_scatter_nd_sub
array.tensor_scatter_nd_update C tensor_scatter_nd_update
array.tile S tile
array.transpose S transpose
array.unique C unique | output size from the values: eager
array.unique_with_counts C unique_with_counts | output size from the values: eager
array.unravel_index C unravel_index
array.unstack S unstack
array.where S select | one argument: nonzero, eager
array.zeros S zeros
array.zeros_like S zeros_like

random.categorical C categorical | Gumbel-max: the argmax of logits plus Gumbel noise
random.stateless_categorical C stateless_categorical | a seed pair; the same draws every run
random.gamma C random_gamma | Marsaglia-Tsang over a while_loop; implicit reparameterization gradients
random.stateless_gamma C stateless_gamma | a seed pair
random.normal S random_normal
random.truncated_normal S truncated_normal
random.uniform S random_uniform
random.set_seed S set_random_seed
random.stateless_normal C random_normal | counter-based: the same seed gives the same numbers
random.stateless_uniform C random_uniform | counter-based: the same seed gives the same numbers
random.stateless_truncated_normal C truncated_normal | counter-based
random.shuffle P - | a tensor op: later (`Dataset::shuffle` shuffles pipelines)
random.all_candidate_sampler S all_candidate_sampler
random.fixed_unigram_candidate_sampler S fixed_unigram_candidate_sampler | eager; unigrams in memory
random.learned_unigram_candidate_sampler S learned_unigram_candidate_sampler | eager
random.log_uniform_candidate_sampler S log_uniform_candidate_sampler | eager
random.uniform_candidate_sampler S uniform_candidate_sampler | eager

losses.BinaryCrossentropy S BinaryCrossentropy
losses.BinaryFocalCrossentropy S BinaryFocalCrossentropy
losses.CategoricalCrossentropy S CategoricalCrossentropy
losses.CategoricalFocalCrossentropy S CategoricalFocalCrossentropy
losses.CategoricalGeneralizedCrossEntropy S CategoricalGeneralizedCrossEntropy
losses.CategoricalHinge S CategoricalHinge
losses.CosineSimilarity S CosineSimilarity
losses.Dice S Dice
losses.Hinge S Hinge
losses.Huber S Huber
losses.KLDivergence S KLDivergence
losses.LogCosh S LogCosh
losses.MeanAbsoluteError S MeanAbsoluteError
losses.MeanAbsolutePercentageError S MeanAbsolutePercentageError
losses.MeanSquaredError S MeanSquaredError
losses.MeanSquaredLogarithmicError S MeanSquaredLogarithmicError
losses.Poisson S Poisson
losses.SparseCategoricalCrossentropy S SparseCategoricalCrossentropy
losses.SquaredHinge S SquaredHinge
losses.Tversky S Tversky
losses.KLD C KLDivergence
losses.MAE C MeanAbsoluteError
losses.MAPE C MeanAbsolutePercentageError
losses.MSE C MeanSquaredError
losses.MSLE C MeanSquaredLogarithmicError
losses.CTC S Ctc
losses.Circle S Circle | Loss::Circle
losses.ctc C per_example | Loss::Ctc.per_example
losses.circle S Circle | Loss::Circle.per_example
losses.binary_crossentropy C per_example | Loss::BinaryCrossentropy.per_example
losses.binary_focal_crossentropy C per_example | Loss::BinaryFocalCrossentropy.per_example
losses.categorical_crossentropy C per_example | Loss::CategoricalCrossentropy.per_example
losses.categorical_focal_crossentropy C per_example | Loss::CategoricalFocalCrossentropy.per_example
losses.categorical_generalized_cross_entropy C per_example | Loss::CategoricalGeneralizedCrossEntropy.per_example
losses.categorical_hinge C per_example | Loss::CategoricalHinge.per_example
losses.cosine_similarity C per_example | Loss::CosineSimilarity.per_example
losses.dice C per_example | Loss::Dice.per_example
losses.hinge C per_example | Loss::Hinge.per_example
losses.huber C per_example | Loss::Huber.per_example
losses.kld C per_example | Loss::KLDivergence.per_example
losses.kullback_leibler_divergence C per_example | Loss::KLDivergence.per_example
losses.logcosh C per_example | Loss::LogCosh.per_example
losses.mae C per_example | Loss::MeanAbsoluteError.per_example
losses.mape C per_example | Loss::MeanAbsolutePercentageError.per_example
losses.mse C per_example | Loss::MeanSquaredError.per_example
losses.msle C per_example | Loss::MeanSquaredLogarithmicError.per_example
losses.poisson C per_example | Loss::Poisson.per_example
losses.sparse_categorical_crossentropy C per_example | Loss::SparseCategoricalCrossentropy.per_example
losses.squared_hinge C per_example | Loss::SquaredHinge.per_example
losses.tversky C per_example | Loss::Tversky.per_example

optimizers.SGD S momentum | Keras 3's velocity form; sgd without momentum
optimizers.Adam S adam | amsgrad: adam_amsgrad
optimizers.AdamW S adamw
optimizers.RMSprop S rmsprop | momentum and centered: rmsprop_with
optimizers.Adagrad S adagrad
optimizers.Adamax S adamax
optimizers.Nadam S nadam
optimizers.Adadelta S adadelta
optimizers.Ftrl S ftrl | every regularization option through UpdateRule::Ftrl
optimizers.Lion S lion
optimizers.Adafactor C adafactor | a composed rule (factored slots)
optimizers.Lamb C lamb | a composed rule
optimizers.LossScaleOptimizer S loss_scale_optimizer | also Optimizer::with_loss_scale
optimizers.Muon C muon | a composed rule
optimizers.ScheduleFreeAdamW C schedule_free_adamw | a composed rule, Keras-on-TensorFlow's numbers

metrics.AUC S Auc | Metric::auc(); ROC, PR and PR-gain curves, multi-label
metrics.Accuracy S Accuracy
metrics.BinaryAccuracy S BinaryAccuracy
metrics.BinaryCrossentropy C Loss | Metric::Loss(Loss::BinaryCrossentropy {..})
metrics.BinaryIoU S BinaryIoU | Metric::binary_iou()
metrics.CategoricalAccuracy S CategoricalAccuracy
metrics.CategoricalCrossentropy C Loss | Metric::Loss(Loss::CategoricalCrossentropy {..})
metrics.CategoricalHinge C Loss | Metric::Loss(Loss::CategoricalHinge)
metrics.ConcordanceCorrelation S ConcordanceCorrelation
metrics.CosineSimilarity S CosineSimilarity
metrics.F1Score C f1_score | Metric::f1_score
metrics.FBetaScore S FBetaScore
metrics.FalseNegatives S FalseNegatives
metrics.FalsePositives S FalsePositives
metrics.Hinge C Loss | Metric::Loss(Loss::Hinge)
metrics.IoU S IoU | Metric::iou
metrics.KLD C Loss | Metric::Loss(Loss::KLDivergence)
metrics.KLDivergence C Loss | Metric::Loss(Loss::KLDivergence)
metrics.LogCoshError C Loss | Metric::Loss(Loss::LogCosh)
metrics.MAE C Loss | Metric::Loss(Loss::MeanAbsoluteError)
metrics.MAPE C Loss | Metric::Loss(Loss::MeanAbsolutePercentageError)
metrics.MSE C Loss | Metric::Loss(Loss::MeanSquaredError)
metrics.MSLE C Loss | Metric::Loss(Loss::MeanSquaredLogarithmicError)
metrics.Mean S Mean | MetricState::update_values
metrics.MeanAbsoluteError C Loss | Metric::Loss(Loss::MeanAbsoluteError)
metrics.MeanAbsolutePercentageError C Loss | Metric::Loss(Loss::MeanAbsolutePercentageError)
metrics.MeanIoU C mean_iou | Metric::mean_iou
metrics.MeanSquaredError C Loss | Metric::Loss(Loss::MeanSquaredError)
metrics.MeanSquaredLogarithmicError C Loss | Metric::Loss(Loss::MeanSquaredLogarithmicError)
metrics.OneHotIoU C one_hot_iou | Metric::one_hot_iou
metrics.OneHotMeanIoU C one_hot_mean_iou | Metric::one_hot_mean_iou
metrics.PearsonCorrelation S PearsonCorrelation
metrics.Poisson C Loss | Metric::Loss(Loss::Poisson)
metrics.Precision S Precision | thresholds, top_k, class_id
metrics.PrecisionAtRecall S PrecisionAtRecall
metrics.R2Score S R2Score
metrics.Recall S Recall | thresholds, top_k, class_id
metrics.RecallAtPrecision S RecallAtPrecision
metrics.RootMeanSquaredError S RootMeanSquaredError
metrics.SensitivityAtSpecificity S SensitivityAtSpecificity
metrics.SparseCategoricalAccuracy S SparseCategoricalAccuracy
metrics.SparseCategoricalCrossentropy C Loss | Metric::Loss(Loss::SparseCategoricalCrossentropy {..})
metrics.SparseTopKCategoricalAccuracy S SparseTopKCategoricalAccuracy
metrics.SpecificityAtSensitivity S SpecificityAtSensitivity
metrics.SquaredHinge C Loss | Metric::Loss(Loss::SquaredHinge)
metrics.Sum S Sum | MetricState::update_values
metrics.TopKCategoricalAccuracy S TopKCategoricalAccuracy
metrics.TrueNegatives S TrueNegatives
metrics.TruePositives S TruePositives
metrics.binary_accuracy S binary_accuracy
metrics.binary_crossentropy C per_example | Loss::BinaryCrossentropy.per_example
metrics.binary_focal_crossentropy C per_example | Loss::BinaryFocalCrossentropy.per_example
metrics.categorical_accuracy S categorical_accuracy
metrics.categorical_crossentropy C per_example | Loss::CategoricalCrossentropy.per_example
metrics.categorical_focal_crossentropy C per_example | Loss::CategoricalFocalCrossentropy.per_example
metrics.categorical_hinge C per_example | Loss::CategoricalHinge.per_example
metrics.concordance_correlation S concordance_correlation
metrics.hinge C per_example | Loss::Hinge.per_example
metrics.huber C per_example | Loss::Huber.per_example
metrics.kld C per_example | Loss::KLDivergence.per_example
metrics.kullback_leibler_divergence C per_example | Loss::KLDivergence.per_example
metrics.logcosh C per_example | Loss::LogCosh.per_example
metrics.mae C per_example | Loss::MeanAbsoluteError.per_example
metrics.mape C per_example | Loss::MeanAbsolutePercentageError.per_example
metrics.mse C per_example | Loss::MeanSquaredError.per_example
metrics.msle C per_example | Loss::MeanSquaredLogarithmicError.per_example
metrics.pearson_correlation S pearson_correlation
metrics.poisson C per_example | Loss::Poisson.per_example
metrics.sparse_categorical_accuracy S sparse_categorical_accuracy
metrics.sparse_categorical_crossentropy C per_example | Loss::SparseCategoricalCrossentropy.per_example
metrics.sparse_top_k_categorical_accuracy S sparse_top_k_categorical_accuracy
metrics.squared_hinge C per_example | Loss::SquaredHinge.per_example
metrics.top_k_categorical_accuracy S top_k_categorical_accuracy

linalg.matmul S matmul
linalg.einsum S einsum
linalg.eye S eye
linalg.tensordot S tensordot
linalg.l2_normalize C l2_normalize
linalg.matrix_transpose C matrix_transpose
linalg.adjoint C adjoint | the conjugate transpose
linalg.band_part C band_part
linalg.cholesky S cholesky | faer
linalg.cholesky_solve C cholesky_solve
linalg.cross C cross
linalg.det S det | faer (LU)
linalg.diag C diag | the main diagonal (k = 0)
linalg.diag_part C diag_part | the main diagonal (k = 0)
linalg.eigh S eigh | faer
linalg.eigvalsh S eigvalsh | faer
linalg.expm S expm | Padé with TensorFlow's orders and thresholds
linalg.global_norm C global_norm
linalg.inv S inv | faer (LU)
linalg.logdet C logdet
linalg.lstsq C lstsq | fast: normal equations + Cholesky, as TensorFlow; else QR
linalg.lu S lu | faer
linalg.lu_matrix_inverse C lu_matrix_inverse
linalg.lu_reconstruct C lu_reconstruct
linalg.lu_solve C lu_solve
linalg.matrix_rank C matrix_rank
linalg.matvec C matvec
linalg.norm C norm
linalg.normalize C normalize
linalg.pinv C pinv
linalg.qr S qr | faer (Householder)
linalg.set_diag C set_diag | the main diagonal (k = 0)
linalg.slogdet S slogdet | faer (LU)
linalg.solve S solve_t | faer (LU)
linalg.svd S svd | faer; `singular_values` for compute_uv=False
linalg.trace C trace
linalg.triangular_solve S triangular_solve | faer
linalg.eig P - | complex eigenvectors of general matrices: with the complex factorizations (#16)
linalg.eigvals P - | with linalg.eig (#16)
signal.fft S fft | rustfft; gradient the adjoint transform
signal.ifft S ifft | rustfft
signal.fft2d S fft2 | rustfft
signal.ifft2d S ifft2 | rustfft
signal.fft3d S fft3 | rustfft
signal.ifft3d S ifft3 | rustfft
signal.rfft S rfft | realfft; fft_length crops or pads
signal.irfft S irfft | realfft
signal.rfft2d S rfft2 | realfft + rustfft
signal.irfft2d S irfft2 | realfft + rustfft
signal.rfft3d S rfft3 | realfft + rustfft
signal.irfft3d S irfft3 | realfft + rustfft
signal.fftshift C fftshift | a roll
signal.ifftshift C ifftshift | a roll
signal.fftnd P - | any number of axes: 1 to 3 are offered
signal.ifftnd P - | with fftnd
signal.rfftnd P - | with fftnd
signal.irfftnd P - | with fftnd
layers.Dense S Dense | 
layers.Dropout S Dropout | 
layers.BatchNormalization S BatchNormalization | 
layers.GroupNormalization S GroupNormalization | 
layers.Embedding S Embedding | 
layers.Flatten S Flatten | 
layers.Reshape S Reshape | 
layers.Resizing S Resizing | 
layers.Conv1D S Conv1D | 
layers.Conv2D S Conv2D | 
layers.Conv3D S Conv3D | 
layers.DepthwiseConv2D S DepthwiseConv2D | 
layers.SeparableConv2D S SeparableConv2D | 
layers.Conv2DTranspose S Conv2DTranspose | 
layers.Conv3DTranspose S Conv3DTranspose | 
layers.MaxPooling1D S MaxPooling1D | 
layers.MaxPooling2D S MaxPooling2D | 
layers.MaxPooling3D S MaxPooling3D | 
layers.AveragePooling1D S AveragePooling1D | 
layers.AveragePooling2D S AveragePooling2D | 
layers.AveragePooling3D S AveragePooling3D | 
layers.GlobalAveragePooling1D S GlobalAveragePooling1D | 
layers.GlobalAveragePooling2D S GlobalAveragePooling2D | 
layers.GlobalAveragePooling3D S GlobalAveragePooling3D | 
layers.GlobalMaxPooling1D S GlobalMaxPooling1D | 
layers.GlobalMaxPooling2D S GlobalMaxPooling2D | 
layers.GlobalMaxPooling3D S GlobalMaxPooling3D | 
layers.ZeroPadding1D S ZeroPadding1D | 
layers.ZeroPadding2D S ZeroPadding2D | 
layers.ZeroPadding3D S ZeroPadding3D | 
layers.UpSampling1D S UpSampling1D | 
layers.UpSampling2D S UpSampling2D | 
layers.UpSampling3D S UpSampling3D | 
layers.LayerNormalization S LayerNormalization | 
layers.Layer S Layer | 
layers.Activation S ActivationLayer | with `Activation`
layers.Cropping1D S Cropping1D | 
layers.Cropping2D S Cropping2D | 
layers.Cropping3D S Cropping3D | 
layers.Permute S Permute | 
layers.RepeatVector S RepeatVector | 
layers.Rescaling S Rescaling | 
layers.LeakyReLU S LeakyReLU | 
layers.Identity S Identity | 
layers.MaxPool1D C MaxPooling1D | Keras's other name
layers.MaxPool2D C MaxPooling2D | Keras's other name
layers.MaxPool3D C MaxPooling3D | Keras's other name
layers.AvgPool1D C AveragePooling1D | Keras's other name
layers.AvgPool2D C AveragePooling2D | Keras's other name
layers.AvgPool3D C AveragePooling3D | Keras's other name
layers.GlobalAvgPool1D C GlobalAveragePooling1D | Keras's other name
layers.GlobalAvgPool2D C GlobalAveragePooling2D | Keras's other name
layers.GlobalAvgPool3D C GlobalAveragePooling3D | Keras's other name
layers.GlobalMaxPool1D C GlobalMaxPooling1D | Keras's other name
layers.GlobalMaxPool2D C GlobalMaxPooling2D | Keras's other name
layers.GlobalMaxPool3D C GlobalMaxPooling3D | Keras's other name
layers.Convolution1D C Conv1D | Keras's other name
layers.Convolution2D C Conv2D | Keras's other name
layers.Convolution3D C Conv3D | Keras's other name
layers.Convolution2DTranspose C Conv2DTranspose | Keras's other name
layers.Convolution3DTranspose C Conv3DTranspose | Keras's other name
layers.SeparableConvolution2D C SeparableConv2D | Keras's other name
layers.Conv1DTranspose C Conv1D | `Conv::transpose` with one spatial axis
layers.Convolution1DTranspose C Conv1D | `Conv::transpose` with one spatial axis
layers.DepthwiseConv1D C Conv1D | `Conv::depthwise` with one spatial axis
layers.SeparableConv1D C Conv1D | `Conv::separable` with one spatial axis
layers.SeparableConvolution1D C Conv1D | `Conv::separable` with one spatial axis
layers.ReLU C ActivationLayer | `Activation::Relu`
layers.Softmax C ActivationLayer | `Activation::Softmax`
layers.ELU C ActivationLayer | `Activation::Elu`
layers.Input O - | `Sequential` takes its input shape from the first call
layers.InputLayer O - | `Sequential` takes its input shape from the first call
layers.InputSpec O - | `Sequential` takes its input shape from the first call
layers.FlaxLayer O - | wraps another framework's model
layers.JaxLayer O - | wraps another framework's model
layers.TorchModuleWrapper O - | wraps another framework's model
layers.TFSMLayer O - | wraps another framework's model
layers.Normalization S Normalization | `adapt` on a dataset
layers.StringLookup S StringLookup | runs in the input pipeline (strings are host values)
layers.IntegerLookup S IntegerLookup
layers.CategoryEncoding S CategoryEncoding
layers.Discretization S Discretization | `adapt` takes exact quantiles
layers.Hashing S Hashing | FarmHash as Keras; no `salt`
layers.HashedCrossing P - | later
layers.TextVectorization P - | later (needs string splitting ops)
layers.LSTM P - | recurrent layers: later (while_loop carries them)
layers.LSTMCell P - | recurrent layers: later (while_loop carries them)
layers.GRU P - | recurrent layers: later (while_loop carries them)
layers.GRUCell P - | recurrent layers: later (while_loop carries them)
layers.SimpleRNN P - | recurrent layers: later (while_loop carries them)
layers.SimpleRNNCell P - | recurrent layers: later (while_loop carries them)
layers.RNN P - | recurrent layers: later (while_loop carries them)
layers.StackedRNNCells P - | recurrent layers: later (while_loop carries them)
layers.Bidirectional P - | recurrent layers: later (while_loop carries them)
layers.ConvLSTM1D P - | recurrent layers: later (while_loop carries them)
layers.ConvLSTM2D P - | recurrent layers: later (while_loop carries them)
layers.ConvLSTM3D P - | recurrent layers: later (while_loop carries them)
"""

DEFAULT_PLANNED = {"linalg": "#16 (linear algebra)", "random": "", "losses": "", "optimizers": "", "metrics": "",
                   "signal": "audio and windowing functions: later", "layers": "", "data": ""}

MODULES = [
    ("math", "tf.math", lambda: functions(tf.math)),
    ("nn", "tf.nn", lambda: functions(tf.nn)),
    ("array", "array ops in tf", lambda: array_functions()),
    ("random", "tf.random", lambda: functions(tf.random)),
    ("linalg", "tf.linalg", lambda: functions(tf.linalg)),
    ("signal", "tf.signal", lambda: functions(tf.signal)),
    ("losses", "tf.keras.losses", lambda: functions(tf.keras.losses, classes=True)),
    ("optimizers", "tf.keras.optimizers", lambda: functions(tf.keras.optimizers, classes=True)),
    ("metrics", "tf.keras.metrics", lambda: functions(tf.keras.metrics, classes=True)),
    ("layers", "tf.keras.layers", lambda: [n for n in functions(tf.keras.layers, classes=True) if n[0].isupper()]),
    ("data", "tf.data", lambda: data_functions()),
    ("saved_model", "tf.saved_model", lambda: functions(tf.saved_model, classes=True)),
]

# Excluded from tf.nn's percentage, as the issue says: convolutions and
# pooling (and depth/space moves) are #17's.
NN_EXCLUDED = re.compile(r"conv|pool|dilation2d|erosion2d|depth_to_space|space_to_depth")
# Keras plumbing, not losses/optimizers/metrics of their own.
PLUMBING = {"Loss", "Reduction", "Optimizer", "Metric", "MeanMetricWrapper", "deserialize", "get", "serialize",
            "OptimizerMap", "MultiOptimizer"}


def functions(mod, classes=False):
    out = []
    for n in dir(mod):
        o = getattr(mod, n)
        if n.startswith("_") or inspect.ismodule(o) or (inspect.isclass(o) and not classes) or not callable(o):
            continue
        if n in PLUMBING:
            continue
        out.append(n)
    return sorted(out)


def data_functions():
    """tf.data.Dataset's methods and the file datasets beside it."""
    methods = [f"Dataset.{n}" for n in dir(tf.data.Dataset) if not n.startswith("_")
               and callable(getattr(tf.data.Dataset, n))]
    files = ["TextLineDataset", "TFRecordDataset", "FixedLengthRecordDataset",
             "experimental.CsvDataset", "experimental.make_csv_dataset"]
    return sorted(methods) + files


def array_functions():
    """Top-level tf functions defined in TensorFlow's array-op modules."""
    mods = {"array_ops", "gen_array_ops", "array_ops_stack"}
    return [n for n in functions(tf) if (getattr(getattr(tf, n), "__module__", "") or "").split(".")[-1] in mods]


def parse():
    table = {}
    for line in STATUS.strip().splitlines():
        if not line.strip():
            continue
        head, _, note = line.partition("|")
        key, status, name = head.split()
        table[key] = (status, name, note.strip())
    return table


def rust_sources():
    text = []
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".rs"):
                with open(os.path.join(dirpath, f)) as fh:
                    text.append(fh.read())
    return "\n".join(text)


def exists(name, src):
    pats = [rf"\bfn {re.escape(name)}\b", rf"=> {re.escape(name)}, \"", rf"^\s*{re.escape(name)}\b\s*[{{,(]",
            rf"\b{re.escape(name)} => \w+;", rf"\bpub (struct|type|trait) {re.escape(name)}\b"]
    return any(re.search(p, src, re.M) for p in pats)


def main():
    table = parse()
    src = rust_sources()
    missing = [f"{k} -> {v[1]}" for k, v in table.items() if v[0] in "SC" and not exists(v[1], src)]
    if missing:
        sys.exit("names the table claims but crates/rivulet/src lacks:\n  " + "\n  ".join(missing))
    words = {"S": "supported", "C": "composed", "P": "planned", "O": "out of scope"}
    lines = [
        "# TensorFlow coverage",
        "",
        f"Generated by `docs/tf_coverage.py` from TensorFlow {tf.__version__}'s public functions; do not edit by hand.",
        "",
        "*supported*: a Rivulet op or function of its own; *composed*: built from other ops, or the same",
        "function under Rivulet's name; *planned*: the issue that brings it; *out of scope*: why.",
        "Every supported or composed name was checked to exist in `crates/rivulet/src` when this was generated.",
        "Semantics that differ on purpose are listed in [Deliberate differences](#deliberate-differences).",
        "",
        "| module | functions | supported | composed | planned | out of scope | supported or composed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    sections = []
    for key, title, lister in MODULES:
        names = lister()
        rows, counts = [], {"S": 0, "C": 0, "P": 0, "O": 0}
        conv = {"S": 0, "C": 0, "P": 0, "O": 0}
        for n in names:
            status, rust, note = table.get(f"{key}.{n}", ("P", "-", DEFAULT_PLANNED.get(key, "")))
            # tf.nn's convolutions and pooling are #17's: counted on a row of their own.
            (conv if key == "nn" and NN_EXCLUDED.search(n) else counts)[status] += 1
            shown = f"`{rust}`" if rust != "-" else ""
            rows.append(f"| `{n}` | {words[status]} | {shown} | {note} |")
        for label, c in [(title, counts)] + ([(f"{title}: convolution and pooling (#17)", conv)] if sum(conv.values()) else []):
            total = sum(c.values())
            pct = 100.0 * (c["S"] + c["C"]) / max(total, 1)
            lines.append(f"| {label} | {total} | {c['S']} | {c['C']} | {c['P']} | {c['O']} | {pct:.0f}% |")
        sections += ["", f"## {title}", "", "| TensorFlow | status | Rivulet | note |", "|---|---|---|---|"] + rows
    lines += sections
    with open(os.path.join(ROOT, "docs", "DIFFERENCES.md")) as fh:
        lines += ["", fh.read().strip()]
    with open(os.path.join(ROOT, "docs", "TF_COVERAGE.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines[9:9 + 3 + len(MODULES)]))


if __name__ == "__main__":
    main()
