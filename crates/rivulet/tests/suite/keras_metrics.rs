//! Keras's metrics against Keras itself: every case of
//! `tests/reference/keras_metrics/manifest.json` (made by
//! `tests/reference/keras_metrics.py`) feeds its batches to the metric on
//! every device, eagerly (`MetricState::update_state`) and as a graph (the
//! batch state fetched from a session and accumulated), and must give
//! Keras's `result()`. Then the metrics' own rules: argument checks,
//! states that cannot mix, and `fit` logging several values.

use rivulet::nn::metrics::{AucCurve, AucSummation, FScoreAverage, MetricState, R2Aggregation};
use rivulet::nn::{Activation, Dense};
use rivulet::nn::{ExecutionMode, FitOptions, Loss, Metric, Optimizer, Sequential, Verbosity};
use rivulet::{load_npy, Graph, Result, Session, Tensor};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/keras_metrics")
}

#[derive(serde::Deserialize)]
struct Batch {
    labels: bool,
    weighted: bool,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    file: String,
    batches: Vec<Batch>,
    rtol: f64,
    atol: f64,
}

#[derive(serde::Deserialize)]
struct Manifest {
    keras: String,
    cases: Vec<Case>,
}

fn load(file: &str) -> Tensor {
    load_npy(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The metric of a case, as the generator's constructor makes it.
fn keras_metric(name: &str) -> Option<Metric> {
    let auc = |curve, summation, num_thresholds| Metric::Auc {
        num_thresholds,
        curve,
        summation,
        thresholds: None,
        multi_label: false,
        label_weights: None,
        from_logits: false,
    };
    let with_auc = |f: &dyn Fn(&mut Metric)| {
        let mut m = Metric::auc();
        f(&mut m);
        m
    };
    let thresholds = |t: &[f64]| Some(t.to_vec());
    Some(match name {
        "Accuracy" => Metric::Accuracy,
        "BinaryAccuracy" => Metric::BinaryAccuracy { threshold: 0.5 },
        "BinaryAccuracy threshold 0.7" => Metric::BinaryAccuracy { threshold: 0.7 },
        "CategoricalAccuracy" => Metric::CategoricalAccuracy,
        "SparseCategoricalAccuracy" => Metric::SparseCategoricalAccuracy,
        "TopKCategoricalAccuracy k=2" => Metric::TopKCategoricalAccuracy { k: 2 },
        "SparseTopKCategoricalAccuracy k=2" => Metric::SparseTopKCategoricalAccuracy { k: 2, from_sorted_ids: false },
        "SparseTopKCategoricalAccuracy sorted ids" => {
            Metric::SparseTopKCategoricalAccuracy { k: 2, from_sorted_ids: true }
        }
        "MeanSquaredError" => Metric::Loss(Loss::MeanSquaredError),
        "MeanAbsoluteError" => Metric::Loss(Loss::MeanAbsoluteError),
        "MeanAbsolutePercentageError" => Metric::Loss(Loss::MeanAbsolutePercentageError),
        "MeanSquaredLogarithmicError" => Metric::Loss(Loss::MeanSquaredLogarithmicError),
        "LogCoshError" => Metric::Loss(Loss::LogCosh),
        "Poisson" => Metric::Loss(Loss::Poisson),
        "Hinge" => Metric::Loss(Loss::Hinge),
        "SquaredHinge" => Metric::Loss(Loss::SquaredHinge),
        "CategoricalHinge" => Metric::Loss(Loss::CategoricalHinge),
        "KLDivergence" => Metric::Loss(Loss::KLDivergence),
        "BinaryCrossentropy" => Metric::Loss(Loss::BinaryCrossentropy { from_logits: false, label_smoothing: 0.0 }),
        "CategoricalCrossentropy" => {
            Metric::Loss(Loss::CategoricalCrossentropy { from_logits: false, label_smoothing: 0.0 })
        }
        "BinaryCrossentropy logits smoothing" => {
            Metric::Loss(Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.1 })
        }
        "SparseCategoricalCrossentropy logits" => {
            Metric::Loss(Loss::SparseCategoricalCrossentropy { from_logits: true })
        }
        "CosineSimilarity" => Metric::CosineSimilarity { axis: -1 },
        "PearsonCorrelation" => Metric::PearsonCorrelation { axis: -1 },
        "ConcordanceCorrelation" => Metric::ConcordanceCorrelation { axis: -1 },
        "RootMeanSquaredError" => Metric::RootMeanSquaredError,
        "Mean" => Metric::Mean,
        "Sum" => Metric::Sum,
        "TruePositives" => Metric::true_positives(),
        "FalsePositives" => Metric::false_positives(),
        "TrueNegatives" => Metric::true_negatives(),
        "FalseNegatives" => Metric::false_negatives(),
        "TruePositives thresholds" => Metric::TruePositives { thresholds: vec![0.2, 0.5, 0.8] },
        "FalseNegatives even thresholds" => Metric::FalseNegatives { thresholds: vec![0.0, 0.5, 1.0] },
        "Precision" => Metric::precision(),
        "Precision thresholds" => {
            Metric::Precision { thresholds: thresholds(&[0.3, 0.6]), top_k: None, class_id: None }
        }
        "Precision top_k" => Metric::Precision { thresholds: None, top_k: Some(2), class_id: None },
        "Precision class_id" => Metric::Precision { thresholds: None, top_k: None, class_id: Some(1) },
        "Recall" => Metric::recall(),
        "Recall top_k class_id" => Metric::Recall { thresholds: None, top_k: Some(2), class_id: Some(2) },
        "PrecisionAtRecall" => Metric::precision_at_recall(0.6),
        "RecallAtPrecision" => Metric::recall_at_precision(0.7),
        "SensitivityAtSpecificity" => Metric::sensitivity_at_specificity(0.5),
        "SpecificityAtSensitivity" => {
            Metric::SpecificityAtSensitivity { sensitivity: 0.5, num_thresholds: 40, class_id: None }
        }
        "SensitivityAtSpecificity one threshold" => {
            Metric::SensitivityAtSpecificity { specificity: 0.5, num_thresholds: 1, class_id: None }
        }
        "AUC" => Metric::auc(),
        "AUC PR" => auc(AucCurve::Pr, AucSummation::Interpolation, 200),
        "AUC PR majoring" => auc(AucCurve::Pr, AucSummation::Majoring, 200),
        "AUC ROC minoring" => auc(AucCurve::Roc, AucSummation::Minoring, 50),
        "AUC PRGAIN" => auc(AucCurve::PrGain, AucSummation::Interpolation, 200),
        "AUC thresholds" => with_auc(&|m| {
            if let Metric::Auc { thresholds, .. } = m {
                *thresholds = Some(vec![0.7, 0.2, 0.45]);
            }
        }),
        "AUC from_logits" => with_auc(&|m| {
            if let Metric::Auc { from_logits, .. } = m {
                *from_logits = true;
            }
        }),
        "AUC multi_label" => with_auc(&|m| {
            if let Metric::Auc { multi_label, .. } = m {
                *multi_label = true;
            }
        }),
        "AUC multi_label weighted labels" => with_auc(&|m| {
            if let Metric::Auc { multi_label, label_weights, .. } = m {
                *multi_label = true;
                *label_weights = Some(vec![0.2, 1.0, 0.5]);
            }
        }),
        "AUC label_weights" => with_auc(&|m| {
            if let Metric::Auc { label_weights, .. } = m {
                *label_weights = Some(vec![0.2, 1.0, 0.5]);
            }
        }),
        "AUC PR multi_label" => with_auc(&|m| {
            if let Metric::Auc { multi_label, curve, .. } = m {
                *multi_label = true;
                *curve = AucCurve::Pr;
            }
        }),
        "IoU" => Metric::iou(4, vec![0, 2]),
        "MeanIoU" => Metric::mean_iou(3),
        "MeanIoU ignore_class" => Metric::IoU {
            num_classes: 3,
            target_class_ids: vec![0, 1, 2],
            ignore_class: Some(0),
            sparse_y_true: true,
            sparse_y_pred: true,
            axis: -1,
        },
        "OneHotIoU" => Metric::one_hot_iou(3, vec![1, 2]),
        "OneHotMeanIoU" => Metric::one_hot_mean_iou(3),
        "BinaryIoU" => Metric::BinaryIoU { target_class_ids: vec![0, 1], threshold: 0.3 },
        "BinaryIoU class 1" => Metric::BinaryIoU { target_class_ids: vec![1], threshold: 0.5 },
        "F1Score None" => Metric::f1_score(FScoreAverage::None, None),
        "F1Score micro" => Metric::f1_score(FScoreAverage::Micro, None),
        "F1Score macro" => Metric::f1_score(FScoreAverage::Macro, None),
        "F1Score weighted" => Metric::f1_score(FScoreAverage::Weighted, None),
        "F1Score threshold" => Metric::f1_score(FScoreAverage::Macro, Some(0.5)),
        "FBetaScore beta 2" => Metric::FBetaScore { average: FScoreAverage::Weighted, beta: 2.0, threshold: None },
        "R2Score" => Metric::r2_score(),
        "R2Score none" => Metric::R2Score { aggregation: R2Aggregation::None, num_regressors: 0 },
        "R2Score variance weighted" => {
            Metric::R2Score { aggregation: R2Aggregation::VarianceWeightedAverage, num_regressors: 0 }
        }
        "R2Score adjusted" => Metric::R2Score { aggregation: R2Aggregation::UniformAverage, num_regressors: 2 },
        _ => return None,
    })
}

/// One batch: labels (the values themselves for `Mean` and `Sum`),
/// predictions, weights.
type Data = (Tensor, Tensor, Option<Tensor>);

/// The metric's result over `batches`, eagerly on `device`.
fn eager(metric: &Metric, batches: &[Data], device: &str) -> Result<Tensor> {
    let mut state = MetricState::new(metric.clone())?;
    for (t, p, w) in batches {
        let (t, p) = (t.to_device(device)?, p.to_device(device)?);
        let w = w.as_ref().map(|w| w.to_device(device)).transpose()?;
        rivulet::device(device, || state.update_state(&t, &p, w.as_ref()))??;
    }
    state.result()
}

/// The metric's result over `batches`, each run through one graph (batch
/// size unknown) placed on `device`.
fn graph(metric: &Metric, batches: &[Data], device: &str) -> Result<Tensor> {
    let mut state = MetricState::new(metric.clone())?;
    for (t, p, w) in batches {
        let g = Graph::new();
        let unknown_batch = |x: &Tensor| {
            let mut dims = x.shape().dims().to_vec();
            dims[0] = rivulet::UNKNOWN;
            rivulet::Shape::new(&dims)
        };
        let (pt, pp, pw, outs) = rivulet::device(device, || -> Result<_> {
            let pt = g.placeholder("y_true", t.dtype(), unknown_batch(t))?;
            let pp = g.placeholder("y_pred", p.dtype(), unknown_batch(p))?;
            let pw = w.as_ref().map(|w| g.placeholder("w", w.dtype(), unknown_batch(w))).transpose()?;
            let outs = metric.batch_state(&pt, &pp, pw.as_ref())?;
            Ok((pt, pp, pw, outs))
        })??;
        let mut feeds = vec![(&pt, t), (&pp, p)];
        if let (Some(pw), Some(w)) = (&pw, w) {
            feeds.push((pw, w));
        }
        let values = Session::new(&g).run(&outs.iter().collect::<Vec<_>>(), &feeds)?;
        state.accumulate(&values)?;
    }
    state.result()
}

#[test]
fn keras_metrics_on_every_device_in_both_modes() {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("keras_metrics/manifest.json");
    let m: Manifest = serde_json::from_str(&text).expect("a valid manifest");
    let devices: Vec<String> = rivulet::devices().iter().map(|d| d.to_string()).collect();
    let mut failures = Vec::new();
    for c in &m.cases {
        let Some(metric) = keras_metric(&c.name) else {
            failures.push(format!("{}: no metric in tests/suite/keras_metrics.rs", c.name));
            continue;
        };
        let batches: Vec<Data> = c
            .batches
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let p = load(&format!("{}.b{j}.pred.npy", c.file));
                let t = if b.labels { load(&format!("{}.b{j}.true.npy", c.file)) } else { p.clone() };
                let w = b.weighted.then(|| load(&format!("{}.b{j}.sw.npy", c.file)));
                (t, p, w)
            })
            .collect();
        let want = load(&format!("{}.result.npy", c.file));
        let want_values = crate::common::values(&want);
        for device in &devices {
            for (mode, run) in [("eager", eager as fn(&Metric, &[Data], &str) -> Result<Tensor>), ("graph", graph)] {
                let what = format!("{} ({mode}, {device})", c.name);
                match run(&metric, &batches, device) {
                    Err(e) => failures.push(format!("{what}: {e}")),
                    Ok(got) => {
                        if got.shape() != want.shape() || got.dtype() != want.dtype() {
                            failures.push(format!(
                                "{what}: {} {:?}, Keras has {} {:?}",
                                got.dtype(),
                                got.shape(),
                                want.dtype(),
                                want.shape()
                            ));
                            continue;
                        }
                        let got_values = crate::common::values(&got);
                        let off = got_values
                            .iter()
                            .zip(&want_values)
                            .any(|(g, w)| !(g.is_nan() && w.is_nan()) && (g - w).abs() > c.atol + c.rtol * w.abs());
                        if off {
                            failures.push(format!("{what}: {got_values:?}, Keras {want_values:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures against Keras {}:\n{}", failures.len(), m.keras, failures.join("\n"));
}

#[test]
fn metric_arguments_are_checked_as_keras_checks_them() {
    let refused = [
        Metric::TruePositives { thresholds: vec![1.5] },
        Metric::TruePositives { thresholds: vec![] },
        Metric::Precision { thresholds: Some(vec![-0.1]), top_k: None, class_id: None },
        Metric::Recall { thresholds: None, top_k: Some(0), class_id: None },
        Metric::precision_at_recall(1.2),
        Metric::SensitivityAtSpecificity { specificity: 0.5, num_thresholds: 0, class_id: None },
        Metric::Auc {
            num_thresholds: 1,
            curve: AucCurve::Roc,
            summation: AucSummation::Interpolation,
            thresholds: None,
            multi_label: false,
            label_weights: None,
            from_logits: false,
        },
        Metric::PrecisionAtRecall { recall: 0.5, num_thresholds: usize::MAX, class_id: None },
        Metric::iou(3, vec![3]),
        Metric::iou(3, vec![]),
        Metric::iou(1 << 20, vec![0]),
        Metric::BinaryIoU { target_class_ids: vec![2], threshold: 0.5 },
        Metric::FBetaScore { average: FScoreAverage::Macro, beta: 0.0, threshold: None },
        Metric::f1_score(FScoreAverage::Macro, Some(1.5)),
    ];
    for m in refused {
        let err = MetricState::new(m.clone()).expect_err(&format!("{m:?} must be refused"));
        let text = err.to_string();
        assert!(!text.is_empty(), "{m:?}");
        // The same check guards the per-batch state.
        let y = Tensor::from(vec![0.0f32, 1.0]);
        assert!(m.batch_state(&y, &y, None).is_err(), "{m:?}");
    }
}

#[test]
fn metric_results_refuse_states_of_the_wrong_size() {
    let bad: [(Metric, Vec<Vec<f64>>); 6] = [
        (Metric::auc(), vec![vec![1.0]]),
        (Metric::precision(), vec![vec![1.0], vec![1.0, 2.0], vec![0.0], vec![0.0]]),
        (Metric::mean_iou(3), vec![vec![0.0; 4]]),
        (Metric::f1_score(FScoreAverage::None, None), vec![vec![1.0; 3], vec![1.0; 2], vec![1.0; 3], vec![1.0; 3]]),
        (Metric::r2_score(), vec![vec![1.0; 2]; 4]),
        (Metric::Mean, vec![vec![1.0]]),
    ];
    for (m, state) in bad {
        assert!(m.result(&state).is_err(), "{m:?} with {state:?}");
    }
}

#[test]
fn metric_states_refuse_what_does_not_fit() {
    // F-beta and R2 need [batch, classes].
    let v = Tensor::from(vec![0.5f32, 1.0]);
    let mut f1 = MetricState::new(Metric::f1_score(FScoreAverage::Macro, None)).unwrap();
    let err = f1.update_state(&v, &v, None).unwrap_err().to_string();
    assert!(err.contains("FBetaScore") && err.contains("[2]"), "{err}");
    assert!(f1.result().is_err(), "no result before a batch");
    let mut r2 = MetricState::new(Metric::r2_score()).unwrap();
    let err = r2.update_state(&Tensor::from(vec![1.0f32, 2.0, 3.0]), &Tensor::from(vec![1.0f32, 2.5, 3.0]), None);
    assert!(err.unwrap_err().to_string().contains("R2Score needs"));
    // A batch with another number of classes cannot join the state.
    let a = Tensor::from([[1.0f32, 0.0], [0.0, 1.0]]);
    let b = Tensor::from([[1.0f32, 0.0, 0.0]]);
    f1.update_state(&a, &a, None).unwrap();
    let err = f1.update_state(&b, &b, None).unwrap_err().to_string();
    assert!(err.contains("state sizes"), "{err}");
    // update_state takes values, not graph tensors.
    let g = Graph::new();
    let x = g.placeholder("x", rivulet::DType::F32, [2]).unwrap();
    let mut mean = MetricState::new(Metric::Mean).unwrap();
    let err = mean.update_state(&x, &x, None).unwrap_err().to_string();
    assert!(err.contains("batch_state"), "{err}");
    // class_id past the classes.
    let mut p = MetricState::new(Metric::Precision { thresholds: None, top_k: None, class_id: Some(5) }).unwrap();
    let err = p.update_state(&a, &a, None).unwrap_err().to_string();
    assert!(err.contains("class_id 5"), "{err}");
}

#[test]
fn metric_results_before_and_after_reset() {
    let mut m = MetricState::new(Metric::precision()).unwrap();
    assert_eq!(m.result().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    m.update_state(&Tensor::from(vec![1.0f32, 0.0, 1.0]), &Tensor::from(vec![0.9f32, 0.8, 0.2]), None).unwrap();
    // Predicted positive: 0.9 (label 1) and 0.8 (label 0).
    assert_eq!(m.result().unwrap().to_scalar::<f32>().unwrap(), 0.5);
    m.reset_state();
    assert_eq!(m.result().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let mut s = MetricState::new(Metric::Sum).unwrap();
    s.update_values(&Tensor::from(vec![1.0f32, 2.0, 3.5]), Some(&Tensor::from(vec![1.0f32, 0.0, 2.0]))).unwrap();
    assert_eq!(s.result_values().unwrap(), vec![8.0]);
}

/// `fit` and `evaluate` log a metric with several values one by one, and
/// their values are those of the model's predictions, eagerly and as a graph.
#[test]
fn fit_logs_threshold_metrics_per_value() {
    let x = Tensor::from([[0.0f32, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.5, 0.2], [0.2, 0.9]]);
    let y = Tensor::from([[1.0f32], [0.0], [1.0], [0.0], [0.0], [1.0]]);
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let mut model = Sequential::new(vec![Box::new(Dense::new(1, Activation::Sigmoid))]);
        model.compile(
            Optimizer::sgd(0.1),
            Loss::BinaryCrossentropy { from_logits: false, label_smoothing: 0.0 },
            &[Metric::TruePositives { thresholds: vec![0.25, 0.75] }, Metric::auc(), Metric::precision()],
            mode,
        );
        let options =
            FitOptions { epochs: 2, batch_size: 4, verbose: Verbosity::Silent, seed: 3, ..FitOptions::default() };
        let h = model.fit(&x, &y, &options).unwrap();
        let keys: Vec<&str> = h.epochs[0].keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["auc", "loss", "precision", "true_positives[0]", "true_positives[1]"], "{mode:?}");
        let eval = model.evaluate(&x, &y, 4).unwrap();
        let names: Vec<&str> = eval.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["loss", "true_positives[0]", "true_positives[1]", "auc", "precision"]);
        // Counts over all six examples: at most the three positives.
        assert!(eval[1].1 >= eval[2].1 && eval[1].1 <= 3.0, "{eval:?}");
        // The model's own predictions give the same AUC.
        let pred = model.predict(&x, 6).unwrap();
        let mut auc = MetricState::new(Metric::auc()).unwrap();
        auc.update_state(&y, &pred, None).unwrap();
        assert!((auc.result_values().unwrap()[0] - eval[3].1).abs() < 1e-6, "{eval:?}");
        // And the same precision.
        let mut precision = MetricState::new(Metric::precision()).unwrap();
        precision.update_state(&y, &pred, None).unwrap();
        assert!((precision.result_values().unwrap()[0] - eval[4].1).abs() < 1e-6, "{eval:?}");
    }
}

/// Inputs found by review: no panic, Keras's comparisons.
#[test]
fn metric_edge_inputs() {
    // class_id with labels of another rank: an error, not a panic.
    let mut p = MetricState::new(Metric::Precision { thresholds: None, top_k: None, class_id: Some(0) }).unwrap();
    let err = p.update_state(&Tensor::scalar(1.0f32), &Tensor::from([[0.5f32, 0.2]]), None).unwrap_err();
    assert!(err.to_string().contains("class_id"), "{err}");
    // A metric built by hand is checked before computing a result.
    let bad = Metric::IoU {
        num_classes: 2,
        target_class_ids: vec![5],
        ignore_class: None,
        sparse_y_true: true,
        sparse_y_pred: true,
        axis: -1,
    };
    assert!(bad.result(&[vec![0.0; 4]]).is_err());
    // F-beta takes one weight per example.
    let mut f = MetricState::new(Metric::f1_score(FScoreAverage::Macro, None)).unwrap();
    let y = Tensor::from([[1.0f32, 0.0], [0.0, 1.0]]);
    assert!(f.update_state(&y, &y, Some(&Tensor::from([[1.0f32, 2.0], [1.0, 1.0]]))).is_err());
    f.update_state(&y, &y, Some(&Tensor::from([[1.0f32], [2.0]]))).unwrap();
    assert!((f.result_values().unwrap()[0] - 1.0).abs() < 1e-6);
    // Integer predictions: labels are cast to them (1.5 becomes 1), as Keras does.
    let mut a = MetricState::new(Metric::Accuracy).unwrap();
    a.update_state(&Tensor::from(vec![1.5f32, 2.0, 3.0]), &Tensor::from(vec![1i32, 2, 4]), None).unwrap();
    assert!((a.result_values().unwrap()[0] - 2.0 / 3.0).abs() < 1e-6);
    // Boolean predictions against a fractional threshold.
    let mut b = MetricState::new(Metric::BinaryAccuracy { threshold: 0.5 }).unwrap();
    b.update_state(&Tensor::from(vec![1.0f32, 0.0, 0.0]), &Tensor::from(vec![true, false, true]), None).unwrap();
    assert!((b.result_values().unwrap()[0] - 2.0 / 3.0).abs() < 1e-6);
    // Sorted ids past 2^24 compare exactly.
    let mut k = MetricState::new(Metric::SparseTopKCategoricalAccuracy { k: 1, from_sorted_ids: true }).unwrap();
    let big = 16_777_217i64;
    k.update_state(&Tensor::from(vec![big]), &Tensor::from([[big - 1, big]]), None).unwrap();
    assert_eq!(k.result_values().unwrap(), vec![0.0]);
}
