//! Hostile arguments: an op-argument fuzzer (random dtypes, shapes with
//! empty and huge dimensions, broadcast views of absurd size, out-of-range
//! axes and counts, NaN/inf/-0/extreme values) that asserts no op panics or
//! aborts and that every error names the op and this file's line; plus the
//! regressions that once aborted the process.
//!
//! `RIVULET_FUZZ_CASES` sets the number of random calls (default sized for CI).

use crate::common::Rng;

use half::{bf16, f16};
use rivulet::nn::losses;
use rivulet::ops::{self, Axes, PadMode, SliceItem};
use rivulet::{DType, Error, ErrorKind, Graph, Session, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};

const HUGE: usize = 1 << 40;

/// What is wrong with an error, if anything: every error must say which op
/// and which line of this file made it.
fn unlocated(e: &Error) -> Option<&'static str> {
    match e.op_context() {
        None => Some("error without op context"),
        Some(c) if c.op.is_empty() => Some("no op name"),
        Some(c) if !c.location.contains("tests/suite/fuzz.rs:") => Some("location is not the caller's"),
        Some(_) => None,
    }
}

#[track_caller]
fn assert_located(e: &Error, what: &str) {
    if let Some(problem) = unlocated(e) {
        panic!("{what}: {problem}: {e}");
    }
}

