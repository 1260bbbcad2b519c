//! Training: optimizers against the published update equations (eager and
//! graph mode, the fused `ApplyUpdate` op, schedules, clipping), weight
//! initializers, losses and their gradients, metrics, layers, and the
//! `Sequential` model (fit / evaluate / predict in both modes, eager and
//! graph training agreeing).
//!
//! Every expected number is computed independently here: by hand, or by an
//! f64 reference that follows the published equations.

use crate::common::*;

use rivulet::nn::init::fans;
use rivulet::nn::losses;
use rivulet::nn::metrics::{Mean, MetricState};
use rivulet::nn::{
    clip_by_global_norm, Activation, ActivationLayer, BatchNormalization, Dense, Dropout, Embedding, ExecutionMode,
    FitOptions, Flatten, Initializer, Layer, LayerNorm, LearningRate, Loss, Metric, Optimizer, Sequential, Verbosity,
};
use rivulet::ops::{self, UpdateRule};
use rivulet::{Ctx, DType, ErrorKind, GradientTape, Graph, Session, Shape, Tensor, Variable};

type TestResult = rivulet::Result<()>;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `|a - e| <= tol * max(1, |e|)` elementwise.
#[track_caller]
fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length {} vs {}", actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let bound = tol * e.abs().max(1.0);
        assert!(
            (a - e).abs() <= bound,
            "{what}[{i}]: got {a:e}, expected {e:e} (|diff| {:e} > {bound:e})",
            (a - e).abs()
        );
    }
}

#[track_caller]
fn assert_close1(actual: f64, expected: f64, tol: f64, what: &str) {
    assert_close(&[actual], &[expected], tol, what);
}

fn f64s(t: &Tensor) -> Vec<f64> {
    values(t)
}

fn scalar_f64(t: &Tensor) -> f64 {
    let v = values(t);
    assert_eq!(v.len(), 1, "expected one element, got shape {:?}", dims(t));
    v[0]
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn softmax_row(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn log_softmax_row(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - lse).collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

// ---------------------------------------------------------------------------
// Optimizers: f64 reference implementations of the published equations
// ---------------------------------------------------------------------------

/// One update of `w` and its slots by the published equations, in f64.
/// `t` is the 1-based update count.
fn reference_step(rule: UpdateRule, w: &mut [f64], g: &[f64], slots: &mut [Vec<f64>], lr: f64, t: u32) {
    for i in 0..w.len() {
        match rule {
            UpdateRule::Sgd => w[i] -= lr * g[i],
            UpdateRule::Momentum { momentum, nesterov } => {
                // Keras 3: m = momentum * m - lr * g; w += m, or with
                // Nesterov w += momentum * m - lr * g.
                slots[0][i] = momentum * slots[0][i] - lr * g[i];
                if nesterov {
                    w[i] += momentum * slots[0][i] - lr * g[i];
                } else {
                    w[i] += slots[0][i];
                }
            }
            UpdateRule::Adam { beta1, beta2, epsilon, weight_decay } => {
                // Keras (TensorFlow 2): epsilon outside the bias correction,
                // AdamW's decoupled decay (Loshchilov & Hutter 2019) first.
                slots[0][i] += (g[i] - slots[0][i]) * (1.0 - beta1);
                slots[1][i] += (g[i] * g[i] - slots[1][i]) * (1.0 - beta2);
                let alpha = lr * (1.0 - beta2.powi(t as i32)).sqrt() / (1.0 - beta1.powi(t as i32));
                w[i] -= w[i] * weight_decay * lr;
                w[i] -= slots[0][i] * alpha / (slots[1][i].sqrt() + epsilon);
            }
            UpdateRule::RmsProp { rho, epsilon } => {
                // Keras: epsilon inside the root.
                slots[0][i] = rho * slots[0][i] + (1.0 - rho) * g[i] * g[i];
                w[i] -= lr * g[i] / (slots[0][i] + epsilon).sqrt();
            }
            UpdateRule::Adagrad { epsilon } => {
                slots[0][i] += g[i] * g[i];
                w[i] -= lr * g[i] / (slots[0][i] + epsilon).sqrt();
            }
            UpdateRule::Adamax { beta1, beta2, epsilon } => {
                slots[0][i] += (g[i] - slots[0][i]) * (1.0 - beta1);
                slots[1][i] = (beta2 * slots[1][i]).max(g[i].abs());
                w[i] -= lr * slots[0][i] / ((1.0 - beta1.powi(t as i32)) * (slots[1][i] + epsilon));
            }
            UpdateRule::Nadam { beta1, beta2, epsilon } => {
                // Dozat's momentum schedule u_t = b1 (1 - 0.96^t / 2), as Keras.
                let u = |k: u32| beta1 * (1.0 - 0.5 * 0.96f64.powi(k as i32));
                let product: f64 = (1..=t).map(u).product();
                let next = product * u(t + 1);
                slots[0][i] += (g[i] - slots[0][i]) * (1.0 - beta1);
                slots[1][i] += (g[i] * g[i] - slots[1][i]) * (1.0 - beta2);
                let m_hat = u(t + 1) * slots[0][i] / (1.0 - next) + (1.0 - u(t)) * g[i] / (1.0 - product);
                let v_hat = slots[1][i] / (1.0 - beta2.powi(t as i32));
                w[i] -= lr * m_hat / (v_hat.sqrt() + epsilon);
            }
            UpdateRule::Adadelta { rho, epsilon } => {
                slots[0][i] = rho * slots[0][i] + (1.0 - rho) * g[i] * g[i];
                let delta = -(slots[1][i] + epsilon).sqrt() * g[i] / (slots[0][i] + epsilon).sqrt();
                slots[1][i] = rho * slots[1][i] + (1.0 - rho) * delta * delta;
                w[i] += lr * delta;
            }
            UpdateRule::Ftrl { learning_rate_power, l1, l2, l2_shrinkage, beta } => {
                let p = -learning_rate_power;
                let grad = g[i] + 2.0 * l2_shrinkage * w[i];
                let acc = slots[0][i] + g[i] * g[i];
                slots[1][i] += grad - (acc.powf(p) - slots[0][i].powf(p)) / lr * w[i];
                let quadratic = acc.powf(p) / lr + 2.0 * (l2 + beta / (2.0 * lr));
                w[i] = (slots[1][i].clamp(-l1, l1) - slots[1][i]) / quadratic;
                slots[0][i] = acc;
            }
            UpdateRule::RmsPropMomentum { rho, momentum, epsilon, centered } => {
                slots[0][i] = rho * slots[0][i] + (1.0 - rho) * g[i] * g[i];
                let denom = if centered {
                    slots[1][i] = rho * slots[1][i] + (1.0 - rho) * g[i];
                    slots[0][i] - slots[1][i] * slots[1][i] + epsilon
                } else {
                    slots[0][i] + epsilon
                };
                slots[2][i] = momentum * slots[2][i] + lr * g[i] / denom.sqrt();
                w[i] -= slots[2][i];
            }
            UpdateRule::AdamAmsgrad { beta1, beta2, epsilon } => {
                slots[0][i] += (g[i] - slots[0][i]) * (1.0 - beta1);
                slots[1][i] += (g[i] * g[i] - slots[1][i]) * (1.0 - beta2);
                slots[2][i] = slots[2][i].max(slots[1][i]);
                let alpha = lr * (1.0 - beta2.powi(t as i32)).sqrt() / (1.0 - beta1.powi(t as i32));
                w[i] -= slots[0][i] * alpha / (slots[2][i].sqrt() + epsilon);
            }
            UpdateRule::Lion { beta1, beta2 } => {
                let d = beta1 * slots[0][i] + (1.0 - beta1) * g[i];
                w[i] -= lr
                    * if d > 0.0 {
                        1.0
                    } else if d < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                slots[0][i] = beta2 * slots[0][i] + (1.0 - beta2) * g[i];
            }
        }
    }
}

/// The state after each update: variable, slots, iteration counter.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    w: Vec<f64>,
    slots: Vec<Vec<f64>>,
    iterations: i64,
}

fn reference_run(rule: UpdateRule, w0: &[f64], grads: &[Vec<f64>], lr: impl Fn(u32) -> f64) -> Vec<Snapshot> {
    let mut w = w0.to_vec();
    // Keras starts Adagrad's accumulator at 0.1, the others' slots at 0.
    let accumulates = matches!(rule, UpdateRule::Adagrad { .. } | UpdateRule::Ftrl { .. });
    let mut slots: Vec<Vec<f64>> =
        (0..rule.num_slots()).map(|k| vec![if accumulates && k == 0 { 0.1 } else { 0.0 }; w0.len()]).collect();
    let mut out = Vec::new();
    for (k, g) in grads.iter().enumerate() {
        // The schedule sees the number of updates done before this one.
        reference_step(rule, &mut w, g, &mut slots, lr(k as u32), k as u32 + 1);
        out.push(Snapshot { w: w.clone(), slots: slots.clone(), iterations: k as i64 + 1 });
    }
    out
}

fn eager_run(opt: &Optimizer, w0: &[f64], grads: &[Vec<f64>]) -> rivulet::Result<Vec<Snapshot>> {
    let v = Variable::new("w", &Tensor::from(w0.to_vec()), true)?;
    assert!(opt.slots(&v).is_none(), "no slots before the first update");
    assert!(opt.iterations().is_none(), "no counter before the first update");
    let mut out = Vec::new();
    for g in grads {
        let op = opt.apply_gradients(&[(Tensor::from(g.clone()), &v)])?;
        assert!(op.is_none(), "eager updates return no train op");
        let slots = opt.slots(&v).expect("slots after an update");
        let it = opt.iterations().expect("counter after an update").current();
        assert_eq!(it.dtype(), DType::I64);
        out.push(Snapshot {
            w: f64s(&v.current()),
            slots: slots.iter().map(|s| f64s(&s.current())).collect(),
            iterations: it.to_scalar::<i64>()?,
        });
    }
    Ok(out)
}

fn graph_run(opt: &Optimizer, w0: &[f64], grads: &[Vec<f64>]) -> rivulet::Result<Vec<Snapshot>> {
    let g = Graph::new();
    let v = Variable::in_graph(&g, "w", &Tensor::from(w0.to_vec()), true)?;
    let gp = g.placeholder("grad", DType::F64, [w0.len()])?;
    let train = opt.apply_gradients(&[(gp.clone(), &v)])?.expect("graph updates return a train op");
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let slots = opt.slots(&v).expect("slots are created with the train op");
    assert!(slots.iter().all(|s| s.is_graph()));
    let counter = opt.iterations().expect("counter is created with the train op");
    let mut out = Vec::new();
    for grad in grads {
        sess.run_with_targets(&[], &[(&gp, &Tensor::from(grad.clone()))], &[&train])?;
        out.push(Snapshot {
            w: f64s(&sess.variable_value(&v)?),
            slots: slots.iter().map(|s| sess.variable_value(s).map(|t| f64s(&t))).collect::<rivulet::Result<_>>()?,
            iterations: sess.variable_value(&counter)?.to_scalar::<i64>()?,
        });
    }
    Ok(out)
}

#[track_caller]
fn assert_snapshots(actual: &[Snapshot], expected: &[Snapshot], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len());
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a.iterations, e.iterations, "{what}: iterations after step {}", k + 1);
        assert_close(&a.w, &e.w, tol, &format!("{what}: w after step {}", k + 1));
        assert_eq!(a.slots.len(), e.slots.len(), "{what}: number of slots");
        for (j, (sa, se)) in a.slots.iter().zip(&e.slots).enumerate() {
            assert_close(sa, se, tol, &format!("{what}: slot {j} after step {}", k + 1));
        }
    }
}

/// Gradients that change sign and size from step to step (and one zero).
fn varying_grads() -> Vec<Vec<f64>> {
    vec![vec![0.5, -1.0, 2.0], vec![-0.25, 0.0, 1.5], vec![1.0, 3.0, -0.5], vec![0.125, -2.0, 0.75]]
}

const W0: [f64; 3] = [1.0, -2.0, 0.5];

/// The rule in eager and graph mode against the reference, and eager == graph bit for bit.
fn check_rule(make: impl Fn() -> Optimizer, lr: f64) -> TestResult {
    let grads = varying_grads();
    let opt = make();
    let rule = opt.rule().expect("a fused rule");
    let expected = reference_run(rule, &W0, &grads, |_| lr);
    let eager = eager_run(&opt, &W0, &grads)?;
    assert_snapshots(&eager, &expected, 1e-12, &format!("{} eager", opt.name()));
    let graph = graph_run(&make(), &W0, &grads)?;
    assert_snapshots(&graph, &expected, 1e-12, &format!("{} graph", opt.name()));
    assert_eq!(eager, graph, "{}: eager and graph updates differ", opt.name());
    Ok(())
}

// ---------------------------------------------------------------------------
// Optimizers
// ---------------------------------------------------------------------------

#[test]
fn sgd_by_hand_and_by_equation() -> TestResult {
    // By hand: w -= 0.1 g three times with g = [0.5, -1] gives w - 0.15 g*...
    let opt = Optimizer::sgd(0.1);
    assert_eq!(opt.name(), "SGD");
    assert_eq!(opt.rule(), Some(UpdateRule::Sgd));
    assert_eq!(opt.learning_rate(), LearningRate::Constant(0.1));
    let snaps = eager_run(&opt, &[1.0, 2.0], &vec![vec![0.5, -1.0]; 3])?;
    assert_close(&snaps[0].w, &[0.95, 2.1], 1e-15, "sgd step 1");
    assert_close(&snaps[1].w, &[0.9, 2.2], 1e-15, "sgd step 2");
    assert_close(&snaps[2].w, &[0.85, 2.3], 1e-15, "sgd step 3");
    assert!(snaps.iter().all(|s| s.slots.is_empty()), "SGD keeps no slots");
    check_rule(|| Optimizer::sgd(0.1), 0.1)
}

