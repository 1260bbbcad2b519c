"""Reference values from real TensorFlow for tests/suite/tf_reference.rs.

Run in a throwaway virtualenv (never in CI):

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python crates/rivulet/tests/reference/tf_ops.py

It writes crates/rivulet/tests/reference/tf_ops/: for each case NAME,
NAME.in<i>.npy (the inputs), NAME.out<k>.npy (TensorFlow's outputs) and, for
cases with gradients, NAME.grad<i>.npy: the gradient with respect to each
float input of loss = sum_k sum(cast(out_k, f32) * w_k), with
w_k[i] = ((7 i + 3 k) % 11) * 0.1 - 0.5 over the flattened output (the
weights tests/suite/tf_reference.rs uses). manifest.json lists the cases
with their tolerances. The Rust side builds each case by name.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf
import keras

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf_ops")
rng = np.random.default_rng(20261204)
CASES = []


def case(name, inputs, fn, grad=False, rtol=2e-6, atol=1e-6):
    CASES.append(dict(name=name, inputs=inputs, fn=fn, grad=grad, rtol=rtol, atol=atol))


def f32(*shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def f64(*shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float64)


def pos(*s):
    return f32(*s, lo=0.3, hi=2.0)


EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 1e-30, 30.0, -30.0,
                  np.inf, -np.inf, np.nan], dtype=np.float32)
m = tf.math
nn = tf.nn

# Elementwise unary: TensorFlow's values at the edges (signed zeros,
# infinities, NaN, halves) and gradients inside each op's domain.
unary = {
    "erfc": (m.erfc, (-2, 2)), "sinh": (m.sinh, (-2, 2)), "cosh": (m.cosh, (-2, 2)),
    "asin": (m.asin, (-0.9, 0.9)), "acos": (m.acos, (-0.9, 0.9)), "atan": (m.atan, (-2, 2)),
    "asinh": (m.asinh, (-2, 2)), "acosh": (m.acosh, (1.2, 3)), "atanh": (m.atanh, (-0.9, 0.9)),
    "exp": (m.exp, (-2, 2)), "expm1": (m.expm1, (-2, 2)), "log": (m.log, (0.2, 3)),
    "log1p": (m.log1p, (-0.8, 3)), "sqrt": (m.sqrt, (0.2, 3)), "rsqrt": (m.rsqrt, (0.2, 3)),
    "reciprocal": (m.reciprocal, (0.3, 2)), "square": (m.square, (-2, 2)),
    "sin": (m.sin, (-3, 3)), "cos": (m.cos, (-3, 3)), "tan": (m.tan, (-1.2, 1.2)),
    "tanh": (m.tanh, (-3, 3)), "sigmoid": (m.sigmoid, (-4, 4)), "softplus": (m.softplus, (-4, 4)),
    "erf": (m.erf, (-2, 2)), "abs": (m.abs, (0.1, 2)), "sign": (m.sign, (0.1, 2)),
    "relu": (nn.relu, (0.1, 2)), "relu6": (nn.relu6, (0.1, 5.9)), "elu": (nn.elu, (0.1, 2)),
    "selu": (nn.selu, (0.1, 2)), "gelu": (lambda x: nn.gelu(x, approximate=False), (-3, 3)),
    "gelu_approximate": (lambda x: nn.gelu(x, approximate=True), (-3, 3)),
    "leaky_relu": (lambda x: nn.leaky_relu(x, 0.2), (0.1, 2)),
    "log_sigmoid": (m.log_sigmoid, (-4, 4)), "softsign": (nn.softsign, (-3, 3)),
    "silu": (nn.silu, (-3, 3)), "round": (m.round, (0.1, 0.4)), "rint": (m.rint, (0.1, 0.4)),
    "floor": (m.floor, (0.1, 0.9)), "ceil": (m.ceil, (0.1, 0.9)),
    "reciprocal_no_nan": (m.reciprocal_no_nan, (0.3, 2)),
    "is_inf": (m.is_inf, None), "is_nan": (m.is_nan, None), "is_finite": (m.is_finite, None),
    "lgamma": (m.lgamma, (0.3, 4)), "digamma": (m.digamma, (0.3, 4)), "erfinv": (m.erfinv, (-0.9, 0.9)),
    "ndtri": (m.ndtri, (0.05, 0.95)), "erfcinv": (m.erfcinv, (0.1, 1.9)),
    "bessel_i0e": (m.bessel_i0e, (0.1, 3)), "bessel_i1e": (m.bessel_i1e, (0.1, 3)),
    "bessel_i0": (m.bessel_i0, (-3, 3)), "bessel_i1": (m.bessel_i1, (-3, 3)),
}
for name, (fn, dom) in unary.items():
    case(f"{name} edges", [EDGES.copy()], lambda x, fn=fn: [fn(x)], rtol=4e-6)
    if dom is not None:
        case(f"{name} grad", [f32(3, 4, lo=dom[0], hi=dom[1])], lambda x, fn=fn: [fn(x)], grad=True, rtol=4e-6)
case("erfc f64", [f64(9, lo=-3, hi=6)], lambda x: [m.erfc(x)], rtol=1e-14, atol=1e-300)
# The special functions in f64 across their ranges (tails, poles, the switch
# between series and expansions).
case("lgamma f64", [np.array([0.1, 0.5, 1.0, 2.0, 3.7, 10.0, 171.5, -0.5, -2.5, 1e-8], np.float64)],
     lambda x: [m.lgamma(x)], rtol=1e-14, atol=1e-15)
case("digamma f64", [np.array([0.1, 0.5, 1.0, 3.7, 10.0, 1e5, -0.5, -2.25, 1e-8], np.float64)],
     lambda x: [m.digamma(x)], rtol=1e-13, atol=1e-14)
# TensorFlow's f64 erfinv loses relative precision near 0 and near +-1
# (erfinv(1e-12) is 9e-5 off); Rivulet's is accurate there (docs/DIFFERENCES.md),
# so the comparison keeps to where TensorFlow's is.
case("erfinv f64", [np.array([0.3, -0.5, 0.7, 0.99, -0.999999, 0.05], np.float64)],
     lambda x: [m.erfinv(x)], rtol=1e-13, atol=1e-300)
case("ndtri f64", [np.array([1e-300, 1e-100, 1e-10, 0.01, 0.3, 0.5, 0.8, 0.999, 1.0 - 1e-12], np.float64)],
     lambda x: [m.ndtri(x)], rtol=1e-13, atol=1e-300)
case("bessel f64", [np.array([0.0, 0.1, -1.0, 5.0, 29.9, 30.1, -45.0, 100.0, 700.0], np.float64)],
     lambda x: [m.bessel_i0e(x), m.bessel_i1e(x)], rtol=1e-13, atol=1e-300)
qs = np.array([0.5, 1.0, 2.5, 7.0, 12.0], np.float64)
case("zeta f64", [np.array([1.5, 2.0, 3.0, 4.5, 9.0], np.float64), qs], lambda x, q: [m.zeta(x, q)], rtol=1e-13)
case("polygamma f64", [np.array([0.0, 1.0, 2.0, 3.0, 1.0], np.float64), qs], lambda n, x: [m.polygamma(n, x)],
     rtol=1e-12)
ga = np.array([0.5, 1.0, 2.5, 10.0, 30.0, 0.1], np.float64)
gx = np.array([0.2, 1.0, 4.0, 9.0, 45.0, 2.0], np.float64)
case("igamma f64", [ga, gx], lambda a, x: [m.igamma(a, x), m.igammac(a, x)], rtol=1e-12, atol=1e-15)
case("zeta grad", [f32(2, 3, lo=0.5, hi=3)], lambda q: [m.zeta(tf.constant([2.0, 3.5, 5.0], tf.float32), q)],
     grad=True, rtol=1e-5)
case("polygamma grad", [f32(2, 3, lo=0.5, hi=3)],
     lambda x: [m.polygamma(tf.constant([0.0, 1.0, 2.0], tf.float32), x)], grad=True, rtol=1e-5)
case("igamma grad", [f32(2, 3, lo=0.3, hi=4)],
     lambda x: [m.igamma(tf.constant([0.5, 1.0, 2.5], tf.float32), x),
                m.igammac(tf.constant([0.5, 1.0, 2.5], tf.float32), x)], grad=True, rtol=1e-5)
case("nextafter", [np.array([1.0, 1.0, 0.0, -0.0, np.inf, 3.0], np.float32),
                   np.array([2.0, 0.0, 1.0, -1.0, 0.0, 3.0], np.float32)], lambda a, b: [m.nextafter(a, b)], rtol=0, atol=0)
case("nextafter f64", [np.array([1.0, 0.0, -2.0], np.float64), np.array([2.0, -1.0, -3.0], np.float64)],
     lambda a, b: [m.nextafter(a, b)], rtol=0, atol=0)
case("lbeta", [f32(3, 4, lo=0.3, hi=3)], lambda x: [m.lbeta(x)], grad=True, rtol=1e-5)
case("invert_permutation", [np.array([3, 0, 4, 1, 2], np.int32)], lambda p: [m.invert_permutation(p)])
case("batch_norm_with_global_normalization", [f32(4, 5), f32(5), pos(5), f32(5), pos(5)],
     lambda t, mu, v, b, g: [tf.compat.v1.nn.batch_norm_with_global_normalization(t, mu, v, b, g, 1e-3, True)],
     grad=True)
case("leaky_relu at 0", [np.array([-1.0, 0.0, 1.0], np.float32)], lambda x: [nn.leaky_relu(x, 0.3)], grad=True)

# Binary ops and TensorFlow's integer division rules.
ai = np.array([7, -7, 7, -7, 0, 9, -9, 2147483647], np.int32)
bi = np.array([2, 2, -2, -2, 5, 4, 4, 3], np.int32)
case("truediv int32", [ai, bi], lambda a, b: [a / b])
case("truediv int64", [ai.astype(np.int64), bi.astype(np.int64)], lambda a, b: [a / b])
case("truediv int32 by zero", [np.array([1, -1, 0], np.int32), np.array([0, 0, 0], np.int32)], lambda a, b: [a / b])
case("floordiv int32", [ai, bi], lambda a, b: [a // b])
case("floormod int32", [ai, bi], lambda a, b: [a % b])
case("truncatediv int32", [ai, bi], lambda a, b: [tf.truncatediv(a, b)])
case("truncatemod int32", [ai, bi], lambda a, b: [tf.truncatemod(a, b)])
af = np.array([7.5, -7.5, 7.5, -7.5, 0.0, 1.0, np.inf, 2.0], np.float32)
bf = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 0.0, 2.0, np.inf], np.float32)
case("truncatemod f32", [af, bf], lambda a, b: [tf.truncatemod(a, b)])
case("floormod f32", [af, bf], lambda a, b: [m.floormod(a, b)])
za = np.array([0.0, 0.0, 0.0, 0.0, 2.0, -3.0, 1.5, np.nan], np.float32)
zb = np.array([0.0, np.nan, np.inf, -1.0, 0.0, 0.0, 4.0, 0.0], np.float32)
for name, fn in {"div_no_nan": m.divide_no_nan, "xlogy": m.xlogy, "xdivy": m.xdivy,
                 "xlog1py": m.xlog1py, "multiply_no_nan": m.multiply_no_nan}.items():
    case(f"{name} zeros", [za, zb], lambda a, b, fn=fn: [fn(a, b)])
case("div_no_nan grad", [f32(2, 3), pos(3)], lambda a, b: [m.divide_no_nan(a, b)], grad=True)
case("xlogy grad", [f32(2, 3), pos(3)], lambda a, b: [m.xlogy(a, b)], grad=True)
case("xdivy grad", [f32(2, 3), pos(3)], lambda a, b: [m.xdivy(a, b)], grad=True)
case("xlog1py grad", [f32(2, 3), pos(3)], lambda a, b: [m.xlog1py(a, b)], grad=True)
case("xlogy grad at x = 0", [np.array([0.0, 1.0], np.float32), np.array([0.0, 2.0], np.float32)],
     lambda a, b: [m.xlogy(a, b)], grad=True)
case("squared_difference", [f32(2, 3), f32(3)], lambda a, b: [m.squared_difference(a, b)], grad=True)
case("atan2", [f32(2, 3), f32(3)], lambda a, b: [m.atan2(a, b)], grad=True)
case("pow", [pos(2, 3), f32(3)], lambda a, b: [m.pow(a, b)], grad=True, rtol=1e-5)
case("maximum nan", [np.array([np.nan, 1.0, 2.0], np.float32), np.array([1.0, np.nan, 1.0], np.float32)],
     lambda a, b: [m.maximum(a, b), m.minimum(a, b)])
bools = [np.array([True, True, False, False]), np.array([True, False, True, False])]
case("logical_xor", bools, lambda a, b: [m.logical_xor(a, b)])

# Reductions, scans and counting.
x34 = f32(3, 4)
case("count_nonzero", [np.array([[0.0, 1.0, 0.0], [2.0, -0.0, 3.0]], np.float32)],
     lambda x: [m.count_nonzero(x), m.count_nonzero(x, axis=1)])
case("reduce_euclidean_norm", [x34], lambda x: [m.reduce_euclidean_norm(x, axis=1)], grad=True)
case("reduce_logsumexp", [x34], lambda x: [m.reduce_logsumexp(x, axis=0)], grad=True)
case("reduce_std", [x34], lambda x: [m.reduce_std(x, axis=1)], grad=True)
case("reduce_variance", [x34], lambda x: [m.reduce_variance(x, axis=[0, 1])], grad=True)
case("cumulative_logsumexp", [x34], lambda x: [m.cumulative_logsumexp(x, axis=1),
                                               m.cumulative_logsumexp(x, axis=0, reverse=True)], grad=True)
case("reduce_mean int32", [np.array([2147483647, 2147483647, 1], np.int32)], lambda x: [m.reduce_mean(x)])
case("argmax nan", [np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]], np.float32)],
     lambda x: [m.argmax(x, axis=1), m.argmin(x, axis=1)])
case("zero_fraction", [np.array([0.0, 1.0, 0.0, 3.0, -0.0], np.float32)], lambda x: [m.zero_fraction(x)])
case("add_n", [f32(2, 3), f32(2, 3), f32(2, 3)], lambda a, b, c: [m.add_n([a, b, c])], grad=True)
case("polyval", [np.float32(2.0), np.float32(-1.0), np.float32(0.5), f32(5)],
     lambda a, b, c, x: [m.polyval([a, b, c], x)], grad=True)
case("is_non_decreasing", [np.array([1, 2, 2, 5], np.int32)],
     lambda x: [m.is_non_decreasing(x), m.is_strictly_increasing(x)])

# Segments, bincount, confusion matrices, top-k membership.
data = f32(6, 2)
ids = np.array([0, 0, 2, 2, 2, 3], np.int32)
uids = np.array([3, 0, -1, 3, 0, 1], np.int32)
for op in ["sum", "max", "min", "prod", "mean", "sqrt_n"]:
    fn = getattr(m, f"unsorted_segment_{op}")
    case(f"unsorted_segment_{op}", [data, uids], lambda d, i, fn=fn: [fn(d, i, num_segments=5)], grad=True)
for op in ["sum", "max", "min", "prod", "mean"]:
    fn = getattr(m, f"segment_{op}")
    case(f"segment_{op}", [data, ids], lambda d, i, fn=fn: [fn(d, i)], grad=True)
case("bincount", [np.array([1, 1, 4, 0, 1], np.int32)], lambda x: [m.bincount(x)])
case("bincount weights", [np.array([1, 1, 4, 0, 1], np.int32), np.array([0.5, 1.0, 2.0, 3.0, 0.25], np.float32)],
     lambda x, w: [m.bincount(x, weights=w, minlength=7)])
case("confusion_matrix", [np.array([0, 1, 2, 2, 1], np.int32), np.array([0, 2, 2, 1, 1], np.int32)],
     lambda l, p: [m.confusion_matrix(l, p, num_classes=4)])
case("in_top_k", [np.array([2, 0, 1], np.int32),
                  np.array([[0.1, 0.5, 0.5], [0.9, 0.2, 0.3], [0.2, np.inf, 0.1]], np.float32)],
     lambda t, p: [m.in_top_k(t, p, k=1), m.in_top_k(t, p, k=2)])

# tf.nn.
x = f32(4, 5)
case("l2_normalize", [x], lambda x: [nn.l2_normalize(x, axis=1)], grad=True)
case("l2_loss", [x], lambda x: [nn.l2_loss(x)], grad=True)
case("moments", [x], lambda x: list(nn.moments(x, axes=[0])), grad=True)
case("moments keepdims", [x], lambda x: list(nn.moments(x, axes=[1], keepdims=True)), grad=True)
case("weighted_moments", [x, pos(4, 1)], lambda x, w: list(nn.weighted_moments(x, [0], w)), grad=True)
case("batch_normalization", [x, f32(5), pos(5), f32(5), pos(5)],
     lambda x, mu, v, o, s: [nn.batch_normalization(x, mu, v, o, s, 1e-3)], grad=True)
case("sufficient_statistics", [x], lambda x: list(nn.sufficient_statistics(x, [0])[:3]), grad=True)
case("normalize_moments", [np.float32(4.0), f32(5), pos(5)],
     lambda c, s, ss: list(nn.normalize_moments(c, s, ss, None)), grad=True)
x4 = f32(2, 3, 3, 6)
case("local_response_normalization", [x4],
     lambda x: [nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=0.5, beta=0.75)],
     grad=True, rtol=1e-5)
labels01 = rng.uniform(0, 1, size=(3, 4)).astype(np.float32)
logits = f32(3, 4, lo=-3, hi=3)
logits[0, 0] = 0.0
case("sigmoid_cross_entropy_with_logits", [labels01, logits],
     lambda y, z: [nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)], grad=True)
case("weighted_cross_entropy_with_logits", [labels01, logits],
     lambda y, z: [nn.weighted_cross_entropy_with_logits(labels=y, logits=z, pos_weight=2.5)], grad=True)
probs = tf.nn.softmax(f32(3, 4)).numpy()
case("softmax_cross_entropy_with_logits", [probs, logits],
     lambda y, z: [nn.softmax_cross_entropy_with_logits(labels=y, logits=z)], grad=True)
case("sparse_softmax_cross_entropy_with_logits", [np.array([3, 0, 2], np.int32), logits],
     lambda y, z: [nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)], grad=True)
case("log_poisson_loss", [rng.uniform(0, 4, size=(6,)).astype(np.float32), f32(6)],
     lambda t, c: [nn.log_poisson_loss(t, c, compute_full_loss=True)], grad=True)
case("crelu", [f32(2, 3)], lambda x: [nn.crelu(x)], grad=True)
case("bias_add", [f32(2, 3, 4), f32(4)], lambda x, b: [nn.bias_add(x, b)], grad=True)
case("softmax", [f32(3, 4)], lambda x: [nn.softmax(x)], grad=True)
case("log_softmax", [f32(3, 4)], lambda x: [nn.log_softmax(x)], grad=True)
case("compute_average_loss", [f32(4), pos(4)],
     lambda l, w: [nn.compute_average_loss(l, sample_weight=w, global_batch_size=8)], grad=True)
case("top_k", [np.array([[1.0, 3.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.0]], np.float32)],
     lambda x: list(m.top_k(x, k=2)))

# Array functions.
case("meshgrid", [f32(3), f32(2)], lambda a, b: tf.meshgrid(a, b), grad=True)
case("meshgrid ij", [f32(3), f32(2)], lambda a, b: tf.meshgrid(a, b, indexing="ij"), grad=True)
case("repeat", [f32(2, 3)], lambda x: [tf.repeat(x, 2, axis=1), tf.repeat(x, 3)], grad=True)
case("sequence_mask", [np.array([0, 2, 4], np.int32)], lambda l: [tf.sequence_mask(l, 5)])
case("reverse_sequence", [f32(3, 4, 2), np.array([2, 4, 0], np.int64)],
     lambda x, l: [tf.reverse_sequence(x, l, seq_axis=1, batch_axis=0)], grad=True)
case("searchsorted", [np.array([[1.0, 2.0, 2.0, 5.0]], np.float32), np.array([[2.0, 0.0, 6.0]], np.float32)],
     lambda s, v: [tf.searchsorted(s, v, side="left"), tf.searchsorted(s, v, side="right")])
case("unravel_index", [np.array([0, 5, 11, 7], np.int32)], lambda i: [tf.unravel_index(i, [3, 4])])
sx = f32(4, 3)
sidx = np.array([[1], [3], [1]], np.int32)
supd = f32(3, 3)
for op in ["add", "sub", "max", "min"]:
    fn = getattr(tf, f"tensor_scatter_nd_{op}")
    case(f"tensor_scatter_nd_{op}", [sx, sidx, supd], lambda x, i, u, fn=fn: [fn(x, i, u)], grad=op in ("add", "sub"))
case("tensor_scatter_nd_update", [sx, np.array([[1], [3]], np.int32), f32(2, 3)],
     lambda x, i, u: [tf.tensor_scatter_nd_update(x, i, u)], grad=True)
case("where one argument", [np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)], lambda x: [tf.where(x)])
case("boolean_mask", [f32(4, 2), np.array([True, False, True, True])], lambda x, k: [tf.boolean_mask(x, k)], grad=True)
case("unique_with_counts", [np.array([3, 1, 3, 2, 1, 3], np.int32)], lambda x: list(tf.unique_with_counts(x)))
case("space_to_batch_nd", [f32(1, 4, 4, 1)], lambda x: [tf.space_to_batch_nd(x, [2, 2], [[0, 0], [0, 0]])], grad=True)
case("space_to_batch_nd padded", [f32(2, 3, 2, 3)], lambda x: [tf.space_to_batch_nd(x, [2, 2], [[1, 0], [1, 1]])])
case("batch_to_space", [f32(8, 1, 3, 2)], lambda x: [tf.batch_to_space(x, [2, 2], [[0, 1], [1, 1]])], grad=True)

# Keras losses: per example (reduction None), the default
# sum_over_batch_size, and sum with sample weights; gradients for the predictions.
K = tf.keras.losses
y01 = (rng.uniform(0, 1, size=(4, 3)) > 0.5).astype(np.float32)
ypm = 2 * y01 - 1
probs3 = tf.nn.softmax(f32(4, 3)).numpy()
onehot = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
sparse = np.array([0, 2, 1, 2], np.int32)
reg_t, reg_p = f32(4, 3, lo=0.1, hi=3), f32(4, 3, lo=0.1, hi=3)
sw = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
losses = {
    "MeanSquaredError": (K.MeanSquaredError, {}, f32(4, 3), f32(4, 3)),
    "MeanAbsoluteError": (K.MeanAbsoluteError, {}, f32(4, 3), f32(4, 3)),
    "MeanAbsolutePercentageError": (K.MeanAbsolutePercentageError, {}, reg_t, reg_p),
    "MeanSquaredLogarithmicError": (K.MeanSquaredLogarithmicError, {}, reg_t, reg_p),
    "Huber": (K.Huber, {"delta": 0.7}, f32(4, 3), f32(4, 3)),
    "LogCosh": (K.LogCosh, {}, f32(4, 3), f32(4, 3)),
    "Hinge": (K.Hinge, {}, y01, f32(4, 3)),
    "Hinge pm1": (K.Hinge, {}, ypm, f32(4, 3)),
    "SquaredHinge": (K.SquaredHinge, {}, y01, f32(4, 3)),
    "CategoricalHinge": (K.CategoricalHinge, {}, onehot, f32(4, 3)),
    "CosineSimilarity": (K.CosineSimilarity, {}, f32(4, 3), f32(4, 3)),
    "KLDivergence": (K.KLDivergence, {}, probs3, tf.nn.softmax(f32(4, 3)).numpy()),
    "Poisson": (K.Poisson, {}, reg_t, reg_p),
    "BinaryCrossentropy": (K.BinaryCrossentropy, {}, y01, rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)),
    "BinaryCrossentropy logits": (K.BinaryCrossentropy, {"from_logits": True}, y01, f32(4, 3)),
    "BinaryFocalCrossentropy": (K.BinaryFocalCrossentropy, {"apply_class_balancing": True, "gamma": 1.5},
                                y01, rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)),
    "BinaryFocalCrossentropy logits": (K.BinaryFocalCrossentropy, {"from_logits": True, "label_smoothing": 0.1},
                                       y01, f32(4, 3)),
    "CategoricalCrossentropy": (K.CategoricalCrossentropy, {}, onehot, probs3),
    "CategoricalCrossentropy logits": (K.CategoricalCrossentropy, {"from_logits": True}, onehot, f32(4, 3)),
    "CategoricalFocalCrossentropy": (K.CategoricalFocalCrossentropy, {}, onehot, probs3),
    "CategoricalFocalCrossentropy logits": (K.CategoricalFocalCrossentropy,
                                            {"from_logits": True, "label_smoothing": 0.2, "alpha": 0.5}, onehot, f32(4, 3)),
    "SparseCategoricalCrossentropy": (K.SparseCategoricalCrossentropy, {}, sparse, probs3),
    "SparseCategoricalCrossentropy logits": (K.SparseCategoricalCrossentropy, {"from_logits": True}, sparse, f32(4, 3)),
    "CategoricalGeneralizedCrossEntropy": (K.CategoricalGeneralizedCrossEntropy, {"q": 0.7}, sparse, probs3),
    "Dice": (K.Dice, {}, y01, rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)),
    "CTC": (K.CTC, {}, np.array([[1, 2, 0], [3, 3, 4], [2, 0, 0], [1, 1, 1]], np.int32), f32(4, 6, 5)),
    "Tversky": (K.Tversky, {"alpha": 0.3, "beta": 0.7}, y01, rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)),
}
# Circle: L2-normalized embeddings; labels 1 and 2 have no positive pair
# (zero losses, masked out of the mean).
circle_pred = f32(4, 5)
circle_pred /= np.linalg.norm(circle_pred, axis=1, keepdims=True)
losses["Circle"] = (K.Circle, {"gamma": 10.0, "margin": 0.3}, np.array([0, 1, 0, 2], np.int32), circle_pred)
# Label smoothing (fixed predictions: no draw moves the later cases' inputs).
losses["BinaryCrossentropy smoothed logits"] = (K.BinaryCrossentropy, {"from_logits": True, "label_smoothing": 0.2}, y01,
                                                np.linspace(-2, 2, 12).reshape(4, 3).astype(np.float32))
losses["CategoricalCrossentropy smoothed"] = (K.CategoricalCrossentropy, {"label_smoothing": 0.1}, onehot, probs3)
losses["CategoricalCrossentropy smoothed logits"] = (K.CategoricalCrossentropy,
                                                     {"from_logits": True, "label_smoothing": 0.3}, onehot,
                                                     np.linspace(-1, 2, 12).reshape(4, 3).astype(np.float32))
for name, (cls, kw, yt, yp) in losses.items():
    case(f"keras {name}", [yt, yp, sw],
         lambda y, p, w, cls=cls, kw=kw: [cls(**kw, reduction=None)(y, p), cls(**kw)(y, p),
                                          cls(**kw, reduction="sum")(y, p, sample_weight=w)],
         grad=True, rtol=1e-5, atol=1e-6)

# einsum beyond two plain operands, tensordot with integer axes, argmax's
# output_type, strided_slice's masks.
A, B, C = f32(2, 3), f32(3, 4), f32(4, 2)
sq = f32(3, 3)
case("einsum three operands", [A, B, C], lambda a, b, c: [tf.einsum("ij,jk,kl->il", a, b, c)], grad=True, rtol=1e-5)
case("einsum trace and diagonal", [sq], lambda x: [tf.einsum("ii->", x), tf.einsum("ii->i", x)], grad=True)
case("einsum ellipsis", [f32(2, 5, 3), f32(2, 3, 4)],
     lambda a, b: [tf.einsum("...ij,...jk->...ik", a, b)], grad=True, rtol=1e-5)
case("einsum implicit output", [f32(2, 3), f32(3, 4)], lambda a, b: [tf.einsum("ij,jk", a, b)], grad=True, rtol=1e-5)
case("einsum outer and batch diagonal", [f32(2, 3, 3), f32(4)],
     lambda a, v: [tf.einsum("bii,k->bik", a, v)], grad=True, rtol=1e-5)
case("tensordot integer axes", [f32(2, 3, 4), f32(3, 4, 5)],
     lambda a, b: [tf.tensordot(a, b, 2), tf.tensordot(a, b, 0)], grad=True, rtol=1e-5)
case("argmax output_type", [f32(3, 4)], lambda x: [tf.argmax(x, 1, output_type=tf.int32),
                                                  tf.argmin(x, 0, output_type=tf.int32)])
case("strided_slice masks", [f32(4, 5, 6)],
     lambda x: [tf.strided_slice(x, [1, 0, 4], [3, 4, 0], [1, 2, -2], begin_mask=2, end_mask=0),
                tf.strided_slice(x, [0, 2, 0], [0, 3, 0], [1, 1, 1], ellipsis_mask=1, shrink_axis_mask=2),
                tf.strided_slice(x, [1, 0, 0], [4, 0, 0], [2, 1, 1], new_axis_mask=2, end_mask=4)], grad=True)

# CTC: repeated labels (the skip rule), different label and logit lengths.
ctc_labels = np.array([[1, 2, 0], [3, 3, 4], [2, 0, 0]], np.int32)
ctc_label_length = np.array([2, 3, 1], np.int32)
ctc_logit_length = np.array([6, 5, 6], np.int32)
case("ctc_loss", [ctc_labels, f32(3, 6, 5), ctc_label_length, ctc_logit_length],
     lambda l, z, ll, zl: [tf.nn.ctc_loss(l, z, ll, zl, logits_time_major=False, blank_index=0)],
     grad=True, rtol=1e-5, atol=1e-5)
case("ctc_loss blank last", [np.array([[1, 2, 0], [3, 3, 1], [2, 0, 0]], np.int32), f32(3, 6, 5), ctc_label_length,
                              ctc_logit_length],
     lambda l, z, ll, zl: [tf.nn.ctc_loss(l, z, ll, zl, logits_time_major=False, blank_index=-1)],
     grad=True, rtol=1e-5, atol=1e-5)

# Isotonic regression: ties stay apart, pooled runs, both directions, an axis, integers.
iso_x = np.array([[3.0, 1.0, 2.0, 2.0, 5.0], [1.0, 2.0, 2.0, 1.0, 0.5], [2.0, 1.0, 1.0, 2.0, 2.0]], np.float32)
case("isotonic_regression", [iso_x], lambda x: list(nn.isotonic_regression(x)), grad=True)
case("isotonic_regression increasing axis 0", [f32(5, 3)],
     lambda x: list(nn.isotonic_regression(x, decreasing=False, axis=0)), grad=True)
case("isotonic_regression f64", [f64(3, 9)], lambda x: list(nn.isotonic_regression(x)), grad=True, rtol=1e-12,
     atol=1e-12)
case("isotonic_regression int32", [np.array([[1, 3, 2, 2], [4, 3, 5, 0]], np.int32)],
     lambda x: list(nn.isotonic_regression(x)))

# CTC label helpers and decoders (sparse results compared as dense, -1 past each end).
case("ctc_unique_labels", [np.array([[3, 4, 4, 3, 0], [1, 1, 1, 1, 1]], np.int32)],
     lambda x: list(nn.ctc_unique_labels(x)))
case("collapse_repeated", [np.array([[1, 1, 2, 2, 1], [1, 2, 3, 4, 5], [7, 7, 7, 7, 7]], np.int32),
                           np.array([5, 3, 4], np.int32)], lambda l, s: list(nn.collapse_repeated(l, s)))


def greedy(z, l, merge, blank):
    d, n = nn.ctc_greedy_decoder(z, l, merge_repeated=merge, blank_index=blank)
    return [tf.sparse.to_dense(d[0], default_value=-1), n]


def beam(z, l, width, paths):
    d, lp = nn.ctc_beam_search_decoder(z, l, beam_width=width, top_paths=paths)
    return [tf.sparse.to_dense(x, default_value=-1) for x in d] + [lp]


dec_logits = f32(9, 3, 4, lo=-3.0, hi=3.0)
dec_len = np.array([9, 5, 0], np.int32)
case("ctc_greedy_decoder", [dec_logits, dec_len], lambda z, l: greedy(z, l, True, None))
case("ctc_greedy_decoder unmerged blank 0", [dec_logits, dec_len], lambda z, l: greedy(z, l, False, 0))
# Exact ties (masked logits): the lowest class wins, the blank included.
tie_logits = np.array([[[0.0, 0.0, -1.0]], [[-1.0, 0.5, 0.5]], [[0.0, -1.0, 0.0]]], np.float32)
case("ctc_greedy_decoder ties", [tie_logits, np.array([3], np.int32)], lambda z, l: greedy(z, l, True, 0))
case("ctc_beam_search_decoder", [f32(8, 3, 4), np.array([8, 5, 1], np.int32)], lambda z, l: beam(z, l, 100, 3),
     rtol=1e-5, atol=1e-5)
case("ctc_beam_search_decoder narrow beam", [f32(12, 2, 5), np.array([12, 9], np.int32)],
     lambda z, l: beam(z, l, 3, 2), rtol=1e-5, atol=1e-5)


# with_space_to_batch: a dilated two-tap window sum along each spatial axis.
def pair_sum(x, n, padding):
    assert padding == "VALID"
    y = x[:, :-1] + x[:, 1:]
    return y[:, :, :-1] + y[:, :, 1:] if n == 2 else y


case("with_space_to_batch valid", [f32(2, 7, 3)], lambda x: [nn.with_space_to_batch(x, [2], "VALID", pair_sum)],
     grad=True)
case("with_space_to_batch same", [f32(2, 7, 3)],
     lambda x: [nn.with_space_to_batch(x, [3], "SAME", pair_sum, filter_shape=[2])], grad=True)
case("with_space_to_batch 2d", [f32(1, 6, 5, 2)], lambda x: [nn.with_space_to_batch(x, [2, 3], "VALID", pair_sum)],
     grad=True)

# Candidate samplers: the expected counts of the true classes (TensorFlow's
# draws cannot be reproduced; without unique they do not depend on them).
sampler_truth = np.array([[0, 5], [9, 2], [3, 3]], np.int64)


def true_counts(fn, **kw):
    return lambda t: [fn(true_classes=t, num_true=2, num_sampled=4, unique=False, **kw)[1]]


case("log_uniform_candidate_sampler counts", [sampler_truth],
     true_counts(tf.random.log_uniform_candidate_sampler, range_max=10))
case("uniform_candidate_sampler counts", [sampler_truth], true_counts(tf.random.uniform_candidate_sampler, range_max=10))
case("learned_unigram_candidate_sampler counts", [sampler_truth],
     true_counts(tf.random.learned_unigram_candidate_sampler, range_max=10))
case("fixed_unigram_candidate_sampler counts", [sampler_truth],
     true_counts(tf.random.fixed_unigram_candidate_sampler, range_max=10, distortion=0.5, num_reserved_ids=2,
                 unigrams=[5.0, 1.0, 2.0, 8.0, 3.0, 1.0, 4.0, 6.0]))
case("all_candidate_sampler", [np.array([[0, 4], [2, 2]], np.int64)],
     lambda t: list(tf.random.all_candidate_sampler(t, 2, 5, True)))
case("compute_accidental_hits", [sampler_truth, np.array([3, 7, 5, 3, 0], np.int64)],
     lambda t, s: list(nn.compute_accidental_hits(t, s, num_true=2)))

# Sampled losses on given sampled values, with and without removing accidental hits.
sampled_inputs = [f32(10, 4), f32(10), np.array([[1, 7], [3, 3], [0, 9]], np.int64), f32(3, 4),
                  np.array([2, 7, 5, 3, 0], np.int64), pos(3, 2), pos(5)]


def sampled_loss(fn, remove):
    return lambda w, b, l, x, s, te, se: [fn(w, b, l, x, num_sampled=5, num_classes=10, num_true=2,
                                             sampled_values=(s, te, se), remove_accidental_hits=remove)]


case("nce_loss", sampled_inputs, sampled_loss(nn.nce_loss, False), grad=True, rtol=1e-5, atol=1e-5)
case("nce_loss without hits", sampled_inputs, sampled_loss(nn.nce_loss, True), grad=True, rtol=1e-5, atol=1e-5)
case("sampled_softmax_loss", sampled_inputs, sampled_loss(nn.sampled_softmax_loss, True), grad=True, rtol=1e-5,
     atol=1e-5)
case("sampled_softmax_loss with hits", sampled_inputs, sampled_loss(nn.sampled_softmax_loss, False), grad=True,
     rtol=1e-5, atol=1e-5)
# A class sampled twice: only its last position is an accidental hit.
case("sampled_softmax_loss repeated sample", sampled_inputs[:4] + [np.array([3, 7, 3, 2, 0], np.int64)] + sampled_inputs[5:],
     sampled_loss(nn.sampled_softmax_loss, True), grad=True, rtol=1e-5, atol=1e-5)

# The narrow and unsigned integer types: true division's float types,
# wrapping arithmetic, exact means, casts across signedness.
i8a, i8b = np.array([7, -7, 1, 0, 127, -128], np.int8), np.array([2, 2, 0, 3, 1, -1], np.int8)
case("truediv int8", [i8a, i8b], lambda a, b: [a / b])
case("truediv uint16", [np.array([7, 1, 0, 65535], np.uint16), np.array([2, 0, 0, 3], np.uint16)], lambda a, b: [a / b])
case("truediv uint32", [np.array([7, 1, 4294967295], np.uint32), np.array([2, 3, 7], np.uint32)], lambda a, b: [a / b])
case("truediv uint64", [np.array([7, 1, 2**64 - 1], np.uint64), np.array([2, 3, 7], np.uint64)], lambda a, b: [a / b])
case("int8 arithmetic wraps", [np.array([127, -128, 100, -100], np.int8), np.array([1, -1, 100, 3], np.int8)],
     lambda a, b: [a + b, a - b, a * b, tf.abs(a), -a, tf.maximum(a, b)])
case("int16 floordiv floormod", [np.array([7, -7, 32767, -32768], np.int16), np.array([2, 2, -3, 7], np.int16)],
     lambda a, b: [tf.math.floordiv(a, b), tf.math.floormod(a, b)])
case("uint16 sum wraps mean exact", [np.array([[65535, 65535, 65534], [1, 2, 4]], np.uint16)],
     lambda x: [tf.reduce_sum(x, 1), tf.reduce_mean(x, 1), tf.reduce_max(x, 0), tf.argmax(x, 1)])
case("uint32 uint64 arithmetic", [np.array([4294967295, 5], np.uint32), np.array([2**64 - 1, 2**63 + 5], np.uint64)],
     lambda a, b: [a + tf.constant([1, 7], tf.uint32), b + tf.constant([1, 2**63], tf.uint64),
                   tf.cast(b, tf.float64), tf.cast(b, tf.float32)])
case("casts across signedness", [np.array([-1, -128, 127, 5], np.int8)],
     lambda x: [tf.cast(x, tf.uint8), tf.cast(x, tf.uint16), tf.cast(x, tf.uint32), tf.cast(x, tf.uint64),
                tf.cast(x, tf.int16), tf.cast(tf.cast(x, tf.uint64), tf.int8)])


# Shapes held by tensors: in a graph the dims are a placeholder, read when it runs.
case("fill run-time shape", [np.array([3, 4], np.int32), np.array(1.25, np.float32)], lambda d, v: [tf.fill(d, v)],
     grad=True)
case("broadcast_to run-time shape", [np.array([[0.5, -1.0, 2.0]], np.float32), np.array([2, 3], np.int64)],
     lambda x, d: [tf.broadcast_to(x, d)], grad=True)

# The incomplete gamma functions' derivative in a (IgammaGradA), on both
# sides of x = a + 1.
grad_a_x = np.array([0.2, 1.0, 4.0, 9.0, 45.0, 2.0, 0.5, 30.0], np.float64)
case("igamma grad a f64", [np.array([0.5, 1.0, 2.5, 10.0, 30.0, 0.1, 3.0, 29.0], np.float64)],
     lambda a: [m.igamma(a, tf.constant(grad_a_x)), m.igammac(a, tf.constant(grad_a_x))], grad=True, rtol=1e-10,
     atol=1e-13)
case("igamma grad a", [np.array([0.5, 1.0, 2.5, 4.0, 0.8, 6.0], np.float32)],
     lambda a: [m.igamma(a, tf.constant([0.3, 2.0, 1.5, 6.0, 0.8, 5.5], tf.float32))], grad=True, rtol=1e-5)

# Convolutions and pooling (channels last): TensorFlow's asymmetric SAME
# padding with strides, dilation, even windows, depthwise groups, 1x1
# filters, transposed convolutions; average pooling that counts only the
# elements inside the input. Gradients of both inputs.
conv_tol = dict(rtol=2e-5, atol=2e-5)
case("conv2d same stride2", [f32(2, 7, 6, 3), f32(3, 3, 3, 4)],
     lambda x, w: [nn.conv2d(x, w, strides=2, padding="SAME")], grad=True, **conv_tol)
case("conv2d valid dilation2", [f32(1, 9, 8, 2), f32(3, 2, 2, 3)],
     lambda x, w: [nn.conv2d(x, w, strides=1, padding="VALID", dilations=2)], grad=True, **conv_tol)
case("conv2d same dilation2 stride1", [f32(2, 6, 5, 2), f32(2, 3, 2, 2)],
     lambda x, w: [nn.conv2d(x, w, strides=1, padding="SAME", dilations=[1, 2, 2, 1])], grad=True, **conv_tol)
case("conv2d explicit", [f32(1, 5, 5, 2), f32(3, 3, 2, 2)],
     lambda x, w: [nn.conv2d(x, w, strides=[1, 2, 1, 1], padding=[[0, 0], [1, 2], [0, 1], [0, 0]])], grad=True, **conv_tol)
case("conv2d 1x1", [f32(3, 4, 5, 6), f32(1, 1, 6, 4)],
     lambda x, w: [nn.conv2d(x, w, strides=1, padding="VALID")], grad=True, **conv_tol)
case("conv1d same stride2", [f32(2, 9, 3), f32(4, 3, 2)],
     lambda x, w: [nn.conv1d(x, w, stride=2, padding="SAME")], grad=True, **conv_tol)
case("conv3d same", [f32(1, 4, 5, 3, 2), f32(2, 3, 2, 2, 3)],
     lambda x, w: [nn.conv3d(x, w, strides=[1, 1, 2, 1, 1], padding="SAME")], grad=True, **conv_tol)
case("depthwise_conv2d same", [f32(2, 6, 5, 3), f32(3, 3, 3, 2)],
     lambda x, w: [nn.depthwise_conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME")], grad=True, **conv_tol)
case("separable_conv2d", [f32(1, 6, 6, 2), f32(3, 3, 2, 2), f32(1, 1, 4, 3)],
     lambda x, d, p: [nn.separable_conv2d(x, d, p, strides=[1, 1, 1, 1], padding="VALID")], grad=True, **conv_tol)
case("conv2d_transpose same stride2", [f32(2, 4, 3, 3), f32(3, 3, 2, 3)],
     lambda x, w: [nn.conv2d_transpose(x, w, output_shape=[2, 8, 6, 2], strides=2, padding="SAME")], grad=True,
     **conv_tol)
case("conv3d_transpose valid", [f32(1, 3, 3, 2, 2), f32(2, 2, 2, 3, 2)],
     lambda x, w: [nn.conv3d_transpose(x, w, output_shape=[1, 4, 4, 3, 3], strides=1, padding="VALID")], grad=True,
     **conv_tol)
case("max_pool2d same stride2", [f32(2, 7, 5, 3)],
     lambda x: [nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")], grad=True)
case("avg_pool2d same stride2", [f32(2, 7, 5, 3)],
     lambda x: [nn.avg_pool2d(x, ksize=3, strides=2, padding="SAME")], grad=True)
case("max_pool1d valid", [f32(2, 9, 2)], lambda x: [nn.max_pool1d(x, ksize=2, strides=2, padding="VALID")], grad=True)
case("avg_pool3d valid", [f32(1, 4, 4, 5, 2)],
     lambda x: [nn.avg_pool3d(x, ksize=2, strides=2, padding="VALID")], grad=True)
case("depth_to_space", [f32(2, 3, 2, 8)], lambda x: [nn.depth_to_space(x, 2)], grad=True)
case("space_to_depth", [f32(2, 6, 4, 3)], lambda x: [nn.space_to_depth(x, 2)], grad=True)
case("max_pool3d same", [f32(1, 3, 4, 5, 2)],
     lambda x: [nn.max_pool3d(x, ksize=2, strides=[1, 2, 1], padding="SAME")], grad=True)
case("resize bilinear up", [f32(2, 3, 5, 2)],
     lambda x: [tf.image.resize(x, [7, 8], method="bilinear")], grad=True)
case("resize bilinear down", [f32(1, 9, 7, 3)],
     lambda x: [tf.image.resize(x, [4, 3], method="bilinear")], grad=True)
case("resize nearest", [f32(2, 5, 3, 2)],
     lambda x: [tf.image.resize(x, [7, 2], method="nearest")], grad=True)
case("resize bilinear 3d", [f32(4, 6, 2)],
     lambda x: [tf.image.resize(x, [5, 9], method="bilinear")], grad=True)
case("extract_patches valid", [f32(2, 6, 7, 3)],
     lambda x: [tf.image.extract_patches(x, [1, 3, 2, 1], [1, 2, 1, 1], [1, 1, 1, 1], "VALID")], grad=True)
case("extract_patches same rates", [f32(1, 7, 6, 2)],
     lambda x: [tf.image.extract_patches(x, [1, 2, 3, 1], [1, 3, 2, 1], [1, 2, 1, 1], "SAME")], grad=True)
case("fused_batch_norm train", [f32(4, 3, 5, 3), f32(3), f32(3)],
     lambda x, s, o: list(tf.compat.v1.nn.fused_batch_norm(x, s, o, epsilon=1e-3, is_training=True)),
     grad=True, rtol=2e-5, atol=2e-5)
case("fused_batch_norm running", [f32(2, 3, 3, 2), f32(2), f32(2), f32(2), pos(2)],
     lambda x, s, o, m, v: list(tf.compat.v1.nn.fused_batch_norm(
         x, s, o, mean=m, variance=v, epsilon=1e-2, is_training=True, exponential_avg_factor=0.1)),
     grad=True, rtol=2e-5, atol=2e-5)
case("fused_batch_norm inference nchw", [f32(2, 3, 4, 2), f32(3), f32(3), f32(3), pos(3)],
     lambda x, s, o, m, v: list(tf.compat.v1.nn.fused_batch_norm(
         tf.transpose(x, [0, 2, 3, 1]), s, o, mean=m, variance=v, epsilon=1e-3, is_training=False)),
     grad=True, rtol=2e-5, atol=2e-5)


def keras_group_norm(x, g, b):
    layer = keras.layers.GroupNormalization(groups=3, epsilon=1e-3)
    layer.build(x.shape)
    layer.gamma.assign(g)
    layer.beta.assign(b)
    return [layer(x)]


def keras_batch_norm(x, g, b):
    layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    layer.build(x.shape)
    layer.gamma.assign(g)
    layer.beta.assign(b)
    train = layer(x, training=True)
    moved = [tf.identity(layer.moving_mean), tf.identity(layer.moving_variance)]
    return [train] + moved + [layer(x * 0.5 + 1.0, training=False)]


case("keras GroupNormalization", [f32(2, 3, 4, 6), f32(6), f32(6)], keras_group_norm,
     grad=True, rtol=2e-5, atol=2e-5)
case("keras BatchNormalization", [f32(4, 3, 3, 2), f32(2), f32(2)], keras_batch_norm,
     grad=True, rtol=2e-5, atol=2e-5)


def loss_of(outs):
    total = tf.constant(0.0, tf.float32)
    for k, y in enumerate(outs):
        if not y.dtype.is_floating:
            continue
        n = int(np.prod(y.shape))
        w = np.array([((i * 7 + k * 3) % 11) * 0.1 - 0.5 for i in range(n)], np.float32).reshape(y.shape)
        total += tf.reduce_sum(tf.cast(y, tf.float32) * w)
    return total


# Keras optimizer trajectories: f64 weights [1, -0.5, 2, 0.25] (or those and
# -1.5, 0.75 as a [2, 3] or [3, 2] matrix), ten steps on
# loss = scale * sum(w^3 + w^2 / 2), at gradient scales 1 and 1e-4; each
# file holds the weights after every step.
OPTIMIZERS = {
    # Learning rates Keras's f32 variable holds exactly where a trajectory grows fast.
    "SGD": lambda: tf.keras.optimizers.SGD(0.03125),
    "SGD momentum": lambda: tf.keras.optimizers.SGD(0.03125, momentum=0.9),
    "SGD nesterov": lambda: tf.keras.optimizers.SGD(0.03125, momentum=0.9, nesterov=True),
    "Adam": lambda: tf.keras.optimizers.Adam(0.01),
    "AdamW": lambda: tf.keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "RMSprop": lambda: tf.keras.optimizers.RMSprop(0.01),
    "Adagrad": lambda: tf.keras.optimizers.Adagrad(0.1),
    "Adamax": lambda: tf.keras.optimizers.Adamax(0.01),
    "Nadam": lambda: tf.keras.optimizers.Nadam(0.01),
    "Adadelta": lambda: tf.keras.optimizers.Adadelta(1.0),
    "Ftrl": lambda: tf.keras.optimizers.Ftrl(0.1),
    "Ftrl regularized": lambda: tf.keras.optimizers.Ftrl(0.1, learning_rate_power=-0.7, l1_regularization_strength=0.01,
                                                         l2_regularization_strength=0.02, beta=0.5,
                                                         l2_shrinkage_regularization_strength=0.03),
    "Lion": lambda: tf.keras.optimizers.Lion(0.01),
    "RMSprop centered momentum": lambda: tf.keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "RMSprop momentum": lambda: tf.keras.optimizers.RMSprop(0.01, momentum=0.9),
    "Adam amsgrad": lambda: tf.keras.optimizers.Adam(0.01, amsgrad=True),
    "Lamb": lambda: tf.keras.optimizers.Lamb(0.01),
    "Adafactor": lambda: tf.keras.optimizers.Adafactor(0.1),
    "Muon": lambda: tf.keras.optimizers.Muon(0.01),
    "ScheduleFreeAdamW": lambda: tf.keras.optimizers.ScheduleFreeAdamW(0.01),
    # " matrix": the weights as a [2, 3] matrix (factored, orthogonalized).
    "Lamb matrix": lambda: tf.keras.optimizers.Lamb(0.01),
    "Adafactor matrix": lambda: tf.keras.optimizers.Adafactor(0.1),
    "Muon matrix": lambda: tf.keras.optimizers.Muon(0.01),
    "Muon matrix tall": lambda: tf.keras.optimizers.Muon(0.01),
    # Scale 4 doubling every 3 finite steps: powers of two, so the inner
    # optimizer's path is unchanged by the scaling.
    "LossScaleOptimizer Adam": lambda: tf.keras.optimizers.LossScaleOptimizer(
        tf.keras.optimizers.Adam(0.01), initial_scale=4.0, dynamic_growth_steps=3),
}


def optimizer_trajectories(steps=10):
    out = []
    for name, make in OPTIMIZERS.items():
        for scale in [1.0, 1e-4]:
            opt = make()
            start = np.array([1.0, -0.5, 2.0, 0.25], np.float64)
            if name.endswith(" matrix"):
                start = np.array([[1.0, -0.5, 2.0], [0.25, -1.5, 0.75]], np.float64)
            elif name.endswith(" matrix tall"):
                start = np.array([[1.0, -0.5], [2.0, 0.25], [-1.5, 0.75]], np.float64)
            if name.startswith("Muon matrix"):
                # Keras's Muon multiplies an f32 rate into the matrix update:
                # these run in f32.
                start = start.astype(np.float32)
            # Muon reads the variable's Keras path (embeddings go to AdamW).
            w = tf.keras.Variable(start, name="w") if name.startswith("Muon") else tf.Variable(start)
            path = []
            for _ in range(steps):
                with tf.GradientTape() as t:
                    loss = opt.scale_loss(scale * tf.reduce_sum(w * w * w + 0.5 * w * w))
                opt.apply_gradients(zip(t.gradient(loss, [w]), [w]))
                path.append(w.numpy().copy())
            file = f"optimizer_{name.replace(' ', '_')}_{scale:g}.npy"
            np.save(os.path.join(OUT, file), np.array(path))
            out.append(dict(name=name, scale=scale, file=file))
    return out


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    manifest = []
    for c in CASES:
        file = c["name"].replace(" ", "_").replace("=", "eq")
        xs = [tf.constant(v) for v in c["inputs"]]
        with tf.GradientTape(persistent=True) as tape:
            for v in xs:
                if v.dtype.is_floating:
                    tape.watch(v)
            outs = c["fn"](*xs)
            loss = loss_of(outs) if c["grad"] else None
        for i, v in enumerate(c["inputs"]):
            np.save(os.path.join(OUT, f"{file}.in{i}.npy"), np.asarray(v))
        for k, y in enumerate(outs):
            np.save(os.path.join(OUT, f"{file}.out{k}.npy"), y.numpy())
        grads = []
        if c["grad"]:
            for i, v in enumerate(xs):
                g = tape.gradient(loss, v) if v.dtype.is_floating else None
                if g is not None:
                    g = tf.convert_to_tensor(g)
                    np.save(os.path.join(OUT, f"{file}.grad{i}.npy"), g.numpy())
                grads.append(g is not None)
        manifest.append(dict(name=c["name"], file=file, inputs=len(xs), outputs=len(outs), grads=grads,
                             rtol=c["rtol"], atol=c["atol"]))
    optimizers = optimizer_trajectories()
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(dict(tensorflow=tf.__version__, cases=manifest, optimizers=optimizers), f, indent=1)
    print(f"{len(manifest)} cases from TensorFlow {tf.__version__} in {OUT}")


if __name__ == "__main__":
    main()