fn cases() -> usize {
    std::env::var("RIVULET_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4000)
}

const DTYPES: [DType; 8] =
    [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8, DType::Bool];

/// An extreme or ordinary value of a float dtype.
fn float_value(rng: &mut Rng) -> f64 {
    const SPECIAL: [f64; 12] =
        [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0, 1e38, -1e38, 1e-40, 65504.0, 0.5];
    if rng.chance(0.4) {
        SPECIAL[rng.below(SPECIAL.len())]
    } else {
        (rng.unit() - 0.5) * 8.0
    }
}

fn int_value(rng: &mut Rng) -> i64 {
    const SPECIAL: [i64; 8] = [0, 1, -1, 2, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN];
    if rng.chance(0.3) {
        SPECIAL[rng.below(SPECIAL.len())]
    } else {
        rng.below(7) as i64 - 3
    }
}

fn random_dims(rng: &mut Rng) -> Vec<usize> {
    const DIMS: [usize; 6] = [0, 1, 2, 3, 4, 5];
    let rank = rng.below(4);
    (0..rank).map(|_| if rng.chance(0.08) { DIMS[0] } else { DIMS[1 + rng.below(5)] }).collect()
}

/// A value tensor of random dtype and shape; sometimes a view (transposed,
/// broadcast), sometimes empty with a huge other dimension, sometimes a
/// broadcast view of 2^40 elements that no memory backs.
fn random_tensor(rng: &mut Rng) -> Tensor {
    let dtype = DTYPES[rng.below(DTYPES.len())];
    if rng.chance(0.03) {
        // Zero elements, one huge dimension.
        return ops::zeros(rivulet::Ctx::Eager, [HUGE, 0], dtype).unwrap();
    }
    let dims = random_dims(rng);
    random_tensor_of(rng, dtype, dims)
}

/// A tensor of `dtype` and `dims` with random extreme values (sometimes a view).
fn random_tensor_of(rng: &mut Rng, dtype: DType, dims: Vec<usize>) -> Tensor {
    let n: usize = dims.iter().product();
    let t = match dtype {
        DType::F32 => Tensor::from_vec((0..n).map(|_| float_value(rng) as f32).collect::<Vec<_>>(), dims.clone()),
        DType::F64 => Tensor::from_vec((0..n).map(|_| float_value(rng)).collect::<Vec<_>>(), dims.clone()),
        DType::F16 => {
            Tensor::from_vec((0..n).map(|_| f16::from_f64(float_value(rng))).collect::<Vec<_>>(), dims.clone())
        }
        DType::BF16 => {
            Tensor::from_vec((0..n).map(|_| bf16::from_f64(float_value(rng))).collect::<Vec<_>>(), dims.clone())
        }
        DType::I32 => Tensor::from_vec((0..n).map(|_| int_value(rng) as i32).collect::<Vec<_>>(), dims.clone()),
        DType::I64 => Tensor::from_vec((0..n).map(|_| int_value(rng)).collect::<Vec<_>>(), dims.clone()),
        DType::U8 => Tensor::from_vec((0..n).map(|_| int_value(rng) as u8).collect::<Vec<_>>(), dims.clone()),
        DType::I8 => Tensor::from_vec((0..n).map(|_| int_value(rng) as i8).collect::<Vec<_>>(), dims.clone()),
        DType::I16 => Tensor::from_vec((0..n).map(|_| int_value(rng) as i16).collect::<Vec<_>>(), dims.clone()),
        DType::U16 => Tensor::from_vec((0..n).map(|_| int_value(rng) as u16).collect::<Vec<_>>(), dims.clone()),
        DType::U32 => Tensor::from_vec((0..n).map(|_| int_value(rng) as u32).collect::<Vec<_>>(), dims.clone()),
        DType::U64 => Tensor::from_vec((0..n).map(|_| int_value(rng) as u64).collect::<Vec<_>>(), dims.clone()),
        DType::Bool => Tensor::from_vec((0..n).map(|_| rng.chance(0.5)).collect::<Vec<_>>(), dims.clone()),
        DType::C64 => Tensor::from_vec(
            (0..n)
                .map(|_| rivulet::Complex::<f32>::new(float_value(rng) as f32, float_value(rng) as f32))
                .collect::<Vec<_>>(),
            dims.clone(),
        ),
        DType::C128 => Tensor::from_vec(
            (0..n).map(|_| rivulet::Complex::<f64>::new(float_value(rng), float_value(rng))).collect::<Vec<_>>(),
            dims.clone(),
        ),
    }
    .unwrap();
    match rng.below(20) {
        0 if dims.len() >= 2 => {
            let mut perm: Vec<usize> = (0..dims.len()).collect();
            perm.reverse();
            ops::transpose(&t, &perm).unwrap()
        }
        1 if n == 1 => {
            // A broadcast view of absurd size: only metadata.
            let mut shape = vec![1usize; dims.len().max(1)];
            shape[0] = HUGE;
            ops::broadcast_to(&ops::reshape(&t, &vec![1; shape.len()]).unwrap(), shape).unwrap()
        }
        2 if n > 0 => {
            let mut shape = dims.clone();
            shape.insert(0, 3);
            ops::broadcast_to(&t, shape).unwrap()
        }
        _ => t,
    }
}

fn axis(rng: &mut Rng) -> i64 {
    rng.below(11) as i64 - 5
}

fn count(rng: &mut Rng) -> usize {
    const COUNTS: [usize; 8] = [0, 1, 2, 3, 4, 7, HUGE, usize::MAX];
    COUNTS[rng.below(COUNTS.len())]
}

fn axes_list(rng: &mut Rng) -> Vec<i64> {
    (0..rng.below(4)).map(|_| axis(rng)).collect()
}

type Call = fn(&mut Rng, &[Tensor]) -> rivulet::Result<Vec<Tensor>>;

fn one(r: rivulet::Result<Tensor>) -> rivulet::Result<Vec<Tensor>> {
    r.map(|t| vec![t])
}

/// Every public op, called with random arguments. Each entry calls the op
/// directly (not through a function pointer), so that the caller's line is
/// this file's.
fn calls() -> Vec<(&'static str, usize, Call)> {
    macro_rules! unary {
        ($($f:ident),*) => { vec![$((stringify!($f), 1, (|_, x| one(ops::$f(&x[0]))) as Call)),*] };
    }
    macro_rules! binary {
        ($($f:ident),*) => { vec![$((stringify!($f), 2, (|_, x| one(ops::$f(&x[0], &x[1]))) as Call)),*] };
    }
    let mut v: Vec<(&'static str, usize, Call)> = unary!(
        neg,
        abs,
        sign,
        square,
        relu,
        relu6,
        exp,
        expm1,
        log,
        log1p,
        sqrt,
        rsqrt,
        reciprocal,
        sin,
        cos,
        tan,
        tanh,
        sigmoid,
        elu,
        selu,
        gelu,
        softplus,
        erf,
        floor,
        ceil,
        round,
        logical_not,
        is_nan,
        is_finite,
        identity,
        stop_gradient,
        zeros_like,
        ones_like
    );
    v.extend(binary!(
        add,
        sub,
        mul,
        div,
        floor_div,
        floor_mod,
        pow,
        maximum,
        minimum,
        equal,
        not_equal,
        less,
        less_equal,
        greater,
        greater_equal,
        logical_and,
        logical_or,
        matmul,
        sum_to,
        broadcast_like,
        reshape_like,
        gather_nd
    ));
    let more: Vec<(&'static str, usize, Call)> = vec![
        ("select", 3, |_, x| one(ops::select(&x[0], &x[1], &x[2]))),
        ("clip_by_value", 3, |_, x| one(ops::clip_by_value(&x[0], &x[1], &x[2]))),
        ("cast", 1, |r, x| one(ops::cast(&x[0], DTYPES[r.below(8)]))),
        ("sum", 1, |r, x| one(ops::sum(&x[0], axes_list(r), r.chance(0.5)))),
        ("mean", 1, |r, x| one(ops::mean(&x[0], axis(r), r.chance(0.5)))),
        ("max", 1, |_, x| one(ops::max(&x[0], Axes::All, false))),
        ("min", 1, |r, x| one(ops::min(&x[0], axes_list(r), true))),
        ("prod", 1, |r, x| one(ops::prod(&x[0], axis(r), false))),
        ("any", 1, |r, x| one(ops::any(&x[0], axis(r), false))),
        ("all", 1, |r, x| one(ops::all(&x[0], axes_list(r), false))),
        ("argmax", 1, |r, x| one(ops::argmax(&x[0], axis(r)))),
        ("argmin", 1, |r, x| one(ops::argmin(&x[0], axis(r)))),
        ("cumsum", 1, |r, x| one(ops::cumsum(&x[0], axis(r), r.chance(0.5), r.chance(0.5)))),
        ("cumprod", 1, |r, x| one(ops::cumprod(&x[0], axis(r), r.chance(0.5), r.chance(0.5)))),
        ("logsumexp", 1, |r, x| one(ops::logsumexp(&x[0], axes_list(r), r.chance(0.5)))),
        ("variance", 1, |r, x| one(ops::variance(&x[0], axes_list(r), false))),
        ("std_dev", 1, |r, x| one(ops::std_dev(&x[0], axis(r), true))),
        ("softmax", 1, |r, x| one(ops::softmax(&x[0], axis(r)))),
        ("log_softmax", 1, |r, x| one(ops::log_softmax(&x[0], axis(r)))),
        ("top_k", 1, |r, x| ops::top_k(&x[0], count(r)).map(|(a, b)| vec![a, b])),
        ("matmul_t", 2, |r, x| one(ops::matmul_t(&x[0], &x[1], r.chance(0.5), r.chance(0.5)))),
        ("tensordot", 2, |r, x| one(ops::tensordot(&x[0], &x[1], &axes_list(r), &axes_list(r)))),
        ("einsum", 2, |r, x| {
            const EQ: [&str; 8] = ["ij,jk->ik", "jki->ii", "ij->ji", "i,i->", "ab,bc", "a->b", "->", "ii->i"];
            let eq = EQ[r.below(EQ.len())];
            let n = if eq.contains(',') { 2 } else { 1 };
            one(ops::einsum(eq, &x.iter().take(n).collect::<Vec<_>>()))
        }),
        ("reshape", 1, |r, x| {
            let shape: Vec<i64> = (0..r.below(4)).map(|_| [-1, 0, 1, 2, 3, 6, HUGE as i64][r.below(7)]).collect();
            one(ops::reshape(&x[0], &shape))
        }),
        ("transpose", 1, |r, x| {
            let perm: Vec<usize> = (0..r.below(4)).map(|_| r.below(5)).collect();
            one(ops::transpose(&x[0], &perm))
        }),
        ("expand_dims", 1, |r, x| one(ops::expand_dims(&x[0], axis(r)))),
        ("squeeze", 1, |r, x| one(ops::squeeze(&x[0], &axes_list(r)))),
        ("broadcast_to", 1, |r, x| {
            let shape: Vec<usize> = (0..r.below(4)).map(|_| [0, 1, 2, 3, HUGE][r.below(5)]).collect();
            one(ops::broadcast_to(&x[0], shape))
        }),
        ("concat", 2, |r, x| one(ops::concat(&[&x[0], &x[1]], axis(r)))),
        ("stack", 2, |r, x| one(ops::stack(&[&x[0], &x[1]], axis(r)))),
        ("unstack", 1, |r, x| ops::unstack(&x[0], axis(r))),
        ("split", 1, |r, x| ops::split(&x[0], count(r), axis(r))),
        ("split_sizes", 1, |r, x| {
            let sizes: Vec<i64> = (0..r.below(4)).map(|_| [-1, -2, 0, 1, 2, i64::MAX][r.below(6)]).collect();
            ops::split_sizes(&x[0], &sizes, axis(r))
        }),
        ("slice", 1, |r, x| {
            let rank = r.below(4);
            let begin: Vec<usize> = (0..rank).map(|_| [0, 1, 2, HUGE][r.below(4)]).collect();
            let size: Vec<i64> = (0..rank).map(|_| [-1, 0, 1, 2, i64::MAX][r.below(5)]).collect();
            one(ops::slice(&x[0], &begin, &size))
        }),
        ("strided_slice", 1, |r, x| {
            let spec: Vec<SliceItem> = (0..r.below(4))
                .map(|_| match r.below(4) {
                    0 => SliceItem::Index(axis(r)),
                    1 => SliceItem::Range {
                        start: Some(axis(r)),
                        stop: if r.chance(0.5) { None } else { Some(i64::MAX) },
                        step: [1, -1, 2, 0, i64::MIN][r.below(5)],
                    },
                    2 => SliceItem::NewAxis,
                    _ => SliceItem::Ellipsis,
                })
                .collect();
            one(ops::strided_slice(&x[0], &spec))
        }),
        ("gather", 2, |r, x| one(ops::gather(&x[0], &x[1], axis(r), r.below(3)))),
        ("scatter_nd", 2, |r, x| {
            let shape: Vec<usize> = (0..r.below(3)).map(|_| [0, 1, 3, HUGE][r.below(4)]).collect();
            one(ops::scatter_nd(&x[0], &x[1], shape))
        }),
        ("tile", 1, |r, x| {
            let m: Vec<usize> = (0..r.below(4)).map(|_| [0, 1, 2, HUGE][r.below(4)]).collect();
            one(ops::tile(&x[0], &m))
        }),
        ("pad", 1, |r, x| {
            let p: Vec<(usize, usize)> = (0..r.below(4)).map(|_| ([0, 1, 3, HUGE][r.below(4)], r.below(3))).collect();
            let mode = [PadMode::Constant, PadMode::Reflect, PadMode::Symmetric][r.below(3)];
            one(ops::pad(&x[0], &p, mode, float_value(r)))
        }),
        ("reverse", 1, |r, x| one(ops::reverse(&x[0], &axes_list(r)))),
        ("one_hot", 1, |r, x| one(ops::one_hot(&x[0], count(r)))),
        ("size", 1, |r, x| one(ops::size(&x[0], DTYPES[r.below(8)]))),
        ("fill", 0, |r, _| {
            let shape: Vec<usize> = (0..r.below(3)).map(|_| [0, 2, HUGE][r.below(3)]).collect();
            one(ops::fill(rivulet::Ctx::Eager, shape, float_value(r), DTYPES[r.below(8)]))
        }),
        ("range", 0, |r, _| {
            one(ops::range(rivulet::Ctx::Eager, 0.0, float_value(r), float_value(r), DTYPES[r.below(8)]))
        }),
        ("linspace", 0, |r, _| {
            one(ops::linspace(rivulet::Ctx::Eager, 0.0, float_value(r), count(r), DTYPES[r.below(8)]))
        }),
        ("eye", 0, |r, _| one(ops::eye(rivulet::Ctx::Eager, count(r), count(r), DTYPES[r.below(8)]))),
        ("random_uniform", 0, |r, _| {
            let shape: Vec<usize> = (0..r.below(3)).map(|_| [0, 2, HUGE][r.below(3)]).collect();
            one(ops::random_uniform(
                rivulet::Ctx::Eager,
                shape,
                float_value(r),
                float_value(r),
                DTYPES[r.below(8)],
                Some(1),
            ))
        }),
        ("random_normal", 0, |r, _| {
            let shape: Vec<usize> = (0..r.below(3)).map(|_| [0, 2, HUGE][r.below(3)]).collect();
            one(ops::random_normal(
                rivulet::Ctx::Eager,
                shape,
                float_value(r),
                float_value(r),
                DTYPES[r.below(8)],
                None,
            ))
        }),
        ("huber", 2, |r, x| one(losses::huber(&x[0], &x[1], float_value(r)))),
        ("mean_squared_error", 2, |_, x| one(losses::mean_squared_error(&x[0], &x[1]))),
        ("binary_crossentropy_with_logits", 2, |_, x| one(losses::binary_crossentropy_with_logits(&x[0], &x[1]))),
        ("sparse_softmax_cross_entropy", 2, |_, x| one(losses::sparse_softmax_cross_entropy(&x[0], &x[1]))),
        ("sparse_categorical_crossentropy", 2, |_, x| one(losses::sparse_categorical_crossentropy(&x[0], &x[1]))),
    ];
    v.extend(more);
    v
}

/// What the fuzzer saw: calls that returned values and errors, per op, and
/// what went wrong.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    failure: Option<String>,
}