#[test]
fn momentum_by_hand_and_by_equation() -> TestResult {
    // By hand, g = 1 each step, momentum 0.9, lr 0.1 (Keras 3's velocity
    // m = 0.9 m - 0.1): m = -0.1, -0.19, -0.271 -> w moves by m.
    let opt = Optimizer::momentum(0.1, 0.9, false);
    let snaps = eager_run(&opt, &[0.0], &vec![vec![1.0]; 3])?;
    assert_close(&snaps[0].w, &[-0.1], 1e-15, "momentum step 1");
    assert_close(&snaps[1].w, &[-0.29], 1e-15, "momentum step 2");
    assert_close(&snaps[2].w, &[-0.561], 1e-15, "momentum step 3");
    assert_close(&snaps[2].slots[0], &[-0.271], 1e-15, "momentum velocity");
    check_rule(|| Optimizer::momentum(0.05, 0.9, false), 0.05)
}

#[test]
fn nesterov_by_hand_and_by_equation() -> TestResult {
    // By hand: w -= lr (g + mu accum) with accum 1, 1.9, 2.71:
    // 0.1 * 1.9, 0.1 * 2.71, 0.1 * 3.439.
    let opt = Optimizer::momentum(0.1, 0.9, true);
    let snaps = eager_run(&opt, &[0.0], &vec![vec![1.0]; 3])?;
    assert_close(&snaps[0].w, &[-0.19], 1e-15, "nesterov step 1");
    assert_close(&snaps[1].w, &[-0.461], 1e-15, "nesterov step 2");
    assert_close(&snaps[2].w, &[-0.8049], 1e-15, "nesterov step 3");
    check_rule(|| Optimizer::momentum(0.05, 0.8, true), 0.05)
}

#[test]
fn adam_by_hand_and_by_equation() -> TestResult {
    // With a constant gradient m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2,
    // so Keras's step lr sqrt(c2)/(1 - b1^t) m / (sqrt(v) + eps), c2 = 1 - b2^t,
    // is lr g sqrt(c2) / (sqrt(c2) |g| + eps).
    let (lr, eps) = (0.01, 1e-7);
    let opt = Optimizer::adam(lr);
    assert_eq!(opt.rule(), Some(UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0 }));
    let g = [0.5, -2.0];
    let snaps = eager_run(&opt, &[1.0, 1.0], &vec![g.to_vec(); 3])?;
    for (k, s) in snaps.iter().enumerate() {
        let moved = |g: f64| -> f64 {
            (1..=k + 1)
                .map(|t| {
                    let c2 = (1.0 - 0.999f64.powi(t as i32)).sqrt();
                    lr * g * c2 / (c2 * g.abs() + eps)
                })
                .sum()
        };
        let expected: Vec<f64> = g.iter().map(|&g| 1.0 - moved(g)).collect();
        assert_close(&s.w, &expected, 1e-12, &format!("adam constant-gradient step {}", k + 1));
    }
    // m after 3 steps = (1 - 0.9^3) g, v = (1 - 0.999^3) g^2.
    assert_close(&snaps[2].slots[0], &[0.271 * 0.5, 0.271 * -2.0], 1e-12, "adam m");
    assert_close(&snaps[2].slots[1], &[0.002997001 * 0.25, 0.002997001 * 4.0], 1e-12, "adam v");
    check_rule(|| Optimizer::adam(0.01), 0.01)?;
    check_rule(|| Optimizer::adam_with(0.05, 0.8, 0.99, 1e-3), 0.05)
}

#[test]
fn adamw_decouples_weight_decay() -> TestResult {
    let opt = Optimizer::adamw(0.01, 0.1);
    assert_eq!(opt.rule(), Some(UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.1 }));
    // One step by hand from w = 2 with g = 1 (Keras): decay first, w -= w wd lr
    // = 0.002; then the adam step lr s / (s + 1e-7) with s = sqrt(1 - 0.999).
    let snaps = eager_run(&opt, &[2.0], &[vec![1.0]])?;
    let s = 0.001f64.sqrt();
    assert_close(&snaps[0].w, &[2.0 - 0.002 - 0.01 * s / (s + 1e-7)], 1e-14, "adamw step 1");
    // A zero gradient still decays the weight (decoupled from the gradient).
    let opt = Optimizer::adamw(0.5, 0.1);
    let snaps = eager_run(&opt, &[2.0], &[vec![0.0], vec![0.0]])?;
    assert_close(&snaps[0].w, &[2.0 * (1.0 - 0.05)], 1e-14, "adamw decay only, step 1");
    assert_close(&snaps[1].w, &[2.0 * 0.95 * 0.95], 1e-14, "adamw decay only, step 2");
    check_rule(|| Optimizer::adamw(0.01, 0.05), 0.01)
}

#[test]
fn rmsprop_by_hand_and_by_equation() -> TestResult {
    // One step: ms = 0.1 g^2, w -= lr g / sqrt(ms + eps) (Keras's placement).
    let opt = Optimizer::rmsprop(0.01);
    assert_eq!(opt.rule(), Some(UpdateRule::RmsProp { rho: 0.9, epsilon: 1e-7 }));
    let snaps = eager_run(&opt, &[1.0], &[vec![2.0]])?;
    assert_close(&snaps[0].slots[0], &[0.4], 1e-15, "rmsprop ms");
    assert_close(&snaps[0].w, &[1.0 - 0.01 * 2.0 / (0.4f64 + 1e-7).sqrt()], 1e-15, "rmsprop w");
    check_rule(|| Optimizer::rmsprop(0.01), 0.01)
}

#[test]
fn adagrad_by_hand_and_by_equation() -> TestResult {
    // Keras: the accumulator starts at 0.1, so acc = 9.1 then 25.1, and
    // w -= 0.1 * 3 / sqrt(9.1 + eps) then 0.1 * 4 / sqrt(25.1 + eps).
    let opt = Optimizer::adagrad(0.1);
    assert_eq!(opt.rule(), Some(UpdateRule::Adagrad { epsilon: 1e-7 }));
    let snaps = eager_run(&opt, &[1.0], &[vec![3.0], vec![4.0]])?;
    let (s1, s2) = ((9.1f64 + 1e-7).sqrt(), (25.1f64 + 1e-7).sqrt());
    assert_close(&snaps[0].w, &[1.0 - 0.3 / s1], 1e-15, "adagrad step 1");
    assert_close(&snaps[1].w, &[1.0 - 0.3 / s1 - 0.4 / s2], 1e-15, "adagrad step 2");
    assert_close(&snaps[1].slots[0], &[25.1], 1e-15, "adagrad accumulator");
    check_rule(|| Optimizer::adagrad(0.1), 0.1)
}

#[test]
fn optimizer_new_takes_any_rule() -> TestResult {
    let rule = UpdateRule::RmsProp { rho: 0.5, epsilon: 1e-3 };
    let opt = Optimizer::new(rule, 0.2);
    assert_eq!(opt.rule(), Some(rule));
    check_rule(|| Optimizer::new(rule, 0.2), 0.2)
}

#[test]
fn f32_variables_follow_the_f64_reference_closely() -> TestResult {
    let grads = varying_grads();
    let expected = reference_run(Optimizer::adam(0.01).rule().expect("a fused rule"), &W0, &grads, |_| 0.01);
    let opt = Optimizer::adam(0.01);
    let v = Variable::new("w32", &Tensor::from(W0.map(|x| x as f32)), true)?;
    for g in &grads {
        let g32: Vec<f32> = g.iter().map(|&x| x as f32).collect();
        opt.apply_gradients(&[(Tensor::from(g32), &v)])?;
    }
    assert_eq!(v.current().dtype(), DType::F32);
    assert_close(&f64s(&v.current()), &expected[3].w, 1e-5, "adam f32");
    let slots = opt.slots(&v).unwrap();
    assert!(slots.iter().all(|s| s.dtype() == DType::F32), "slots take the variable's dtype");
    // A gradient of another float dtype is cast to the variable's.
    let v64 = Variable::new("w64", &Tensor::from(vec![1.0f64]), true)?;
    Optimizer::sgd(0.5).apply_gradients(&[(Tensor::from(vec![0.25f32]), &v64)])?;
    assert_eq!(f64s(&v64.current()), vec![0.875]);
    Ok(())
}

#[test]
fn half_precision_variables_update_through_f32() -> TestResult {
    // f16 and bf16 variables are updated in f32 and rounded back.
    let v = Variable::new("h", &Tensor::from(vec![half::bf16::from_f32(1.0), half::bf16::from_f32(-3.0)]), true)?;
    let g = Tensor::from(vec![half::bf16::from_f32(0.5), half::bf16::from_f32(0.25)]);
    Optimizer::sgd(0.1).apply_gradients(&[(g, &v)])?;
    assert_eq!(v.dtype(), DType::BF16);
    let want = [
        round_to(DType::BF16, f64::from(1.0f32 - 0.1f32 * 0.5)),
        round_to(DType::BF16, f64::from(-3.0f32 - 0.1f32 * 0.25)),
    ];
    assert_eq!(values(&v.current()), want.to_vec());
    let v = Variable::new("h16", &Tensor::from(vec![half::f16::from_f32(1.0)]), true)?;
    let opt = Optimizer::adam(0.1);
    opt.apply_gradients(&[(Tensor::from(vec![half::f16::from_f32(0.5)]), &v)])?;
    let want = reference_run(opt.rule().expect("a fused rule"), &[1.0], &[vec![0.5]], |_| 0.1);
    assert_eq!(values(&v.current()), vec![round_to(DType::F16, want[0].w[0])]);
    let slots = opt.slots(&v).unwrap();
    assert!(slots.iter().all(|s| s.dtype() == DType::F16));
    assert_eq!(values(&slots[0].current()), vec![round_to(DType::F16, 0.05)]);
    assert_eq!(values(&slots[1].current()), vec![round_to(DType::F16, 0.001 * 0.25)]);
    Ok(())
}

#[test]
fn counter_slots_and_build_with_two_variables() -> TestResult {
    let opt = Optimizer::adam(0.1);
    let a = Variable::new("a", &Tensor::from(vec![1.0f64, 2.0]), true)?;
    let b = Variable::new("b", &Tensor::from_vec(vec![1.0f64; 6], [2, 3])?, true)?;
    // build creates the counter (0) and zero slots without updating anything.
    opt.build(&[&a, &b])?;
    assert_eq!(opt.iterations().unwrap().current().to_scalar::<i64>()?, 0);
    let slots = opt.slots(&a).unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[0].name(), "a/m");
    assert_eq!(slots[1].name(), "a/v");
    assert!(!slots[0].trainable());
    for s in opt.slots(&b).unwrap() {
        assert_eq!(dims(&s.current()), vec![2, 3]);
        assert_eq!(f64s(&s.current()), vec![0.0; 6]);
    }
    assert_eq!(f64s(&a.current()), vec![1.0, 2.0]);
    // The counter counts apply_gradients calls, not variables.
    let ga = Tensor::from(vec![0.5f64, -0.5]);
    let gb = Tensor::from_vec(vec![0.1f64, 0.2, 0.3, -0.1, -0.2, -0.3], [2, 3])?;
    for _ in 0..3 {
        opt.apply_gradients(&[(ga.clone(), &a), (gb.clone(), &b)])?;
    }
    assert_eq!(opt.iterations().unwrap().current().to_scalar::<i64>()?, 3);
    // Both variables got the bias correction of step t (reference per variable).
    let grads_a = vec![f64s(&ga); 3];
    let grads_b = vec![f64s(&gb); 3];
    let ea = reference_run(opt.rule().expect("a fused rule"), &[1.0, 2.0], &grads_a, |_| 0.1);
    let eb = reference_run(opt.rule().expect("a fused rule"), &[1.0; 6], &grads_b, |_| 0.1);
    assert_close(&f64s(&a.current()), &ea[2].w, 1e-12, "a after 3 steps");
    assert_close(&f64s(&b.current()), &eb[2].w, 1e-12, "b after 3 steps");
    // The state variables: the counter, then each variable's slots.
    let names: Vec<String> = opt.state_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["optimizer/iterations", "optimizer/a/m", "optimizer/a/v", "optimizer/b/m", "optimizer/b/v"]);
    // Slots per rule.
    for (opt, expected) in [
        (Optimizer::sgd(0.1), vec![]),
        (Optimizer::momentum(0.1, 0.9, false), vec!["momentum"]),
        (Optimizer::rmsprop(0.1), vec!["ms"]),
        (Optimizer::adagrad(0.1), vec!["accumulator"]),
    ] {
        let v = Variable::new("x", &Tensor::from(vec![1.0f64]), true)?;
        opt.build(&[&v])?;
        let names: Vec<String> = opt.slots(&v).unwrap().iter().map(|s| s.name().to_string()).collect();
        let expected: Vec<String> = expected.iter().map(|n| format!("x/{n}")).collect();
        assert_eq!(names, expected, "{}", opt.name());
        assert_eq!(opt.rule().expect("a fused rule").num_slots(), expected.len());
    }
    Ok(())
}

