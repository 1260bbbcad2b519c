//! Automatic differentiation: every differentiable op's gradient rule checked
//! against central finite differences in f64 (eager, with a `GradientTape`),
//! graph-mode `gradients()` checked against the tape, second derivatives and
//! Hessian-vector products, tape semantics, and training graph variables.
//!
//! The harness differentiates `L = sum(f(x) * w)` where `w` is a fixed random
//! weight tensor of `f(x)`'s shape, so that every output element (and every
//! output position) contributes to the gradient. The reference is
//! `(L(x + h e_j) - L(x - h e_j)) / (2h)` for each element `j` of each input,
//! with `h = 1e-6 * max(1, |x_j|)` and both `L` evaluated in f64 without a tape.
//! Inputs are drawn by a small deterministic RNG, away from the kinks and
//! discontinuities of the op under test (so that the finite difference is
//! meaningful there), with random shapes and broadcasting between inputs.

use crate::common::*;

use rivulet::autodiff::tape::untracked;
use rivulet::ops::{self, BinaryOp, PadMode, ReduceOp, SliceItem, UnaryOp};
use rivulet::{gradients, Axes, DType, ErrorKind, GradientTape, Graph, Result, Session, Shape, Tensor, Unconnected};
use rivulet::{Operation, Variable};
use std::cell::Cell;

// ---------------------------------------------------------------------------
// Deterministic random numbers and tensors
// ---------------------------------------------------------------------------

/// Drawing helpers on the shared test generator.
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn named(name: &str) -> Rng {
        Rng::new(seed_of(name))
    }
    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    /// A shape of rank in `min_rank..=max_rank` with dimensions in `1..=max_dim`.
    fn shape(&mut self, min_rank: usize, max_rank: usize, max_dim: usize) -> Vec<usize> {
        let rank = min_rank + self.below(max_rank - min_rank + 1);
        (0..rank).map(|_| 1 + self.below(max_dim)).collect()
    }
}

/// FNV-1a of a name: a stable seed per test case.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// An f64 tensor.
fn t64(data: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape.to_vec()).unwrap()
}

/// An i64 index tensor.
fn idx(data: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape.to_vec()).unwrap()
}

/// Uniform values in `[lo, hi)`.
fn uniform(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    t64((0..numel(shape)).map(|_| rng.uniform(lo, hi)).collect(), shape)
}

/// Magnitudes uniform in `[lo, hi)` with random signs.
fn signed(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    t64((0..numel(shape)).map(|_| if rng.coin() { 1.0 } else { -1.0 } * rng.uniform(lo, hi)).collect(), shape)
}

/// Values in `[lo, hi)` at least `margin` away from each point of `avoid`.
fn away(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64, avoid: &[f64], margin: f64) -> Tensor {
    let draw = |rng: &mut Rng| loop {
        let v = rng.uniform(lo, hi);
        if avoid.iter().all(|a| (v - a).abs() >= margin) {
            return v;
        }
    };
    t64((0..numel(shape)).map(|_| draw(rng)).collect(), shape)
}

/// Pairwise distinct values in `[lo, hi)`, at least `(hi - lo) / (2n)` apart
/// (a shuffled grid with jitter), so that max/min/top_k have no ties.
fn distinct(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = numel(shape);
    let mut slots: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        slots.swap(i, j);
    }
    let cell = (hi - lo) / n.max(1) as f64;
    t64(slots.iter().map(|&s| lo + cell * (s as f64 + 0.25 + 0.5 * rng.unit())).collect(), shape)
}

/// The weights `w` of the loss `sum(f(x) * w)`: magnitudes in [0.5, 1.5), random signs.
fn weights(name: &str, shape: &[usize]) -> Tensor {
    signed(&mut Rng::named(&format!("weights/{name}")), shape, 0.5, 1.5)
}

/// `x` with element `j` set to `v`.
fn with_element(x: &Tensor, j: usize, v: f64) -> Tensor {
    let mut data = values(x);
    data[j] = v;
    t64(data, &dims(x))
}

/// NumPy broadcast of two shapes, and for each output element the flat
/// positions it reads in `a` and in `b`.
fn broadcast_pairs(sa: &[usize], sb: &[usize]) -> Vec<(usize, usize)> {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&p, &q)| p.max(q)).collect();
    (0..numel(&out))
        .map(|i| {
            let ix = unravel(i, &out);
            let ia: Vec<usize> = ix.iter().zip(&pa).map(|(&k, &d)| if d == 1 { 0 } else { k }).collect();
            let ib: Vec<usize> = ix.iter().zip(&pb).map(|(&k, &d)| if d == 1 { 0 } else { k }).collect();
            (ravel(&ia, &pa), ravel(&ib, &pb))
        })
        .collect()
}

#[track_caller]
fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{name}: element {i}: got {g}, expected {w} (tol {tol})");
    }
}

// ---------------------------------------------------------------------------
// The gradient-check harness
// ---------------------------------------------------------------------------

/// Finite-difference settings: relative step, and the allowed difference
/// `rel * max(|analytic|, |numeric|) + abs + noise`, where `noise` bounds the
/// rounding error of the central difference (`2 eps sum|y w| / h`, i.e. the
/// f64 rounding of the two loss evaluations divided by the step).
#[derive(Clone, Copy, Debug)]
struct Tol {
    step: f64,
    rel: f64,
    abs: f64,
}

const TOL: Tol = Tol { step: 1e-6, rel: 1e-6, abs: 1e-8 };

/// `(sum(f(xs) * w), sum|f(xs) * w|)` evaluated in f64 without any tape.
fn loss_of(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], w: &[f64]) -> (f64, f64) {
    let y = values(&f(xs).expect("forward evaluation"));
    assert_eq!(y.len(), w.len(), "output size changed under perturbation");
    y.iter().zip(w).fold((0.0, 0.0), |(s, a), (&y, &w)| (s + y * w, a + (y * w).abs()))
}

/// Gradients of `sum(f(xs) * w)` with respect to every input, from a tape.
fn tape_gradients(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], w: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let tape = GradientTape::new();
    for x in xs {
        tape.watch(x);
    }
    let y = f(xs)?;
    let loss = ops::sum(&ops::mul(&y, w)?, Axes::All, false)?;
    let refs: Vec<&Tensor> = xs.iter().collect();
    tape.gradient(&loss, &refs)
}

/// Check the tape's gradient of `sum(f(xs) * w)` against central finite
/// differences for every element of every input; returns the analytic gradients.
#[track_caller]
fn check_grad(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor]) -> Vec<Tensor> {
    check_grad_tol(name, f, xs, TOL)
}

#[track_caller]
fn check_grad_tol(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], tol: Tol) -> Vec<Tensor> {
    let f: &dyn Fn(&[Tensor]) -> Result<Tensor> = &f;
    if DOUBLE_BACKWARD.with(Cell::get) {
        return check_double_backward(name, f, xs, tol);
    }
    let y = f(xs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert_eq!(y.dtype(), DType::F64, "{name}: output dtype");
    let w = weights(name, &dims(&y));
    let wv = values(&w);
    let grads = tape_gradients(f, xs, &w).unwrap_or_else(|e| panic!("{name}: gradient failed: {e}"));
    assert_eq!(grads.len(), xs.len(), "{name}: number of gradients");
    let mut failures = Vec::new();
    let mut out = Vec::new();
    for (i, (x, g)) in xs.iter().zip(grads).enumerate() {
        let Some(g) = g else {
            failures.push(format!("input {i} {:?}: gradient is None", dims(x)));
            out.push(ops::zeros_like(x).unwrap());
            continue;
        };
        assert_eq!(g.dtype(), x.dtype(), "{name}: gradient dtype of input {i}");
        assert_eq!(dims(&g), dims(x), "{name}: gradient shape of input {i}");
        let analytic = values(&g);
        for (j, &xj) in values(x).iter().enumerate() {
            let h = tol.step * xj.abs().max(1.0);
            let (xp, xm) = (xj + h, xj - h);
            let mut plus = xs.to_vec();
            plus[i] = with_element(x, j, xp);
            let mut minus = xs.to_vec();
            minus[i] = with_element(x, j, xm);
            let (lp, sp) = loss_of(f, &plus, &wv);
            let (lm, sm) = loss_of(f, &minus, &wv);
            let numeric = (lp - lm) / (xp - xm);
            let noise = 4.0 * f64::EPSILON * sp.max(sm) / (xp - xm);
            let a = analytic[j];
            let allowed = tol.rel * a.abs().max(numeric.abs()) + tol.abs + noise;
            // Written so that a NaN on either side fails.
            let ok = (a - numeric).abs() <= allowed;
            if !ok {
                failures.push(format!(
                    "input {i} {:?} element {j} (x = {xj}): analytic {a}, numeric {numeric}, diff {:e} > {allowed:e}",
                    dims(x),
                    (a - numeric).abs()
                ));
            }
        }
        out.push(g);
    }
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(10);
        panic!("{name}: {n} gradient mismatches, first ones:\n  {}", failures.join("\n  "));
    }
    out
}

// ---------------------------------------------------------------------------
// Double backward: gradients of the gradient rules
// ---------------------------------------------------------------------------
//
// The gradient `g(w) = J^T w` of `sum(f(x) * w)` is linear in the weights, so
// `d/dw sum(g(w) * v) = J v`: differentiating the backward pass with respect
// to `w` (with an outer tape) gives the directional derivative of `f` along
// `v`, which central differences of `f` give independently. This exercises
// the gradient rules of the ops that gradient rules emit (SumTo,
// BroadcastLike, ReshapeLike, StridedSliceGrad, GatherGrad, GatherNdGrad,
// SplitLike, ...), which first-order checks never differentiate.

thread_local! {
    /// When set, `check_grad` runs the double-backward check instead.
    static DOUBLE_BACKWARD: Cell<bool> = const { Cell::new(false) };
}

fn check_double_backward(name: &str, f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], tol: Tol) -> Vec<Tensor> {
    let y = f(xs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let w = weights(name, &dims(&y));
    let mut rng = Rng::named(&format!("direction/{name}"));
    let vs: Vec<Tensor> = xs.iter().map(|x| uniform(&mut rng, &dims(x), -1.0, 1.0)).collect();
    let (first, jv) = {
        let outer = GradientTape::new();
        outer.watch(&w);
        let inner = GradientTape::new();
        for x in xs {
            inner.watch(x);
        }
        let y = f(xs).unwrap();
        let loss = ops::sum(&ops::mul(&y, &w).unwrap(), Axes::All, false).unwrap();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let gs = inner.gradient(&loss, &refs).unwrap_or_else(|e| panic!("{name}: first gradient failed: {e}"));
        drop(inner);
        let gs: Vec<Tensor> = gs
            .into_iter()
            .enumerate()
            .map(|(i, g)| g.unwrap_or_else(|| panic!("{name}: no gradient for input {i}")))
            .collect();
        let mut s = Tensor::scalar(0.0f64);
        for (g, v) in gs.iter().zip(&vs) {
            s = ops::add(&s, &ops::sum(&ops::mul(g, v).unwrap(), Axes::All, false).unwrap()).unwrap();
        }
        let jv = outer
            .gradient(&s, &[&w])
            .unwrap_or_else(|e| panic!("{name}: double backward failed: {e}"))
            .remove(0)
            .map(|t| values(&t))
            // A gradient independent of w (zero-gradient ops): J v = 0.
            .unwrap_or_else(|| vec![0.0; values(&w).len()]);
        (gs, jv)
    };
    let scale = xs.iter().flat_map(values).fold(1.0f64, |m, v| m.max(v.abs()));
    let eps = tol.step * scale;
    let shifted = |sign: f64| -> Vec<f64> {
        let moved: Vec<Tensor> = xs
            .iter()
            .zip(&vs)
            .map(|(x, v)| t64(values(x).iter().zip(values(v)).map(|(a, b)| a + sign * eps * b).collect(), &dims(x)))
            .collect();
        values(&f(&moved).expect("forward evaluation"))
    };
    let (yp, ym) = (shifted(1.0), shifted(-1.0));
    let mut failures = Vec::new();
    for (k, ((&a, &p), &m)) in jv.iter().zip(&yp).zip(&ym).enumerate() {
        let numeric = (p - m) / (2.0 * eps);
        let noise = 4.0 * f64::EPSILON * p.abs().max(m.abs()).max(1.0) / eps;
        let allowed = tol.rel * a.abs().max(numeric.abs()) + tol.abs + noise;
        // Written so that a NaN on either side fails.
        let ok = (a - numeric).abs() <= allowed;
        if !ok {
            failures.push(format!("output element {k}: J v by double backward {a}, numeric {numeric}"));
        }
    }
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(10);
        panic!("{name}: double backward: {n} mismatches, first ones:\n  {}", failures.join("\n  "));
    }
    first
}

/// Run each test body with `check_grad` in double-backward mode; report every
/// failing one (not just the first).
fn run_double_backward(cases: Vec<(String, Box<dyn Fn()>)>) {
    let mut failed = Vec::new();
    let n = cases.len();
    for (name, body) in cases {
        DOUBLE_BACKWARD.with(|d| d.set(true));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&*body));
        DOUBLE_BACKWARD.with(|d| d.set(false));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let msg: String = msg.lines().take(4).collect::<Vec<_>>().join("\n      ");
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(failed.is_empty(), "double backward failed for {} of {n}:\n  {}", failed.len(), failed.join("\n  "));
}

macro_rules! double_backward_cases {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f).to_string(), Box::new($f) as Box<dyn Fn()>)),*]
    };
}

#[test]
fn double_backward_unary_ops() {
    let cases =
        UnaryOp::ALL.iter().map(|&op| (op.name().to_string(), Box::new(move || check_unary(op)) as Box<dyn Fn()>));
    run_double_backward(cases.collect());
}

#[test]
fn double_backward_binary_ops() {
    let cases =
        BinaryOp::ALL.iter().map(|&op| (op.name().to_string(), Box::new(move || check_binary(op)) as Box<dyn Fn()>));
    let mut cases: Vec<_> = cases.collect();
    cases.extend(double_backward_cases![binary_with_rust_scalar_operand, select_broadcasting, cast_f64_f32_f64]);
    run_double_backward(cases);
}

#[test]
fn double_backward_reductions() {
    run_double_backward(double_backward_cases![
        reduce_sum,
        reduce_mean,
        reduce_max,
        reduce_min,
        reduce_prod,
        prod_with_zeros,
        cumsum_all_flags,
        cumprod_all_flags,
        logsumexp_grad,
        variance_grad,
        std_dev_grad,
    ]);
}

#[test]
fn double_backward_linalg_nn() {
    run_double_backward(double_backward_cases![
        matmul_all_transposes_and_batch_broadcasting,
        tensordot_grad,
        einsum_grad,
        softmax_grad,
        log_softmax_grad,
        top_k_values_grad,
        gradients_accumulate_over_uses,
    ]);
}

#[test]
fn double_backward_movement() {
    run_double_backward(double_backward_cases![
        movement_reshape,
        movement_transpose,
        movement_expand_dims,
        movement_squeeze,
        movement_broadcast_to,
        movement_concat,
        movement_stack,
        movement_unstack,
        movement_split,
        movement_split_sizes,
        movement_slice,
        movement_strided_slice,
        movement_gather,
        movement_gather_nd,
        movement_scatter_nd_wrt_updates,
        movement_tile,
        movement_pad,
        movement_reverse,
        identity_grad,
    ]);
}

// ---------------------------------------------------------------------------
// Unary ops
// ---------------------------------------------------------------------------

/// The public function of each unary op (exhaustive: a new op must be added here).
fn unary_fn(op: UnaryOp) -> fn(&Tensor) -> Result<Tensor> {
    use UnaryOp::*;
    match op {
        Neg => ops::neg,
        Abs => ops::abs,
        Sign => ops::sign,
        Square => ops::square,
        Relu => ops::relu,
        Relu6 => ops::relu6,
        Exp => ops::exp,
        Expm1 => ops::expm1,
        Log => ops::log,
        Log1p => ops::log1p,
        Sqrt => ops::sqrt,
        Rsqrt => ops::rsqrt,
        Reciprocal => ops::reciprocal,
        Sin => ops::sin,
        Cos => ops::cos,
        Tan => ops::tan,
        Tanh => ops::tanh,
        Sigmoid => ops::sigmoid,
        Elu => ops::elu,
        Selu => ops::selu,
        Gelu => ops::gelu,
        Softplus => ops::softplus,
        Erf => ops::erf,
        Lgamma => ops::lgamma,
        Digamma => ops::digamma,
        Erfinv => ops::erfinv,
        Ndtri => ops::ndtri,
        BesselI0e => ops::bessel_i0e,
        BesselI1e => ops::bessel_i1e,
        Erfc => ops::erfc,
        Sinh => ops::sinh,
        Cosh => ops::cosh,
        Asin => ops::asin,
        Acos => ops::acos,
        Atan => ops::atan,
        Asinh => ops::asinh,
        Acosh => ops::acosh,
        Atanh => ops::atanh,
        Floor => ops::floor,
        Ceil => ops::ceil,
        Round => ops::round,
        LogicalNot => ops::logical_not,
        IsNan => ops::is_nan,
        IsFinite => ops::is_finite,
        IsInf => ops::is_inf,
    }
}

/// Where to sample a unary op: `[lo, hi)` at least `margin` from the points in `avoid`.
#[derive(Clone, Copy)]
struct Dom {
    lo: f64,
    hi: f64,
    avoid: &'static [f64],
    margin: f64,
}