fn run_call(rng: &mut Rng, name: &str, arity: usize, call: Call, graph: bool) -> Tally {
    // Creation ops take their context explicitly: graph mode is for ops on inputs.
    let graph = graph && arity > 0;
    // Inputs of one dtype and shape more often than chance would give, so
    // that multi-input ops get past their checks too.
    let mut inputs: Vec<Tensor> = Vec::new();
    for i in 0..arity {
        let t = match inputs.first() {
            Some(first) if i > 0 && rng.chance(0.6) && first.numel().is_some_and(|n| n < 1 << 20) => {
                let dtype = if rng.chance(0.8) { first.dtype() } else { DTYPES[rng.below(DTYPES.len())] };
                random_tensor_of(rng, dtype, first.shape().to_vec())
            }
            _ => random_tensor(rng),
        };
        inputs.push(t);
    }
    let describe = || {
        let shapes: Vec<String> = inputs.iter().map(|t| format!("{}{}", t.dtype(), t.shape())).collect();
        format!("{name}({}){}", shapes.join(", "), if graph { " in a graph" } else { "" })
    };
    let mut call_rng = Rng(rng.next_u64());
    let result = catch_unwind(AssertUnwindSafe(|| {
        if !graph {
            return call(&mut call_rng, &inputs).map(|outs| {
                // Values are readable whatever they hold.
                for o in &outs {
                    if o.numel().is_some_and(|n| n < 1 << 16) {
                        let _ = format!("{o:?}");
                    }
                }
            });
        }
        // The same call on placeholders, run in a session with the values fed.
        let g = Graph::new();
        let phs: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| g.placeholder(&format!("x{i}"), t.dtype(), t.shape().clone()).unwrap())
            .collect();
        let outs = call(&mut call_rng, &phs)?;
        let feeds: Vec<(&Tensor, &Tensor)> = phs.iter().zip(&inputs).collect();
        let fetches: Vec<&Tensor> = outs.iter().collect();
        Session::new(&g).run(&fetches, &feeds).map(drop)
    }));
    match result {
        Err(_) => Tally { failure: Some(format!("{} panicked", describe())), ..Tally::default() },
        Ok(Ok(())) => Tally { ok: 1, ..Tally::default() },
        Ok(Err(e)) => {
            let failure = unlocated(&e).map(|problem| format!("{}: {problem}: {e}", describe()));
            Tally { errors: 1, failure, ..Tally::default() }
        }
    }
}