#[test]
fn apply_update_op_directly_eager_and_graph() -> TestResult {
    let w = [1.0f64, -2.0, 0.5];
    let g = [0.5f64, -1.0, 2.0];
    let s0 = [0.1f64, 0.2, 0.3];
    let s1 = [0.01f64, 0.04, 0.09];
    let rules = [
        UpdateRule::Sgd,
        UpdateRule::Momentum { momentum: 0.9, nesterov: false },
        UpdateRule::Momentum { momentum: 0.9, nesterov: true },
        UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0 },
        UpdateRule::Adam { beta1: 0.8, beta2: 0.99, epsilon: 1e-3, weight_decay: 0.01 },
        UpdateRule::RmsProp { rho: 0.9, epsilon: 1e-7 },
        UpdateRule::Adagrad { epsilon: 1e-7 },
        UpdateRule::Adamax { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
        UpdateRule::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
        UpdateRule::Adadelta { rho: 0.95, epsilon: 1e-7 },
        UpdateRule::Ftrl { learning_rate_power: -0.5, l1: 0.0, l2: 0.0, l2_shrinkage: 0.0, beta: 0.0 },
        UpdateRule::Ftrl { learning_rate_power: -0.7, l1: 0.3, l2: 0.02, l2_shrinkage: 0.03, beta: 0.5 },
        UpdateRule::Lion { beta1: 0.9, beta2: 0.99 },
        UpdateRule::RmsPropMomentum { rho: 0.9, momentum: 0.5, epsilon: 1e-7, centered: true },
        UpdateRule::RmsPropMomentum { rho: 0.8, momentum: 0.0, epsilon: 1e-3, centered: false },
        UpdateRule::AdamAmsgrad { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
    ];
    let (lr, step) = (0.05f64, 3u32);
    for rule in rules {
        let slot_vals: Vec<Vec<f64>> =
            [s0.to_vec(), s1.to_vec(), vec![0.02, 0.5, 0.001]].into_iter().take(rule.num_slots()).collect();
        let mut ew = w.to_vec();
        let mut es = slot_vals.clone();
        reference_step(rule, &mut ew, &g, &mut es, lr, step);
        let slot_t: Vec<Tensor> = slot_vals.iter().map(|s| Tensor::from(s.clone())).collect();
        let slot_refs: Vec<&Tensor> = slot_t.iter().collect();
        let (wt, gt, lrt, st) =
            (Tensor::from(w.to_vec()), Tensor::from(g.to_vec()), Tensor::scalar(lr), Tensor::scalar(step as f64));
        let out = ops::apply_update(rule, &wt, &gt, &lrt, &st, &slot_refs)?;
        assert_eq!(out.len(), 1 + rule.num_slots(), "{rule:?}");
        assert_close(&f64s(&out[0]), &ew, 1e-13, &format!("{rule:?} w"));
        for (j, s) in es.iter().enumerate() {
            assert_close(&f64s(&out[1 + j]), s, 1e-13, &format!("{rule:?} slot {j}"));
        }
        // The op is pure: its inputs are unchanged.
        assert_eq!(f64s(&wt), w.to_vec());
        // The same op in a graph gives the same bits.
        let gr = Graph::new();
        let pw = gr.placeholder("w", DType::F64, [3])?;
        let pg = gr.placeholder("g", DType::F64, [3])?;
        let plr = gr.placeholder("lr", DType::F64, ())?;
        let pst = gr.placeholder("step", DType::F64, ())?;
        let ps: Vec<Tensor> = (0..rule.num_slots())
            .map(|j| gr.placeholder(&format!("s{j}"), DType::F64, [3]))
            .collect::<Result<_, _>>()?;
        let ps_refs: Vec<&Tensor> = ps.iter().collect();
        let sym = ops::apply_update(rule, &pw, &pg, &plr, &pst, &ps_refs)?;
        assert!(sym.iter().all(Tensor::is_symbolic));
        let mut feeds: Vec<(&Tensor, &Tensor)> = vec![(&pw, &wt), (&pg, &gt), (&plr, &lrt), (&pst, &st)];
        feeds.extend(ps.iter().zip(&slot_t));
        let fetch: Vec<&Tensor> = sym.iter().collect();
        let got = Session::new(&gr).run(&fetch, &feeds)?;
        for (a, b) in got.iter().zip(&out) {
            assert!(a.bitwise_eq(b), "{rule:?}: graph and eager ApplyUpdate differ");
        }
    }
    Ok(())
}

#[test]
fn apply_update_op_rejects_bad_inputs() {
    let w = Tensor::from(vec![1.0f64, 2.0]);
    let g = Tensor::from(vec![0.5f64, 0.5]);
    let lr = Tensor::scalar(0.1f64);
    let step = Tensor::scalar(1.0f64);
    let m = Tensor::from(vec![0.0f64, 0.0]);
    let adam = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
    // Adam needs two slots.
    assert_eq!(kind(ops::apply_update(adam, &w, &g, &lr, &step, &[&m])), ErrorKind::InvalidArgument);
    // The learning rate and step are scalars.
    assert_eq!(kind(ops::apply_update(UpdateRule::Sgd, &w, &g, &g, &step, &[])), ErrorKind::Shape);
    assert_eq!(kind(ops::apply_update(UpdateRule::Sgd, &w, &g, &lr, &g, &[])), ErrorKind::Shape);
    // The gradient has the variable's shape and dtype.
    let g3 = Tensor::from(vec![0.5f64, 0.5, 0.5]);
    assert_eq!(kind(ops::apply_update(UpdateRule::Sgd, &w, &g3, &lr, &step, &[])), ErrorKind::Shape);
    let g32 = Tensor::from(vec![0.5f32, 0.5]);
    assert_eq!(kind(ops::apply_update(UpdateRule::Sgd, &w, &g32, &lr, &step, &[])), ErrorKind::DType);
    // Only floating-point variables.
    let wi = Tensor::from(vec![1i32, 2]);
    let gi = Tensor::from(vec![1i32, 1]);
    let (lri, si) = (Tensor::scalar(1i32), Tensor::scalar(1i32));
    assert_eq!(kind(ops::apply_update(UpdateRule::Sgd, &wi, &gi, &lri, &si, &[])), ErrorKind::DType);
}

#[test]
fn apply_gradients_errors() -> TestResult {
    let opt = Optimizer::sgd(0.1);
    assert_eq!(kind(opt.apply_gradients(&[])), ErrorKind::InvalidArgument);
    // Integer variables do not train.
    let vi = Variable::new("count", &Tensor::from(vec![1i32, 2]), true)?;
    assert_eq!(kind(opt.apply_gradients(&[(Tensor::from(vec![1i32, 1]), &vi)])), ErrorKind::DType);
    // Eager and graph variables do not mix.
    let g = Graph::new();
    let ve = Variable::new("e", &Tensor::from(vec![1.0f64]), true)?;
    let vg = Variable::in_graph(&g, "g", &Tensor::from(vec![1.0f64]), true)?;
    let grad = Tensor::from(vec![1.0f64]);
    let opt = Optimizer::sgd(0.1);
    assert_eq!(kind(opt.apply_gradients(&[(grad.clone(), &ve), (grad.clone(), &vg)])), ErrorKind::Graph);
    // minimize() is for graphs.
    let loss = Tensor::scalar(1.0f64);
    assert_eq!(kind(Optimizer::sgd(0.1).minimize(&loss, &[&ve])), ErrorKind::Graph);
    Ok(())
}

#[test]
fn minimize_in_graph_mode_steps_down_the_gradient() -> TestResult {
    // loss = sum((w - t)^2), gradient 2 (w - t); SGD with lr 0.25 halves the distance.
    let g = Graph::new();
    let w = Variable::in_graph(&g, "w", &Tensor::from(vec![4.0f64, -2.0]), true)?;
    let target = Tensor::from(vec![1.0f64, 1.0]);
    let loss = ops::sum(&ops::square(&ops::sub(&w.read(), &target)?)?, rivulet::Axes::All, false)?;
    let opt = Optimizer::sgd(0.25);
    let train = opt.minimize(&loss, &[&w])?;
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let mut expected = [4.0f64, -2.0];
    for _ in 0..3 {
        sess.run_targets(&[&train])?;
        for e in &mut expected {
            *e -= 0.25 * 2.0 * (*e - 1.0);
        }
        assert_close(&f64s(&sess.variable_value(&w)?), &expected, 1e-15, "minimize");
    }
    assert_eq!(sess.variable_value(&opt.iterations().unwrap())?.to_scalar::<i64>()?, 3);
    Ok(())
}

#[test]
fn learning_rate_schedules_value_and_tensor_agree() -> TestResult {
    let schedules = [
        LearningRate::Constant(0.3),
        LearningRate::ExponentialDecay { initial: 0.1, decay_steps: 10.0, decay_rate: 0.5, staircase: false },
        LearningRate::ExponentialDecay { initial: 0.1, decay_steps: 10.0, decay_rate: 0.5, staircase: true },
        LearningRate::CosineDecay { initial: 1.0, decay_steps: 10.0, alpha: 0.0 },
        LearningRate::CosineDecay { initial: 2.0, decay_steps: 8.0, alpha: 0.1 },
    ];
    for s in schedules {
        for step in 0..=25 {
            let step = step as f64;
            let v = s.value(step);
            let t = s.tensor(&Tensor::scalar(step))?;
            assert_eq!(t.dtype(), DType::F64);
            assert_close1(scalar_f64(&t), v, 1e-14, &format!("{s:?} at step {step}"));
            // Other float dtypes: the tensor takes the step's dtype.
            let t32 = s.tensor(&Tensor::scalar(step as f32))?;
            assert_eq!(t32.dtype(), DType::F32);
            assert_close1(scalar_f64(&t32), v, 1e-6, &format!("{s:?} (f32) at step {step}"));
        }
    }
    // In a graph, on a symbolic step.
    let g = Graph::new();
    let p = g.placeholder("step", DType::F64, ())?;
    let s = LearningRate::CosineDecay { initial: 2.0, decay_steps: 8.0, alpha: 0.1 };
    let t = s.tensor(&p)?;
    assert!(t.is_symbolic());
    let out = Session::new(&g).run(&[&t], &[(&p, &Tensor::scalar(3.0f64))])?;
    assert_close1(scalar_f64(&out[0]), s.value(3.0), 1e-14, "cosine in a graph");
    Ok(())
}

#[test]
fn learning_rate_schedules_by_hand() {
    let c = LearningRate::from(0.25);
    assert_eq!(c, LearningRate::Constant(0.25));
    assert_eq!(c.value(1e6), 0.25);
    // initial * rate^(step / decay_steps).
    let e = LearningRate::ExponentialDecay { initial: 0.1, decay_steps: 10.0, decay_rate: 0.5, staircase: false };
    assert_close1(e.value(0.0), 0.1, 1e-15, "exp 0");
    assert_close1(e.value(5.0), 0.1 * 0.5f64.sqrt(), 1e-15, "exp 5");
    assert_close1(e.value(10.0), 0.05, 1e-15, "exp 10");
    assert_close1(e.value(15.0), 0.1 * 0.5f64.powf(1.5), 1e-15, "exp 15");
    assert_close1(e.value(30.0), 0.0125, 1e-15, "exp 30");
    // Staircase: the exponent is floored.
    let s = LearningRate::ExponentialDecay { initial: 0.1, decay_steps: 10.0, decay_rate: 0.5, staircase: true };
    for (step, want) in [(0.0, 0.1), (5.0, 0.1), (9.0, 0.1), (10.0, 0.05), (19.0, 0.05), (20.0, 0.025)] {
        assert_close1(s.value(step), want, 1e-15, &format!("staircase {step}"));
    }
    // Cosine: initial ((1 - alpha)(1 + cos(pi p)) / 2 + alpha), p = min(step, decay_steps) / decay_steps.
    let cd = LearningRate::CosineDecay { initial: 1.0, decay_steps: 10.0, alpha: 0.0 };
    assert_close1(cd.value(0.0), 1.0, 1e-15, "cos 0");
    assert_close1(cd.value(5.0), 0.5, 1e-15, "cos 5");
    assert_close1(cd.value(10.0), 0.0, 1e-15, "cos 10");
    assert_close1(cd.value(50.0), 0.0, 1e-15, "cos past the end");
    let ca = LearningRate::CosineDecay { initial: 2.0, decay_steps: 10.0, alpha: 0.1 };
    assert_close1(ca.value(0.0), 2.0, 1e-15, "cos alpha 0");
    assert_close1(ca.value(5.0), 2.0 * (0.9 * 0.5 + 0.1), 1e-15, "cos alpha 5");
    assert_close1(ca.value(10.0), 0.2, 1e-15, "cos alpha 10");
    assert_close1(ca.value(1000.0), 0.2, 1e-15, "cos alpha past the end");
    let q = 2.0 * (0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos()) + 0.1);
    assert_close1(ca.value(2.5), q, 1e-15, "cos alpha 2.5");
}

#[test]
fn optimizer_uses_the_schedule_with_the_count_before_the_update() -> TestResult {
    let sched = LearningRate::ExponentialDecay { initial: 0.5, decay_steps: 2.0, decay_rate: 0.25, staircase: false };
    let lr_at = |k: u32| 0.5 * 0.25f64.powf(k as f64 / 2.0);
    let grads = varying_grads();
    for make in [
        (|s| Optimizer::sgd(s)) as fn(LearningRate) -> Optimizer,
        |s| Optimizer::momentum(s, 0.9, true),
        |s| Optimizer::adam(s),
    ] {
        let expected = reference_run(make(sched).rule().expect("a fused rule"), &W0, &grads, lr_at);
        let eager = eager_run(&make(sched), &W0, &grads)?;
        let graph = graph_run(&make(sched), &W0, &grads)?;
        assert_snapshots(&eager, &expected, 1e-12, "scheduled eager");
        assert_snapshots(&graph, &expected, 1e-12, "scheduled graph");
        assert_eq!(eager, graph, "scheduled: eager and graph differ");
    }
    // Staircase cosine, past its end: the rate stays at alpha * initial.
    let cos = LearningRate::CosineDecay { initial: 1.0, decay_steps: 2.0, alpha: 0.1 };
    let snaps = eager_run(&Optimizer::sgd(cos), &[0.0], &vec![vec![1.0]; 5])?;
    let mut w = 0.0;
    for (k, s) in snaps.iter().enumerate() {
        let p = (k as f64).min(2.0) / 2.0;
        w -= 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()) + 0.1;
        assert_close(&s.w, &[w], 1e-14, &format!("cosine sgd step {}", k + 1));
    }
    Ok(())
}

