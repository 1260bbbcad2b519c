//! Differential fuzzing: random programs run eagerly and as an optimized
//! graph in a session must agree bit for bit (signed zeros and infinities
//! included). NaN payloads are outside the promise, as in IEEE 754 and XLA:
//! a NaN must be a NaN in both, whatever its bits.
//!
//! `RIVULET_DIFF_CASES` sets the number of programs (default sized for CI);
//! the opt-in long run is `a_hundred_thousand_programs_agree` (--ignored).

use crate::common::Rng;

use rivulet::nn::losses;
use rivulet::ops::{self, Axes};
use rivulet::{DType, Graph, Result, Session, Tensor};

/// An f32 value: often special (NaN, infinities, signed zeros, extremes).
fn value(rng: &mut Rng) -> f32 {
    const SPECIAL: [f32; 10] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0, 3e38, -3e38, 1e-39];
    if rng.chance(0.15) {
        SPECIAL[rng.below(SPECIAL.len())]
    } else {
        ((rng.unit() - 0.5) * 6.0) as f32
    }
}

/// One step of a program: an op applied to earlier values (by index).
#[derive(Clone, Debug)]
enum Step {
    Unary(usize, u8),
    Binary(usize, usize, u8),
    Scalar(usize, u8, f32),
    Reduce(usize, u8, Option<i64>, bool),
    MatMul(usize, usize),
    Transpose(usize),
    Softmax(usize, bool),
    Select(usize, usize, usize),
    Bce(usize, usize),
    Tensordot(usize, usize),
    Concat(usize, usize),
    ReshapeFlat(usize),
}

const UNARY: u8 = 17;
const BINARY: u8 = 8;

fn unary(k: u8, x: &Tensor) -> Result<Tensor> {
    match k {
        0 => ops::neg(x),
        1 => ops::abs(x),
        2 => ops::exp(x),
        3 => ops::log(x),
        4 => ops::tanh(x),
        5 => ops::sigmoid(x),
        6 => ops::relu(x),
        7 => ops::sqrt(x),
        8 => ops::square(x),
        9 => ops::softplus(x),
        10 => ops::sign(x),
        11 => ops::reciprocal(x),
        12 => ops::log1p(x),
        13 => ops::elu(x),
        14 => ops::gelu(x),
        15 => ops::floor(x),
        _ => ops::rsqrt(x),
    }
}

fn binary(k: u8, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match k {
        0 => ops::add(a, b),
        1 => ops::sub(a, b),
        2 => ops::mul(a, b),
        3 => ops::div(a, b),
        4 => ops::maximum(a, b),
        5 => ops::minimum(a, b),
        6 => ops::pow(a, b),
        _ => ops::floor_mod(a, b),
    }
}

/// A random program over `inputs` values of shape `[r, c]`.
fn random_program(rng: &mut Rng, inputs: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let len = 1 + rng.below(10);
    for k in 0..len {
        let n = inputs + k;
        let pick = |rng: &mut Rng| rng.below(n);
        let step = match rng.below(14) {
            0..=2 => Step::Unary(pick(rng), rng.below(UNARY as usize) as u8),
            3..=5 => Step::Binary(pick(rng), pick(rng), rng.below(BINARY as usize) as u8),
            6 | 7 => {
                const SCALARS: [f32; 6] = [0.0, -0.0, 1.0, 0.5, -2.0, f32::INFINITY];
                Step::Scalar(pick(rng), rng.below(BINARY as usize) as u8, SCALARS[rng.below(SCALARS.len())])
            }
            8 => Step::Reduce(pick(rng), rng.below(4) as u8, [None, Some(0), Some(-1)][rng.below(3)], rng.chance(0.5)),
            9 => Step::MatMul(pick(rng), pick(rng)),
            10 => Step::Softmax(pick(rng), rng.chance(0.5)),
            11 => Step::Select(pick(rng), pick(rng), pick(rng)),
            12 => match rng.below(4) {
                0 => Step::Bce(pick(rng), pick(rng)),
                1 => Step::Tensordot(pick(rng), pick(rng)),
                2 => Step::Concat(pick(rng), pick(rng)),
                _ => Step::ReshapeFlat(pick(rng)),
            },
            _ => Step::Transpose(pick(rng)),
        };
        steps.push(step);
    }
    steps
}