#[test]
fn random_op_arguments_never_panic_and_errors_name_the_op_and_caller() {
    let table = calls();
    let mut rng = Rng(0xf022_0001);
    let (mut ok, mut errors) = (0, 0);
    let mut per_op = vec![(0usize, 0usize); table.len()];
    let mut failures: Vec<String> = Vec::new();
    for case in 0..cases() {
        let k = case % table.len();
        let (name, arity, call) = table[k];
        let t = run_call(&mut rng, name, arity, call, case % 4 == 3);
        per_op[k].0 += t.ok;
        per_op[k].1 += t.errors;
        ok += t.ok;
        errors += t.errors;
        failures.extend(t.failure.map(|f| format!("case {case}: {f}")));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{ok} calls returned values, {errors} returned errors");
    if std::env::var("RIVULET_FUZZ_VERBOSE").is_ok() {
        for ((name, ..), (o, e)) in table.iter().zip(&per_op) {
            eprintln!("  {name:<34} {o:>6} ok {e:>6} errors");
        }
    }
    // The fuzzer reaches both sides of most ops.
    let both = per_op.iter().filter(|(o, e)| *o > 0 && *e > 0).count();
    assert!(ok > cases() / 5 && errors > cases() / 5, "{ok} ok, {errors} errors");
    assert!(both > table.len() / 2, "only {both} of {} ops seen both succeed and fail", table.len());
}

// ---------------------------------------------------------------------------
// Regressions: each aborted the process ("memory allocation of N bytes failed")
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_error<T: std::fmt::Debug>(r: rivulet::Result<T>, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => {
            assert_located(&e, what);
            e
        }
    }
}