#[test]
fn clip_by_global_norm_scales_only_above_the_clip() -> TestResult {
    // Global norm of [3, 4] and [12] is 13.
    let a = Tensor::from(vec![3.0f64, 4.0]);
    let b = Tensor::from(vec![12.0f64]);
    let (clipped, norm) = clip_by_global_norm(&[a.clone(), b.clone()], 6.5)?;
    assert_eq!(scalar_f64(&norm), 13.0);
    assert_close(&f64s(&clipped[0]), &[1.5, 2.0], 1e-15, "clipped a");
    assert_close(&f64s(&clipped[1]), &[6.0], 1e-15, "clipped b");
    // Below or at the clip: unchanged, bit for bit.
    for clip in [13.0, 26.0, 1e9] {
        let (clipped, norm) = clip_by_global_norm(&[a.clone(), b.clone()], clip)?;
        assert_eq!(scalar_f64(&norm), 13.0);
        assert!(clipped[0].bitwise_eq(&a) && clipped[1].bitwise_eq(&b), "clip {clip} changed the gradients");
    }
    // Matrices and several tensors: sqrt of the sum of all squares.
    let m = Tensor::from_vec(vec![1.0f64, -2.0, 2.0, 0.0], [2, 2])?;
    let (c, n) = clip_by_global_norm(&[m, Tensor::from(vec![4.0f64])], 1.0)?;
    assert_close1(scalar_f64(&n), 5.0, 1e-15, "norm");
    assert_close(&f64s(&c[0]), &[0.2, -0.4, 0.4, 0.0], 1e-15, "clipped matrix");
    assert_eq!(dims(&c[0]), vec![2, 2]);
    assert_close(&f64s(&c[1]), &[0.8], 1e-15, "clipped vector");
    // In a graph.
    let g = Graph::new();
    let p = g.placeholder("g", DType::F64, [2])?;
    let (c, n) = clip_by_global_norm(std::slice::from_ref(&p), 1.0)?;
    let out = Session::new(&g).run(&[&c[0], &n], &[(&p, &Tensor::from(vec![6.0f64, 8.0]))])?;
    assert_close(&f64s(&out[0]), &[0.6, 0.8], 1e-15, "graph clipped");
    assert_close1(scalar_f64(&out[1]), 10.0, 1e-15, "graph norm");
    assert_eq!(kind(clip_by_global_norm(&[], 1.0)), ErrorKind::InvalidArgument);
    Ok(())
}

#[test]
fn optimizer_with_clip_norm_clips_the_global_norm() -> TestResult {
    // SGD lr 1: the update equals the clipped gradient.
    let opt = Optimizer::sgd(1.0).with_clip_norm(1.0);
    let a = Variable::new("a", &Tensor::from(vec![0.0f64, 0.0]), true)?;
    let b = Variable::new("b", &Tensor::from(vec![0.0f64]), true)?;
    // Global norm 13 over both variables: scaled by 1/13.
    opt.apply_gradients(&[(Tensor::from(vec![3.0f64, 4.0]), &a), (Tensor::from(vec![12.0f64]), &b)])?;
    assert_close(&f64s(&a.current()), &[-3.0 / 13.0, -4.0 / 13.0], 1e-15, "clipped a");
    assert_close(&f64s(&b.current()), &[-12.0 / 13.0], 1e-15, "clipped b");
    // Norm 0.5 <= 1: not scaled.
    opt.apply_gradients(&[(Tensor::from(vec![0.3f64, 0.4]), &a), (Tensor::from(vec![0.0f64]), &b)])?;
    assert_close(&f64s(&a.current()), &[-3.0 / 13.0 - 0.3, -4.0 / 13.0 - 0.4], 1e-15, "unclipped a");
    // Graph mode, same numbers.
    let g = Graph::new();
    let v = Variable::in_graph(&g, "v", &Tensor::from(vec![0.0f64, 0.0]), true)?;
    let opt = Optimizer::momentum(0.5, 0.9, false).with_clip_norm(2.0);
    let train = opt.apply_gradients(&[(Tensor::from(vec![6.0f64, 8.0]), &v)])?.unwrap();
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    sess.run_targets(&[&train])?;
    sess.run_targets(&[&train])?;
    // Clipped gradient [1.2, 1.6]; accum 1, then 1.9 times it; w = -0.5 * 2.9 * g.
    assert_close(&f64s(&sess.variable_value(&v)?), &[-0.5 * 2.9 * 1.2, -0.5 * 2.9 * 1.6], 1e-14, "graph clip");
    Ok(())
}

// ---------------------------------------------------------------------------
// Initializers
// ---------------------------------------------------------------------------

#[test]
fn fans_of_each_rank() {
    assert_eq!(fans(&Shape::scalar()), (1.0, 1.0));
    assert_eq!(fans(&Shape::new(&[7])), (7.0, 7.0));
    assert_eq!(fans(&Shape::new(&[3, 5])), (3.0, 5.0));
    // Conv kernel [h, w, in, out]: receptive field h * w.
    assert_eq!(fans(&Shape::new(&[3, 3, 16, 32])), (144.0, 288.0));
    assert_eq!(fans(&Shape::new(&[2, 4, 6])), (8.0, 12.0));
}

fn sample(init: Initializer, shape: &[usize], seed: u64) -> Vec<f64> {
    let t = init.init(Ctx::Eager, Shape::new(shape), DType::F64, Some(seed)).unwrap();
    assert_eq!(dims(&t), shape.to_vec(), "{init:?}");
    assert_eq!(t.dtype(), DType::F64);
    f64s(&t)
}

#[test]
fn constant_initializers() -> TestResult {
    assert_eq!(sample(Initializer::Zeros, &[2, 3], 0), vec![0.0; 6]);
    assert_eq!(sample(Initializer::Ones, &[4], 0), vec![1.0; 4]);
    assert_eq!(sample(Initializer::Constant(-2.5), &[3, 1], 0), vec![-2.5; 3]);
    let t = Initializer::Ones.init(Ctx::Eager, [2, 2], DType::F32, None)?;
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.to_vec::<f32>()?, vec![1.0; 4]);
    let t = Initializer::Zeros.init(Ctx::Eager, (), DType::BF16, None)?;
    assert_eq!(dims(&t), Vec::<usize>::new());
    assert_eq!(t.dtype(), DType::BF16);
    Ok(())
}

#[test]
fn uniform_initializers_respect_their_limits() {
    // RandomUniform on [-2, 3): mean 0.5, std 5 / sqrt(12).
    let v = sample(Initializer::RandomUniform { low: -2.0, high: 3.0 }, &[100_000], 1);
    assert!(v.iter().all(|&x| (-2.0..3.0).contains(&x)));
    let (m, s) = mean_std(&v);
    assert!((m - 0.5).abs() < 0.03, "mean {m}");
    assert!((s - 5.0 / 12f64.sqrt()).abs() < 0.02, "std {s}");
    // Glorot uniform: limit sqrt(6 / (fan_in + fan_out)).
    for (init, shape, limit) in [
        (Initializer::GlorotUniform, vec![200, 300], (6.0f64 / 500.0).sqrt()),
        (Initializer::GlorotUniform, vec![3, 3, 8, 16], (6.0f64 / (72.0 + 144.0)).sqrt()),
        (Initializer::HeUniform, vec![200, 300], (6.0f64 / 200.0).sqrt()),
        (Initializer::HeUniform, vec![3, 3, 8, 16], (6.0f64 / 72.0).sqrt()),
    ] {
        let v = sample(init, &shape, 7);
        assert!(v.iter().all(|&x| x.abs() <= limit), "{init:?} {shape:?}: a value beyond {limit}");
        let max = v.iter().cloned().fold(0.0f64, |a, x| a.max(x.abs()));
        assert!(max > 0.98 * limit, "{init:?} {shape:?}: max |v| {max} far below the limit {limit}");
        let (m, s) = mean_std(&v);
        let n = v.len() as f64;
        assert!(m.abs() < 5.0 * limit / (3.0 * n).sqrt(), "{init:?}: mean {m}");
        assert!((s / (limit / 3f64.sqrt()) - 1.0).abs() < 0.05, "{init:?}: std {s}");
    }
}

#[test]
fn normal_initializers_have_their_stddev() {
    // RandomNormal: the given mean and stddev.
    let v = sample(Initializer::RandomNormal { mean: 1.0, stddev: 2.0 }, &[100_000], 3);
    let (m, s) = mean_std(&v);
    assert!((m - 1.0).abs() < 0.03, "mean {m}");
    assert!((s - 2.0).abs() < 0.03, "std {s}");
    // TruncatedNormal: within two stddevs; the std of a normal truncated at
    // +-2 sigma is 0.8796 sigma.
    let v = sample(Initializer::TruncatedNormal { mean: -1.0, stddev: 0.5 }, &[100_000], 4);
    assert!(v.iter().all(|&x| (x + 1.0).abs() <= 1.0), "a truncated-normal value beyond 2 sigma");
    let (m, s) = mean_std(&v);
    assert!((m + 1.0).abs() < 0.01, "mean {m}");
    assert!((s - 0.8796 * 0.5).abs() < 0.01, "std {s}");
    // Glorot / He normal: the *resulting* std is sqrt(2 / (fan_in + fan_out))
    // or sqrt(2 / fan_in) (the truncation is corrected for).
    for (init, shape, std) in [
        (Initializer::GlorotNormal, vec![200, 300], (2.0f64 / 500.0).sqrt()),
        (Initializer::HeNormal, vec![400, 250], (2.0f64 / 400.0).sqrt()),
        (Initializer::HeNormal, vec![3, 3, 16, 512], (2.0f64 / 144.0).sqrt()),
    ] {
        let v = sample(init, &shape, 5);
        let (m, s) = mean_std(&v);
        assert!(m.abs() < 0.02 * std, "{init:?}: mean {m}");
        assert!((s / std - 1.0).abs() < 0.02, "{init:?} {shape:?}: std {s}, expected {std}");
        let bound = 2.0 * std / 0.879_625_661;
        assert!(v.iter().all(|&x| x.abs() <= bound * (1.0 + 1e-12)), "{init:?}: value beyond the truncation");
    }
}