const fn dom(lo: f64, hi: f64) -> Dom {
    Dom { lo, hi, avoid: &[], margin: 0.0 }
}

const fn dom_away(lo: f64, hi: f64, avoid: &'static [f64], margin: f64) -> Dom {
    Dom { lo, hi, avoid, margin }
}

enum UnaryGrad {
    /// A gradient to check against finite differences on this domain.
    Smooth(Dom),
    /// Piecewise constant: the gradient is exactly zero (sampled off the jumps).
    Zero(Dom),
    /// No gradient at all (bool-valued or bool-input ops).
    NoGradient,
}

fn unary_grad_kind(op: UnaryOp) -> UnaryGrad {
    use UnaryGrad::*;
    use UnaryOp::*;
    match op {
        Neg | Square | Exp | Expm1 | Erf | Erfc | Sinh | Cosh | Atan | Asinh => Smooth(dom(-2.0, 2.0)),
        Asin | Acos | Atanh | Erfinv => Smooth(dom(-0.9, 0.9)),
        Lgamma | Digamma => Smooth(dom(0.3, 4.0)),
        Ndtri => Smooth(dom(0.05, 0.95)),
        BesselI0e | BesselI1e => Smooth(dom_away(-3.0, 3.0, &[0.0], 0.05)),
        Acosh => Smooth(dom(1.2, 3.0)),
        Abs | Relu => Smooth(dom_away(-2.0, 2.0, &[0.0], 0.05)),
        Relu6 => Smooth(dom_away(-2.0, 8.0, &[0.0, 6.0], 0.05)),
        Log | Sqrt | Rsqrt => Smooth(dom(0.2, 3.0)),
        Log1p => Smooth(dom(-0.8, 3.0)),
        Reciprocal => Smooth(dom_away(-2.0, 2.0, &[0.0], 0.3)),
        Sin | Cos | Tanh | Gelu => Smooth(dom(-3.0, 3.0)),
        Tan => Smooth(dom(-1.2, 1.2)),
        Sigmoid | Softplus => Smooth(dom(-4.0, 4.0)),
        Elu | Selu => Smooth(dom_away(-3.0, 3.0, &[0.0], 0.05)),
        Sign => Zero(dom_away(-2.0, 2.0, &[0.0], 0.05)),
        // No gradient at all, as in TensorFlow.
        Floor | Ceil | Round | LogicalNot | IsNan | IsFinite | IsInf => NoGradient,
    }
}

fn check_unary(op: UnaryOp) {
    let f = unary_fn(op);
    let name = op.name();
    let mut rng = Rng::named(name);
    match unary_grad_kind(op) {
        UnaryGrad::Smooth(d) | UnaryGrad::Zero(d) => {
            let zero = matches!(unary_grad_kind(op), UnaryGrad::Zero(_));
            // A scalar, a fixed shape and random shapes of rank 0 to 3.
            let mut shapes = vec![vec![], vec![2, 3]];
            shapes.extend((0..3).map(|_| rng.shape(0, 3, 4)));
            for shape in shapes {
                let x = away(&mut rng, &shape, d.lo, d.hi, d.avoid, d.margin);
                let case = format!("{name}{shape:?}");
                let g = check_grad(&case, |xs| f(&xs[0]), &[x]);
                if zero {
                    assert!(values(&g[0]).iter().all(|&v| v == 0.0), "{case}: gradient must be exactly zero");
                }
            }
        }
        UnaryGrad::NoGradient => {
            if op == UnaryOp::LogicalNot {
                // A bool input never gets a gradient.
                let b = Tensor::from_vec(vec![true, false, true], [3]).unwrap();
                let tape = GradientTape::new();
                tape.watch(&b);
                let y = ops::cast(&f(&b).unwrap(), DType::F64).unwrap();
                let loss = ops::sum(&y, Axes::All, false).unwrap();
                assert!(tape.gradient(&loss, &[&b]).unwrap()[0].is_none(), "{name}");
            } else {
                let x = uniform(&mut rng, &[2, 3], -2.0, 2.0);
                let tape = GradientTape::persistent();
                tape.watch(&x);
                let y = ops::cast(&f(&x).unwrap(), DType::F64).unwrap();
                let loss = ops::sum(&y, Axes::All, false).unwrap();
                assert!(tape.gradient(&loss, &[&x]).unwrap()[0].is_none(), "{name}: expected no gradient");
                let z = tape.gradient_with(&loss, &[&x], None, Unconnected::Zero).unwrap()[0].clone().unwrap();
                assert_eq!(dims(&z), vec![2, 3]);
                assert!(values(&z).iter().all(|&v| v == 0.0), "{name}: Unconnected::Zero");
            }
        }
    }
}

macro_rules! unary_tests {
    ($($test:ident => $op:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_unary(UnaryOp::$op);
            }
        )*
        /// The unary ops with a test of their own above.
        const UNARY_COVERED: &[UnaryOp] = &[$(UnaryOp::$op),*];
    };
}

unary_tests! {
    unary_neg => Neg,
    unary_abs => Abs,
    unary_sign_zero => Sign,
    unary_square => Square,
    unary_relu => Relu,
    unary_relu6 => Relu6,
    unary_exp => Exp,
    unary_expm1 => Expm1,
    unary_log => Log,
    unary_log1p => Log1p,
    unary_sqrt => Sqrt,
    unary_rsqrt => Rsqrt,
    unary_reciprocal => Reciprocal,
    unary_sin => Sin,
    unary_cos => Cos,
    unary_tan => Tan,
    unary_tanh => Tanh,
    unary_sigmoid => Sigmoid,
    unary_elu => Elu,
    unary_selu => Selu,
    unary_gelu => Gelu,
    unary_softplus => Softplus,
    unary_erf => Erf,
    unary_lgamma => Lgamma,
    unary_digamma => Digamma,
    unary_erfinv => Erfinv,
    unary_ndtri => Ndtri,
    unary_bessel_i0e => BesselI0e,
    unary_bessel_i1e => BesselI1e,
    unary_erfc => Erfc,
    unary_sinh => Sinh,
    unary_cosh => Cosh,
    unary_asin => Asin,
    unary_acos => Acos,
    unary_atan => Atan,
    unary_asinh => Asinh,
    unary_acosh => Acosh,
    unary_atanh => Atanh,
    unary_floor_none => Floor,
    unary_ceil_none => Ceil,
    unary_round_none => Round,
    unary_logical_not_none => LogicalNot,
    unary_is_nan_none => IsNan,
    unary_is_finite_none => IsFinite,
    unary_is_inf_none => IsInf,
}

#[test]
fn every_unary_op_has_a_gradient_test() {
    for op in UnaryOp::ALL {
        assert!(UNARY_COVERED.contains(op), "no gradient test for unary op {}", op.name());
    }
}

// ---------------------------------------------------------------------------
// Binary ops, with broadcasting
// ---------------------------------------------------------------------------

type BinFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn binary_fn(op: BinaryOp) -> BinFn {
    use BinaryOp::*;
    match op {
        Add => |a, b| ops::add(a, b),
        Sub => |a, b| ops::sub(a, b),
        Mul => |a, b| ops::mul(a, b),
        Div => |a, b| ops::real_div(a, b),
        TruncateMod => |a, b| ops::truncate_mod(a, b),
        DivNoNan => |a, b| ops::div_no_nan(a, b),
        MulNoNan => |a, b| ops::multiply_no_nan(a, b),
        Zeta => |a, b| ops::zeta(a, b),
        Polygamma => |a, b| ops::polygamma(a, b),
        Igamma => |a, b| ops::igamma(a, b),
        Igammac => |a, b| ops::igammac(a, b),
        IgammaGradA => |a, b| ops::igamma_grad_a(a, b),
        NextAfter => |a, b| ops::nextafter(a, b),
        Xlogy => |a, b| ops::xlogy(a, b),
        Xlog1py => |a, b| ops::xlog1py(a, b),
        Xdivy => |a, b| ops::xdivy(a, b),
        FloorDiv => |a, b| ops::floor_div(a, b),
        FloorMod => |a, b| ops::floor_mod(a, b),
        Pow => |a, b| ops::pow(a, b),
        Maximum => |a, b| ops::maximum(a, b),
        Minimum => |a, b| ops::minimum(a, b),
        Equal => |a, b| ops::equal(a, b),
        NotEqual => |a, b| ops::not_equal(a, b),
        Less => |a, b| ops::less(a, b),
        LessEqual => |a, b| ops::less_equal(a, b),
        Greater => |a, b| ops::greater(a, b),
        GreaterEqual => |a, b| ops::greater_equal(a, b),
        LogicalAnd => |a, b| ops::logical_and(a, b),
        LogicalOr => |a, b| ops::logical_or(a, b),
        Atan2 => |a, b| ops::atan2(a, b),
        Hypot => |a, b| ops::hypot(a, b),
        LogAddExp => |a, b| ops::logaddexp(a, b),
    }
}

/// Fixed broadcasting pairs (plus random ones drawn per op).
const BINARY_SHAPES: &[(&[usize], &[usize])] = &[
    (&[3, 1], &[1, 4]),
    (&[2, 3, 4], &[4]),
    (&[4], &[2, 3, 4]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
    (&[2, 3], &[2, 3]),
    (&[2, 1, 4], &[3, 1]),
    (&[], &[]),
];

/// A random pair of broadcast-compatible shapes.
fn random_broadcast_pair(rng: &mut Rng) -> (Vec<usize>, Vec<usize>) {
    let full = rng.shape(1, 3, 4);
    let mut a = full.clone();
    for d in a.iter_mut() {
        if rng.below(3) == 0 {
            *d = 1;
        }
    }
    let drop = rng.below(full.len() + 1);
    let mut b = full[drop..].to_vec();
    for d in b.iter_mut() {
        if rng.below(3) == 0 {
            *d = 1;
        }
    }
    if rng.coin() {
        (a, b)
    } else {
        (b, a)
    }
}

/// Inputs for a binary op: differentiable points (positive bases for pow,
/// nonzero divisors, no ties for maximum/minimum, no integer quotients for floor_mod).
fn binary_inputs(op: BinaryOp, rng: &mut Rng, sa: &[usize], sb: &[usize]) -> (Tensor, Tensor) {
    use BinaryOp::*;
    let pairs = broadcast_pairs(sa, sb);
    loop {
        let (a, b) = match op {
            Div | DivNoNan | MulNoNan | Xdivy => (uniform(rng, sa, -2.0, 2.0), signed(rng, sb, 0.5, 2.0)),
            Xlogy => (uniform(rng, sa, -2.0, 2.0), uniform(rng, sb, 0.3, 2.0)),
            // Orders and exponents are not differentiated; only the second argument is.
            Zeta => (uniform(rng, sa, 2.0, 4.0), uniform(rng, sb, 0.5, 3.0)),
            Polygamma => (uniform(rng, sa, 1.0, 1.0), uniform(rng, sb, 0.5, 3.0)),
            Igamma | Igammac | IgammaGradA => (uniform(rng, sa, 0.5, 3.0), uniform(rng, sb, 0.3, 3.0)),
            Xlog1py => (uniform(rng, sa, -2.0, 2.0), uniform(rng, sb, -0.7, 2.0)),
            FloorMod => (uniform(rng, sa, -3.0, 3.0), signed(rng, sb, 0.5, 2.0)),
            Pow => (uniform(rng, sa, 0.5, 2.0), uniform(rng, sb, -2.0, 2.0)),
            _ => (uniform(rng, sa, -2.0, 2.0), uniform(rng, sb, -2.0, 2.0)),
        };
        let (av, bv) = (values(&a), values(&b));
        let ok = pairs.iter().all(|&(i, j)| match op {
            Maximum | Minimum => (av[i] - bv[j]).abs() > 1e-3,
            FloorMod => {
                let q = av[i] / bv[j];
                (q - q.round()).abs() > 1e-3
            }
            _ => true,
        });
        if ok {
            return (a, b);
        }
    }
}

fn check_binary(op: BinaryOp) {
    use BinaryOp::*;
    let f = binary_fn(op);
    let name = op.name();
    let mut rng = Rng::named(name);
    let mut shapes: Vec<(Vec<usize>, Vec<usize>)> =
        BINARY_SHAPES.iter().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
    shapes.extend((0..3).map(|_| random_broadcast_pair(&mut rng)));
    match op {
        Add | Sub | Mul | Div | FloorMod | Pow | Maximum | Minimum | Atan2 | Hypot | LogAddExp | DivNoNan
        | MulNoNan | Xlogy | Xlog1py | Xdivy | Igamma | Igammac => {
            for (sa, sb) in shapes {
                let (a, b) = binary_inputs(op, &mut rng, &sa, &sb);
                check_grad(&format!("{name}{sa:?}{sb:?}"), |xs| f(&xs[0], &xs[1]), &[a, b]);
            }
        }
        Zeta | Polygamma => {
            for (sa, sb) in shapes {
                let (a, b) = binary_inputs(op, &mut rng, &sa, &sb);
                check_grad(&format!("{name}{sa:?}{sb:?}"), |xs| f(&a, &xs[0]), &[b]);
            }
        }
        FloorDiv | NextAfter | TruncateMod | IgammaGradA | Equal | NotEqual | Less | LessEqual | Greater
        | GreaterEqual => {
            // Integer- or bool-valued: no gradient for either side.
            let (a, b) = (uniform(&mut rng, &[3, 1], -2.0, 2.0), signed(&mut rng, &[4], 0.5, 2.0));
            let tape = GradientTape::new();
            tape.watch(&a);
            tape.watch(&b);
            let y = ops::cast(&f(&a, &b).unwrap(), DType::F64).unwrap();
            let loss = ops::sum(&y, Axes::All, false).unwrap();
            let g = tape.gradient(&loss, &[&a, &b]).unwrap();
            assert!(g[0].is_none() && g[1].is_none(), "{name}: expected no gradient, got {g:?}");
        }
        LogicalAnd | LogicalOr => {
            let a = Tensor::from_vec(vec![true, false, true], [3]).unwrap();
            let b = Tensor::from_vec(vec![true, true, false], [3]).unwrap();
            let tape = GradientTape::new();
            tape.watch(&a);
            let y = ops::cast(&f(&a, &b).unwrap(), DType::F64).unwrap();
            let loss = ops::sum(&y, Axes::All, false).unwrap();
            assert!(tape.gradient(&loss, &[&a]).unwrap()[0].is_none(), "{name}");
        }
    }
}

macro_rules! binary_tests {
    ($($test:ident => $op:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_binary(BinaryOp::$op);
            }
        )*
        const BINARY_COVERED: &[BinaryOp] = &[$(BinaryOp::$op),*];
    };
}

binary_tests! {
    binary_add => Add,
    binary_sub => Sub,
    binary_mul => Mul,
    binary_div => Div,
    binary_floor_mod => FloorMod,
    binary_pow => Pow,
    binary_maximum => Maximum,
    binary_minimum => Minimum,
    binary_floor_div_none => FloorDiv,
    binary_equal_none => Equal,
    binary_not_equal_none => NotEqual,
    binary_less_none => Less,
    binary_less_equal_none => LessEqual,
    binary_greater_none => Greater,
    binary_greater_equal_none => GreaterEqual,
    binary_logical_and_none => LogicalAnd,
    binary_logical_or_none => LogicalOr,
    binary_atan2 => Atan2,
    binary_hypot => Hypot,
    binary_logaddexp => LogAddExp,
    binary_truncate_mod_none => TruncateMod,
    binary_div_no_nan => DivNoNan,
    binary_multiply_no_nan => MulNoNan,
    binary_zeta => Zeta,
    binary_polygamma => Polygamma,
    binary_igamma => Igamma,
    binary_igammac => Igammac,
    binary_igamma_grad_a_none => IgammaGradA,
    binary_nextafter_none => NextAfter,
    binary_xlogy => Xlogy,
    binary_xlog1py => Xlog1py,
    binary_xdivy => Xdivy,
}

#[test]
fn every_binary_op_has_a_gradient_test() {
    for op in BinaryOp::ALL {
        assert!(BINARY_COVERED.contains(op), "no gradient test for binary op {}", op.name());
    }
}

#[test]
fn binary_with_rust_scalar_operand() {
    let mut rng = Rng::named("scalar operand");
    let x = uniform(&mut rng, &[2, 3], 0.5, 2.0);
    check_grad("x * 3", |xs| ops::mul(&xs[0], 3.0), std::slice::from_ref(&x));
    check_grad("2 - x", |xs| 2.0 - &xs[0], std::slice::from_ref(&x));
    check_grad("1 / x", |xs| ops::div(1.0, &xs[0]), std::slice::from_ref(&x));
    check_grad("x ^ 2.5", |xs| ops::pow(&xs[0], 2.5), std::slice::from_ref(&x));
    check_grad("2 ^ x", |xs| ops::pow(2.0, &xs[0]), std::slice::from_ref(&x));
    check_grad(
        "clip_by_value",
        |xs| ops::clip_by_value(&xs[0], 0.9, 1.6),
        &[away(&mut rng, &[3, 4], 0.0, 2.5, &[0.9, 1.6], 0.01)],
    );
}