#[test]
fn counts_from_the_caller_never_size_an_infallible_allocation() {
    let empty = Tensor::from_vec(Vec::<f32>::new(), [0]).unwrap();
    // split of an empty axis into 2^40 pieces: every piece would be empty.
    let e = assert_error(ops::split(&empty, HUGE, 0), "split");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(ops::split(&empty, 3, 0).unwrap().len(), 3, "a sane count still works");
    assert_error(ops::split_sizes(&empty, &[0; 1 << 21], 0), "split_sizes");
    // unstack along a huge axis of an empty tensor, eagerly and in a graph.
    let wide = ops::zeros(rivulet::Ctx::Eager, [HUGE, 0], DType::F32).unwrap();
    assert_error(ops::unstack(&wide, 0), "unstack");
    let g = Graph::new();
    let p = g.placeholder("p", DType::F32, [HUGE]).unwrap();
    assert_error(ops::unstack(&p, 0), "unstack in a graph");
    // top_k of zero columns over 2^40 rows returns at once.
    let (v, i) = ops::top_k(&wide, 0).unwrap();
    assert_eq!((v.shape().to_vec(), i.shape().to_vec()), (vec![HUGE, 0], vec![HUGE, 0]));
    // to_vec2 of 2^40 empty rows.
    assert!(wide.to_vec2::<f32>().is_err());
    // A broadcast whose element count overflows is refused when it is built.
    let col = ops::broadcast_to(&Tensor::scalar(1.0f32), [1usize << 32, 1]).unwrap();
    let row = ops::broadcast_to(&Tensor::scalar(2.0f32), [1, 1usize << 32]).unwrap();
    assert_eq!(assert_error(ops::add(&col, &row), "2^64 elements").kind(), ErrorKind::Shape);
    let g = Graph::new();
    let (pc, pr) = (
        g.placeholder("c", DType::F32, [1usize << 32, 1]).unwrap(),
        g.placeholder("r", DType::F32, [1, 1 << 32]).unwrap(),
    );
    assert_error(ops::add(&pc, &pr), "2^64 elements in a graph");
    // Values larger than memory: an error, not an abort or the OOM killer.
    let big = ops::broadcast_to(&Tensor::scalar(1.0f32), [HUGE]).unwrap();
    assert_error(ops::exp(&big), "exp of 2^40 elements");
    assert!(big.to_vec::<f32>().is_err());
    // The reference device too (it widens every element to 16 bytes).
    let on_reference = rivulet::device("/reference:0", || ops::exp(&big)).unwrap();
    assert_error(on_reference, "exp of 2^40 elements on the reference device");
    let matmul = rivulet::device("/reference:0", || ops::matmul(&col, &row)).unwrap();
    assert_error(matmul, "a 2^64-element product on the reference device");
}