#[test]
fn initializers_are_reproducible_by_seed() -> TestResult {
    for init in [
        Initializer::RandomNormal { mean: 0.0, stddev: 1.0 },
        Initializer::RandomUniform { low: 0.0, high: 1.0 },
        Initializer::TruncatedNormal { mean: 0.0, stddev: 1.0 },
        Initializer::GlorotUniform,
        Initializer::GlorotNormal,
        Initializer::HeUniform,
        Initializer::HeNormal,
    ] {
        let a = init.init(Ctx::Eager, [16, 8], DType::F32, Some(42))?;
        let b = init.init(Ctx::Eager, [16, 8], DType::F32, Some(42))?;
        let c = init.init(Ctx::Eager, [16, 8], DType::F32, Some(43))?;
        assert!(a.bitwise_eq(&b), "{init:?}: same seed, different values");
        assert!(!a.bitwise_eq(&c), "{init:?}: different seeds, same values");
        // A graph node with the same seed draws the same numbers on its first run.
        let g = Graph::new();
        let t = init.init(&g, [16, 8], DType::F32, Some(42))?;
        assert!(t.is_symbolic());
        let out = Session::new(&g).run(&[&t], &[])?;
        assert!(out[0].bitwise_eq(&a), "{init:?}: graph and eager draws differ");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------

fn loss_value(loss: Loss, y_true: &Tensor, y_pred: &Tensor) -> f64 {
    scalar_f64(&loss.compute(y_true, y_pred).unwrap())
}

#[test]
fn regression_losses_match_references() -> TestResult {
    let t = [0.0, 1.0, -2.0, 3.0, 0.5, 10.0];
    let p = [0.5, 1.0, -1.0, 0.0, 0.4, 7.5];
    let (tt, pt) = (Tensor::from_vec(t.to_vec(), [2, 3])?, Tensor::from_vec(p.to_vec(), [2, 3])?);
    let n = t.len() as f64;
    let mse: f64 = t.iter().zip(&p).map(|(a, b)| (b - a) * (b - a)).sum::<f64>() / n;
    let mae: f64 = t.iter().zip(&p).map(|(a, b)| (b - a).abs()).sum::<f64>() / n;
    assert_close1(loss_value(Loss::MeanSquaredError, &tt, &pt), mse, 1e-15, "mse");
    assert_close1(loss_value(Loss::MeanAbsoluteError, &tt, &pt), mae, 1e-15, "mae");
    assert_close1(scalar_f64(&losses::mean_squared_error(&tt, &pt)?), mse, 1e-15, "mse fn");
    // Huber: both regions in one batch, and each region alone.
    let huber = |delta: f64, t: &[f64], p: &[f64]| -> f64 {
        t.iter()
            .zip(p)
            .map(|(a, b)| {
                let e = (b - a).abs();
                if e <= delta {
                    0.5 * e * e
                } else {
                    delta * (e - 0.5 * delta)
                }
            })
            .sum::<f64>()
            / t.len() as f64
    };
    for delta in [1.0, 0.3, 2.5, 100.0] {
        let got = loss_value(Loss::Huber { delta }, &tt, &pt);
        assert_close1(got, huber(delta, &t, &p), 1e-15, &format!("huber delta {delta}"));
    }
    // Quadratic region only: 0.5 * mean(e^2); linear only: delta (|e| - delta/2).
    let small = Tensor::from(vec![0.1f64, -0.2]);
    let zero = Tensor::from(vec![0.0f64, 0.0]);
    assert_close1(loss_value(Loss::Huber { delta: 1.0 }, &zero, &small), 0.5 * (0.01 + 0.04) / 2.0, 1e-15, "quad");
    let big = Tensor::from(vec![3.0f64, -5.0]);
    assert_close1(loss_value(Loss::Huber { delta: 1.0 }, &zero, &big), (2.5 + 4.5) / 2.0, 1e-15, "linear");
    assert_eq!(kind(Loss::Huber { delta: 0.0 }.compute(&zero, &big)), ErrorKind::InvalidArgument);
    assert_eq!(kind(Loss::Huber { delta: f64::NAN }.compute(&zero, &big)), ErrorKind::InvalidArgument);
    // f32 inputs give an f32 loss.
    let l = Loss::MeanSquaredError.compute(&Tensor::from(vec![1.0f32]), &Tensor::from(vec![3.0f32]))?;
    assert_eq!(l.dtype(), DType::F32);
    assert_eq!(l.to_scalar::<f32>()?, 4.0);
    assert_eq!(dims(&l), Vec::<usize>::new());
    Ok(())
}

#[test]
fn binary_crossentropy_matches_references() -> TestResult {
    let y = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let z = [2.0, -1.5, -0.5, 3.0, 0.0, 0.25];
    let n = y.len() as f64;
    // -[y ln s(z) + (1 - y) ln(1 - s(z))], straightforwardly (moderate logits).
    let reference: f64 =
        y.iter().zip(&z).map(|(y, z)| -(y * sigmoid(*z).ln() + (1.0 - y) * (1.0 - sigmoid(*z)).ln())).sum::<f64>() / n;
    let (yt, zt) = (Tensor::from(y.to_vec()), Tensor::from(z.to_vec()));
    assert_close1(
        loss_value(Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 }, &yt, &zt),
        reference,
        1e-14,
        "bce logits",
    );
    // From probabilities.
    let p: Vec<f64> = z.iter().map(|z| sigmoid(*z)).collect();
    let pt = Tensor::from(p.clone());
    let got = loss_value(Loss::BinaryCrossentropy { from_logits: false, label_smoothing: 0.0 }, &yt, &pt);
    assert_close1(got, reference, 1e-12, "bce probabilities");
    // Extreme logits stay finite: -100 with label 1 costs 100, +100 costs ~0.
    let yt = Tensor::from(vec![1.0f64, 0.0, 1.0, 0.0]);
    let zt = Tensor::from(vec![-100.0f64, 100.0, 100.0, -100.0]);
    let got = loss_value(Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 }, &yt, &zt);
    assert!(got.is_finite());
    assert_close1(got, (100.0 + 100.0) / 4.0, 1e-12, "bce extreme logits");
    let z32 = Tensor::from(vec![-100.0f32, 100.0, 100.0, -100.0]);
    let l32 = Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 }
        .compute(&Tensor::from(vec![1.0f32, 0.0, 1.0, 0.0]), &z32)?;
    assert_close1(scalar_f64(&l32), 50.0, 1e-6, "bce extreme logits f32");
    // Saturated probabilities are clipped to [1e-7, 1 - 1e-7]: -ln(1e-7) each way.
    let got = loss_value(
        Loss::BinaryCrossentropy { from_logits: false, label_smoothing: 0.0 },
        &Tensor::from(vec![1.0f64, 0.0]),
        &Tensor::from(vec![0.0f64, 1.0]),
    );
    assert_close1(got, -(1e-7f64).ln(), 1e-9, "bce saturated probabilities");
    // Labels of another dtype are cast.
    let got = loss_value(
        Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 },
        &Tensor::from(vec![1i32, 0]),
        &Tensor::from(vec![0.0f64, 0.0]),
    );
    assert_close1(got, 2f64.ln(), 1e-15, "bce int labels");
    Ok(())
}

#[test]
fn categorical_crossentropies_match_references() -> TestResult {
    let logits = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [-3.0, 0.0, 3.0], [1.0, 1.0, 1.0]];
    let labels = [0usize, 2, 2, 1];
    let soft = [[0.7, 0.2, 0.1], [0.0, 0.0, 1.0], [0.25, 0.25, 0.5], [0.0, 1.0, 0.0]];
    let zt = Tensor::from(logits);
    let onehot: Vec<[f64; 3]> =
        labels.iter().map(|&l| std::array::from_fn(|j| if j == l { 1.0 } else { 0.0 })).collect();
    let oht = Tensor::from_vec(onehot.iter().flatten().copied().collect::<Vec<f64>>(), [4, 3])?;
    let ce = |targets: &[[f64; 3]]| -> f64 {
        logits
            .iter()
            .zip(targets)
            .map(|(z, y)| -log_softmax_row(z).iter().zip(y).map(|(lp, y)| lp * y).sum::<f64>())
            .sum::<f64>()
            / 4.0
    };
    let hard = ce(&onehot);
    assert_close1(
        loss_value(Loss::CategoricalCrossentropy { from_logits: true, label_smoothing: 0.0 }, &oht, &zt),
        hard,
        1e-14,
        "cce",
    );
    assert_close1(
        loss_value(Loss::CategoricalCrossentropy { from_logits: true, label_smoothing: 0.0 }, &Tensor::from(soft), &zt),
        ce(&soft),
        1e-14,
        "cce soft labels",
    );
    // From probabilities (rows summing to one).
    let probs: Vec<f64> = logits.iter().flat_map(|z| softmax_row(z)).collect();
    let pt = Tensor::from_vec(probs, [4, 3])?;
    assert_close1(
        loss_value(Loss::CategoricalCrossentropy { from_logits: false, label_smoothing: 0.0 }, &oht, &pt),
        hard,
        1e-12,
        "cce probs",
    );
    // Sparse: integer labels of either width, logits or probabilities.
    for labels_t in [Tensor::from(vec![0i32, 2, 2, 1]), Tensor::from(vec![0i64, 2, 2, 1])] {
        let l = loss_value(Loss::SparseCategoricalCrossentropy { from_logits: true }, &labels_t, &zt);
        assert_close1(l, hard, 1e-14, "sparse cce");
        let l = loss_value(Loss::SparseCategoricalCrossentropy { from_logits: false }, &labels_t, &pt);
        assert_close1(l, hard, 1e-12, "sparse cce probs");
    }
    assert_close1(
        scalar_f64(&losses::sparse_softmax_cross_entropy(&Tensor::from(vec![0i32, 2, 2, 1]), &zt)?),
        hard,
        1e-14,
        "fn",
    );
    // Huge logits stay finite.
    let big = Tensor::from([[1000.0f64, -1000.0], [-1000.0, 1000.0]]);
    let l = loss_value(Loss::SparseCategoricalCrossentropy { from_logits: true }, &Tensor::from(vec![1i32, 1]), &big);
    assert_close1(l, 1000.0, 1e-12, "huge logits");
    // A zero probability for the true class is clipped: -ln(1e-7).
    let p = Tensor::from([[1.0f64, 0.0]]);
    let l = loss_value(
        Loss::CategoricalCrossentropy { from_logits: false, label_smoothing: 0.0 },
        &Tensor::from([[0.0f64, 1.0]]),
        &p,
    );
    assert_close1(l, -(1e-7f64).ln(), 1e-9, "clipped probability");
    // Scalar predictions have no class axis: an error either way.
    let (label, scalar) = (Tensor::scalar(0i32), Tensor::scalar(0.5f64));
    let e = Loss::SparseCategoricalCrossentropy { from_logits: false }.compute(&label, &scalar).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
    assert!(Loss::SparseCategoricalCrossentropy { from_logits: true }.compute(&label, &scalar).is_err());
    Ok(())
}

#[test]
fn crossentropy_gradients_are_softmax_minus_onehot_over_batch() -> TestResult {
    let logits = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [-3.0, 0.0, 3.0], [1.0, 1.0, 1.0]];
    let labels = [0usize, 2, 2, 1];
    let mut expected = Vec::new();
    for (z, &l) in logits.iter().zip(&labels) {
        for (j, p) in softmax_row(z).into_iter().enumerate() {
            expected.push((p - if j == l { 1.0 } else { 0.0 }) / 4.0);
        }
    }
    let onehot: Vec<f64> = labels.iter().flat_map(|&l| (0..3).map(move |j| if j == l { 1.0 } else { 0.0 })).collect();
    let cases = [
        (Loss::CategoricalCrossentropy { from_logits: true, label_smoothing: 0.0 }, Tensor::from_vec(onehot, [4, 3])?),
        (Loss::SparseCategoricalCrossentropy { from_logits: true }, Tensor::from(vec![0i32, 2, 2, 1])),
    ];
    for (loss, y) in cases {
        let z = Tensor::from(logits);
        let tape = GradientTape::new();
        tape.watch(&z);
        let l = loss.compute(&y, &z)?;
        let g = tape.gradient(&l, &[&z])?.remove(0).expect("a gradient");
        assert_eq!(dims(&g), vec![4, 3]);
        assert_close(&f64s(&g), &expected, 1e-14, &format!("{loss:?} gradient"));
    }
    // Binary from logits: (sigmoid(z) - y) / n, also at extreme logits.
    let z = Tensor::from(vec![2.0f64, -1.0, 100.0, -100.0]);
    let y = Tensor::from(vec![1.0f64, 1.0, 0.0, 0.0]);
    let tape = GradientTape::new();
    tape.watch(&z);
    let l = Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 }.compute(&y, &z)?;
    let g = tape.gradient(&l, &[&z])?.remove(0).unwrap();
    let want: Vec<f64> =
        [(2.0, 1.0), (-1.0, 1.0), (100.0, 0.0), (-100.0, 0.0)].iter().map(|(z, y)| (sigmoid(*z) - y) / 4.0).collect();
    assert_close(&f64s(&g), &want, 1e-14, "binary gradient");
    Ok(())
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

fn metric_value(m: Metric, y: &Tensor, p: &Tensor) -> f64 {
    let mut state = MetricState::new(m.clone()).unwrap();
    state.update_state(y, p, None).unwrap();
    let t = state.result().unwrap();
    assert_eq!(t.dtype(), DType::F32, "{m:?} returns f32");
    assert_eq!(t.rank(), 0);
    scalar_f64(&t)
}