#[test]
fn select_broadcasting() {
    let mut rng = Rng::named("select");
    let cond = Tensor::from_vec(vec![true, false, false, true, true, false], [2, 3]).unwrap();
    let c = &cond;
    let (a, b) = (uniform(&mut rng, &[2, 1], -2.0, 2.0), uniform(&mut rng, &[3], -2.0, 2.0));
    let g = check_grad("select[2,3][2,1][3]", |xs| ops::select(c, &xs[0], &xs[1]), &[a, b]);
    // Each side gets the weights where it was chosen, summed over broadcasting.
    let w = values(&weights("select[2,3][2,1][3]", &[2, 3]));
    let cv = ints(&cond);
    let mut ga = [0.0; 2];
    let mut gb = [0.0; 3];
    for i in 0..2 {
        for j in 0..3 {
            if cv[i * 3 + j] == 1 {
                ga[i] += w[i * 3 + j];
            } else {
                gb[j] += w[i * 3 + j];
            }
        }
    }
    assert_close("select da", &values(&g[0]), &ga, 1e-15);
    assert_close("select db", &values(&g[1]), &gb, 1e-15);
    // A condition that broadcasts against both branches, and a scalar branch.
    let cond3 = Tensor::from_vec(vec![false, true, true], [3]).unwrap();
    let c3 = &cond3;
    let (a, b) = (uniform(&mut rng, &[2, 3], -2.0, 2.0), uniform(&mut rng, &[], -2.0, 2.0));
    check_grad("select[3][2,3][]", |xs| ops::select(c3, &xs[0], &xs[1]), &[a, b]);
    let (a, b) = (uniform(&mut rng, &[4, 1, 3], -2.0, 2.0), uniform(&mut rng, &[2, 1], -2.0, 2.0));
    check_grad("select[3][4,1,3][2,1]", |xs| ops::select(c3, &xs[0], &xs[1]), &[a, b]);
    // The condition itself gets no gradient (it is bool).
    check_grad("select scalar branch", |xs| ops::select(c, &xs[0], 0.5), &[uniform(&mut rng, &[2, 3], -1.0, 1.0)]);
}

#[test]
fn cast_f64_f32_f64() {
    // The f32 round trip quantizes at ~6e-8 relative, so the finite difference
    // needs a larger step (1e-3) and a looser tolerance (1e-3 relative).
    let mut rng = Rng::named("cast");
    let x = uniform(&mut rng, &[3, 4], -2.0, 2.0);
    let round_trip = |xs: &[Tensor]| ops::cast(&ops::cast(&xs[0], DType::F32)?, DType::F64);
    let g = check_grad_tol("cast f64->f32->f64", round_trip, &[x], Tol { step: 1e-3, rel: 1e-3, abs: 1e-6 });
    // The gradient of a cast between floats is the upstream gradient, cast back: here exactly w.
    let w = values(&weights("cast f64->f32->f64", &[3, 4]));
    let w32: Vec<f64> = w.iter().map(|&v| f64::from(v as f32)).collect();
    assert_eq!(values(&g[0]), w32);
    // Through f32 math in the middle: d/dx cast(sin(cast(x, f32)), f64) = cos(x) (to f32 precision).
    let x = uniform(&mut rng, &[5], -2.0, 2.0);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = ops::cast(&ops::sin(&ops::cast(&x, DType::F32).unwrap()).unwrap(), DType::F64).unwrap();
    let g = tape.gradient(&ops::sum(&y, Axes::All, false).unwrap(), &[&x]).unwrap()[0].clone().unwrap();
    assert_eq!(g.dtype(), DType::F64);
    let want: Vec<f64> = values(&x).iter().map(|v| v.cos()).collect();
    assert_close("cast sin f32", &values(&g), &want, 1e-6);
}

// ---------------------------------------------------------------------------
// Reductions and scans
// ---------------------------------------------------------------------------

fn axis_sets() -> Vec<Axes> {
    vec![
        Axes::All,
        Axes::List(vec![0]),
        Axes::List(vec![1]),
        Axes::List(vec![-1]),
        Axes::List(vec![0, 2]),
        Axes::List(vec![2, 0]),
        Axes::List(vec![1, 2]),
        Axes::List(vec![0, 1, 2]),
        Axes::List(vec![]),
    ]
}

type ReduceFn = fn(&Tensor, Axes, bool) -> Result<Tensor>;

fn reduce_fn(op: ReduceOp) -> Option<ReduceFn> {
    Some(match op {
        ReduceOp::Sum => |x, a, k| ops::sum(x, a, k),
        ReduceOp::Mean => |x, a, k| ops::mean(x, a, k),
        ReduceOp::Max => |x, a, k| ops::max(x, a, k),
        ReduceOp::Min => |x, a, k| ops::min(x, a, k),
        ReduceOp::Prod => |x, a, k| ops::prod(x, a, k),
        ReduceOp::Any | ReduceOp::All => return None,
    })
}

/// Run `reduce` over every axis set, keepdims both ways, on random rank-3
/// inputs, and over a scalar and a vector.
fn check_reduction(name: &str, reduce: ReduceFn, input: fn(&mut Rng, &[usize]) -> Tensor) {
    let mut rng = Rng::named(name);
    for axes in axis_sets() {
        for keepdims in [false, true] {
            let shape: Vec<usize> = (0..3).map(|_| 2 + rng.below(3)).collect();
            let x = input(&mut rng, &shape);
            let a = axes.clone();
            check_grad(
                &format!("{name}{shape:?} axes {axes:?} keepdims {keepdims}"),
                |xs| reduce(&xs[0], a.clone(), keepdims),
                &[x],
            );
        }
    }
    for keepdims in [false, true] {
        let x = input(&mut rng, &[]);
        check_grad(&format!("{name} scalar keepdims {keepdims}"), |xs| reduce(&xs[0], Axes::All, keepdims), &[x]);
        let x = input(&mut rng, &[5]);
        check_grad(&format!("{name}[5] keepdims {keepdims}"), |xs| reduce(&xs[0], Axes::from(0), keepdims), &[x]);
    }
}

fn plain_input(rng: &mut Rng, shape: &[usize]) -> Tensor {
    uniform(rng, shape, -2.0, 2.0)
}

fn distinct_input(rng: &mut Rng, shape: &[usize]) -> Tensor {
    distinct(rng, shape, -2.0, 2.0)
}

fn nonzero_input(rng: &mut Rng, shape: &[usize]) -> Tensor {
    signed(rng, shape, 0.5, 1.5)
}

#[test]
fn reduce_sum() {
    check_reduction("sum", reduce_fn(ReduceOp::Sum).unwrap(), plain_input);
}

#[test]
fn reduce_mean() {
    check_reduction("mean", reduce_fn(ReduceOp::Mean).unwrap(), plain_input);
}

#[test]
fn reduce_max() {
    check_reduction("max", reduce_fn(ReduceOp::Max).unwrap(), distinct_input);
}

#[test]
fn reduce_min() {
    check_reduction("min", reduce_fn(ReduceOp::Min).unwrap(), distinct_input);
}

#[test]
fn reduce_prod() {
    check_reduction("prod", reduce_fn(ReduceOp::Prod).unwrap(), nonzero_input);
}

#[test]
fn reduce_any_all_have_no_gradient() {
    assert!(reduce_fn(ReduceOp::Any).is_none() && reduce_fn(ReduceOp::All).is_none());
    let x = t64(vec![-1.0, 2.0, 0.5, -0.5], &[2, 2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let b = ops::greater(&x, 0.0).unwrap();
    for (name, r) in [("any", ops::any(&b, 1, false).unwrap()), ("all", ops::all(&b, 1, false).unwrap())] {
        let y = ops::sum(&ops::cast(&r, DType::F64).unwrap(), Axes::All, false).unwrap();
        assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "{name}");
    }
}

#[test]
fn every_reduction_has_a_gradient_test() {
    // reduce_fn is exhaustive over ReduceOp; each differentiable one has a test above
    // (reduce_sum, reduce_mean, reduce_max, reduce_min, reduce_prod), the logical
    // ones have reduce_any_all_have_no_gradient.
    for op in ReduceOp::ALL {
        let logical = matches!(op, ReduceOp::Any | ReduceOp::All);
        assert_eq!(reduce_fn(op).is_none(), logical, "{op:?}");
    }
}

/// Gradient of `sum(f(x) * w)` with the loss weights given explicitly.
fn tape_grad_with_weights(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, w: &Tensor) -> Vec<f64> {
    let tape = GradientTape::new();
    tape.watch(x);
    let loss = ops::sum(&ops::mul(&f(x).unwrap(), w).unwrap(), Axes::All, false).unwrap();
    values(&tape.gradient(&loss, &[x]).unwrap()[0].clone().expect("gradient"))
}

#[test]
fn max_min_ties_split_the_gradient_evenly() {
    let x = t64(vec![1.0, 3.0, 3.0, 2.0, 2.0, 2.0, 5.0, 1.0, 0.0], &[3, 3]);
    let ones3 = t64(vec![1.0; 3], &[3]);
    let g = tape_grad_with_weights(|x| ops::max(x, 1, false), &x, &ones3);
    let third = 1.0 / 3.0;
    assert_close("max ties axis 1", &g, &[0.0, 0.5, 0.5, third, third, third, 1.0, 0.0, 0.0], 1e-15);
    let g = tape_grad_with_weights(|x| ops::min(x, 1, true), &x, &t64(vec![2.0, 3.0, 4.0], &[3, 1]));
    assert_close("min ties axis 1 keepdims", &g, &[2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 4.0], 1e-15);
    let g = tape_grad_with_weights(|x| ops::min(x, 0, false), &x, &ones3);
    assert_close("min ties axis 0", &g, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], 1e-15);
    let y = t64(vec![3.0, 1.0, 3.0, 3.0], &[2, 2]);
    let g = tape_grad_with_weights(|x| ops::max(x, Axes::All, false), &y, &t64(vec![6.0], &[]));
    assert_close("max ties all", &g, &[2.0, 0.0, 2.0, 2.0], 1e-15);
    let g = tape_grad_with_weights(|x| ops::maximum(x, 3.0), &y, &ops::ones_like(&y).unwrap());
    // maximum(x, c) with x == c: the tie goes to the first operand (TensorFlow's rule).
    assert_close("maximum tie", &g, &[1.0, 0.0, 1.0, 1.0], 1e-15);
}

#[test]
fn prod_with_zeros() {
    // One zero in a row: only the zero gets a gradient (the product of the
    // others); two zeros: everything is zero. Compared with finite differences
    // and written out.
    let x = t64(vec![2.0, 0.0, 3.0, 0.0, 0.0, 1.5, 1.0, 2.0, 3.0], &[3, 3]);
    let ones = t64(vec![1.0; 3], &[3]);
    let g = tape_grad_with_weights(|x| ops::prod(x, 1, false), &x, &ones);
    assert_close("prod zeros axis 1", &g, &[0.0, 6.0, 0.0, 0.0, 0.0, 0.0, 6.0, 3.0, 2.0], 1e-15);
    let xs = std::slice::from_ref(&x);
    for keepdims in [false, true] {
        check_grad(&format!("prod zeros axis 1 keepdims {keepdims}"), |xs| ops::prod(&xs[0], 1, keepdims), xs);
        check_grad(&format!("prod zeros axis 0 keepdims {keepdims}"), |xs| ops::prod(&xs[0], 0, keepdims), xs);
        check_grad(&format!("prod zeros all keepdims {keepdims}"), |xs| ops::prod(&xs[0], Axes::All, keepdims), xs);
    }
    // A single zero over all axes: its gradient is the product of the rest.
    let y = t64(vec![2.0, -1.5, 0.0, 3.0, 0.5, -2.0], &[2, 3]);
    let g = tape_grad_with_weights(|x| ops::prod(x, Axes::All, false), &y, &t64(vec![1.0], &[]));
    assert_close("prod one zero all", &g, &[0.0, 0.0, 9.0, 0.0, 0.0, 0.0], 1e-15);
    check_grad("prod one zero all", |xs| ops::prod(&xs[0], Axes::All, false), std::slice::from_ref(&y));
    check_grad("prod one zero axes [0,1]", |xs| ops::prod(&xs[0], [0, 1], true), &[y]);
    let mut rng = Rng::named("prod zeros rank 3");
    let mut data = values(&signed(&mut rng, &[2, 3, 4], 0.5, 1.5));
    data[5] = 0.0;
    data[17] = 0.0;
    data[18] = 0.0;
    let z = t64(data, &[2, 3, 4]);
    for axes in axis_sets() {
        let a = axes.clone();
        check_grad(
            &format!("prod zeros rank 3 axes {axes:?}"),
            |xs| ops::prod(&xs[0], a.clone(), false),
            std::slice::from_ref(&z),
        );
    }
}

#[test]
fn cumsum_all_flags() {
    let mut rng = Rng::named("cumsum");
    for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
        for axis in -(shape.len() as i64)..shape.len() as i64 {
            for exclusive in [false, true] {
                for reverse in [false, true] {
                    let x = uniform(&mut rng, &shape, -2.0, 2.0);
                    let name = format!("cumsum{shape:?} axis {axis} exclusive {exclusive} reverse {reverse}");
                    check_grad(&name, |xs| ops::cumsum(&xs[0], axis, exclusive, reverse), &[x]);
                }
            }
        }
    }
}

#[test]
fn cumprod_all_flags() {
    let mut rng = Rng::named("cumprod");
    for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
        for axis in -(shape.len() as i64)..shape.len() as i64 {
            for exclusive in [false, true] {
                for reverse in [false, true] {
                    let x = signed(&mut rng, &shape, 0.5, 1.5);
                    let name = format!("cumprod{shape:?} axis {axis} exclusive {exclusive} reverse {reverse}");
                    check_grad(&name, |xs| ops::cumprod(&xs[0], axis, exclusive, reverse), &[x]);
                }
            }
        }
    }
}

#[test]
fn logsumexp_grad() {
    check_reduction("logsumexp", |x, a, k| ops::logsumexp(x, a, k), plain_input);
    // Large inputs: the stable form must give softmax weights, not NaN.
    let x = t64(vec![1000.0, 1001.0, 999.0, -5.0, -4.0, -6.0], &[2, 3]);
    check_grad("logsumexp large", |xs| ops::logsumexp(&xs[0], 1, false), &[x]);
}

#[test]
fn variance_grad() {
    check_reduction("variance", |x, a, k| ops::variance(x, a, k), plain_input);
}