#[test]
fn bitwise_eq_compares_views_in_place() {
    let zeros = ops::broadcast_to(&Tensor::scalar(0.0f32), [HUGE]).unwrap();
    let ones = ops::broadcast_to(&Tensor::scalar(1.0f32), [HUGE]).unwrap();
    assert!(!zeros.bitwise_eq(&ones), "2^40-element views that differ");
    assert!(zeros.bitwise_eq(&zeros.clone()), "the same view");
    // Layouts differ, values agree: a transpose of a transpose.
    let m = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let tt = ops::transpose(&ops::transpose(&m, &[1, 0]).unwrap(), &[1, 0]).unwrap();
    let copy = ops::add(&ops::transpose(&m, &[1, 0]).unwrap(), -0.0).unwrap();
    assert!(m.bitwise_eq(&tt));
    assert!(ops::transpose(&m, &[1, 0]).unwrap().bitwise_eq(&copy));
    assert!(!m.bitwise_eq(&ops::neg(&m).unwrap()));
    // -0 and +0 differ bitwise; NaNs with the same bits are equal.
    assert!(!Tensor::scalar(0.0f32).bitwise_eq(&Tensor::scalar(-0.0f32)));
    assert!(Tensor::scalar(f32::NAN).bitwise_eq(&Tensor::scalar(f32::NAN)));
}

#[test]
fn model_methods_on_absurd_data_are_errors() {
    use rivulet::nn::{Activation, Dense, Sequential};
    let model = Sequential::new(vec![Box::new(Dense::new(2, Activation::Linear))]);
    let wide = ops::zeros(rivulet::Ctx::Eager, [HUGE, 0], DType::F32).unwrap();
    assert_error(model.predict(&wide, 32), "predict over 2^40 rows");
}