#[test]
fn accuracy_metrics_on_hand_examples() {
    let preds = Tensor::from([[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]);
    // argmax: 1, 0, 1, 0 vs labels 1, 0, 0, 0 -> 3 of 4.
    assert_eq!(metric_value(Metric::SparseCategoricalAccuracy, &Tensor::from(vec![1i32, 0, 0, 0]), &preds), 0.75);
    assert_eq!(metric_value(Metric::SparseCategoricalAccuracy, &Tensor::from(vec![1i64, 0, 1, 0]), &preds), 1.0);
    // Float labels too.
    assert_eq!(
        metric_value(Metric::SparseCategoricalAccuracy, &Tensor::from(vec![0.0f32, 1.0, 0.0, 1.0]), &preds),
        0.0
    );
    let onehot = Tensor::from([[0.0f32, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]);
    // argmax 1, 1, 1, 0 vs 1, 0, 1, 0.
    assert_eq!(metric_value(Metric::CategoricalAccuracy, &onehot, &preds), 0.75);
    let onehot = Tensor::from([[1.0f32, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]);
    assert_eq!(metric_value(Metric::CategoricalAccuracy, &onehot, &preds), 0.25);
    // Binary on probabilities: threshold 0.5 (0.5 itself is a "0").
    let probs = Tensor::from(vec![0.9f32, 0.4, 0.6, 0.2, 0.5]);
    let y = Tensor::from(vec![1.0f32, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(metric_value(Metric::BinaryAccuracy { threshold: 0.5 }, &y, &probs), f64::from(0.6f32));
    // Binary on logits: threshold 0.
    let logits = Tensor::from(vec![2.0f32, -1.0, 0.5, -3.0, 0.0]);
    assert_eq!(metric_value(Metric::BinaryAccuracy { threshold: 0.0 }, &y, &logits), f64::from(0.6f32));
    // Integer labels for the binary metric.
    assert_eq!(
        metric_value(Metric::BinaryAccuracy { threshold: 0.0 }, &Tensor::from(vec![1i32, 0, 0, 0, 0]), &logits),
        f64::from(0.8f32)
    );
    // MAE as a metric (f32 even for f64 inputs).
    let mae = metric_value(
        Metric::Loss(Loss::MeanAbsoluteError),
        &Tensor::from(vec![1.0f64, 2.0]),
        &Tensor::from(vec![1.5f64, 0.0]),
    );
    assert_eq!(mae, 1.25);
    // Keras's default names, or the one given.
    assert_eq!(Metric::SparseCategoricalAccuracy.name(), "sparse_categorical_accuracy");
    assert_eq!(Metric::CategoricalAccuracy.named("accuracy").name(), "accuracy");
    assert_eq!(Metric::BinaryAccuracy { threshold: 0.5 }.name(), "binary_accuracy");
    assert_eq!(Metric::Loss(Loss::MeanAbsoluteError).name(), "mean_absolute_error");
    assert_eq!(Metric::Loss(Loss::LogCosh).name(), "logcosh");
    assert_eq!(Metric::auc().name(), "auc");
    assert_eq!(Metric::mean_iou(3).name(), "mean_io_u");
    assert_eq!(Metric::binary_iou().name(), "binary_io_u");
    assert_eq!(Metric::f1_score(Default::default(), None).name(), "f1_score");
    assert_eq!(Metric::FBetaScore { average: Default::default(), beta: 2.0, threshold: None }.name(), "fbeta_score");
    assert_eq!(Metric::r2_score().name(), "r2_score");
    assert_eq!(Metric::precision_at_recall(0.5).name(), "precision_at_recall");
}

#[test]
fn mean_metric_is_weighted() {
    let mut m = Mean::default();
    assert_eq!(m.result(), 0.0);
    m.update(2.0, 1.0);
    assert_eq!(m.result(), 2.0);
    m.update(4.0, 3.0);
    assert_eq!(m.result(), 3.5);
    m.update(100.0, 0.0);
    assert_eq!(m.result(), 3.5);
    m.reset();
    assert_eq!(m.result(), 0.0);
    assert_eq!(m, Mean::default());
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/// `x @ w + b` in f64 for row-major `x [n, k]`, `w [k, m]`.
fn affine(x: &[f64], w: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|l| x[i * k + l] * w[l * m + j]).sum::<f64>() + b[j];
        }
    }
    out
}

#[test]
fn dense_computes_x_w_plus_b_with_its_variables() -> TestResult {
    let layer = Dense::new(3, Activation::Linear);
    assert!(layer.variables().is_empty(), "no variables before the first call");
    let x: Vec<f64> = (0..8).map(|i| i as f64 * 0.5 - 2.0).collect();
    let xt = Tensor::from_vec(x.clone(), [2, 4])?;
    let y0 = layer.call(&xt, false)?;
    let vars = layer.variables();
    assert_eq!(vars.len(), 2);
    let (kernel, bias) = (&vars[0], &vars[1]);
    assert!(kernel.name().ends_with("/kernel") && bias.name().ends_with("/bias"));
    assert!(kernel.name().starts_with(layer.name()));
    assert!(kernel.trainable() && bias.trainable());
    assert_eq!(layer.trainable_variables().len(), 2);
    assert_eq!(dims(&kernel.current()), vec![4, 3]);
    assert_eq!(kernel.dtype(), DType::F64, "variables take the input's dtype");
    // Default initializers: Glorot-uniform kernel within its limit, zero bias.
    let limit = (6.0f64 / 7.0).sqrt();
    assert!(f64s(&kernel.current()).iter().all(|v| v.abs() <= limit));
    assert_eq!(f64s(&bias.current()), vec![0.0; 3]);
    assert_close(&f64s(&y0), &affine(&x, &f64s(&kernel.current()), &[0.0; 3], 2, 4, 3), 1e-14, "dense (zero bias)");
    // A nonzero bias, and the same layer serving a second call.
    bias.assign(&Tensor::from(vec![0.1f64, -0.2, 0.3]))?;
    let y = layer.call(&xt, false)?;
    let want = affine(&x, &f64s(&kernel.current()), &[0.1, -0.2, 0.3], 2, 4, 3);
    assert_eq!(dims(&y), vec![2, 3]);
    assert_close(&f64s(&y), &want, 1e-14, "dense");
    assert_eq!(layer.variables().len(), 2, "no new variables on the second call");
    // Activation and no bias.
    let relu = Dense::new(2, Activation::Relu)
        .without_bias()
        .with_initializers(Initializer::Constant(0.5), Initializer::Zeros);
    let y = relu.call(&Tensor::from([[1.0f64, -3.0], [2.0, 1.0]]), true)?;
    assert_eq!(relu.variables().len(), 1);
    assert_eq!(f64s(&y), vec![0.0, 0.0, 1.5, 1.5]);
    // Rank 3 inputs: applied to the last axis.
    let y = relu.call(&Tensor::from([[[1.0f64, 1.0]], [[-1.0, -1.0]]]), false)?;
    assert_eq!(dims(&y), vec![2, 1, 2]);
    assert_eq!(f64s(&y), vec![1.0, 1.0, 0.0, 0.0]);
    // Graph mode: graph variables, the same formula from the session's values.
    let g = Graph::new();
    let layer = Dense::new(3, Activation::Tanh);
    let p = g.placeholder("x", DType::F64, [None, Some(4)])?;
    let y = layer.call(&p, false)?;
    assert_eq!(y.shape(), &Shape::from([None, Some(3)]));
    assert!(layer.variables().iter().all(Variable::is_graph));
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let out = sess.run(&[&y], &[(&p, &xt)])?;
    let w = f64s(&sess.variable_value(&layer.variables()[0])?);
    let want: Vec<f64> = affine(&x, &w, &[0.0; 3], 2, 4, 3).into_iter().map(f64::tanh).collect();
    assert_close(&f64s(&out[0]), &want, 1e-14, "graph dense");
    // An unknown last dimension cannot size the kernel.
    let q = g.placeholder("q", DType::F32, [None, None])?;
    assert_eq!(kind(Dense::new(2, Activation::Linear).call(&q, false)), ErrorKind::Shape);
    Ok(())
}

#[test]
fn dropout_zeroes_about_rate_and_scales_the_rest() -> TestResult {
    let rate = 0.3;
    let layer = Dropout::new(rate)?;
    let x = Tensor::ones([200, 50], DType::F32)?;
    // Inference: the identity.
    assert!(layer.call(&x, false)?.bitwise_eq(&x));
    let a = layer.call(&x, true)?;
    let b = layer.call(&x, true)?;
    let scale = (1.0f64 / (1.0 - rate)) as f32;
    for out in [&a, &b] {
        assert_eq!(dims(out), vec![200, 50]);
        let v = out.to_vec::<f32>()?;
        assert!(v.iter().all(|&e| e == 0.0 || e == scale), "entries must be 0 or exactly 1/(1-rate)");
        let zeros = v.iter().filter(|&&e| e == 0.0).count() as f64 / v.len() as f64;
        assert!((zeros - rate).abs() < 0.03, "dropped fraction {zeros}, rate {rate}");
    }
    assert!(!a.bitwise_eq(&b), "consecutive training calls must draw different masks");
    // Kept entries are scaled, dropped ones zero, for arbitrary inputs.
    let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 7.0).collect();
    let xt = Tensor::from(xs.clone());
    let out = layer.call(&xt, true)?.to_vec::<f32>()?;
    for (o, x) in out.iter().zip(&xs) {
        assert!(*o == 0.0 || *o == x * scale, "{o} from {x}");
    }
    // Its state counts the training calls.
    let state = layer.variables();
    assert_eq!(state.len(), 1);
    assert!(!state[0].trainable());
    assert_eq!(state[0].current().to_vec::<i64>()?[1], 3);
    assert!(layer.trainable_variables().is_empty());
    // Rate 0: the identity even while training.
    let none = Dropout::new(0.0)?;
    assert!(none.call(&x, true)?.bitwise_eq(&x));
    // Out-of-range rates.
    for r in [1.0, -0.1, 1.5, f64::NAN] {
        assert_eq!(kind(Dropout::new(r).map(|_| ())), ErrorKind::InvalidArgument, "rate {r}");
    }
    Ok(())
}

#[test]
fn dropout_in_a_graph_advances_its_state_with_the_updates() -> TestResult {
    let g = Graph::new();
    let layer = Dropout::new(0.5)?;
    let p = g.placeholder("x", DType::F32, [None, Some(64)])?;
    let y = layer.call(&p, true)?;
    let updates = layer.take_updates();
    assert_eq!(updates.len(), 1);
    assert!(layer.take_updates().is_empty(), "taking the updates clears them");
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let x = Tensor::ones([4, 64], DType::F32)?;
    let refs: Vec<&rivulet::Operation> = updates.iter().collect();
    let a = sess.run_with_targets(&[&y], &[(&p, &x)], &refs)?.remove(0);
    let b = sess.run_with_targets(&[&y], &[(&p, &x)], &refs)?.remove(0);
    assert!(!a.bitwise_eq(&b), "the state update changes the next mask");
    // Without the update the mask repeats.
    let c = sess.run(&[&y], &[(&p, &x)])?.remove(0);
    let d = sess.run(&[&y], &[(&p, &x)])?.remove(0);
    assert!(c.bitwise_eq(&d));
    assert!(a.to_vec::<f32>()?.iter().all(|&v| v == 0.0 || v == 2.0));
    Ok(())
}

/// Whether node `from` must run after node `to`: a path through data inputs
/// or control inputs. (An `Assign`'s first input names the variable it
/// writes; the session does not read it, so it orders nothing.)
fn runs_after(nodes: &[rivulet::graph::Node], from: usize, to: usize) -> bool {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![from];
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if std::mem::replace(&mut seen[n], true) {
            continue;
        }
        let node = &nodes[n];
        let data = if matches!(node.op, rivulet::Op::Assign { .. }) { &node.inputs[1..] } else { &node.inputs[..] };
        stack.extend(data.iter().map(|e| e.node));
        stack.extend(node.control_inputs.iter().copied());
    }
    false
}

#[test]
fn dropout_graph_mask_read_is_ordered_with_the_state_increment() -> TestResult {
    // In a graph the mask reads the state variable and an update op
    // increments it. Unless one is ordered after the other, a parallel
    // session run may increment first and draw the mask of the next call.
    let g = Graph::new();
    let layer = Dropout::new(0.5)?;
    let p = g.placeholder("x", DType::F32, [None, Some(8)])?;
    layer.call(&p, true)?;
    let updates = layer.take_updates();
    assert_eq!(updates.len(), 1);
    let nodes = g.nodes();
    let draws: Vec<usize> =
        (0..nodes.len()).filter(|&i| matches!(nodes[i].op, rivulet::Op::RandomLike { .. })).collect();
    assert_eq!(draws.len(), 1, "one random draw for the mask");
    let (draw, bump) = (draws[0], updates[0].id());
    // The helper itself: an assignment of a value computed from a read is
    // ordered after it; an increment by a constant is not.
    let h = Graph::new();
    let v = Variable::in_graph(&h, "v", &Tensor::from(vec![1.0f32]), false)?;
    let doubled = ops::mul(&v.read(), 2.0)?;
    let set = v.assign(&doubled)?;
    let inc = v.assign_add(&Tensor::from(vec![1.0f32]))?;
    let hn = h.nodes();
    let (doubled, set, inc) = (doubled.op().unwrap().id(), set.op().unwrap().id(), inc.op().unwrap().id());
    assert!(runs_after(&hn, set, doubled));
    assert!(!runs_after(&hn, inc, doubled) && !runs_after(&hn, doubled, inc));
    assert!(
        runs_after(&nodes, bump, draw) || runs_after(&nodes, draw, bump),
        "the state increment '{}' and the mask draw '{}' are unordered: a parallel run may draw the mask of the \
         next call",
        nodes[bump].name,
        nodes[draw].name
    );
    Ok(())
}

#[test]
fn dropout_graph_masks_equal_eager_masks_from_the_same_state() -> TestResult {
    let g = Graph::new();
    let layer = Dropout::new(0.4)?;
    let p = g.placeholder("x", DType::F32, [None, Some(32)])?;
    let y = layer.call(&p, true)?;
    let updates = layer.take_updates();
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let seed = sess.variable_value(&layer.variables()[0])?.to_vec::<i64>()?[0];
    let eager = Dropout::new(0.4)?;
    let x = Tensor::ones([16, 32], DType::F32)?;
    eager.build(&x)?;
    let state = eager.variables()[0].clone();
    let refs: Vec<&rivulet::Operation> = updates.iter().collect();
    for call in 0..200i64 {
        let got = sess.run_with_targets(&[&y], &[(&p, &x)], &refs)?.remove(0);
        state.assign(&Tensor::from(vec![seed, call]))?;
        let want = eager.call(&x, true)?;
        assert!(
            got.bitwise_eq(&want),
            "call {call}: the graph mask differs from the eager mask of state [seed, {call}]"
        );
    }
    assert_eq!(sess.variable_value(&layer.variables()[0])?.to_vec::<i64>()?, vec![seed, 200]);
    Ok(())
}

#[test]
fn layer_norm_normalizes_each_example() -> TestResult {
    let eps = 1e-3;
    let layer = LayerNorm::new(eps);
    let x = [1.0, 2.0, 3.0, 4.0, 10.0, -5.0, 0.0, 5.0, 2.5, 2.5, 100.0, 80.0, 90.0, 70.0, 60.0];
    let xt = Tensor::from_vec(x.to_vec(), [3, 5])?;
    let y = f64s(&layer.call(&xt, true)?);
    let mut want = Vec::new();
    for row in x.chunks(5) {
        let (m, s) = mean_std(row);
        want.extend(row.iter().map(|v| (v - m) / (s * s + eps).sqrt()));
    }
    assert_close(&y, &want, 1e-13, "layer norm");
    for (r, row) in y.chunks(5).enumerate() {
        let (m, s) = mean_std(row);
        assert!(m.abs() < 1e-12, "row {r} mean {m}");
        // Variance var / (var + eps): close to one for these rows.
        assert!((s * s - 1.0).abs() < 2e-3, "row {r} variance {}", s * s);
    }
    // gamma and beta scale and shift.
    let vars = layer.variables();
    assert_eq!(vars.len(), 2);
    assert_eq!(f64s(&vars[0].current()), vec![1.0; 5]);
    assert_eq!(f64s(&vars[1].current()), vec![0.0; 5]);
    let gamma = [1.0, 2.0, 0.5, -1.0, 3.0];
    let beta = [0.0, 1.0, -1.0, 0.5, 2.0];
    vars[0].assign(&Tensor::from(gamma.to_vec()))?;
    vars[1].assign(&Tensor::from(beta.to_vec()))?;
    let y = f64s(&layer.call(&xt, false)?);
    let want: Vec<f64> = want.iter().enumerate().map(|(i, v)| v * gamma[i % 5] + beta[i % 5]).collect();
    assert_close(&y, &want, 1e-13, "layer norm with gamma and beta");
    Ok(())
}

#[test]
fn batch_norm_eager_uses_batch_stats_and_updates_moving_averages() -> TestResult {
    let (momentum, eps) = (0.9, 1e-3);
    let bn = BatchNormalization::with(momentum, eps);
    let x1 = [1.0, 10.0, -1.0, 3.0, 20.0, 1.0, 5.0, 30.0, 0.0, 7.0, 40.0, 2.0];
    let x2 = [0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 9.0, 6.0, 7.0, 8.0];
    let stats = |x: &[f64]| -> (Vec<f64>, Vec<f64>) {
        (0..3)
            .map(|c| {
                let col: Vec<f64> = x.iter().skip(c).step_by(3).copied().collect();
                let (m, s) = mean_std(&col);
                (m, s * s)
            })
            .unzip()
    };
    let normalize = |x: &[f64], mean: &[f64], var: &[f64]| -> Vec<f64> {
        x.iter().enumerate().map(|(i, v)| (v - mean[i % 3]) / (var[i % 3] + eps).sqrt()).collect()
    };
    let y = bn.call(&Tensor::from_vec(x1.to_vec(), [4, 3])?, true)?;
    let (m1, v1) = stats(&x1);
    assert_close(&f64s(&y), &normalize(&x1, &m1, &v1), 1e-13, "training output");
    let vars = bn.variables();
    assert_eq!(vars.len(), 4);
    assert_eq!(bn.trainable_variables().len(), 2, "gamma and beta train; the moving stats do not");
    let (mm, mv) = (&vars[2], &vars[3]);
    assert!(mm.name().ends_with("moving_mean") && mv.name().ends_with("moving_variance"));
    // moving = momentum * moving + (1 - momentum) * batch, from 0 and 1.
    let mut want_mm: Vec<f64> = m1.iter().map(|m| 0.1 * m).collect();
    let mut want_mv: Vec<f64> = v1.iter().map(|v| 0.9 + 0.1 * v).collect();
    assert_close(&f64s(&mm.current()), &want_mm, 1e-14, "moving mean 1");
    assert_close(&f64s(&mv.current()), &want_mv, 1e-14, "moving variance 1");
    bn.call(&Tensor::from_vec(x2.to_vec(), [4, 3])?, true)?;
    let (m2, v2) = stats(&x2);
    for c in 0..3 {
        want_mm[c] = momentum * want_mm[c] + (1.0 - momentum) * m2[c];
        want_mv[c] = momentum * want_mv[c] + (1.0 - momentum) * v2[c];
    }
    assert_close(&f64s(&mm.current()), &want_mm, 1e-14, "moving mean 2");
    assert_close(&f64s(&mv.current()), &want_mv, 1e-14, "moving variance 2");
    // Inference: the moving statistics, and no update.
    let before = mm.current();
    let y = bn.call(&Tensor::from_vec(x1.to_vec(), [4, 3])?, false)?;
    assert_close(&f64s(&y), &normalize(&x1, &want_mm, &want_mv), 1e-13, "inference output");
    assert!(mm.current().bitwise_eq(&before), "inference leaves the moving mean");
    // Rank-3 inputs: statistics over every axis but the last.
    let bn3 = BatchNormalization::with(0.5, eps);
    let x3: Vec<f64> = (0..12).map(|i| (i * i) as f64 / 10.0).collect();
    let y = bn3.call(&Tensor::from_vec(x3.clone(), [2, 2, 3])?, true)?;
    let (m3, v3) = stats(&x3);
    assert_close(&f64s(&y), &normalize(&x3, &m3, &v3), 1e-13, "rank-3 training output");
    assert!(bn.take_updates().is_empty(), "eager mode leaves no pending updates");
    Ok(())
}

#[test]
fn batch_norm_graph_mode_puts_moving_average_updates_in_take_updates() -> TestResult {
    let (momentum, eps) = (0.8, 1e-3);
    let g = Graph::new();
    let bn = BatchNormalization::with(momentum, eps);
    let p = g.placeholder("x", DType::F64, [None, Some(2)])?;
    let y_train = bn.call(&p, true)?;
    let updates = bn.take_updates();
    assert_eq!(updates.len(), 2);
    assert!(bn.take_updates().is_empty());
    let y_infer = bn.call(&p, false)?;
    assert!(bn.take_updates().is_empty(), "inference adds no updates");
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let x = [1.0, 4.0, 3.0, 8.0, 8.0, 0.0];
    let xt = Tensor::from_vec(x.to_vec(), [3, 2])?;
    let vars = bn.variables();
    // Without the updates, training-mode output leaves the moving stats alone.
    let out = sess.run(&[&y_train], &[(&p, &xt)])?;
    let col = |c: usize| -> Vec<f64> { x.iter().skip(c).step_by(2).copied().collect() };
    let (m0, s0) = mean_std(&col(0));
    let (m1, s1) = mean_std(&col(1));
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { (v - m0) / (s0 * s0 + eps).sqrt() } else { (v - m1) / (s1 * s1 + eps).sqrt() })
        .collect();
    assert_close(&f64s(&out[0]), &want, 1e-13, "graph training output");
    assert_eq!(f64s(&sess.variable_value(&vars[2])?), vec![0.0, 0.0]);
    assert_eq!(f64s(&sess.variable_value(&vars[3])?), vec![1.0, 1.0]);
    // With them: the momentum formula.
    let refs: Vec<&rivulet::Operation> = updates.iter().collect();
    sess.run_with_targets(&[&y_train], &[(&p, &xt)], &refs)?;
    let want_mm = [0.2 * m0, 0.2 * m1];
    let want_mv = [0.8 + 0.2 * s0 * s0, 0.8 + 0.2 * s1 * s1];
    assert_close(&f64s(&sess.variable_value(&vars[2])?), &want_mm, 1e-14, "graph moving mean");
    assert_close(&f64s(&sess.variable_value(&vars[3])?), &want_mv, 1e-14, "graph moving variance");
    // Inference uses them.
    let out = sess.run(&[&y_infer], &[(&p, &xt)])?;
    let want: Vec<f64> =
        x.iter().enumerate().map(|(i, v)| (v - want_mm[i % 2]) / (want_mv[i % 2] + eps).sqrt()).collect();
    assert_close(&f64s(&out[0]), &want, 1e-13, "graph inference output");
    Ok(())
}