/// Run `program` on `inputs` (values or placeholders alike); returns every
/// value it made. A step whose shapes do not fit is an error in both modes.
fn run_program(program: &[Step], inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut v: Vec<Tensor> = inputs.to_vec();
    for step in program {
        let t = match *step {
            Step::Unary(a, k) => unary(k, &v[a])?,
            Step::Binary(a, b, k) => binary(k, &v[a], &v[b])?,
            Step::Scalar(a, k, c) => binary(k, &v[a], &Tensor::scalar(c))?,
            Step::Reduce(a, k, axis, keep) => {
                let axes = axis.map_or(Axes::All, |x| Axes::List(vec![x]));
                match k {
                    0 => ops::sum(&v[a], axes, keep)?,
                    1 => ops::mean(&v[a], axes, keep)?,
                    2 => ops::max(&v[a], axes, keep)?,
                    _ => ops::logsumexp(&v[a], axes, keep)?,
                }
            }
            Step::MatMul(a, b) => ops::matmul_t(&v[a], &v[b], false, true)?,
            Step::Transpose(a) => ops::transpose(&v[a], &[])?,
            Step::Softmax(a, log) => {
                if log {
                    ops::log_softmax(&v[a], -1)?
                } else {
                    ops::softmax(&v[a], -1)?
                }
            }
            Step::Select(c, a, b) => ops::select(&ops::greater(&v[c], 0.0)?, &v[a], &v[b])?,
            Step::Bce(y, z) => losses::binary_crossentropy_with_logits(&ops::sigmoid(&v[y])?, &v[z])?,
            Step::Tensordot(a, b) => ops::tensordot(&v[a], &v[b], &[-1], &[-1])?,
            Step::Concat(a, b) => ops::concat(&[&v[a], &v[b]], -1)?,
            Step::ReshapeFlat(a) => ops::reshape(&v[a], &[-1])?,
        };
        v.push(t);
    }
    Ok(v)
}

/// Equal bit for bit, except that any NaN equals any NaN.
fn same(a: &Tensor, b: &Tensor) -> bool {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return false;
    }
    let (x, y) = match a.dtype() {
        DType::F32 => (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap()),
        DType::Bool => return a.bitwise_eq(b),
        other => {
            let (x, y) = (ops::cast(a, DType::F32).unwrap(), ops::cast(b, DType::F32).unwrap());
            assert_eq!(other, b.dtype());
            (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap())
        }
    };
    x.iter().zip(&y).all(|(p, q)| (p.is_nan() && q.is_nan()) || p.to_bits() == q.to_bits())
}

