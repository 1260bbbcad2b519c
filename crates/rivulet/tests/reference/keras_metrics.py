"""Reference values of Keras's metrics for tests/suite/keras_metrics.rs.

Run in a throwaway virtualenv (never in CI):

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python crates/rivulet/tests/reference/keras_metrics.py

Each case feeds a Keras metric object two or three batches through
`update_state` (some with sample weights) and records `result()`. It writes
crates/rivulet/tests/reference/keras_metrics/: NAME.b<j>.true.npy,
NAME.b<j>.pred.npy, NAME.b<j>.sw.npy (when the batch is weighted) and
NAME.result.npy; manifest.json lists the cases. The Rust side builds each
metric by name.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_metrics")
rng = np.random.default_rng(20261205)
M = keras.metrics
CASES = []


def case(name, make, batches, rtol=1e-5, atol=1e-6):
    CASES.append(dict(name=name, make=make, batches=batches, rtol=rtol, atol=atol))


def f32(*shape, lo=0.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def ints(hi, *shape):
    return rng.integers(0, hi, size=shape).astype(np.int32)


def probs(n, c):
    return tf.nn.softmax(f32(n, c, lo=-2, hi=2)).numpy()


def onehot(n, c):
    return np.eye(c, dtype=np.float32)[ints(c, n)]


def weights(n):
    return f32(n, lo=0.0, hi=2.0)


def binary(n, c=None):
    shape = (n,) if c is None else (n, c)
    return (rng.uniform(size=shape) > 0.5).astype(np.float32)


# Mean metrics of per-example values.
case("Accuracy", M.Accuracy, [(ints(3, 6), ints(3, 6), None), (ints(3, 5), ints(3, 5), weights(5))])
case("BinaryAccuracy", M.BinaryAccuracy, [(binary(6, 2), f32(6, 2), None), (binary(4, 2), f32(4, 2), weights(4))])
case("BinaryAccuracy threshold 0.7", lambda: M.BinaryAccuracy(threshold=0.7),
     [(binary(8), f32(8), None), (binary(5), f32(5), None)])
case("CategoricalAccuracy", M.CategoricalAccuracy, [(onehot(6, 4), probs(6, 4), None), (onehot(5, 4), probs(5, 4), weights(5))])
case("SparseCategoricalAccuracy", M.SparseCategoricalAccuracy,
     [(ints(4, 6), probs(6, 4), None), (ints(4, 5)[:, None], probs(5, 4), weights(5))])
case("TopKCategoricalAccuracy k=2", lambda: M.TopKCategoricalAccuracy(k=2),
     [(onehot(6, 5), probs(6, 5), None), (onehot(4, 5), probs(4, 5), weights(4))])
case("SparseTopKCategoricalAccuracy k=2", lambda: M.SparseTopKCategoricalAccuracy(k=2),
     [(ints(5, 6), probs(6, 5), None), (ints(5, 4), probs(4, 5), weights(4))])
case("SparseTopKCategoricalAccuracy sorted ids", lambda: M.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True),
     [(ints(5, 6), np.argsort(-probs(6, 5), axis=1).astype(np.int32), None)])
reg = lambda *s: f32(*s, lo=0.1, hi=3.0)  # noqa: E731
for name, cls, kind in [
    ("MeanSquaredError", M.MeanSquaredError, "reg"),
    ("MeanAbsoluteError", M.MeanAbsoluteError, "reg"),
    ("MeanAbsolutePercentageError", M.MeanAbsolutePercentageError, "reg"),
    ("MeanSquaredLogarithmicError", M.MeanSquaredLogarithmicError, "reg"),
    ("LogCoshError", M.LogCoshError, "reg"),
    ("Poisson", M.Poisson, "reg"),
    ("Hinge", M.Hinge, "binary"),
    ("SquaredHinge", M.SquaredHinge, "binary"),
    ("CategoricalHinge", M.CategoricalHinge, "onehot"),
    ("KLDivergence", M.KLDivergence, "probs"),
    ("BinaryCrossentropy", M.BinaryCrossentropy, "binary"),
    ("CategoricalCrossentropy", M.CategoricalCrossentropy, "onehot"),
]:
    def data(n, kind=kind):
        if kind == "reg":
            return reg(n, 3), reg(n, 3)
        if kind == "binary":
            return binary(n, 3), f32(n, 3, lo=0.05, hi=0.95)
        if kind == "onehot":
            return onehot(n, 3), probs(n, 3)
        return probs(n, 3), probs(n, 3)
    case(name, cls, [(*data(5), None), (*data(4), weights(4))])
case("BinaryCrossentropy logits smoothing", lambda: M.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
     [(binary(5, 2), f32(5, 2, lo=-3, hi=3), None), (binary(3, 2), f32(3, 2, lo=-3, hi=3), weights(3))])
case("SparseCategoricalCrossentropy logits", lambda: M.SparseCategoricalCrossentropy(from_logits=True),
     [(ints(4, 5), f32(5, 4, lo=-2, hi=2), None), (ints(4, 3), f32(3, 4, lo=-2, hi=2), weights(3))])
case("CosineSimilarity", M.CosineSimilarity,
     [(f32(5, 3, lo=-1, hi=1), f32(5, 3, lo=-1, hi=1), None), (f32(3, 3, lo=-1, hi=1), f32(3, 3, lo=-1, hi=1), weights(3))])
case("PearsonCorrelation", M.PearsonCorrelation, [(reg(4, 5), reg(4, 5), None), (reg(3, 5), reg(3, 5), weights(3))])
case("ConcordanceCorrelation", M.ConcordanceCorrelation, [(reg(4, 5), reg(4, 5), None), (reg(3, 5), reg(3, 5), weights(3))])
case("RootMeanSquaredError", M.RootMeanSquaredError,
     [(reg(5), reg(5, 1), None), (reg(4, 2), reg(4, 2), weights(4))])
case("Mean", M.Mean, [(None, reg(5, 2), None), (None, reg(3), weights(3))])
case("Sum", M.Sum, [(None, reg(5, 2), None), (None, reg(3), weights(3))])

# Confusion counts at thresholds.
two_batches = lambda n1, n2, c=None: [(binary(n1, c), f32(n1, *(() if c is None else (c,))), None),  # noqa: E731
                                      (binary(n2, c), f32(n2, *(() if c is None else (c,))), weights(n2))]
case("TruePositives", M.TruePositives, two_batches(8, 6))
case("FalsePositives", M.FalsePositives, two_batches(8, 6, 2))
case("TrueNegatives", M.TrueNegatives, two_batches(8, 6))
case("FalseNegatives", M.FalseNegatives, two_batches(8, 6))
case("TruePositives thresholds", lambda: M.TruePositives(thresholds=[0.2, 0.5, 0.8]), two_batches(10, 6))
case("FalseNegatives even thresholds", lambda: M.FalseNegatives(thresholds=[0.0, 0.5, 1.0]), two_batches(10, 6))
case("Precision", M.Precision, two_batches(10, 7))
case("Precision thresholds", lambda: M.Precision(thresholds=[0.3, 0.6]), two_batches(10, 7, 2))
case("Precision top_k", lambda: M.Precision(top_k=2), [(binary(6, 4), f32(6, 4), None), (binary(4, 4), f32(4, 4), weights(4))])
case("Precision class_id", lambda: M.Precision(class_id=1), [(binary(6, 3), f32(6, 3), None), (binary(4, 3), f32(4, 3), weights(4))])
case("Recall", M.Recall, two_batches(10, 7))
case("Recall top_k class_id", lambda: M.Recall(top_k=2, class_id=2), [(binary(8, 4), f32(8, 4), None)])
case("PrecisionAtRecall", lambda: M.PrecisionAtRecall(0.6), two_batches(30, 20))
case("RecallAtPrecision", lambda: M.RecallAtPrecision(0.7), two_batches(30, 20))
case("SensitivityAtSpecificity", lambda: M.SensitivityAtSpecificity(0.5), two_batches(30, 20))
case("SpecificityAtSensitivity", lambda: M.SpecificityAtSensitivity(0.5, num_thresholds=40), two_batches(30, 20))
case("SensitivityAtSpecificity one threshold", lambda: M.SensitivityAtSpecificity(0.5, num_thresholds=1),
     two_batches(30, 20))
case("AUC", M.AUC, two_batches(40, 30))
case("AUC PR", lambda: M.AUC(curve="PR"), two_batches(40, 30))
case("AUC PR majoring", lambda: M.AUC(curve="PR", summation_method="majoring"), two_batches(40, 30))
case("AUC ROC minoring", lambda: M.AUC(summation_method="minoring", num_thresholds=50), two_batches(40, 30))
case("AUC PRGAIN", lambda: M.AUC(curve="PRGAIN"), two_batches(40, 30))
case("AUC thresholds", lambda: M.AUC(thresholds=[0.7, 0.2, 0.45]), two_batches(40, 30))
case("AUC from_logits", lambda: M.AUC(from_logits=True),
     [(binary(20), f32(20, lo=-3, hi=3), None), (binary(10), f32(10, lo=-3, hi=3), weights(10))])
case("AUC multi_label", lambda: M.AUC(multi_label=True), two_batches(30, 20, 3))
case("AUC multi_label weighted labels", lambda: M.AUC(multi_label=True, label_weights=[0.2, 1.0, 0.5]),
     two_batches(30, 20, 3))
case("AUC label_weights", lambda: M.AUC(label_weights=[0.2, 1.0, 0.5]), two_batches(30, 20, 3))
case("AUC PR multi_label", lambda: M.AUC(curve="PR", multi_label=True), two_batches(30, 20, 3))

# Class totals.
int_w = lambda n: rng.integers(0, 3, size=n).astype(np.float32)  # noqa: E731
case("IoU", lambda: M.IoU(num_classes=4, target_class_ids=[0, 2]),
     [(ints(4, 12), ints(4, 12), None), (ints(4, 8), ints(4, 8), int_w(8))])
case("MeanIoU", lambda: M.MeanIoU(num_classes=3), [(ints(3, 12), ints(3, 12), None), (ints(3, 8), ints(3, 8), int_w(8))])
case("MeanIoU ignore_class", lambda: M.MeanIoU(num_classes=3, ignore_class=0),
     [(ints(3, 3, 4), ints(3, 3, 4), None)])
case("OneHotIoU", lambda: M.OneHotIoU(num_classes=3, target_class_ids=[1, 2]),
     [(onehot(10, 3), probs(10, 3), None), (onehot(6, 3), probs(6, 3), int_w(6))])
case("OneHotMeanIoU", lambda: M.OneHotMeanIoU(num_classes=3), [(onehot(10, 3), probs(10, 3), None)])
case("BinaryIoU", lambda: M.BinaryIoU(target_class_ids=[0, 1], threshold=0.3),
     [(binary(12), f32(12), None), (binary(6), f32(6), int_w(6))])
case("BinaryIoU class 1", lambda: M.BinaryIoU(target_class_ids=[1]), [(binary(12), f32(12), None)])
for average in [None, "micro", "macro", "weighted"]:
    case(f"F1Score {average}", lambda average=average: M.F1Score(average=average),
         [(binary(8, 3), f32(8, 3), None), (binary(5, 3), f32(5, 3), weights(5))])
case("F1Score threshold", lambda: M.F1Score(average="macro", threshold=0.5),
     [(binary(8, 3), f32(8, 3), None), (binary(5, 3), f32(5, 3), weights(5))])
case("FBetaScore beta 2", lambda: M.FBetaScore(average="weighted", beta=2.0),
     [(binary(8, 3), f32(8, 3), None), (binary(5, 3), f32(5, 3), None)])
case("R2Score", M.R2Score, [(reg(6, 2), reg(6, 2), None), (reg(4, 2), reg(4, 2), weights(4))])
case("R2Score none", lambda: M.R2Score(class_aggregation=None), [(reg(6, 2), reg(6, 2), None), (reg(4, 2), reg(4, 2), None)])
case("R2Score variance weighted", lambda: M.R2Score(class_aggregation="variance_weighted_average"),
     [(reg(6, 3), reg(6, 3), None), (reg(4, 3), reg(4, 3), weights(4))])
case("R2Score adjusted", lambda: M.R2Score(num_regressors=2), [(reg(8, 1), reg(8, 1), None), (reg(5, 1), reg(5, 1), None)])


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    manifest = []
    for c in CASES:
        file = c["name"].replace(" ", "_").replace("=", "eq")
        metric = c["make"]()
        batches = []
        for j, (t, p, w) in enumerate(c["batches"]):
            if t is None:
                metric.update_state(p, sample_weight=w)
            else:
                metric.update_state(t, p, sample_weight=w)
                np.save(os.path.join(OUT, f"{file}.b{j}.true.npy"), t)
            np.save(os.path.join(OUT, f"{file}.b{j}.pred.npy"), p)
            if w is not None:
                np.save(os.path.join(OUT, f"{file}.b{j}.sw.npy"), w)
            batches.append(dict(labels=t is not None, weighted=w is not None))
        result = np.asarray(metric.result(), dtype=np.float32)
        np.save(os.path.join(OUT, f"{file}.result.npy"), result)
        manifest.append(dict(name=c["name"], file=file, batches=batches, rtol=c["rtol"], atol=c["atol"]))
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(dict(keras=keras.__version__, tensorflow=tf.__version__, cases=manifest), f, indent=1)
    print(f"{len(manifest)} metric cases from Keras {keras.__version__} in {OUT}")


if __name__ == "__main__":
    main()