#[test]
fn embedding_gathers_rows() -> TestResult {
    let layer = Embedding::new(10, 4);
    let idx = Tensor::from([[1i32, 3], [9, 0]]);
    let out = layer.call(&idx, false)?;
    assert_eq!(dims(&out), vec![2, 2, 4]);
    assert_eq!(out.dtype(), DType::F32);
    let vars = layer.variables();
    assert_eq!(vars.len(), 1);
    assert!(vars[0].trainable());
    let table = f64s(&vars[0].current());
    assert_eq!(dims(&vars[0].current()), vec![10, 4]);
    assert!(table.iter().all(|v| v.abs() <= 0.05), "Keras's uniform +-0.05");
    let got = f64s(&out);
    for (k, &i) in [1usize, 3, 9, 0].iter().enumerate() {
        assert_eq!(&got[k * 4..k * 4 + 4], &table[i * 4..i * 4 + 4], "row {i}");
    }
    let out = layer.call(&Tensor::from(vec![2i64, 2]), false)?;
    assert_eq!(f64s(&out), [&table[8..12], &table[8..12]].concat());
    // An index beyond the table is an error, not a panic.
    assert!(layer.call(&Tensor::from(vec![10i32]), false).is_err());
    // Graph mode: symbolic indices.
    let g = Graph::new();
    let emb = Embedding::new(5, 3);
    let p = g.placeholder("idx", DType::I32, [None])?;
    let y = emb.call(&p, false)?;
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer()?])?;
    let table = f64s(&sess.variable_value(&emb.variables()[0])?);
    let out = sess.run(&[&y], &[(&p, &Tensor::from(vec![4i32, 0]))])?;
    assert_eq!(f64s(&out[0]), [&table[12..15], &table[0..3]].concat());
    Ok(())
}

#[test]
fn flatten_and_activation_layers() -> TestResult {
    let f = Flatten::new();
    let x = Tensor::from_vec((0..24).map(|i| i as f32).collect::<Vec<_>>(), [2, 3, 4])?;
    let y = f.call(&x, false)?;
    assert_eq!(dims(&y), vec![2, 12]);
    assert_eq!(y.to_vec::<f32>()?, x.to_vec::<f32>()?);
    assert!(f.variables().is_empty());
    let y = f.call(&Tensor::ones([5, 2], DType::F32)?, false)?;
    assert_eq!(dims(&y), vec![5, 2]);
    let g = Graph::new();
    let p = g.placeholder("x", DType::F32, [None, Some(3), Some(4)])?;
    assert_eq!(f.call(&p, false)?.shape(), &Shape::from([None, Some(12)]));
    let q = g.placeholder("q", DType::F32, [None, None, Some(4)])?;
    assert_eq!(kind(f.call(&q, false)), ErrorKind::Shape);
    let a = ActivationLayer::new(Activation::Relu);
    assert_eq!(a.call(&Tensor::from(vec![-1.0f32, 0.0, 2.0]), true)?.to_vec::<f32>()?, vec![0.0, 0.0, 2.0]);
    let s = ActivationLayer::new(Activation::Sigmoid);
    assert_close(&f64s(&s.call(&Tensor::from(vec![0.0f64, 2.0]), false)?), &[0.5, sigmoid(2.0)], 1e-15, "sigmoid");
    let sm = ActivationLayer::new(Activation::Softmax);
    let z = [1.0, 2.0, 3.0];
    assert_close(&f64s(&sm.call(&Tensor::from(z.to_vec()), false)?), &softmax_row(&z), 1e-15, "softmax");
    assert!(a.variables().is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------
// Sequential
// ---------------------------------------------------------------------------

/// Linearly separable 2-class data in 2-D with a margin: label 1 where
/// `x0 - 0.5 x1 > 0.1`.
fn separable(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    while ys.len() < n {
        let (a, b) = (rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0));
        let s = a - 0.5 * b - 0.1;
        if s.abs() < 0.15 {
            continue;
        }
        xs.extend([a as f32 * 2.0, b as f32 * 2.0]);
        ys.push(i32::from(s > 0.0));
    }
    (Tensor::from_vec(xs, [n, 2]).unwrap(), Tensor::from(ys))
}

fn classifier(mode: ExecutionMode) -> Sequential {
    classifier_of_width(8, mode)
}

/// Dense(width, tanh) then Dense(2) logits, Adam, sparse cross-entropy.
fn classifier_of_width(width: usize, mode: ExecutionMode) -> Sequential {
    let mut m = Sequential::new(vec![Box::new(Dense::new(width, Activation::Tanh))]);
    m.add(Dense::new(2, Activation::Linear));
    m.compile(
        Optimizer::adam(0.05),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        mode,
    );
    m
}

fn silent(epochs: usize, batch_size: usize) -> FitOptions {
    FitOptions { epochs, batch_size, verbose: Verbosity::Silent, ..FitOptions::default() }
}

/// Accuracy and mean cross-entropy of logits against labels, in f64.
fn accuracy_and_ce(logits: &Tensor, labels: &Tensor) -> (f64, f64) {
    let z = f64s(logits);
    let y = values(labels);
    let k = dims(logits)[1];
    let (mut hits, mut ce) = (0.0, 0.0);
    for (row, &label) in z.chunks(k).zip(&y) {
        let argmax = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        hits += f64::from(argmax == label as usize);
        ce -= log_softmax_row(row)[label as usize];
    }
    (hits / y.len() as f64, ce / y.len() as f64)
}

fn fit_separable(mode: ExecutionMode) -> TestResult {
    let (x, y) = separable(250, 11);
    let model = classifier(mode);
    let options = FitOptions { validation_split: 0.2, seed: 3, ..silent(15, 16) };
    let history = model.fit(&x, &y, &options)?;
    assert_eq!(history.epochs.len(), 15);
    for (e, logs) in history.epochs.iter().enumerate() {
        let keys: Vec<&str> = logs.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["accuracy", "loss", "val_accuracy", "val_loss"], "epoch {e}");
        assert!(logs.values().all(|v| v.is_finite()));
    }
    let loss = history.get("loss");
    assert_eq!(loss.len(), 15);
    assert!(loss[14] < 0.5 * loss[0], "{mode:?}: loss did not decrease: {loss:?}");
    assert!(history.last("accuracy").unwrap() > 0.95, "{mode:?}: {:?}", history.get("accuracy"));
    assert!(history.last("val_accuracy").unwrap() > 0.95, "{mode:?}: {:?}", history.get("val_accuracy"));
    // The split holds out the last 20% (50 examples): evaluating on them gives val_*.
    let held = ops::slice(&x, &[200, 0], &[50, 2])?;
    let held_y = ops::slice(&y, &[200], &[50])?;
    let eval = model.evaluate(&held, &held_y, 16)?;
    let names: Vec<&str> = eval.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["loss", "accuracy"]);
    assert_eq!(eval[0].1, history.last("val_loss").unwrap(), "{mode:?}: evaluate vs val_loss");
    assert_eq!(eval[1].1, history.last("val_accuracy").unwrap());
    // ... and agrees with predictions scored here.
    let pred = model.predict(&held, 7)?;
    assert_eq!(dims(&pred), vec![50, 2]);
    assert_eq!(pred.dtype(), DType::F32);
    let (acc, ce) = accuracy_and_ce(&pred, &held_y);
    assert_close1(eval[1].1, acc, 1e-6, "evaluate accuracy vs predictions");
    assert_close1(eval[0].1, ce, 1e-5, "evaluate loss vs predictions");
    // Explicit validation data.
    let (vx, vy) = separable(60, 99);
    let options = FitOptions { validation_data: Some((vx.clone(), vy.clone())), ..silent(2, 32) };
    let h2 = model.fit(&x, &y, &options)?;
    assert_eq!(h2.epochs.len(), 2);
    assert!(h2.epochs.iter().all(|e| e.contains_key("val_loss") && e.contains_key("val_accuracy")));
    let eval = model.evaluate(&vx, &vy, 32)?;
    assert_eq!(eval[0].1, h2.last("val_loss").unwrap());
    assert!(eval[1].1 > 0.95, "{mode:?}: accuracy on fresh data {}", eval[1].1);
    // Without validation: only loss and accuracy; initial_epoch skips epochs.
    let h3 = model.fit(&x, &y, &FitOptions { initial_epoch: 2, ..silent(3, 64) })?;
    assert_eq!(h3.epochs.len(), 1);
    assert_eq!(h3.epochs[0].keys().map(String::as_str).collect::<Vec<_>>(), vec!["accuracy", "loss"]);
    Ok(())
}