/// Run `cases` random programs both ways; returns how many values were compared.
fn differential(cases: usize, seed: u64) -> usize {
    let mut rng = Rng(seed);
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for case in 0..cases {
        let (r, c) = (1 + rng.below(5), 1 + rng.below(5));
        let count = 1 + rng.below(3);
        let values: Vec<Tensor> = (0..count)
            .map(|_| Tensor::from_vec((0..r * c).map(|_| value(&mut rng)).collect::<Vec<f32>>(), [r, c]).unwrap())
            .collect();
        let program = random_program(&mut rng, count);
        let eager = run_program(&program, &values);
        let g = Graph::new();
        let phs: Vec<Tensor> =
            (0..count).map(|i| g.placeholder(&format!("x{i}"), DType::F32, [r, c]).unwrap()).collect();
        let symbolic = run_program(&program, &phs);
        let (eager, symbolic) = match (eager, symbolic) {
            (Ok(e), Ok(s)) => (e, s),
            (Err(a), Err(b)) => {
                assert_eq!(a.kind(), b.kind(), "case {case}: both fail alike: {a} / {b}");
                continue;
            }
            (e, s) => panic!("case {case}: eager {:?} vs graph {:?}", e.err(), s.err()),
        };
        let fetches: Vec<&Tensor> = symbolic[count..].iter().collect();
        let feeds: Vec<(&Tensor, &Tensor)> = phs.iter().zip(&values).collect();
        let graph = Session::new(&g).run(&fetches, &feeds).unwrap_or_else(|e| panic!("case {case}: {e}"));
        for (k, (e, s)) in eager[count..].iter().zip(&graph).enumerate() {
            compared += 1;
            if !same(e, s) {
                mismatches.push(format!("case {case}, value {k} of {program:?}:\n  eager {e:?}\n  graph {s:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    compared
}

#[test]
fn random_programs_agree_eager_and_optimized() {
    let cases = std::env::var("RIVULET_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let compared = differential(cases, 0xd1ff_0001);
    eprintln!("{compared} values compared");
    assert!(compared > cases, "{compared} comparisons from {cases} programs");
}

#[test]
#[ignore = "long: 100,000 comparisons; run with --ignored"]
fn a_hundred_thousand_programs_agree() {
    let mut compared = 0;
    let mut seed = 0xd1ff_1000;
    while compared < 100_000 {
        compared += differential(2000, seed);
        seed += 1;
    }
    eprintln!("{compared} values compared, no mismatch");
}

/// The same logical matrix in several memory layouts: contiguous, a
/// transposed view of its transpose, and a strided slice of a wider matrix.
fn layouts(m: &Tensor) -> Vec<(&'static str, Tensor)> {
    let (r, c) = (m.shape()[0], m.shape()[1]);
    let t = ops::add(&ops::transpose(m, &[]).unwrap(), -0.0).unwrap(); // a contiguous transpose
    let wide = ops::concat(&[m, m], 1).unwrap();
    let strided = ops::strided_slice(
        &ops::reshape(&ops::stack(&[m, &ops::neg(m).unwrap()], 2).unwrap(), &[r as i64, 2 * c as i64]).unwrap(),
        &[ops::SliceItem::ALL, ops::SliceItem::stepped(Some(0), None, 2)],
    )
    .unwrap();
    vec![
        ("contiguous", m.clone()),
        ("transposed view", ops::transpose(&t, &[]).unwrap()),
        ("strided slice", strided),
        ("slice of a wider matrix", ops::slice(&wide, &[0, c], &[-1, -1]).unwrap()),
    ]
}

/// A matmul gives the same bits whatever the operands' layouts and
/// transpose flags: gemm's small and matrix-vector paths sum in an order
/// that depends on the layout, so the kernel hands them row-major operands.
#[test]
fn matmul_bits_do_not_depend_on_operand_layout() {
    let mut rng = Rng(77);
    for (m, k, n) in
        [(4, 5, 4), (1, 300, 7), (9, 300, 1), (1, 40, 1), (16, 16, 16), (3, 2, 5), (70, 50, 60), (130, 40, 3)]
    {
        let a = Tensor::from_vec((0..m * k).map(|_| value(&mut rng)).collect::<Vec<f32>>(), [m, k]).unwrap();
        let b = Tensor::from_vec((0..k * n).map(|_| value(&mut rng)).collect::<Vec<f32>>(), [k, n]).unwrap();
        let reference = ops::matmul(&a, &b).unwrap();
        for (la, va) in layouts(&a) {
            assert!(same(&va, &a), "the {la} layout holds the same matrix");
            for (lb, vb) in layouts(&b) {
                let c = ops::matmul(&va, &vb).unwrap();
                assert!(same(&c, &reference), "{m}x{k}x{n}: a {la}, b {lb}");
            }
        }
        // Transpose flags on stored transposes.
        let at = ops::add(&ops::transpose(&a, &[]).unwrap(), -0.0).unwrap();
        let bt = ops::add(&ops::transpose(&b, &[]).unwrap(), -0.0).unwrap();
        for (ta, tb) in [(true, false), (false, true), (true, true)] {
            let c = ops::matmul_t(if ta { &at } else { &a }, if tb { &bt } else { &b }, ta, tb).unwrap();
            assert!(same(&c, &reference), "{m}x{k}x{n}: transpose flags {ta} {tb}");
        }
    }
}