#[test]
fn std_dev_grad() {
    // std_dev is not differentiable where the variance is 0 (one element
    // reduced); only axis sets that reduce at least two elements.
    let mut rng = Rng::named("std_dev");
    for axes in axis_sets().into_iter().filter(|a| *a != Axes::List(vec![])) {
        for keepdims in [false, true] {
            let x = uniform(&mut rng, &[2, 3, 4], -2.0, 2.0);
            let a = axes.clone();
            check_grad(
                &format!("std_dev axes {axes:?} keepdims {keepdims}"),
                |xs| ops::std_dev(&xs[0], a.clone(), keepdims),
                &[x],
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Linear algebra and nn
// ---------------------------------------------------------------------------

/// `a` stored as `[.., m, k]` (or `[.., k, m]` when transposed), `b` as `[.., k, n]` (or `[.., n, k]`).
fn check_matmul(ta: bool, tb: bool, batch_a: &[usize], batch_b: &[usize], (m, k, n): (usize, usize, usize)) {
    let mut sa = batch_a.to_vec();
    sa.extend(if ta { [k, m] } else { [m, k] });
    let mut sb = batch_b.to_vec();
    sb.extend(if tb { [n, k] } else { [k, n] });
    let name = format!("matmul ta={ta} tb={tb} {sa:?} x {sb:?}");
    let mut rng = Rng::named(&name);
    let (a, b) = (uniform(&mut rng, &sa, -1.0, 1.0), uniform(&mut rng, &sb, -1.0, 1.0));
    check_grad(&name, |xs| ops::matmul_t(&xs[0], &xs[1], ta, tb), &[a, b]);
}

#[test]
fn matmul_all_transposes_and_batch_broadcasting() {
    for ta in [false, true] {
        for tb in [false, true] {
            check_matmul(ta, tb, &[], &[], (3, 4, 2));
            check_matmul(ta, tb, &[], &[], (1, 5, 1));
            check_matmul(ta, tb, &[2], &[2], (2, 3, 4));
            check_matmul(ta, tb, &[2, 1], &[3], (2, 3, 2));
            check_matmul(ta, tb, &[], &[2, 2], (3, 2, 2));
            check_matmul(ta, tb, &[3, 1], &[1, 2], (2, 2, 3));
        }
    }
    // The same matrix on both sides (gradients accumulate).
    let mut rng = Rng::named("matmul self");
    check_grad("matmul a a", |xs| ops::matmul(&xs[0], &xs[0]), &[uniform(&mut rng, &[3, 3], -1.0, 1.0)]);
    check_grad(
        "matmul a a^T",
        |xs| ops::matmul_t(&xs[0], &xs[0], false, true),
        &[uniform(&mut rng, &[2, 3], -1.0, 1.0)],
    );
}

#[test]
fn tensordot_grad() {
    let mut rng = Rng::named("tensordot");
    let (a, b) = (uniform(&mut rng, &[2, 3, 4], -1.0, 1.0), uniform(&mut rng, &[4, 3, 5], -1.0, 1.0));
    check_grad("tensordot [1,2]x[1,0]", |xs| ops::tensordot(&xs[0], &xs[1], &[1, 2], &[1, 0]), &[a, b]);
    let (a, b) = (uniform(&mut rng, &[3, 4], -1.0, 1.0), uniform(&mut rng, &[2, 4], -1.0, 1.0));
    check_grad("tensordot [-1]x[-1]", |xs| ops::tensordot(&xs[0], &xs[1], &[-1], &[-1]), &[a, b]);
    let (a, b) = (uniform(&mut rng, &[2, 3], -1.0, 1.0), uniform(&mut rng, &[4], -1.0, 1.0));
    check_grad("tensordot outer", |xs| ops::tensordot(&xs[0], &xs[1], &[], &[]), &[a, b]);
}

#[test]
fn einsum_grad() {
    let mut rng = Rng::named("einsum");
    let cases: &[(&str, &[&[usize]])] = &[
        ("ij,jk->ik", &[&[3, 4], &[4, 2]]),
        ("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 3]]),
        ("ij,kj->ik", &[&[3, 4], &[2, 4]]),
        ("i,j->ij", &[&[3], &[4]]),
        ("ij,ij->i", &[&[3, 4], &[3, 4]]),
        ("ijk,jl->lik", &[&[2, 3, 4], &[3, 2]]),
        ("ij,jk", &[&[2, 3], &[3, 4]]),
        ("ij->ji", &[&[3, 4]]),
        ("ijk->ik", &[&[2, 3, 4]]),
        ("ij->", &[&[3, 4]]),
    ];
    for &(eq, shapes) in cases {
        let xs: Vec<Tensor> = shapes.iter().map(|s| uniform(&mut rng, s, -1.0, 1.0)).collect();
        check_grad(&format!("einsum {eq}"), |xs| ops::einsum(eq, &xs.iter().collect::<Vec<_>>()), &xs);
    }
}

#[test]
fn softmax_grad() {
    let mut rng = Rng::named("softmax");
    for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
        for axis in [-1, 0, 1] {
            if axis >= shape.len() as i64 {
                continue;
            }
            let x = uniform(&mut rng, &shape, -3.0, 3.0);
            check_grad(&format!("softmax{shape:?} axis {axis}"), |xs| ops::softmax(&xs[0], axis), &[x]);
        }
    }
    // Large logits: still the exact gradient.
    let x = t64(vec![500.0, 501.0, 499.0, -3.0, 0.0, 1.0], &[2, 3]);
    check_grad("softmax large", |xs| ops::softmax(&xs[0], -1), &[x]);
}

#[test]
fn log_softmax_grad() {
    let mut rng = Rng::named("log_softmax");
    for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
        for axis in [-1, 0, 1] {
            if axis >= shape.len() as i64 {
                continue;
            }
            let x = uniform(&mut rng, &shape, -3.0, 3.0);
            check_grad(&format!("log_softmax{shape:?} axis {axis}"), |xs| ops::log_softmax(&xs[0], axis), &[x]);
        }
    }
    let x = t64(vec![500.0, 501.0, 499.0, -3.0, 0.0, 1.0], &[2, 3]);
    check_grad("log_softmax large", |xs| ops::log_softmax(&xs[0], -1), &[x]);
}

#[test]
fn top_k_values_grad() {
    let mut rng = Rng::named("top_k");
    for (shape, k) in [(vec![6], 3), (vec![3, 5], 2), (vec![2, 2, 4], 4), (vec![3, 4], 1)] {
        let x = distinct(&mut rng, &shape, -2.0, 2.0);
        let g =
            check_grad(&format!("top_k{shape:?} k={k}"), |xs| Ok(ops::top_k(&xs[0], k)?.0), std::slice::from_ref(&x));
        // Exactly k nonzero entries per row.
        let last = *shape.last().unwrap();
        for row in values(&g[0]).chunks(last) {
            assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), k, "top_k{shape:?} k={k}");
        }
    }
    // The indices output has no gradient.
    let x = distinct(&mut rng, &[4], -1.0, 1.0);
    let tape = GradientTape::new();
    tape.watch(&x);
    let (_, i) = ops::top_k(&x, 2).unwrap();
    let y = ops::sum(&ops::cast(&i, DType::F64).unwrap(), Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none());
}

// ---------------------------------------------------------------------------
// Movement ops
// ---------------------------------------------------------------------------

fn rand_input(name: &str, shape: &[usize]) -> Tensor {
    uniform(&mut Rng::named(name), shape, -2.0, 2.0)
}

#[test]
fn movement_reshape() {
    let x = rand_input("reshape", &[2, 3, 4]);
    let xs = std::slice::from_ref(&x);
    check_grad("reshape [4,-1]", |xs| ops::reshape(&xs[0], &[4, -1]), xs);
    check_grad("reshape [24]", |xs| ops::reshape(&xs[0], &[24]), xs);
    check_grad("reshape [1,2,1,12]", |xs| ops::reshape(&xs[0], &[1, 2, 1, 12]), xs);
    // Of a non-contiguous view.
    check_grad("reshape of transpose", |xs| ops::reshape(&ops::transpose(&xs[0], &[2, 0, 1])?, &[4, 6]), xs);
    check_grad("reshape scalar", |xs| ops::reshape(&xs[0], &[1, 1]), &[rand_input("reshape scalar", &[])]);
}

#[test]
fn movement_transpose() {
    let x = rand_input("transpose", &[2, 3, 4]);
    let xs = std::slice::from_ref(&x);
    for perm in [vec![2, 0, 1], vec![1, 2, 0], vec![0, 2, 1], vec![], vec![0, 1, 2]] {
        let p = perm.clone();
        check_grad(&format!("transpose {perm:?}"), |xs| ops::transpose(&xs[0], &p), xs);
    }
}

#[test]
fn movement_expand_dims() {
    let x = rand_input("expand_dims", &[2, 3]);
    for axis in [0, 1, 2, -1, -3] {
        check_grad(&format!("expand_dims {axis}"), |xs| ops::expand_dims(&xs[0], axis), std::slice::from_ref(&x));
    }
}

#[test]
fn movement_squeeze() {
    let x = rand_input("squeeze", &[2, 1, 3, 1]);
    let xs = std::slice::from_ref(&x);
    for axes in [vec![], vec![1], vec![-1], vec![1, 3]] {
        let a = axes.clone();
        check_grad(&format!("squeeze {axes:?}"), |xs| ops::squeeze(&xs[0], &a), xs);
    }
}

#[test]
fn movement_broadcast_to() {
    check_grad("broadcast_to [3,1]->[2,3,4]", |xs| ops::broadcast_to(&xs[0], [2, 3, 4]), &[rand_input("bt1", &[3, 1])]);
    check_grad("broadcast_to []->[2,3]", |xs| ops::broadcast_to(&xs[0], [2, 3]), &[rand_input("bt2", &[])]);
    check_grad("broadcast_to [4]->[3,4]", |xs| ops::broadcast_to(&xs[0], [3, 4]), &[rand_input("bt3", &[4])]);
    check_grad("broadcast_to same", |xs| ops::broadcast_to(&xs[0], [2, 2]), &[rand_input("bt4", &[2, 2])]);
}

#[test]
fn movement_concat() {
    let xs = vec![rand_input("c1", &[2, 1, 3]), rand_input("c2", &[2, 2, 3]), rand_input("c3", &[2, 3, 3])];
    check_grad("concat axis 1", |xs| ops::concat(&[&xs[0], &xs[1], &xs[2]], 1), &xs);
    let ys = vec![rand_input("c4", &[2, 3]), rand_input("c5", &[2, 1])];
    check_grad("concat axis -1", |xs| ops::concat(&[&xs[0], &xs[1]], -1), &ys);
    let zs = vec![rand_input("c6", &[1, 3]), rand_input("c7", &[2, 3])];
    check_grad("concat axis 0", |xs| ops::concat(&[&xs[0], &xs[1]], 0), &zs);
    // The same tensor twice.
    check_grad("concat x x", |xs| ops::concat(&[&xs[0], &xs[0]], 0), &zs[1..]);
    check_grad("concat single", |xs| ops::concat(&[&xs[0]], 0), &zs[1..]);
}

#[test]
fn movement_stack() {
    let xs = vec![rand_input("s1", &[2, 3]), rand_input("s2", &[2, 3]), rand_input("s3", &[2, 3])];
    for axis in [0, 1, 2, -1] {
        check_grad(&format!("stack axis {axis}"), |xs| ops::stack(&[&xs[0], &xs[1], &xs[2]], axis), &xs);
    }
    check_grad("stack scalars", |xs| ops::stack(&[&xs[0], &xs[1]], 0), &[rand_input("s4", &[]), rand_input("s5", &[])]);
}

#[test]
fn movement_unstack() {
    let x = rand_input("unstack", &[3, 2, 4]);
    let xs = std::slice::from_ref(&x);
    for axis in [0, 1, 2, -1] {
        check_grad(
            &format!("unstack axis {axis}"),
            |xs| {
                let mut parts = ops::unstack(&xs[0], axis)?;
                parts.reverse();
                let refs: Vec<&Tensor> = parts.iter().collect();
                ops::stack(&refs, 0)
            },
            xs,
        );
    }
    // Only some of the pieces used: the others get zero gradient.
    check_grad("unstack partial", |xs| Ok(ops::unstack(&xs[0], 0)?.swap_remove(1)), xs);
    check_grad(
        "unstack pieces scaled",
        |xs| {
            let p = ops::unstack(&xs[0], 2)?;
            ops::add(&ops::mul(&p[0], 2.0)?, &ops::sin(&p[3])?)
        },
        xs,
    );
}

#[test]
fn movement_split() {
    let x = rand_input("split", &[2, 6]);
    let xs = std::slice::from_ref(&x);
    check_grad(
        "split 3 axis 1 (all pieces, reordered)",
        |xs| {
            let p = ops::split(&xs[0], 3, 1)?;
            ops::concat(&[&p[2], &ops::mul(&p[0], 2.0)?, &ops::square(&p[1])?], 1)
        },
        xs,
    );
    check_grad("split 2 axis 0 partial", |xs| Ok(ops::split(&xs[0], 2, 0)?.swap_remove(1)), xs);
    check_grad("split 3 axis -1 middle", |xs| Ok(ops::split(&xs[0], 3, -1)?.swap_remove(1)), xs);
}

#[test]
fn movement_split_sizes() {
    let x = rand_input("split_sizes", &[3, 6]);
    let xs = std::slice::from_ref(&x);
    check_grad(
        "split_sizes [1,-1,2] axis 1",
        |xs| {
            let p = ops::split_sizes(&xs[0], &[1, -1, 2], 1)?;
            ops::concat(&[&p[1], &p[2], &ops::exp(&p[0])?], 1)
        },
        xs,
    );
    check_grad("split_sizes [2,1] axis 0 first", |xs| Ok(ops::split_sizes(&xs[0], &[2, 1], 0)?.swap_remove(0)), xs);
    check_grad("split_sizes [0,6] axis 1", |xs| Ok(ops::split_sizes(&xs[0], &[0, 6], 1)?.swap_remove(1)), xs);
}

#[test]
fn movement_slice() {
    let x = rand_input("slice", &[3, 3, 4]);
    let xs = std::slice::from_ref(&x);
    check_grad("slice [1,0,1] [1,-1,2]", |xs| ops::slice(&xs[0], &[1, 0, 1], &[1, -1, 2]), xs);
    check_grad("slice [0,1,0] [3,2,-1]", |xs| ops::slice(&xs[0], &[0, 1, 0], &[3, 2, -1]), xs);
    check_grad("slice whole", |xs| ops::slice(&xs[0], &[0, 0, 0], &[-1, -1, -1]), xs);
}

#[test]
fn movement_strided_slice() {
    use SliceItem::*;
    let x = rand_input("strided_slice", &[4, 5, 3]);
    let xs = std::slice::from_ref(&x);
    let specs: Vec<(&str, Vec<SliceItem>)> = vec![
        (
            "[::-2, newaxis, 1:4, -1]",
            vec![SliceItem::stepped(None, None, -2), NewAxis, SliceItem::range(1, 4), Index(-1)],
        ),
        ("[..., ::-1]", vec![Ellipsis, SliceItem::stepped(None, None, -1)]),
        ("[1, ::2, newaxis]", vec![Index(1), SliceItem::stepped(None, None, 2), NewAxis]),
        ("[newaxis, 3:0:-1, ..., 0]", vec![NewAxis, SliceItem::stepped(Some(3), Some(0), -1), Ellipsis, Index(0)]),
        (
            "[-3:, 4:-6:-3, ::-1]",
            vec![(-3..).into(), SliceItem::stepped(Some(4), Some(-6), -3), SliceItem::stepped(None, None, -1)],
        ),
        ("[:, :, newaxis, 1:]", vec![(..).into(), (..).into(), NewAxis, (1..).into()]),
        ("[2, 3, 1]", vec![Index(2), Index(3), Index(1)]),
    ];
    for (name, spec) in specs {
        check_grad(&format!("strided_slice {name}"), |xs| ops::strided_slice(&xs[0], &spec), xs);
    }
}

#[test]
fn movement_gather() {
    let p = rand_input("gather", &[4, 3]);
    let ps = std::slice::from_ref(&p);
    // Repeated indices accumulate.
    let i = idx(&[2, 0, 2, 1, 2], &[5]);
    check_grad("gather axis 0 repeated", |xs| ops::gather(&xs[0], &i, 0, 0), ps);
    let i2 = idx(&[1, 1, 0, 2], &[2, 2]);
    check_grad("gather axis 1 2-d indices", |xs| ops::gather(&xs[0], &i2, 1, 0), ps);
    check_grad("gather axis -1 scalar index", |xs| ops::gather(&xs[0], &idx(&[2], &[]), -1, 0), ps);
    let i32s = Tensor::from_vec(vec![3i32, 3, 0], [3]).unwrap();
    check_grad("gather i32 indices", |xs| ops::gather(&xs[0], &i32s, 0, 0), ps);
    // batch_dims = 1: per-row picks, with repeats.
    let q = rand_input("gather batch", &[2, 3, 4]);
    let bi = idx(&[0, 2, 2, 1, 1, 1, 0, 2, 0, 0], &[2, 5]);
    check_grad("gather batch_dims 1 axis 1", |xs| ops::gather(&xs[0], &bi, 1, 1), std::slice::from_ref(&q));
    let bi2 = idx(&[3, 0, 3, 1, 2, 2], &[2, 3]);
    check_grad("gather batch_dims 1 axis 2", |xs| ops::gather(&xs[0], &bi2, 2, 1), std::slice::from_ref(&q));
}

#[test]
fn movement_gather_nd() {
    let p = rand_input("gather_nd", &[3, 4, 2]);
    let ps = std::slice::from_ref(&p);
    let i = idx(&[0, 1, 2, 3, 0, 1], &[3, 2]);
    check_grad("gather_nd depth 2 repeated", |xs| ops::gather_nd(&xs[0], &i), ps);
    let full = idx(&[0, 1, 1, 2, 0, 0, 0, 1, 1, 1, 3, 0], &[2, 2, 3]);
    check_grad("gather_nd full depth", |xs| ops::gather_nd(&xs[0], &full), ps);
    let one = idx(&[2, 2, 0], &[3, 1]);
    check_grad("gather_nd depth 1", |xs| ops::gather_nd(&xs[0], &one), ps);
}

#[test]
fn movement_scatter_nd_wrt_updates() {
    let i = idx(&[1, 3, 1], &[3, 1]);
    let u = rand_input("scatter_nd", &[3, 4]);
    let g =
        check_grad("scatter_nd depth 1 duplicates", |xs| ops::scatter_nd(&i, &xs[0], [5, 4]), std::slice::from_ref(&u));
    // The gradient of updates is the output weights gathered at the indices.
    let w = values(&weights("scatter_nd depth 1 duplicates", &[5, 4]));
    let want: Vec<f64> = [1usize, 3, 1].iter().flat_map(|&r| w[r * 4..r * 4 + 4].to_vec()).collect();
    assert_close("scatter_nd gradient", &values(&g[0]), &want, 1e-15);
    let i2 = idx(&[0, 1, 2, 0, 0, 1], &[3, 2]);
    let u2 = rand_input("scatter_nd 2", &[3]);
    check_grad("scatter_nd depth 2", |xs| ops::scatter_nd(&i2, &xs[0], [3, 2]), &[u2]);
    // The indices get no gradient (integer).
    let tape = GradientTape::new();
    tape.watch(&u);
    let y = ops::sum(&ops::scatter_nd(&i, &u, [5, 4]).unwrap(), Axes::All, false).unwrap();
    let gs = tape.gradient(&y, &[&u]).unwrap();
    assert_eq!(values(gs[0].as_ref().unwrap()), vec![1.0; 12]);
}

#[test]
fn movement_tile() {
    let x = rand_input("tile", &[2, 3]);
    for m in [vec![2, 1], vec![1, 3], vec![2, 2], vec![1, 1]] {
        let mm = m.clone();
        check_grad(&format!("tile {m:?}"), |xs| ops::tile(&xs[0], &mm), std::slice::from_ref(&x));
    }
    check_grad("tile rank 3", |xs| ops::tile(&xs[0], &[2, 3, 1]), &[rand_input("tile 3", &[2, 1, 3])]);
}

#[test]
fn movement_pad() {
    let x = rand_input("pad", &[3, 4]);
    let xs = std::slice::from_ref(&x);
    check_grad("pad constant 0", |xs| ops::pad(&xs[0], &[(1, 2), (0, 1)], PadMode::Constant, 0.0), xs);
    check_grad("pad constant 1.5", |xs| ops::pad(&xs[0], &[(0, 0), (3, 2)], PadMode::Constant, 1.5), xs);
    for (mode, pads) in [
        (PadMode::Reflect, [(2, 1), (1, 3)]),
        (PadMode::Reflect, [(0, 2), (3, 0)]),
        (PadMode::Reflect, [(1, 1), (0, 0)]),
        (PadMode::Symmetric, [(3, 1), (0, 2)]),
        (PadMode::Symmetric, [(2, 3), (4, 4)]),
        (PadMode::Symmetric, [(1, 0), (1, 1)]),
    ] {
        check_grad(&format!("pad {mode:?} {pads:?}"), |xs| ops::pad(&xs[0], &pads, mode, 0.0), xs);
    }
    let y = rand_input("pad 3", &[2, 3, 3]);
    for mode in [PadMode::Constant, PadMode::Reflect, PadMode::Symmetric] {
        check_grad(
            &format!("pad rank 3 {mode:?}"),
            |xs| ops::pad(&xs[0], &[(1, 1), (2, 0), (0, 2)], mode, 0.0),
            std::slice::from_ref(&y),
        );
    }
}

#[test]
fn movement_reverse() {
    let x = rand_input("reverse", &[2, 3, 4]);
    for axes in [vec![0], vec![0, 2], vec![-1], vec![0, 1, 2], vec![]] {
        let a = axes.clone();
        check_grad(&format!("reverse {axes:?}"), |xs| ops::reverse(&xs[0], &a), std::slice::from_ref(&x));
    }
}

#[test]
fn identity_grad() {
    let x = rand_input("identity", &[2, 3]);
    let g = check_grad("identity", |xs| ops::identity(&xs[0]), std::slice::from_ref(&x));
    assert_eq!(values(&g[0]), values(&weights("identity", &[2, 3])));
    check_grad("identity chain", |xs| ops::identity(&ops::identity(&xs[0])?), &[x]);
}

#[test]
fn stop_gradient_gives_none_or_zero() {
    let x = rand_input("stop_gradient", &[2, 3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = ops::sum(&ops::stop_gradient(&ops::square(&x).unwrap()).unwrap(), Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "stop_gradient: None");
    let z = tape.gradient_with(&y, &[&x], None, Unconnected::Zero).unwrap()[0].clone().unwrap();
    assert_eq!(values(&z), vec![0.0; 6], "stop_gradient: zeros");
    // Only the other path contributes: d/dx (x * stop(x)) = stop(x) = x
    // (finite differences cannot see stop_gradient, so written out).
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = ops::sum(&ops::mul(&x, &ops::stop_gradient(&x).unwrap()).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&x]).unwrap()[0].clone().unwrap();
    assert_eq!(values(&g), values(&x));
}

// ---------------------------------------------------------------------------
// Graph mode: gradients() in a Session equals the tape
// ---------------------------------------------------------------------------

type GraphFn<'a> = dyn Fn(&[Tensor]) -> Result<Tensor> + 'a;

/// Build `f` on placeholders of `shapes` (possibly partial), add
/// `gradients(sum(f * w))`, and for each set of inputs check the eager tape
/// against finite differences and the session's gradients against the tape.
fn graph_check(name: &str, f: &GraphFn<'_>, shapes: &[Shape], cases: &[Vec<Tensor>]) {
    let g = Graph::new();
    let phs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| g.placeholder(&format!("x{i}"), DType::F64, s.clone()).unwrap())
        .collect();
    let y = f(&phs).unwrap_or_else(|e| panic!("{name}: graph forward: {e}"));
    let wp = g.placeholder("w", DType::F64, y.shape().clone()).unwrap();
    let loss = ops::sum(&ops::mul(&y, &wp).unwrap(), Axes::All, false).unwrap();
    let refs: Vec<&Tensor> = phs.iter().collect();
    let grads =
        gradients(&[&loss], &refs, None, Unconnected::None).unwrap_or_else(|e| panic!("{name}: gradients(): {e}"));
    let fetch: Vec<&Tensor> = grads
        .iter()
        .enumerate()
        .map(|(i, g)| g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient for x{i}")))
        .collect();
    let sess = Session::new(&g);
    for (c, xs) in cases.iter().enumerate() {
        let case = format!("{name} (case {c})");
        let eager = check_grad(&case, f, xs);
        let w = weights(&case, &dims(&f(xs).unwrap()));
        let mut feeds: Vec<(&Tensor, &Tensor)> = phs.iter().zip(xs).collect();
        feeds.push((&wp, &w));
        let out = sess.run(&fetch, &feeds).unwrap_or_else(|e| panic!("{case}: session run: {e}"));
        for (i, (got, want)) in out.iter().zip(&eager).enumerate() {
            assert_eq!(dims(got), dims(want), "{case}: shape of gradient {i}");
            assert_close(&format!("{case}: graph vs eager gradient {i}"), &values(got), &values(want), 1e-12);
        }
    }
}

/// [`graph_check`] with fully known placeholder shapes, one case.
fn graph_check_known(name: &str, f: &GraphFn<'_>, xs: Vec<Tensor>) {
    let shapes: Vec<Shape> = xs.iter().map(|x| x.shape().clone()).collect();
    graph_check(name, f, &shapes, &[xs]);
}

#[test]
fn graph_add_bias_unknown_batch() {
    let mut rng = Rng::named("graph bias");
    let cases: Vec<Vec<Tensor>> = [2usize, 5]
        .iter()
        .map(|&n| vec![uniform(&mut rng, &[n, 3], -1.0, 1.0), uniform(&mut rng, &[3], -1.0, 1.0)])
        .collect();
    let shapes = [Shape::from([None, Some(3)]), Shape::from([3])];
    graph_check("graph add bias", &|xs| ops::add(&xs[0], &xs[1]), &shapes, &cases);
}

#[test]
fn graph_reduce_mean_unknown_batch() {
    let mut rng = Rng::named("graph mean");
    let cases: Vec<Vec<Tensor>> = [1usize, 4, 7].iter().map(|&n| vec![uniform(&mut rng, &[n, 3], -1.0, 1.0)]).collect();
    let shapes = [Shape::from([None, Some(3)])];
    graph_check("graph mean axis 0", &|xs| ops::mean(&xs[0], 0, false), &shapes, &cases);
    graph_check("graph mean all", &|xs| ops::mean(&xs[0], Axes::All, true), &shapes, &cases);
    graph_check("graph sum axis 1", &|xs| ops::sum(&xs[0], 1, false), &shapes, &cases);
}

#[test]
fn graph_matmul_softmax_mlp_unknown_batch() {
    // mean_batch(softmax(tanh(x @ W + b))) with x: [None, 3].
    let mut rng = Rng::named("graph mlp");
    let w = uniform(&mut rng, &[3, 4], -1.0, 1.0);
    let b = uniform(&mut rng, &[4], -1.0, 1.0);
    let cases: Vec<Vec<Tensor>> =
        [2usize, 3].iter().map(|&n| vec![uniform(&mut rng, &[n, 3], -1.0, 1.0), w.clone(), b.clone()]).collect();
    let shapes = [Shape::from([None, Some(3)]), Shape::from([3, 4]), Shape::from([4])];
    let mlp = |xs: &[Tensor]| {
        let h = ops::tanh(&ops::add(&ops::matmul(&xs[0], &xs[1])?, &xs[2])?)?;
        ops::mean(&ops::softmax(&h, -1)?, 0, false)
    };
    graph_check("graph mlp", &mlp, &shapes, &cases);
    graph_check(
        "graph matmul",
        &|xs| ops::matmul(&xs[0], &xs[1]),
        &shapes[..2],
        &cases.iter().map(|c| c[..2].to_vec()).collect::<Vec<_>>(),
    );
    let ce =
        |xs: &[Tensor]| ops::neg(&ops::mean(&ops::log_softmax(&ops::matmul(&xs[0], &xs[1])?, -1)?, Axes::All, false)?);
    graph_check(
        "graph log_softmax loss",
        &ce,
        &shapes[..2],
        &cases.iter().map(|c| c[..2].to_vec()).collect::<Vec<_>>(),
    );
    graph_check(
        "graph max over batch",
        &|xs| ops::max(&xs[0], 0, false),
        &shapes[..1],
        &[vec![distinct(&mut rng, &[4, 3], -1.0, 1.0)]],
    );
}

#[test]
fn graph_subset_known_shapes() {
    let mut rng = Rng::named("graph subset");
    let mut u = |shape: &[usize], lo: f64, hi: f64| uniform(&mut rng, shape, lo, hi);
    let a = u(&[2, 3], -1.0, 1.0);
    let b = u(&[3], 0.5, 1.5);
    let pos = u(&[2, 3], 0.5, 2.0);
    let updates = u(&[3, 3], 0.5, 2.0);
    graph_check_known("graph sub", &|xs| ops::sub(&xs[0], &xs[1]), vec![a.clone(), b.clone()]);
    graph_check_known("graph mul", &|xs| ops::mul(&xs[0], &xs[1]), vec![a.clone(), b.clone()]);
    graph_check_known("graph div", &|xs| ops::div(&xs[0], &xs[1]), vec![a.clone(), b.clone()]);
    graph_check_known("graph pow", &|xs| ops::pow(&xs[0], &xs[1]), vec![pos.clone(), a.clone()]);
    graph_check_known("graph exp", &|xs| ops::exp(&xs[0]), vec![a.clone()]);
    graph_check_known("graph log", &|xs| ops::log(&xs[0]), vec![pos.clone()]);
    graph_check_known("graph tanh", &|xs| ops::tanh(&xs[0]), vec![a.clone()]);
    graph_check_known("graph sigmoid", &|xs| ops::sigmoid(&xs[0]), vec![a.clone()]);
    graph_check_known("graph softmax axis 0", &|xs| ops::softmax(&xs[0], 0), vec![a.clone()]);
    graph_check_known("graph transpose", &|xs| ops::transpose(&xs[0], &[]), vec![a.clone()]);
    graph_check_known("graph reshape", &|xs| ops::reshape(&xs[0], &[3, -1]), vec![a.clone()]);
    graph_check_known("graph concat", &|xs| ops::concat(&[&xs[0], &xs[1]], 0), vec![a.clone(), pos.clone()]);
    let i = idx(&[1, 0, 1, 1], &[4]);
    graph_check_known("graph gather", &|xs| ops::gather(&xs[0], &i, 0, 0), vec![a.clone()]);
    graph_check_known(
        "graph pad reflect",
        &|xs| ops::pad(&xs[0], &[(1, 1), (2, 1)], PadMode::Reflect, 0.0),
        vec![a.clone()],
    );
    let spec = vec![SliceItem::stepped(None, None, -1), SliceItem::NewAxis, SliceItem::range(0, 2)];
    graph_check_known("graph strided_slice", &|xs| ops::strided_slice(&xs[0], &spec), vec![a.clone()]);
    graph_check_known("graph cumsum", &|xs| ops::cumsum(&xs[0], 1, true, true), vec![a.clone()]);
    graph_check_known("graph cumprod", &|xs| ops::cumprod(&xs[0], 1, false, false), vec![pos.clone()]);
    graph_check_known("graph logsumexp", &|xs| ops::logsumexp(&xs[0], 1, false), vec![a.clone()]);
    graph_check_known("graph prod", &|xs| ops::prod(&xs[0], 0, true), vec![pos.clone()]);
    graph_check_known("graph tile", &|xs| ops::tile(&xs[0], &[2, 1]), vec![a.clone()]);
    graph_check_known("graph split", &|xs| Ok(ops::split(&xs[0], 3, 1)?.swap_remove(2)), vec![a.clone()]);
    graph_check_known("graph unstack", &|xs| Ok(ops::unstack(&xs[0], 0)?.swap_remove(0)), vec![a.clone()]);
    graph_check_known(
        "graph top_k",
        &|xs| Ok(ops::top_k(&xs[0], 2)?.0),
        vec![distinct(&mut Rng::named("gtk"), &[2, 3], -1.0, 1.0)],
    );
    graph_check_known("graph maximum", &|xs| ops::maximum(&xs[0], &xs[1]), vec![a.clone(), b.clone()]);
    let c = Tensor::from_vec(vec![true, false, true], [3]).unwrap();
    graph_check_known("graph select", &|xs| ops::select(&c, &xs[0], &xs[1]), vec![a.clone(), b.clone()]);
    graph_check_known("graph einsum", &|xs| ops::einsum("ij,j->i", &[&xs[0], &xs[1]]), vec![a.clone(), b.clone()]);
    let gi = idx(&[0, 2, 1, 1], &[2, 2]);
    graph_check_known("graph gather_nd", &|xs| ops::gather_nd(&xs[0], &gi), vec![a.clone()]);
    let si = idx(&[2, 0, 2], &[3, 1]);
    graph_check_known("graph scatter_nd", &|xs| ops::scatter_nd(&si, &xs[0], [4, 3]), vec![updates]);
    graph_check_known("graph identity", &|xs| ops::identity(&xs[0]), vec![a.clone()]);
    graph_check_known("graph expand_dims", &|xs| ops::expand_dims(&xs[0], 1), vec![a]);
}

// ---------------------------------------------------------------------------
// Second order
// ---------------------------------------------------------------------------

/// `(f'(x), f''(x))` elementwise with nested tapes.
fn first_and_second(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let outer = GradientTape::new();
    outer.watch(x);
    let inner = GradientTape::new();
    inner.watch(x);
    let y = ops::sum(&f(x).unwrap(), Axes::All, false).unwrap();
    let dy = inner.gradient(&y, &[x]).unwrap().remove(0).expect("first derivative");
    drop(inner);
    let d2 =
        outer.gradient(&ops::sum(&dy, Axes::All, false).unwrap(), &[x]).unwrap().remove(0).expect("second derivative");
    (values(&dy), values(&d2))
}

#[test]
fn second_derivatives_eager() {
    let mut rng = Rng::named("second order");
    let x = uniform(&mut rng, &[7], -2.0, 2.0);
    let xv = values(&x);
    type Case = (&'static str, fn(&Tensor) -> Result<Tensor>, fn(f64) -> f64, fn(f64) -> f64);
    let cases: [Case; 6] = [
        ("x^3 (mul)", |x| ops::mul(&ops::mul(x, x)?, x), |x| 3.0 * x * x, |x| 6.0 * x),
        ("x^3 (pow)", |x| ops::pow(x, 3.0), |x| 3.0 * x * x, |x| 6.0 * x),
        ("tanh", ops::tanh, |x| 1.0 - x.tanh().powi(2), |x| -2.0 * x.tanh() * (1.0 - x.tanh().powi(2))),
        ("sin", ops::sin, f64::cos, |x| -x.sin()),
        ("exp", ops::exp, f64::exp, f64::exp),
        (
            "sigmoid",
            ops::sigmoid,
            |x| {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            },
            |x| {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s) * (1.0 - 2.0 * s)
            },
        ),
    ];
    for (name, f, d1, d2) in cases {
        let (g1, g2) = first_and_second(f, &x);
        assert_close(&format!("{name}'"), &g1, &xv.iter().map(|&v| d1(v)).collect::<Vec<_>>(), 1e-13);
        assert_close(&format!("{name}''"), &g2, &xv.iter().map(|&v| d2(v)).collect::<Vec<_>>(), 1e-13);
    }
}

#[test]
fn third_derivative_of_cube() {
    let x = t64(vec![-1.5, 0.25, 2.0], &[3]);
    let t3 = GradientTape::new();
    t3.watch(&x);
    let t2 = GradientTape::new();
    t2.watch(&x);
    let t1 = GradientTape::new();
    t1.watch(&x);
    let y = ops::sum(&ops::mul(&ops::mul(&x, &x).unwrap(), &x).unwrap(), Axes::All, false).unwrap();
    let d1 = t1.gradient(&y, &[&x]).unwrap().remove(0).unwrap();
    let d2 = t2.gradient(&ops::sum(&d1, Axes::All, false).unwrap(), &[&x]).unwrap().remove(0).unwrap();
    let d3 = t3.gradient(&ops::sum(&d2, Axes::All, false).unwrap(), &[&x]).unwrap().remove(0).unwrap();
    assert_close("(x^3)'", &values(&d1), &[6.75, 0.1875, 12.0], 1e-15);
    assert_close("(x^3)''", &values(&d2), &[-9.0, 1.5, 12.0], 1e-15);
    assert_close("(x^3)'''", &values(&d3), &[6.0, 6.0, 6.0], 1e-15);
}

/// `A` (4x3), `x`, `v` for the Hessian-vector product tests.
fn hvp_data() -> (Tensor, Tensor, Tensor) {
    let mut rng = Rng::named("hvp");
    (uniform(&mut rng, &[4, 3], -1.0, 1.0), uniform(&mut rng, &[3], -1.0, 1.0), uniform(&mut rng, &[3], -1.0, 1.0))
}

/// `sum(softplus(A x))` for a vector `x`.
fn softplus_objective(a: &Tensor, x: &Tensor) -> Result<Tensor> {
    let ax = ops::matmul(a, &ops::reshape(x, &[-1, 1])?)?;
    ops::sum(&ops::softplus(&ax)?, Axes::All, false)
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// `(grad f(x), H v)` written out: `A^T sigmoid(A x)` and `A^T diag(sigmoid'(A x)) A v`.
fn analytic_hvp(a: &Tensor, x: &Tensor, v: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (av, xv, vv) = (values(a), values(x), values(v));
    let (m, n) = (4, 3);
    let row = |i: usize, u: &[f64]| (0..n).map(|j| av[i * n + j] * u[j]).sum::<f64>();
    let mut grad = vec![0.0; n];
    let mut hv = vec![0.0; n];
    for i in 0..m {
        let s = sigmoid(row(i, &xv));
        let av_i = row(i, &vv);
        for j in 0..n {
            grad[j] += av[i * n + j] * s;
            hv[j] += av[i * n + j] * s * (1.0 - s) * av_i;
        }
    }
    (grad, hv)
}

fn eager_grad(a: &Tensor, x: &Tensor) -> Vec<f64> {
    let tape = GradientTape::new();
    tape.watch(x);
    let f = softplus_objective(a, x).unwrap();
    values(&tape.gradient(&f, &[x]).unwrap().remove(0).unwrap())
}

#[test]
fn hessian_vector_product_eager() {
    let (a, x, v) = hvp_data();
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    let f = softplus_objective(&a, &x).unwrap();
    let g = inner.gradient(&f, &[&x]).unwrap().remove(0).unwrap();
    let gv = ops::sum(&ops::mul(&g, &v).unwrap(), Axes::All, false).unwrap();
    let hv = values(&outer.gradient(&gv, &[&x]).unwrap().remove(0).unwrap());
    let (grad_want, hv_want) = analytic_hvp(&a, &x, &v);
    assert_close("grad f", &values(&g), &grad_want, 1e-14);
    assert_close("Hv vs analytic", &hv, &hv_want, 1e-13);
    // Finite difference of gradients along v.
    let eps = 1e-5;
    let shifted = |s: f64| t64(values(&x).iter().zip(values(&v)).map(|(x, v)| x + s * v).collect(), &[3]);
    let (gp, gm) = (eager_grad(&a, &shifted(eps)), eager_grad(&a, &shifted(-eps)));
    let fd: Vec<f64> = gp.iter().zip(&gm).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
    assert_close("Hv vs finite differences of gradients", &hv, &fd, 1e-8);
}

#[test]
fn hessian_vector_product_graph() {
    let (a, x, v) = hvp_data();
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F64, [3]).unwrap();
    let f = softplus_objective(&a, &xp).unwrap();
    let grad = gradients(&[&f], &[&xp], None, Unconnected::None).unwrap().remove(0).unwrap();
    let gv = ops::sum(&ops::mul(&grad, &v).unwrap(), Axes::All, false).unwrap();
    let hv = gradients(&[&gv], &[&xp], None, Unconnected::None).unwrap().remove(0).unwrap();
    let sess = Session::new(&g);
    let out = sess.run(&[&grad, &hv], &[(&xp, &x)]).unwrap();
    let (grad_want, hv_want) = analytic_hvp(&a, &x, &v);
    assert_close("graph grad f", &values(&out[0]), &grad_want, 1e-14);
    assert_close("graph Hv", &values(&out[1]), &hv_want, 1e-13);
    // Equal to the eager nested tapes.
    let outer = GradientTape::new();
    outer.watch(&x);
    let inner = GradientTape::new();
    inner.watch(&x);
    let fe = softplus_objective(&a, &x).unwrap();
    let ge = inner.gradient(&fe, &[&x]).unwrap().remove(0).unwrap();
    let hve = outer.gradient(&ops::sum(&ops::mul(&ge, &v).unwrap(), Axes::All, false).unwrap(), &[&x]).unwrap();
    assert_close("graph vs eager Hv", &values(&out[1]), &values(hve[0].as_ref().unwrap()), 1e-12);
}

#[test]
fn second_derivatives_graph() {
    let x = t64(vec![-1.5, -0.3, 0.4, 1.7], &[4]);
    let xv = values(&x);
    type Case = (&'static str, fn(&Tensor) -> Result<Tensor>, fn(f64) -> f64);
    let cases: [Case; 5] = [
        ("x^3", |x| ops::mul(&ops::mul(x, x)?, x), |x| 6.0 * x),
        ("tanh", ops::tanh, |x| -2.0 * x.tanh() * (1.0 - x.tanh().powi(2))),
        ("sin", ops::sin, |x| -x.sin()),
        ("exp", ops::exp, f64::exp),
        ("sigmoid", ops::sigmoid, |x| {
            let s = sigmoid(x);
            s * (1.0 - s) * (1.0 - 2.0 * s)
        }),
    ];
    for (name, f, d2) in cases {
        let g = Graph::new();
        let xp = g.placeholder("x", DType::F64, [None]).unwrap();
        let y = ops::sum(&f(&xp).unwrap(), Axes::All, false).unwrap();
        let dy = gradients(&[&y], &[&xp], None, Unconnected::None).unwrap().remove(0).unwrap();
        let dy_sum = ops::sum(&dy, Axes::All, false).unwrap();
        let d2y = gradients(&[&dy_sum], &[&xp], None, Unconnected::None).unwrap().remove(0).unwrap();
        let out = Session::new(&g).run(&[&d2y], &[(&xp, &x)]).unwrap();
        assert_close(
            &format!("graph {name}''"),
            &values(&out[0]),
            &xv.iter().map(|&v| d2(v)).collect::<Vec<_>>(),
            1e-13,
        );
        let (_, eager) = first_and_second(f, &x);
        assert_close(&format!("graph vs eager {name}''"), &values(&out[0]), &eager, 1e-12);
    }
}

// ---------------------------------------------------------------------------
// Tape semantics
// ---------------------------------------------------------------------------

#[test]
fn persistent_tape_allows_many_gradient_calls() {
    let x = t64(vec![0.5, -1.0, 2.0], &[3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = ops::sum(&ops::square(&x).unwrap(), Axes::All, false).unwrap();
    let z = ops::sum(&ops::sin(&x).unwrap(), Axes::All, false).unwrap();
    for _ in 0..3 {
        let gy = tape.gradient(&y, &[&x]).unwrap().remove(0).unwrap();
        assert_close("d sum x^2", &values(&gy), &[1.0, -2.0, 4.0], 1e-15);
        let gz = tape.gradient(&z, &[&x]).unwrap().remove(0).unwrap();
        assert_close("d sum sin", &values(&gz), &[0.5f64.cos(), 1.0f64.cos(), 2.0f64.cos()], 1e-15);
    }
    // Still recording after gradient calls.
    let w = ops::sum(&ops::exp(&x).unwrap(), Axes::All, false).unwrap();
    let gw = tape.gradient(&w, &[&x]).unwrap().remove(0).unwrap();
    assert_close("d sum exp", &values(&gw), &[0.5f64.exp(), (-1.0f64).exp(), 2.0f64.exp()], 1e-15);
}

#[test]
fn non_persistent_tape_fails_on_second_call() {
    let x = t64(vec![1.0, 2.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = ops::sum(&ops::square(&x).unwrap(), Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_some());
    let err = tape.gradient(&y, &[&x]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(kind(tape.gradient_with(&y, &[&x], None, Unconnected::Zero)), ErrorKind::FailedPrecondition);
    // And it stopped recording after its one call.
    let n = tape.num_records();
    let _ = ops::exp(&x).unwrap();
    assert_eq!(tape.num_records(), n);
}

#[test]
fn unwatched_and_unconnected_sources() {
    let x = t64(vec![1.0, 2.0, 3.0], &[3]);
    let u = t64(vec![4.0, 5.0, 6.0], &[3]);
    let unused = t64(vec![7.0, 8.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    tape.watch(&unused);
    let y = ops::sum(&ops::mul(&x, &u).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&x, &unused]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![4.0, 5.0, 6.0]);
    assert!(g[1].is_none(), "watched but unused: None");
    let z = tape.gradient_with(&y, &[&x, &unused], None, Unconnected::Zero).unwrap();
    assert_eq!(values(z[0].as_ref().unwrap()), vec![4.0, 5.0, 6.0]);
    assert_eq!(dims(z[1].as_ref().unwrap()), vec![2]);
    assert_eq!(values(z[1].as_ref().unwrap()), vec![0.0; 2]);
    // An unwatched tensor that only enters through untracked ops.
    let v = t64(vec![1.0, 1.0, 1.0], &[3]);
    let y2 = ops::add(&y, &ops::sum(&ops::exp(&v).unwrap(), Axes::All, false).unwrap()).unwrap();
    assert!(tape.gradient(&y2, &[&v]).unwrap()[0].is_none(), "unwatched, unrecorded: None");
    // A target that is not a tensor computed on the tape at all.
    let c = t64(vec![1.0], &[]);
    assert!(tape.gradient(&c, &[&x]).unwrap()[0].is_none());
    // An explicit output gradient scales the result.
    let g = tape.gradient_with(&y, &[&x], Some(&t64(vec![2.5], &[])), Unconnected::None).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![10.0, 12.5, 15.0]);
    // Without watch() nothing is recorded.
    let tape = GradientTape::new();
    let y = ops::sum(&ops::square(&u).unwrap(), Axes::All, false).unwrap();
    assert_eq!(tape.num_records(), 0);
    assert!(tape.gradient(&y, &[&u]).unwrap()[0].is_none());
}

#[test]
fn unwatched_input_of_a_recorded_op_gets_no_gradient() {
    // `u` is never watched, but it is an input of an op the tape records
    // (because `x` is watched). TensorFlow returns None for it.
    let x = t64(vec![1.0, 2.0, 3.0], &[3]);
    let u = t64(vec![4.0, 5.0, 6.0], &[3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = ops::sum(&ops::mul(&x, &u).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&x, &u]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![4.0, 5.0, 6.0]);
    assert!(g[1].is_none(), "unwatched tensor must give None, got {:?}", g[1]);
    let z = tape.gradient_with(&y, &[&x, &u], None, Unconnected::Zero).unwrap();
    assert_eq!(values(z[1].as_ref().unwrap()), vec![0.0; 3], "unwatched tensor with Unconnected::Zero");
    // The same for a non-trainable variable read next to a trainable one.
    let v = Variable::new("v", &t64(vec![1.0, -2.0], &[2]), true).unwrap();
    let frozen = Variable::new("frozen", &t64(vec![0.5, 0.25], &[2]), false).unwrap();
    let tape = GradientTape::new();
    let y = ops::sum(&ops::mul(&v.read(), &frozen.read()).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient_vars(&y, &[&v, &frozen]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![0.5, 0.25]);
    assert!(g[1].is_none(), "a non-trainable variable is not watched, got {:?}", g[1]);
}

#[test]
fn graph_unconnected_zero() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [2]).unwrap();
    let u = g.placeholder("u", DType::F64, [None, Some(3)]).unwrap();
    let y = ops::sum(&ops::square(&x).unwrap(), Axes::All, false).unwrap();
    let none = gradients(&[&y], &[&x, &u], None, Unconnected::None).unwrap();
    assert!(none[0].is_some() && none[1].is_none());
    let zero = gradients(&[&y], &[&x, &u], None, Unconnected::Zero).unwrap();
    let out = Session::new(&g)
        .run(
            &[zero[0].as_ref().unwrap(), zero[1].as_ref().unwrap()],
            &[(&x, &t64(vec![1.5, -2.0], &[2])), (&u, &t64(vec![1.0; 6], &[2, 3]))],
        )
        .unwrap();
    assert_eq!(values(&out[0]), vec![3.0, -4.0]);
    assert_eq!(dims(&out[1]), vec![2, 3]);
    assert_eq!(values(&out[1]), vec![0.0; 6]);
    // grad_ys weights the targets.
    let gy = g.constant(t64(vec![3.0], &[])).unwrap();
    let weighted = gradients(&[&y], &[&x], Some(&[&gy]), Unconnected::None).unwrap();
    let out = Session::new(&g).run(&[weighted[0].as_ref().unwrap()], &[(&x, &t64(vec![1.0, 2.0], &[2]))]).unwrap();
    assert_eq!(values(&out[0]), vec![6.0, 12.0]);
}

#[test]
fn modes_do_not_mix() {
    // A tape also records symbolic ops (that is how it works inside a traced
    // function): unwatched placeholders get no gradient, watched ones a
    // symbolic gradient. gradients() is for graphs only.
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F64, [2]).unwrap();
    let tape = GradientTape::persistent();
    let yp = ops::sum(&xp, Axes::All, false).unwrap();
    assert!(tape.gradient(&yp, &[&xp]).unwrap()[0].is_none());
    tape.watch(&xp);
    let yw = ops::sum(&ops::square(&xp).unwrap(), Axes::All, false).unwrap();
    let gw = tape.gradient(&yw, &[&xp]).unwrap()[0].clone().unwrap();
    assert!(gw.is_symbolic());
    let out = Session::new(&g).run(&[&gw], &[(&xp, &t64(vec![1.0, 2.0], &[2]))]).unwrap();
    assert_eq!(values(&out[0]), vec![2.0, 4.0]);
    let x = t64(vec![1.0, 2.0], &[2]);
    let y = ops::sum(&x, Axes::All, false).unwrap();
    assert_eq!(kind(gradients(&[&y], &[&x], None, Unconnected::None)), ErrorKind::Graph);
}

#[test]
fn trainable_variables_are_watched_automatically() {
    let v = Variable::new("v", &t64(vec![1.0, -2.0, 3.0], &[3]), true).unwrap();
    let frozen = Variable::new("frozen", &t64(vec![0.5, 0.5, 0.5], &[3]), false).unwrap();
    let tape = GradientTape::persistent();
    // The frozen variable enters only through ops the tape does not record
    // (see unwatched_input_of_a_recorded_op_gets_no_gradient for the other case).
    let half = ops::mul(&frozen.read(), 1.0).unwrap();
    assert_eq!(tape.num_records(), 0, "reading a non-trainable variable records nothing");
    let y = ops::sum(&ops::mul(&ops::square(&v.read()).unwrap(), &half).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient_vars(&y, &[&v, &frozen]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![1.0, -2.0, 3.0], "d/dv sum(v^2 * 0.5) = v");
    assert!(g[1].is_none(), "non-trainable variables are not watched");
    // Unless watched explicitly.
    let tape = GradientTape::new();
    tape.watch_variable(&frozen);
    let y = ops::sum(&ops::mul(&v.read(), &frozen.read()).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient_vars(&y, &[&v, &frozen]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![0.5; 3]);
    assert_eq!(values(g[1].as_ref().unwrap()), vec![1.0, -2.0, 3.0]);
}

#[test]
fn tape_without_variable_watching() {
    let v = Variable::new("v", &t64(vec![1.0, 2.0], &[2]), true).unwrap();
    let tape = GradientTape::with_options(false, false);
    let y = ops::sum(&ops::square(&v.read()).unwrap(), Axes::All, false).unwrap();
    assert!(tape.gradient_vars(&y, &[&v]).unwrap()[0].is_none());
    assert_eq!(kind(tape.gradient_vars(&y, &[&v])), ErrorKind::FailedPrecondition, "not persistent");
    // Explicit watching still works.
    let tape = GradientTape::with_options(true, false);
    tape.watch_variable(&v);
    let y = ops::sum(&ops::square(&v.read()).unwrap(), Axes::All, false).unwrap();
    assert_eq!(values(tape.gradient_vars(&y, &[&v]).unwrap()[0].as_ref().unwrap()), vec![2.0, 4.0]);
    assert_eq!(values(tape.gradient_vars(&y, &[&v]).unwrap()[0].as_ref().unwrap()), vec![2.0, 4.0]);
}

#[test]
fn eager_sgd_with_a_variable() {
    // Minimise sum((v - t)^2): v <- v - 0.25 * 2 (v - t) halves the distance each step.
    let t = t64(vec![1.0, -1.0, 0.5], &[3]);
    let v = Variable::new("v", &t64(vec![3.0, 3.0, 3.0], &[3]), true).unwrap();
    for step in 1..=4 {
        let tape = GradientTape::new();
        let loss = ops::sum(&ops::square(&ops::sub(&v.read(), &t).unwrap()).unwrap(), Axes::All, false).unwrap();
        let g = tape.gradient_vars(&loss, &[&v]).unwrap().remove(0).unwrap();
        v.assign_sub(&ops::mul(&g, 0.25).unwrap()).unwrap();
        let want: Vec<f64> = values(&t).iter().map(|&tv| tv + (3.0 - tv) * 0.5f64.powi(step)).collect();
        assert_close(&format!("sgd step {step}"), &values(&v.current()), &want, 1e-15);
    }
}

#[test]
fn gradients_accumulate_over_uses() {
    let x = t64(vec![-1.5, 0.0, 2.0], &[3]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = ops::add(&ops::mul(&x, &x).unwrap(), &x).unwrap();
    let g = tape.gradient(&ops::sum(&y, Axes::All, false).unwrap(), &[&x]).unwrap().remove(0).unwrap();
    assert_eq!(values(&g), vec![-2.0, 1.0, 5.0], "d/dx (x*x + x) = 2x + 1");
    check_grad("x*x + x", |xs| ops::add(&ops::mul(&xs[0], &xs[0])?, &xs[0]), std::slice::from_ref(&x));
    check_grad(
        "x*sin(x)*exp(x) + x",
        |xs| {
            let x = &xs[0];
            ops::add(&ops::mul(&ops::mul(x, &ops::sin(x)?)?, &ops::exp(x)?)?, x)
        },
        std::slice::from_ref(&x),
    );
    // A diamond: two branches of one intermediate.
    check_grad(
        "diamond",
        |xs| {
            let h = ops::tanh(&xs[0])?;
            ops::add(&ops::square(&h)?, &ops::sigmoid(&h)?)
        },
        &[x],
    );
}

#[test]
fn untracked_and_stop_gradient_stop_the_flow() {
    let x = t64(vec![1.0, 2.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let hidden = untracked(|| ops::square(&x).unwrap());
    let y = ops::sum(&hidden, Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "untracked op");
    // Mixed: only the tracked path counts.
    let z = ops::sum(&ops::add(&hidden, &ops::mul(&x, 3.0).unwrap()).unwrap(), Axes::All, false).unwrap();
    assert_eq!(values(tape.gradient(&z, &[&x]).unwrap()[0].as_ref().unwrap()), vec![3.0, 3.0]);
    let s = ops::sum(&ops::mul(&ops::stop_gradient(&x).unwrap(), &x).unwrap(), Axes::All, false).unwrap();
    assert_eq!(values(tape.gradient(&s, &[&x]).unwrap()[0].as_ref().unwrap()), vec![1.0, 2.0]);
    // stop_recording: ops after it are not recorded.
    let n = tape.num_records();
    tape.stop_recording();
    let late = ops::sum(&ops::exp(&x).unwrap(), Axes::All, false).unwrap();
    assert_eq!(tape.num_records(), n);
    assert!(tape.gradient(&late, &[&x]).unwrap()[0].is_none());
}

#[test]
fn integer_paths_have_no_gradient() {
    let x = t64(vec![0.3, 1.2, -0.5, 2.0, 0.1, 0.7], &[2, 3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let am = ops::cast(&ops::argmax(&x, 1).unwrap(), DType::F64).unwrap();
    let y = ops::sum(&am, Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "argmax");
    let an = ops::cast(&ops::argmin(&x, 0).unwrap(), DType::F64).unwrap();
    let y = ops::sum(&an, Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "argmin");
    // Through an integer cast: f64 -> i32 -> f64.
    let r = ops::cast(&ops::cast(&x, DType::I32).unwrap(), DType::F64).unwrap();
    let y = ops::sum(&r, Axes::All, false).unwrap();
    assert!(tape.gradient(&y, &[&x]).unwrap()[0].is_none(), "cast through i32");
    // Gathering with argmax indices: a gradient flows to the params only.
    let picked = ops::gather(&x, &ops::argmax(&x, 1).unwrap(), 1, 1).unwrap();
    let y = ops::sum(&picked, Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&x]).unwrap().remove(0).unwrap();
    assert_eq!(values(&g), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

// ---------------------------------------------------------------------------
// Graph variables
// ---------------------------------------------------------------------------

#[test]
fn graph_variable_sgd_step() {
    let g = Graph::new();
    let w0 = t64(vec![0.5, -1.0, 1.5, 0.25, -0.75, 2.0], &[3, 2]);
    let var = Variable::in_graph(&g, "weights", &w0, true).unwrap();
    let x = g.placeholder("x", DType::F64, [None, Some(3)]).unwrap();
    let t = g.placeholder("t", DType::F64, [None, Some(2)]).unwrap();
    let r = var.read();
    let err = ops::sub(&ops::matmul(&x, &r).unwrap(), &t).unwrap();
    let loss = ops::sum(&ops::square(&err).unwrap(), Axes::All, false).unwrap();
    let grad = gradients(&[&loss], &[&r], None, Unconnected::None).unwrap().remove(0).expect("gradient wrt the read");
    assert_eq!(dims(&grad), vec![3, 2]);
    let lr = 0.05;
    let step = var.assign_sub(&ops::mul(&grad, lr).unwrap()).unwrap();
    let step_op: Operation = step.op().unwrap();
    let xv = t64(vec![1.0, 2.0, -1.0, 0.5, 0.0, 1.0, -2.0, 1.0, 3.0, 1.0, 1.0, 1.0], &[4, 3]);
    let tv = t64(vec![1.0, 0.0, 0.0, 1.0, -1.0, 2.0, 0.5, 0.5], &[4, 2]);
    let feeds = [(&x, &xv), (&t, &tv)];
    let sess = Session::new(&g);
    // Reading before initialization names the variable.
    let e = sess.run(&[&loss], &feeds).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("weights"), "the error names the variable: {e}");
    let e = sess.variable_value(&var).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("weights"), "{e}");
    assert!(!sess.is_initialized(&var));
    sess.run_targets(&[&g.global_variables_initializer().unwrap()]).unwrap();
    // Expected gradient: 2 x^T (x w - t).
    let expected_grad = |w: &[f64]| -> Vec<f64> {
        let (xd, td) = (values(&xv), values(&tv));
        let mut gr = vec![0.0; 6];
        for n in 0..4 {
            for k in 0..2 {
                let pred: f64 = (0..3).map(|j| xd[n * 3 + j] * w[j * 2 + k]).sum();
                let e = pred - td[n * 2 + k];
                for j in 0..3 {
                    gr[j * 2 + k] += 2.0 * xd[n * 3 + j] * e;
                }
            }
        }
        gr
    };
    let mut w = values(&w0);
    let mut last_loss = f64::INFINITY;
    for _ in 0..3 {
        let want = expected_grad(&w);
        let out = sess.run_with_targets(&[&grad, &loss], &feeds, &[&step_op]).unwrap();
        assert_close("graph variable gradient", &values(&out[0]), &want, 1e-12);
        let l = values(&out[1])[0];
        assert!(l < last_loss, "loss must decrease: {l} after {last_loss}");
        last_loss = l;
        w = w.iter().zip(&want).map(|(w, g)| w - lr * g).collect();
        assert_close("variable after SGD step", &values(&sess.variable_value(&var).unwrap()), &w, 1e-12);
    }
    // A fresh session has its own, uninitialized, store.
    let other = Session::new(&g);
    let e = other.run(&[&grad], &feeds).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("weights"), "{e}");
}

#[test]
fn graph_gradient_of_trainable_variables_list() {
    // gradients() for every trainable variable of a small model in one call.
    let g = Graph::new();
    let w = Variable::in_graph(&g, "w", &t64(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[3, 2]), true).unwrap();
    let b = Variable::in_graph(&g, "b", &t64(vec![0.0, 0.1], &[2]), true).unwrap();
    let frozen = Variable::in_graph(&g, "frozen", &t64(vec![2.0], &[]), false).unwrap();
    assert_eq!(g.trainable_variables().len(), 2);
    let x = g.placeholder("x", DType::F64, [None, Some(3)]).unwrap();
    let h = ops::add(&ops::matmul(&x, &w.read()).unwrap(), &b.read()).unwrap();
    let loss = ops::mul(&ops::mean(&ops::tanh(&h).unwrap(), Axes::All, false).unwrap(), &frozen.read()).unwrap();
    let reads: Vec<Tensor> = [&w, &b, &frozen].iter().map(|v| v.read()).collect();
    let refs: Vec<&Tensor> = reads.iter().collect();
    let grads = gradients(&[&loss], &refs, None, Unconnected::None).unwrap();
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer().unwrap()]).unwrap();
    let xv = t64(vec![1.0, -1.0, 0.5, 0.2, 0.3, -0.4], &[2, 3]);
    let fetch: Vec<&Tensor> = grads.iter().map(|g| g.as_ref().unwrap()).collect();
    let out = sess.run(&fetch, &[(&x, &xv)]).unwrap();
    // Against the eager tape on the same values.
    let (we, be, fe) =
        (sess.variable_value(&w).unwrap(), sess.variable_value(&b).unwrap(), sess.variable_value(&frozen).unwrap());
    let eager = check_grad_tol(
        "graph variables model",
        |xs| {
            let h = ops::add(&ops::matmul(&xv, &xs[0])?, &xs[1])?;
            ops::mul(&ops::mean(&ops::tanh(&h)?, Axes::All, false)?, &xs[2])
        },
        &[we, be, fe],
        TOL,
    );
    // check_grad weights the scalar loss by a random w; undo it.
    let scale = values(&weights("graph variables model", &[]))[0];
    for (i, (got, e)) in out.iter().zip(&eager).enumerate() {
        let want: Vec<f64> = values(e).iter().map(|v| v / scale).collect();
        assert_close(&format!("variable gradient {i}"), &values(got), &want, 1e-12);
    }
}

// ---------------------------------------------------------------------------
// Edge cases
// ---------------------------------------------------------------------------

#[test]
fn graph_gradient_rules_with_unknown_batch() {
    // Ops whose gradient rules must take shapes at run time: x is [None, 3].
    let mut rng = Rng::named("graph dynamic");
    let cases: Vec<Vec<Tensor>> = [2usize, 5].iter().map(|&n| vec![distinct(&mut rng, &[n, 3], -1.5, 1.5)]).collect();
    let shapes = [Shape::from([None, Some(3)])];
    let i = idx(&[1, 0, 1], &[3]);
    let unary: Vec<(&str, Box<GraphFn<'_>>)> = vec![
        ("max axis 0", Box::new(|xs: &[Tensor]| ops::max(&xs[0], 0, false))),
        ("min all", Box::new(|xs: &[Tensor]| ops::min(&xs[0], Axes::All, false))),
        ("prod axis 0", Box::new(|xs: &[Tensor]| ops::prod(&xs[0], 0, true))),
        ("softmax axis 0", Box::new(|xs: &[Tensor]| ops::softmax(&xs[0], 0))),
        ("log_softmax axis -1", Box::new(|xs: &[Tensor]| ops::log_softmax(&xs[0], -1))),
        ("logsumexp axis 0", Box::new(|xs: &[Tensor]| ops::logsumexp(&xs[0], 0, false))),
        ("variance axis 0", Box::new(|xs: &[Tensor]| ops::variance(&xs[0], 0, false))),
        ("cumsum axis 0 reverse", Box::new(|xs: &[Tensor]| ops::cumsum(&xs[0], 0, false, true))),
        ("cumprod axis 0", Box::new(|xs: &[Tensor]| ops::cumprod(&xs[0], 0, true, false))),
        ("reshape [-1]", Box::new(|xs: &[Tensor]| ops::reshape(&xs[0], &[-1]))),
        ("transpose", Box::new(|xs: &[Tensor]| ops::transpose(&xs[0], &[]))),
        ("expand_dims + squeeze", Box::new(|xs: &[Tensor]| ops::squeeze(&ops::expand_dims(&xs[0], 1)?, &[1]))),
        (
            "strided_slice [1:, ::-1]",
            Box::new(|xs: &[Tensor]| ops::strided_slice(&xs[0], &[(1..).into(), SliceItem::stepped(None, None, -1)])),
        ),
        ("slice", Box::new(|xs: &[Tensor]| ops::slice(&xs[0], &[1, 1], &[-1, 2]))),
        ("concat axis 0", Box::new(|xs: &[Tensor]| ops::concat(&[&xs[0], &ops::square(&xs[0])?], 0))),
        ("gather axis 1", Box::new(|xs: &[Tensor]| ops::gather(&xs[0], &i, 1, 0))),
        ("gather axis 0", Box::new(|xs: &[Tensor]| ops::gather(&xs[0], &idx(&[0, 1, 0], &[3]), 0, 0))),
        ("reverse axis 0", Box::new(|xs: &[Tensor]| ops::reverse(&xs[0], &[0]))),
        ("broadcast [None,1] * [3]", Box::new(|xs: &[Tensor]| ops::mul(&ops::sum(&xs[0], 1, true)?, &xs[0]))),
        ("matmul x^T x", Box::new(|xs: &[Tensor]| ops::matmul_t(&xs[0], &xs[0], true, false))),
        ("top_k", Box::new(|xs: &[Tensor]| Ok(ops::top_k(&xs[0], 2)?.0))),
        ("unstack axis 1", Box::new(|xs: &[Tensor]| Ok(ops::unstack(&xs[0], 1)?.swap_remove(2)))),
        ("split axis 1", Box::new(|xs: &[Tensor]| Ok(ops::split_sizes(&xs[0], &[2, 1], 1)?.swap_remove(0)))),
    ];
    let mut failed = Vec::new();
    for (name, f) in &unary {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            graph_check(&format!("dynamic {name}"), f.as_ref(), &shapes, &cases);
        }));
        if r.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "graph gradients with an unknown batch dimension failed for {failed:?}");
}

#[test]
fn gradients_with_respect_to_intermediates_and_several_targets() {
    // Eager: a recorded intermediate is a valid source.
    let x = t64(vec![0.5, -1.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let h = ops::tanh(&x).unwrap();
    let y = ops::sum(&ops::square(&h).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&h, &x]).unwrap();
    let hv = values(&h);
    assert_close("dy/dh", &values(g[0].as_ref().unwrap()), &[2.0 * hv[0], 2.0 * hv[1]], 1e-15);
    let want: Vec<f64> = hv.iter().map(|h| 2.0 * h * (1.0 - h * h)).collect();
    assert_close("dy/dx", &values(g[1].as_ref().unwrap()), &want, 1e-15);
    // The target itself as a source.
    assert_eq!(values(tape.gradient(&y, &[&y]).unwrap()[0].as_ref().unwrap()), vec![1.0]);
    // Graph: several targets add up; an intermediate as a source.
    let gr = Graph::new();
    let xp = gr.placeholder("x", DType::F64, [2]).unwrap();
    let hp = ops::tanh(&xp).unwrap();
    let y1 = ops::sum(&ops::square(&hp).unwrap(), Axes::All, false).unwrap();
    let y2 = ops::sum(&ops::mul(&xp, 3.0).unwrap(), Axes::All, false).unwrap();
    let both = gradients(&[&y1, &y2], &[&xp, &hp], None, Unconnected::None).unwrap();
    let out = Session::new(&gr).run(&[both[0].as_ref().unwrap(), both[1].as_ref().unwrap()], &[(&xp, &x)]).unwrap();
    let want_x: Vec<f64> = want.iter().map(|g| g + 3.0).collect();
    assert_close("graph d(y1 + y2)/dx", &values(&out[0]), &want_x, 1e-15);
    assert_close("graph d(y1 + y2)/dh", &values(&out[1]), &[2.0 * hv[0], 2.0 * hv[1]], 1e-15);
    // A mismatched grad_ys list is an error.
    assert_eq!(kind(gradients(&[&y1, &y2], &[&xp], Some(&[&y1]), Unconnected::None)), ErrorKind::InvalidArgument);
}

#[test]
fn gradient_dtypes_follow_the_inputs() {
    // f32, f16 and bf16 gradients keep the input dtype and match f64 loosely.
    let xv = [0.5, -1.0, 1.5, 0.25, -0.75, 1.0];
    let wv = [0.3, -0.2, 0.1, 0.4, -0.5, 0.6];
    let model = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
        let h = ops::add(&ops::matmul(x, w)?, &ops::reshape(&ops::sum(w, 0, false)?, &[1, 2])?)?;
        ops::mean(&ops::softmax(&ops::tanh(&h)?, -1)?, Axes::All, false)
    };
    let grads_in = |dtype: DType| -> (Vec<f64>, Vec<f64>) {
        let x = ops::cast(&t64(xv.to_vec(), &[2, 3]), dtype).unwrap();
        let w = ops::cast(&t64(wv.to_vec(), &[3, 2]), dtype).unwrap();
        let tape = GradientTape::new();
        tape.watch(&x);
        tape.watch(&w);
        let y = ops::mul(&model(&x, &w).unwrap(), 10.0).unwrap();
        let g = tape.gradient(&y, &[&x, &w]).unwrap();
        for t in g.iter() {
            assert_eq!(t.as_ref().unwrap().dtype(), dtype, "gradient dtype");
        }
        (values(g[0].as_ref().unwrap()), values(g[1].as_ref().unwrap()))
    };
    let (gx, gw) = grads_in(DType::F64);
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 2e-2), (DType::BF16, 1e-1)] {
        let (hx, hw) = grads_in(dtype);
        for (a, b) in hx.iter().chain(&hw).zip(gx.iter().chain(&gw)) {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{dtype}: {a} vs {b}");
        }
    }
}

#[test]
fn empty_tensors() {
    // Zero-size inputs get zero-size gradients; matmul over k = 0 gives zero gradients.
    let e = t64(vec![], &[0, 3]);
    let tape = GradientTape::new();
    tape.watch(&e);
    let y = ops::sum(&ops::exp(&e).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&e]).unwrap().remove(0).unwrap();
    assert_eq!(dims(&g), vec![0, 3]);
    let a = t64(vec![], &[2, 0]);
    let b = t64(vec![], &[0, 3]);
    let tape = GradientTape::new();
    tape.watch(&a);
    tape.watch(&b);
    let c = ops::matmul(&a, &b).unwrap();
    assert_eq!(values(&c), vec![0.0; 6]);
    let y = ops::sum(&c, Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&a, &b]).unwrap();
    assert_eq!(dims(g[0].as_ref().unwrap()), vec![2, 0]);
    assert_eq!(dims(g[1].as_ref().unwrap()), vec![0, 3]);
    let x = rand_input("empty concat", &[2, 3]);
    check_grad("concat with an empty piece", |xs| ops::concat(&[&xs[0], &e], 0), &[x]);
    check_grad(
        "empty slice",
        |xs| ops::concat(&[&ops::slice(&xs[0], &[0, 1], &[2, 0])?, &xs[0]], 1),
        &[rand_input("es", &[2, 3])],
    );
}

#[test]
fn conventions_at_kinks() {
    // TensorFlow's choices where the derivative does not exist.
    let at = |f: fn(&Tensor) -> Result<Tensor>, x: &[f64]| -> Vec<f64> {
        let t = t64(x.to_vec(), &[x.len()]);
        let tape = GradientTape::new();
        tape.watch(&t);
        let y = ops::sum(&f(&t).unwrap(), Axes::All, false).unwrap();
        values(&tape.gradient(&y, &[&t]).unwrap().remove(0).unwrap())
    };
    assert_eq!(at(ops::relu, &[0.0, 1.0, -1.0]), vec![0.0, 1.0, 0.0], "relu'(0) = 0");
    assert_eq!(at(ops::relu6, &[0.0, 6.0, 3.0, 7.0]), vec![0.0, 0.0, 1.0, 0.0], "relu6 at 0 and 6");
    assert_eq!(at(ops::abs, &[0.0, -2.0, 2.0]), vec![0.0, -1.0, 1.0], "abs'(0) = 0");
    assert_eq!(at(ops::elu, &[0.0]), vec![1.0], "elu'(0) from the left: e^0 = 1");
    assert_eq!(
        at(|x| ops::minimum(x, 1.0), &[1.0, 0.0, 2.0]),
        vec![1.0, 1.0, 0.0],
        "minimum tie goes to the first operand"
    );
    // pow: d/db a^b at a = 0 is taken as 0 (not NaN); d/da at a = 0, b = 2 is 0.
    let a = t64(vec![0.0, 2.0], &[2]);
    let b = t64(vec![2.0, 3.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&a);
    tape.watch(&b);
    let y = ops::sum(&ops::pow(&a, &b).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&a, &b]).unwrap();
    assert_eq!(values(g[0].as_ref().unwrap()), vec![0.0, 12.0]);
    assert_close("d/db pow", &values(g[1].as_ref().unwrap()), &[0.0, 8.0 * 2f64.ln()], 1e-15);
}

#[test]
fn gradient_vars_uses_the_values_read_while_recording() {
    // `gradient_vars` is documented as differentiating with respect to the
    // variables' values "as read while recording": an assignment between the
    // forward pass and the gradient call must not lose the gradient.
    let v = Variable::new("v", &t64(vec![1.0, 2.0], &[2]), true).unwrap();
    let tape = GradientTape::new();
    let y = ops::sum(&ops::square(&v.read()).unwrap(), Axes::All, false).unwrap();
    v.assign(&t64(vec![5.0, 5.0], &[2])).unwrap();
    let g = tape.gradient_vars(&y, &[&v]).unwrap();
    assert_eq!(g[0].as_ref().map(values), Some(vec![2.0, 4.0]), "gradient after an assignment");
}

#[test]
fn assignment_detaches_from_the_tape() {
    // The new value of an assigned variable is a fresh source, not a function of
    // what it was computed from; reading it again watches the new value.
    let x = t64(vec![1.0, 2.0], &[2]);
    let v = Variable::new("v", &t64(vec![0.0, 0.0], &[2]), true).unwrap();
    let tape = GradientTape::persistent();
    tape.watch(&x);
    v.assign(&ops::mul(&x, 2.0).unwrap()).unwrap();
    let y = ops::sum(&ops::mul(&v.read(), &v.read()).unwrap(), Axes::All, false).unwrap();
    let g = tape.gradient(&y, &[&x]).unwrap();
    assert!(g[0].is_none(), "no gradient through an assignment");
    let gv = tape.gradient_vars(&y, &[&v]).unwrap();
    assert_eq!(values(gv[0].as_ref().unwrap()), vec![4.0, 8.0]);
    // assign_add / assign_sub are not recorded either.
    let n = tape.num_records();
    v.assign_add(&x).unwrap();
    v.assign_sub(&x).unwrap();
    assert_eq!(tape.num_records(), n, "assign_add/assign_sub must not be recorded");
}

#[test]
fn dropped_watched_tensors_do_not_make_new_tensors_watched() {
    // The tape identifies eager tensors by address; a watched tensor that is
    // dropped must not leave its address "watched" for a later tensor that
    // happens to reuse the allocation.
    let tape = GradientTape::persistent();
    let mut hits = 0;
    for i in 0..64 {
        {
            let tmp = t64(vec![i as f64, 1.0, 2.0], &[3]);
            tape.watch(&tmp);
        }
        let fresh = t64(vec![3.0, 4.0, 5.0], &[3]);
        let y = ops::sum(&ops::exp(&fresh).unwrap(), Axes::All, false).unwrap();
        if tape.gradient(&y, &[&fresh]).unwrap()[0].is_some() {
            hits += 1;
        }
    }
    assert_eq!(hits, 0, "a never-watched tensor got a gradient {hits} times out of 64");
}

// ---------------------------------------------------------------------------
// Factorizations, solves and matrix functions
// ---------------------------------------------------------------------------

/// Factorizations amplify rounding: a looser comparison than the elementwise ops'.
const LINALG_TOL: Tol = Tol { step: 1e-6, rel: 2e-6, abs: 1e-7 };

/// `x` plus `shift` on the diagonal of each matrix.
fn shifted(x: &Tensor, shift: f64) -> Result<Tensor> {
    let n = x.shape()[x.rank() - 1];
    ops::add(x, &ops::mul(&ops::eye(rivulet::Ctx::Eager, n, n, DType::F64)?, shift)?)
}

/// `x xᵀ / n + I`: symmetric positive definite, and every element of `x` matters.
fn spd_of(x: &Tensor) -> Result<Tensor> {
    let n = x.shape()[x.rank() - 1] as f64;
    shifted(&ops::div(&ops::matmul_t(x, x, false, true)?, n)?, 1.0)
}

/// `(x + xᵀ) / 2`.
fn sym_of(x: &Tensor) -> Result<Tensor> {
    ops::mul(&ops::add(x, &ops::adjoint(x)?)?, 0.5)
}

/// Tensors flattened and joined, so one check covers several outputs.
fn joined(ts: &[Tensor]) -> Result<Tensor> {
    let flat: Vec<Tensor> = ts.iter().map(|t| ops::reshape(t, &[-1])).collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = flat.iter().collect();
    ops::concat(&refs, 0)
}

#[test]
fn linalg_cholesky_and_logdet() {
    for shape in [vec![1, 1], vec![4, 4], vec![2, 3, 3]] {
        let name = format!("cholesky {shape:?}");
        let x = uniform(&mut Rng::named(&name), &shape, -1.0, 1.0);
        check_grad_tol(&name, |xs| ops::cholesky(&spd_of(&xs[0])?), std::slice::from_ref(&x), LINALG_TOL);
        check_grad_tol(
            &format!("logdet {shape:?}"),
            |xs| ops::logdet(&spd_of(&xs[0])?),
            std::slice::from_ref(&x),
            LINALG_TOL,
        );
        let b = uniform(&mut Rng::named("cholesky_solve rhs"), &[shape[shape.len() - 1], 2], -1.0, 1.0);
        check_grad_tol(
            &format!("cholesky_solve {shape:?}"),
            |xs| ops::cholesky_solve(&ops::cholesky(&spd_of(&xs[0])?)?, &xs[1]),
            &[x, b],
            LINALG_TOL,
        );
    }
}

#[test]
fn linalg_solves() {
    for lower in [true, false] {
        for adjoint in [false, true] {
            let name = format!("triangular_solve lower={lower} adjoint={adjoint}");
            let mut rng = Rng::named(&name);
            let (a, b) = (uniform(&mut rng, &[3, 3], -1.0, 1.0), uniform(&mut rng, &[2, 3, 2], -1.0, 1.0));
            check_grad_tol(
                &name,
                |xs| ops::triangular_solve(&shifted(&xs[0], 3.0)?, &xs[1], lower, adjoint),
                &[a, b],
                LINALG_TOL,
            );
        }
    }
    for adjoint in [false, true] {
        let name = format!("solve adjoint={adjoint}");
        let mut rng = Rng::named(&name);
        let (a, b) = (uniform(&mut rng, &[2, 3, 3], -1.0, 1.0), uniform(&mut rng, &[3, 2], -1.0, 1.0));
        check_grad_tol(&name, |xs| ops::solve_t(&shifted(&xs[0], 2.0)?, &xs[1], adjoint), &[a, b], LINALG_TOL);
    }
    let mut rng = Rng::named("inverse and determinants");
    let a = uniform(&mut rng, &[2, 3, 3], -1.0, 1.0);
    check_grad_tol("inv", |xs| ops::inv(&shifted(&xs[0], 2.0)?), std::slice::from_ref(&a), LINALG_TOL);
    check_grad_tol("det", |xs| ops::det(&shifted(&xs[0], 1.5)?), std::slice::from_ref(&a), LINALG_TOL);
    check_grad_tol("slogdet", |xs| Ok(ops::slogdet(&shifted(&xs[0], -0.3)?)?.1), std::slice::from_ref(&a), LINALG_TOL);
    let (lu, perm) = ops::lu(&shifted(&a, 2.0).unwrap()).unwrap();
    let rhs = uniform(&mut rng, &[2, 3, 2], -1.0, 1.0);
    check_grad_tol("lu_solve", |xs| ops::lu_solve(&xs[0], &perm, &xs[1]), &[lu.clone(), rhs], LINALG_TOL);
    check_grad_tol("lu_reconstruct", |xs| ops::lu_reconstruct(&xs[0], &perm), &[lu], LINALG_TOL);
    for (m, n) in [(5, 3), (3, 5)] {
        let name = format!("lstsq {m}x{n}");
        let mut rng = Rng::named(&name);
        let (a, b) = (uniform(&mut rng, &[m, n], -1.0, 1.0), uniform(&mut rng, &[m, 2], -1.0, 1.0));
        check_grad_tol(&name, |xs| ops::lstsq(&xs[0], &xs[1], 0.0, true), &[a.clone(), b.clone()], LINALG_TOL);
        check_grad_tol(
            &format!("{name} l2"),
            |xs| ops::lstsq(&xs[0], &xs[1], 0.1, true),
            &[a.clone(), b.clone()],
            LINALG_TOL,
        );
        check_grad_tol(&format!("{name} qr"), |xs| ops::lstsq(&xs[0], &xs[1], 0.0, false), &[a.clone(), b], LINALG_TOL);
        check_grad_tol(&format!("pinv {m}x{n}"), |xs| ops::pinv(&xs[0], None), &[a], LINALG_TOL);
    }
}

#[test]
fn linalg_decompositions() {
    for shape in [vec![4, 4], vec![2, 3, 3]] {
        let name = format!("eigh {shape:?}");
        let x = uniform(&mut Rng::named(&name), &shape, -1.0, 1.0);
        let n = shape[shape.len() - 1];
        let c = t64((0..n).map(|i| 1.0 + i as f64).collect(), &[n]);
        // Eigenvalues, and V diag(c) Vᵀ (independent of the eigenvectors' signs).
        check_grad_tol(
            &name,
            |xs| {
                let (e, v) = ops::eigh(&sym_of(&xs[0])?)?;
                joined(&[e, ops::matmul_t(&ops::mul(&v, &c)?, &v, false, true)?])
            },
            std::slice::from_ref(&x),
            LINALG_TOL,
        );
        check_grad_tol(&format!("eigvalsh {shape:?}"), |xs| ops::eigvalsh(&sym_of(&xs[0])?), &[x], LINALG_TOL);
    }
    for (m, n) in [(4, 4), (5, 3), (3, 5)] {
        let name = format!("svd {m}x{n}");
        let x = uniform(&mut Rng::named(&name), &[2, m, n], -1.0, 1.0);
        let k = m.min(n);
        let c = t64((0..k).map(|i| 1.0 + i as f64).collect(), &[k]);
        check_grad_tol(
            &name,
            |xs| {
                let (s, u, v) = ops::svd(&xs[0], false)?;
                joined(&[s, ops::matmul_t(&ops::mul(&u, &c)?, &v, false, true)?])
            },
            std::slice::from_ref(&x),
            LINALG_TOL,
        );
        check_grad_tol(
            &format!("singular values {m}x{n}"),
            |xs| ops::singular_values(&xs[0]),
            std::slice::from_ref(&x),
            LINALG_TOL,
        );
        check_grad_tol(
            &format!("qr {m}x{n}"),
            |xs| {
                let (q, r) = ops::qr(&xs[0], false)?;
                joined(&[q, r])
            },
            &[x],
            LINALG_TOL,
        );
    }
    // full_matrices where TensorFlow defines the gradient: square QR, SVD with dimensions 1 apart.
    let x = uniform(&mut Rng::named("full"), &[3, 4], -1.0, 1.0);
    check_grad_tol(
        "svd full 3x4",
        |xs| {
            let (s, u, v) = ops::svd(&xs[0], true)?;
            let v1 = ops::strided_slice(&v, &[SliceItem::ALL, SliceItem::range(0, 3)])?;
            joined(&[s, ops::matmul_t(&u, &v1, false, true)?])
        },
        std::slice::from_ref(&x),
        LINALG_TOL,
    );
    assert_eq!(
        GradientTape::new()
            .gradient(&ops::sum(&ops::qr(&x, true).unwrap().0, Axes::All, false).unwrap(), &[&x])
            .map(|_| ())
            .err()
            .map(|e| e.kind()),
        None,
        "a wide full QR has a gradient"
    );
}

#[test]
fn linalg_expm() {
    // Norms that take each Padé order, and one that needs squarings.
    for scale in [0.005, 0.1, 0.5, 1.0, 4.0] {
        let name = format!("expm scale {scale}");
        let x = uniform(&mut Rng::named(&name), &[3, 3], -scale, scale);
        check_grad_tol(&name, |xs| ops::expm(&xs[0]), &[x], LINALG_TOL);
    }
}

#[test]
fn linalg_structure_and_norms() {
    let mut rng = Rng::named("structure");
    let x = signed(&mut rng, &[2, 3, 4], 0.2, 1.0);
    let d = uniform(&mut rng, &[2, 3], -1.0, 1.0);
    check_grad("band_part", |xs| ops::band_part(&xs[0], 1, 0), std::slice::from_ref(&x));
    check_grad("diag_part", |xs| ops::diag_part(&xs[0]), std::slice::from_ref(&x));
    check_grad("set_diag", |xs| ops::set_diag(&xs[0], &xs[1]), &[x.clone(), d.clone()]);
    check_grad("diag", |xs| ops::diag(&xs[0]), std::slice::from_ref(&d));
    check_grad("trace", |xs| ops::trace(&xs[0]), std::slice::from_ref(&x));
    let v = uniform(&mut rng, &[4], -1.0, 1.0);
    check_grad("matvec", |xs| ops::matvec(&xs[0], &xs[1]), &[x.clone(), v]);
    let (a, b) = (uniform(&mut rng, &[2, 3], -1.0, 1.0), uniform(&mut rng, &[2, 3], -1.0, 1.0));
    check_grad("cross", |xs| ops::cross(&xs[0], &xs[1]), &[a, b]);
    use rivulet::ops::{NormAxes, NormOrd};
    let distinct_x = distinct(&mut rng, &[2, 3, 4], 0.2, 2.0);
    for (ord, axes) in [
        (NormOrd::Euclidean, NormAxes::All),
        (NormOrd::P(3.0), NormAxes::Vector(-1)),
        (NormOrd::P(1.0), NormAxes::Vector(1)),
        (NormOrd::Inf, NormAxes::Vector(-1)),
        (NormOrd::Fro, NormAxes::Matrix(1, 2)),
        (NormOrd::P(1.0), NormAxes::Matrix(1, 2)),
        (NormOrd::Inf, NormAxes::Matrix(-2, -1)),
        (NormOrd::P(2.0), NormAxes::Matrix(1, 2)),
    ] {
        for keepdims in [false, true] {
            check_grad_tol(
                &format!("norm {ord:?} {axes:?} keepdims={keepdims}"),
                |xs| ops::norm(&xs[0], ord, axes, keepdims),
                std::slice::from_ref(&distinct_x),
                LINALG_TOL,
            );
        }
    }
    check_grad("global_norm", |xs| ops::global_norm(&[&xs[0], &xs[1]]), &[x, d]);
}

#[test]
fn double_backward_factorizations() {
    run_double_backward(double_backward_cases![
        linalg_cholesky_and_logdet,
        linalg_solves,
        linalg_decompositions,
        linalg_expm,
        linalg_structure_and_norms,
    ]);
}

#[test]
fn grid_ops() {
    use rivulet::ops::grid::{divergence, gradient, laplacian};
    use rivulet::ops::Boundary;
    let mut rng = Rng::named("grid");
    let u = uniform(&mut rng, &[2, 4, 5], -1.0, 1.0);
    check_grad("roll", |xs| ops::roll(&xs[0], &[1, -2], &[1, 2]), std::slice::from_ref(&u));
    for b in [Boundary::Periodic, Boundary::Dirichlet(0.5), Boundary::Neumann] {
        check_grad(&format!("laplacian {b:?}"), |xs| laplacian(&xs[0], &[0.5, 0.25], b), std::slice::from_ref(&u));
        check_grad(&format!("gradient {b:?}"), |xs| gradient(&xs[0], &[0.5, 0.25], b), std::slice::from_ref(&u));
        let v = uniform(&mut rng, &[4, 5, 2], -1.0, 1.0);
        check_grad(&format!("divergence {b:?}"), |xs| divergence(&xs[0], &[0.5, 0.25], b), &[v]);
    }
}

#[test]
fn grid_interpolation() {
    use rivulet::ops::grid::interpolate;
    use rivulet::ops::Boundary;
    let mut rng = Rng::named("interpolate");
    let field = uniform(&mut rng, &[4, 5, 2], -1.0, 1.0);
    // Coordinates away from integers (the weights have kinks there), some outside the grid.
    let coords = t64((0..12).map(|i| (i % 7) as f64 - 1.0 + 0.2 + 0.6 * rng.unit()).collect(), &[2, 3, 2]);
    for b in [Boundary::Periodic, Boundary::Neumann, Boundary::Dirichlet(0.3)] {
        check_grad(
            &format!("interpolate {b:?}"),
            |xs| interpolate(&xs[0], &xs[1], b),
            &[field.clone(), coords.clone()],
        );
    }
}