#[test]
fn sequential_fit_eager_learns_separable_data() -> TestResult {
    fit_separable(ExecutionMode::Eager)
}

#[test]
fn sequential_fit_graph_learns_separable_data() -> TestResult {
    fit_separable(ExecutionMode::Graph)
}

#[test]
fn sequential_binary_and_regression_losses_train() -> TestResult {
    // One logit with binary cross-entropy, f32 labels [n, 1].
    let (x, y) = separable(200, 5);
    let yf = ops::reshape(&ops::cast(&y, DType::F32)?, &[-1, 1])?;
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let mut m = Sequential::new(vec![Box::new(Dense::new(1, Activation::Linear))]);
        m.compile(
            Optimizer::sgd(0.5),
            Loss::BinaryCrossentropy { from_logits: true, label_smoothing: 0.0 },
            &[Metric::BinaryAccuracy { threshold: 0.0 }.named("accuracy")],
            mode,
        );
        let h = m.fit(&x, &yf, &silent(20, 20))?;
        assert!(h.last("accuracy").unwrap() > 0.95, "{mode:?}: {:?}", h.get("accuracy"));
    }
    // Linear regression y = 2 x0 - x1 + 0.5 with MSE and the mae metric.
    let xs = f64s(&x);
    let t: Vec<f32> = xs.chunks(2).map(|r| (2.0 * r[0] - r[1] + 0.5) as f32).collect();
    let yt = Tensor::from_vec(t, [200, 1])?;
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let mut m = Sequential::new(vec![Box::new(Dense::new(1, Activation::Linear))]);
        m.compile(Optimizer::sgd(0.1), Loss::MeanSquaredError, &[Metric::Loss(Loss::MeanAbsoluteError)], mode);
        let h = m.fit(&x, &yt, &FitOptions { shuffle: false, ..silent(30, 10) })?;
        assert!(h.last("loss").unwrap() < 1e-4, "{mode:?}: {:?}", h.get("loss"));
        assert!(h.epochs[0].contains_key("mean_absolute_error"));
        let w = m.get_weights()?;
        assert_close(&f64s(&w[0].1), &[2.0, -1.0], 1e-2, "regression kernel");
        assert_close(&f64s(&w[1].1), &[0.5], 1e-2, "regression bias");
    }
    Ok(())
}

#[test]
fn sequential_errors() -> TestResult {
    let (x, y) = separable(20, 1);
    let m = Sequential::new(vec![Box::new(Dense::new(2, Activation::Linear))]);
    assert_eq!(kind(m.fit(&x, &y, &silent(1, 4))), ErrorKind::FailedPrecondition);
    assert_eq!(kind(m.evaluate(&x, &y, 4)), ErrorKind::FailedPrecondition);
    assert_eq!(kind(m.build(&x, &y)), ErrorKind::FailedPrecondition);
    assert!(m.optimizer().is_none());
    for mode in [ExecutionMode::Eager, ExecutionMode::Graph] {
        let m = classifier(mode);
        let short_y = ops::slice(&y, &[0], &[19])?;
        assert_eq!(kind(m.fit(&x, &short_y, &silent(1, 4))), ErrorKind::Shape, "{mode:?}");
        assert_eq!(kind(m.evaluate(&x, &short_y, 4)), ErrorKind::Shape, "{mode:?}");
        assert_eq!(kind(m.fit(&x, &y, &silent(1, 0))), ErrorKind::InvalidArgument, "{mode:?}");
        let bad_split = FitOptions { validation_split: 1.0, ..silent(1, 4) };
        assert_eq!(kind(m.fit(&x, &y, &bad_split)), ErrorKind::InvalidArgument, "{mode:?}");
        let bad_val = FitOptions { validation_data: Some((x.clone(), short_y.clone())), ..silent(1, 4) };
        assert_eq!(kind(m.fit(&x, &y, &bad_val)), ErrorKind::Shape, "{mode:?}");
        let empty_x = Tensor::zeros([0, 2], DType::F32)?;
        let empty_y = Tensor::zeros([0], DType::I32)?;
        assert_eq!(kind(m.fit(&empty_x, &empty_y, &silent(1, 4))), ErrorKind::Shape, "{mode:?}");
    }
    // Inputs of the wrong width once the model is built.
    let m = classifier(ExecutionMode::Eager);
    m.call(&x, false)?;
    let wide = Tensor::zeros([3, 5], DType::F32)?;
    assert_eq!(kind(m.call(&wide, false)), ErrorKind::Shape);
    assert_eq!(kind(m.predict(&wide, 2)), ErrorKind::Shape);
    Ok(())
}

// Keras allows predict on a compiled model before any fit; the graph built
// for it must not fix the label placeholder's dtype or shape.

#[test]
fn graph_predict_before_fit_with_integer_labels() -> TestResult {
    let (x, y) = separable(64, 21);
    let m = classifier(ExecutionMode::Graph);
    let p = m.predict(&x, 16)?;
    assert_eq!(dims(&p), vec![64, 2]);
    let h = m.fit(&x, &y, &silent(1, 16))?;
    assert_eq!(h.epochs.len(), 1);
    assert_eq!(dims(&m.predict(&x, 16)?), vec![64, 2]);
    Ok(())
}

#[test]
fn graph_predict_before_fit_with_column_targets() -> TestResult {
    let (x, _) = separable(64, 22);
    let mut r = Sequential::new(vec![Box::new(Dense::new(1, Activation::Linear))]);
    r.compile(Optimizer::sgd(0.1), Loss::MeanSquaredError, &[], ExecutionMode::Graph);
    assert_eq!(dims(&r.predict(&x, 16)?), vec![64, 1]);
    let t = Tensor::ones([64, 1], DType::F32)?;
    assert_eq!(r.fit(&x, &t, &silent(1, 16))?.epochs.len(), 1);
    assert_eq!(r.evaluate(&x, &t, 16)?.len(), 1);
    Ok(())
}

/// A digits classifier: 64 -> 32 relu -> 10 logits.
fn digits_model(mode: ExecutionMode) -> Sequential {
    let mut m =
        Sequential::new(vec![Box::new(Dense::new(32, Activation::Relu)), Box::new(Dense::new(10, Activation::Linear))]);
    m.compile(
        Optimizer::adam(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        mode,
    );
    m
}

fn fit_digits(mode: ExecutionMode) -> TestResult {
    let d = rivulet::data::load_digits()?;
    assert_eq!(dims(&d.train_x), vec![1437, 64]);
    assert_eq!(dims(&d.test_y), vec![360]);
    let m = digits_model(mode);
    let h = m.fit(&d.train_x, &d.train_y, &FitOptions { seed: 1, ..silent(5, 32) })?;
    let loss = h.get("loss");
    assert!(loss.windows(2).all(|w| w[1] < w[0]), "{mode:?}: loss not decreasing: {loss:?}");
    let eval = m.evaluate(&d.test_x, &d.test_y, 128)?;
    assert!(eval[1].1 > 0.9, "{mode:?}: test accuracy {}", eval[1].1);
    let pred = m.predict(&d.test_x, 100)?;
    assert_eq!(dims(&pred), vec![360, 10]);
    let (acc, _) = accuracy_and_ce(&pred, &d.test_y);
    assert_close1(acc, eval[1].1, 1e-6, "digits accuracy from predictions");
    Ok(())
}

#[test]
fn digits_eager_reaches_90_percent() -> TestResult {
    fit_digits(ExecutionMode::Eager)
}

#[test]
fn digits_graph_reaches_90_percent() -> TestResult {
    fit_digits(ExecutionMode::Graph)
}

/// The model of the eager/graph comparison: dense, batch norm, relu, dense.
fn comparison_model(mode: ExecutionMode) -> Sequential {
    let mut m = Sequential::new(vec![]);
    m.add(Dense::new(8, Activation::Linear));
    m.add(BatchNormalization::with(0.9, 1e-3));
    m.add(ActivationLayer::new(Activation::Relu));
    m.add(Dense::new(3, Activation::Linear));
    m.compile(
        Optimizer::adam(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        mode,
    );
    m
}

#[test]
fn eager_and_graph_training_agree() -> TestResult {
    let mut rng = Rng(77);
    let xs: Vec<f32> = (0..64 * 4).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let x = Tensor::from_vec(xs.clone(), [64, 4])?;
    let y = Tensor::from(xs.chunks(4).map(|r| i32::from(r[0] > r[1]) + i32::from(r[2] > 0.3)).collect::<Vec<_>>());
    let eager = comparison_model(ExecutionMode::Eager);
    let graph = comparison_model(ExecutionMode::Graph);
    eager.build(&x, &y)?;
    graph.build(&x, &y)?;
    // Same starting point: the eager model's weights restored into the graph model.
    let start = eager.checkpoint(0)?;
    assert_eq!(graph.restore(&start)?, 0);
    let gstart = graph.checkpoint(0)?;
    assert_eq!(start.tensors.keys().collect::<Vec<_>>(), gstart.tensors.keys().collect::<Vec<_>>());
    for (k, t) in &start.tensors {
        assert!(t.bitwise_eq(&gstart.tensors[k]), "{k} not copied");
    }
    let options = FitOptions { shuffle: false, ..silent(2, 16) };
    let he = eager.fit(&x, &y, &options)?;
    let hg = graph.fit(&x, &y, &options)?;
    let (ce, cg) = (eager.checkpoint(2)?, graph.checkpoint(2)?);
    assert_eq!(ce.tensors.len(), cg.tensors.len());
    // Dense's 2 variables, batch norm's 4, dense's 2, Adam's 2 slots for the 6 trainable ones, the counter.
    assert_eq!(ce.tensors.len(), 2 + 4 + 2 + 2 * 6 + 1);
    assert_eq!(ce.tensors["optimizer/iterations"].to_scalar::<i64>()?, 8);
    let mut not_bitwise = Vec::new();
    for (k, te) in &ce.tensors {
        let tg = &cg.tensors[k];
        assert_eq!(te.dtype(), tg.dtype(), "{k}");
        assert_eq!(dims(te), dims(tg), "{k}");
        if !te.bitwise_eq(tg) {
            not_bitwise.push(k.clone());
        }
        let (a, b) = (values(te), values(tg));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!((p - q).abs() <= 1e-6 * p.abs().max(q.abs()).max(1e-3), "{k}[{i}]: eager {p} vs graph {q}");
        }
    }
    if !not_bitwise.is_empty() {
        eprintln!("note: eager and graph training agree within 1e-6 but not bitwise for {not_bitwise:?}");
    }
    // The weights moved, and the moving statistics too.
    assert!(!ce.tensors["layer_0/kernel"].bitwise_eq(&start.tensors["layer_0/kernel"]));
    assert!(!ce.tensors["layer_1/moving_mean"].bitwise_eq(&start.tensors["layer_1/moving_mean"]));
    for key in ["loss", "accuracy"] {
        assert_close(&he.get(key), &hg.get(key), 1e-5, key);
    }
    Ok(())
}

/// A graph-mode model predicts from a parallel loop (its runs hold no lock,
/// so a run that picks up another prediction on the same thread goes on),
/// and every prediction equals the serial one bit for bit.
#[test]
fn graph_model_predicts_from_a_parallel_loop() -> TestResult {
    use rayon::prelude::*;
    let (x, y) = separable(256, 9);
    let m = classifier_of_width(512, ExecutionMode::Graph);
    m.fit(&x, &y, &silent(2, 64))?;
    let serial = m.predict(&x, 256)?;
    let parallel: Vec<Tensor> = (0..16).into_par_iter().map(|_| m.predict(&x, 256)).collect::<rivulet::Result<_>>()?;
    for p in &parallel {
        assert!(p.bitwise_eq(&serial));
    }
    let scores = m.evaluate(&x, &y, 256)?;
    assert!(scores.iter().any(|(k, v)| k == "loss" && v.is_finite()), "{scores:?}");
    Ok(())
}
