//! `rivulet::function`: tracing once per input signature (retracing on new
//! shapes and dtypes, input signatures with unknown dimensions, relaxed
//! shapes), agreement with eager execution, creation and random ops inside
//! a trace, captured eager variables (reads, assignments, optimizer slots),
//! gradient tapes inside a trace, and errors.

use crate::common::*;

use rivulet::nn::Optimizer;
use rivulet::ops::{self, Ctx};
use rivulet::{
    function, Axes, DType, Error, ErrorKind, Function, FunctionOptions, GradientTape, Graph, Result, SessionOptions,
    Shape, Tensor, Variable, UNKNOWN,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn f32s(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).unwrap()
}

/// Deterministic values in [-r, r).
fn filled(shape: &[usize], seed: u64, r: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * r
        })
        .collect();
    f32s(&data, shape)
}

#[track_caller]
fn assert_bitwise(actual: &Tensor, expected: &Tensor, what: &str) {
    assert!(!actual.is_symbolic(), "{what}: a traced function returned a symbolic tensor");
    assert!(actual.bitwise_eq(expected), "{what}: not bitwise equal\n{actual:?}\n{expected:?}");
}

#[track_caller]
fn assert_all_bitwise(actual: &[Tensor], expected: &[Tensor], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of results");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_bitwise(a, e, &format!("{what}, result {i}"));
    }
}

fn signature(dims: &[Option<usize>]) -> Vec<(DType, Shape)> {
    vec![(DType::F32, Shape::from(dims))]
}

// ---------------------------------------------------------------------------
// Tracing and retracing
// ---------------------------------------------------------------------------

#[test]
fn traces_once_per_signature() -> Result<()> {
    let f = function(|args: &[Tensor]| Ok(vec![ops::add(&ops::mul(&args[0], 2.0)?, 1.0)?]));
    assert_eq!(f.num_traces(), 0);
    assert!(f.trace_reasons().is_empty());

    let a = f32s(&[1.0, 2.0, 3.0], &[1, 3]);
    let a2 = f32s(&[-1.0, 0.5, 4.0], &[1, 3]);
    for _ in 0..3 {
        assert_eq!(f.call(&[&a])?[0].to_vec::<f32>()?, vec![3.0, 5.0, 7.0]);
    }
    assert_eq!(f.call(&[&a2])?[0].to_vec::<f32>()?, vec![-1.0, 2.0, 9.0]);
    assert_eq!(f.num_traces(), 1, "same shapes, new values: no retrace");
    let reasons = f.trace_reasons();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("first call"), "{reasons:?}");
    assert!(reasons[0].contains("f32[1, 3]"), "{reasons:?}");

    // A new shape retraces, saying which argument and which shapes.
    let b = f32s(&[1.0; 6], &[2, 3]);
    assert_eq!(dims(&f.call(&[&b])?[0]), vec![2, 3]);
    assert_eq!(f.num_traces(), 2);
    let reason = &f.trace_reasons()[1];
    assert!(reason.contains("argument 0"), "{reason}");
    assert!(reason.contains("[2, 3]") && reason.contains("[1, 3]"), "{reason}");

    // Both signatures stay cached.
    f.call(&[&a])?;
    f.call(&[&b])?;
    assert_eq!(f.num_traces(), 2);

    // A new dtype retraces.
    let c = Tensor::from_slice(&[1.0f64, 2.0, 3.0], [1, 3])?;
    let out = f.call(&[&c])?;
    assert_eq!(out[0].dtype(), DType::F64);
    assert_eq!(out[0].to_vec::<f64>()?, vec![3.0, 5.0, 7.0]);
    assert_eq!(f.num_traces(), 3);
    let reason = &f.trace_reasons()[2];
    assert!(reason.contains("argument 0") && reason.contains("f64") && reason.contains("f32"), "{reason}");

    // A scalar is a shape of its own.
    f.call(&[&Tensor::scalar(2.0f32)])?;
    assert_eq!(f.num_traces(), 4);
    assert_eq!(f.trace_reasons().len(), 4);
    Ok(())
}

#[test]
fn retrace_reasons_name_each_argument() -> Result<()> {
    let f = function(|args: &[Tensor]| {
        let mut acc = ops::sum(&args[0], Axes::All, false)?;
        for a in &args[1..] {
            acc = ops::add(&acc, &ops::sum(&ops::cast(a, DType::F32)?, Axes::All, false)?)?;
        }
        Ok(vec![acc])
    });
    let x = f32s(&[1.0, 2.0], &[2]);
    let y = f32s(&[3.0, 4.0, 5.0], &[3]);
    assert_eq!(f.call(&[&x, &y])?[0].to_scalar::<f32>()?, 15.0);
    let y2 = f32s(&[1.0; 4], &[2, 2]);
    assert_eq!(f.call(&[&x, &y2])?[0].to_scalar::<f32>()?, 7.0);
    let reason = &f.trace_reasons()[1];
    assert!(reason.contains("argument 1") && !reason.contains("argument 0"), "{reason}");
    assert!(reason.contains("[2, 2]") && reason.contains("[3]"), "{reason}");
    // An i32 second argument.
    let yi = Tensor::from_slice(&[1i32, 2, 3], [3])?;
    assert_eq!(f.call(&[&x, &yi])?[0].to_scalar::<f32>()?, 9.0);
    let reason = &f.trace_reasons()[2];
    assert!(reason.contains("argument 1") && reason.contains("i32"), "{reason}");
    // A different number of arguments.
    assert_eq!(f.call(&[&x])?[0].to_scalar::<f32>()?, 3.0);
    assert_eq!(f.num_traces(), 4);
    assert!(f.trace_reasons()[3].contains("1 arguments instead of 2"), "{:?}", f.trace_reasons());
    Ok(())
}

#[test]
fn input_signature_with_an_unknown_dimension_traces_once() -> Result<()> {
    let w = filled(&[3, 2], 1, 1.0);
    let options = FunctionOptions { input_signature: Some(signature(&[None, Some(3)])), ..Default::default() };
    let f = Function::with_options(
        |args: &[Tensor]| {
            let h = ops::tanh(&ops::matmul(&args[0], &w)?)?;
            Ok(vec![h.clone(), ops::sum(&h, -1, false)?, ops::mean(&h, Axes::All, false)?])
        },
        options,
    );
    for batch in [1, 4, 7, 2, 0] {
        let x = filled(&[batch, 3], batch as u64 + 10, 2.0);
        let out = f.call(&[&x])?;
        assert_eq!(dims(&out[0]), vec![batch, 2]);
        assert_eq!(dims(&out[1]), vec![batch]);
        // Equal to eager.
        let h = ops::tanh(&ops::matmul(&x, &w)?)?;
        assert_bitwise(&out[0], &h, &format!("batch {batch}"));
        assert_bitwise(&out[1], &ops::sum(&h, -1, false)?, &format!("batch {batch} sum"));
        assert_bitwise(&out[2], &ops::mean(&h, Axes::All, false)?, &format!("batch {batch} mean"));
    }
    assert_eq!(f.num_traces(), 1);
    assert!(f.trace_reasons()[0].contains("input signature"), "{:?}", f.trace_reasons());

    // Incompatible arguments: a Shape error, and no new trace.
    let bad = [
        filled(&[2, 4], 1, 1.0),
        filled(&[3], 1, 1.0),
        filled(&[1, 2, 3], 1, 1.0),
        Tensor::from_slice(&[1.0f64, 2.0, 3.0], [1, 3])?,
    ];
    for x in &bad {
        let e = f.call(&[x]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
        assert!(e.message().contains("input signature"), "{e}");
        assert!(e.message().contains("f32[?, 3]"), "{e}");
    }
    let two = filled(&[2, 3], 1, 1.0);
    assert_eq!(kind(f.call(&[&two, &two])), ErrorKind::Shape);
    assert_eq!(f.num_traces(), 1);

    // UNKNOWN spelled out.
    let options = FunctionOptions {
        input_signature: Some(vec![(DType::F32, Shape::from(vec![UNKNOWN, UNKNOWN]))]),
        ..Default::default()
    };
    let g = Function::with_options(|args: &[Tensor]| Ok(vec![ops::neg(&args[0])?]), options);
    for shape in [[1, 1], [3, 5], [5, 3]] {
        let x = filled(&shape, 3, 1.0);
        assert_bitwise(&g.call(&[&x])?[0], &ops::neg(&x)?, "neg");
    }
    assert_eq!(g.num_traces(), 1);
    Ok(())
}

#[test]
fn relax_shapes_retraces_once_with_the_differing_dimension_unknown() -> Result<()> {
    let options = FunctionOptions { relax_shapes: true, ..Default::default() };
    let f = Function::with_options(|args: &[Tensor]| Ok(vec![ops::sum(&ops::square(&args[0])?, -1, false)?]), options);
    let check = |shape: &[usize], traces: usize| -> Result<()> {
        let x = filled(shape, shape.iter().product::<usize>() as u64, 1.0);
        let out = f.call(&[&x])?;
        assert_bitwise(&out[0], &ops::sum(&ops::square(&x)?, -1, false)?, &format!("{shape:?}"));
        assert_eq!(f.num_traces(), traces, "after {shape:?}: {:?}", f.trace_reasons());
        Ok(())
    };
    check(&[2, 3], 1)?;
    check(&[5, 3], 2)?; // retrace as [?, 3]
    let reason = &f.trace_reasons()[1];
    assert!(reason.contains("argument 0") && reason.contains("[5, 3]") && reason.contains("[2, 3]"), "{reason}");
    check(&[7, 3], 2)?;
    check(&[1, 3], 2)?;
    check(&[0, 3], 2)?;
    check(&[2, 3], 2)?;
    check(&[4, 6], 3)?; // [?, 3] vs [4, 6]: retrace as [?, ?]
    check(&[9, 9], 3)?;
    check(&[1, 2], 3)?;
    check(&[6], 4)?; // another rank cannot be relaxed
    check(&[6], 4)?;
    check(&[2], 5)?; // ... but the next retrace of that rank is
    check(&[11], 5)?;
    assert_eq!(f.trace_reasons().len(), 5);
    Ok(())
}

// ---------------------------------------------------------------------------
// Agreement with eager execution
// ---------------------------------------------------------------------------

/// A small model on captured constants.
fn model(args: &[Tensor], p: &[Tensor]) -> Result<Vec<Tensor>> {
    let (x, y) = (&args[0], &args[1]);
    let h = ops::relu(&ops::add(&ops::matmul(x, &p[0])?, &p[1])?)?;
    let h2 = ops::tanh(&ops::add(&ops::matmul(&h, &p[2])?, &p[3])?)?;
    let logits = ops::add(&ops::matmul(&h2, &p[4])?, &p[5])?;
    let probs = ops::softmax(&logits, -1)?;
    let loss = ops::mean(&ops::square(&ops::sub(&probs, y)?)?, Axes::All, false)?;
    let norm = ops::sqrt(&ops::sum(&ops::square(&h)?, -1, true)?)?;
    let gate = ops::select(&ops::greater(&h2, 0.0)?, &ops::exp(&h2)?, &ops::sigmoid(&h2)?)?;
    Ok(vec![probs, loss, norm, ops::max(&gate, 0, false)?, ops::log_softmax(&logits, -1)?])
}

fn model_params() -> Vec<Tensor> {
    vec![
        filled(&[6, 16], 1, 0.5),
        filled(&[16], 2, 0.1),
        filled(&[16, 8], 3, 0.5),
        filled(&[8], 4, 0.1),
        filled(&[8, 4], 5, 0.5),
        filled(&[4], 6, 0.1),
    ]
}

#[test]
fn results_equal_eager_execution() -> Result<()> {
    let p = model_params();
    let optimized = function(|args: &[Tensor]| model(args, &p));
    let plain = Function::with_options(
        |args: &[Tensor]| model(args, &p),
        FunctionOptions { session: Some(SessionOptions::unoptimized()), ..Default::default() },
    );
    for (step, batch) in [5, 5, 9, 5].into_iter().enumerate() {
        let x = filled(&[batch, 6], 100 + step as u64, 2.0);
        let y = filled(&[batch, 4], 200 + step as u64, 1.0);
        let eager = model(&[x.clone(), y.clone()], &p)?;
        assert!(eager.iter().all(|t| !t.is_symbolic()));
        assert_all_bitwise(&optimized.call(&[&x, &y])?, &eager, &format!("optimized, step {step}"));
        assert_all_bitwise(&plain.call(&[&x, &y])?, &eager, &format!("unoptimized, step {step}"));
    }
    assert_eq!(optimized.num_traces(), 2);
    Ok(())
}

#[test]
fn outputs_may_be_inputs_or_values() -> Result<()> {
    let k = f32s(&[1.0, 2.0], &[2]);
    let f = function(|args: &[Tensor]| Ok(vec![args[0].clone(), k.clone(), ops::identity(&args[0])?]));
    let x = f32s(&[5.0, 6.0], &[2]);
    let out = f.call(&[&x])?;
    assert_bitwise(&out[0], &x, "an input");
    assert_bitwise(&out[1], &k, "a captured value");
    assert_bitwise(&out[2], &x, "identity");
    Ok(())
}

#[test]
fn creation_ops_inside_a_trace() -> Result<()> {
    let f = function(|args: &[Tensor]| {
        let z = Tensor::zeros([2, 3], DType::F32)?;
        let o = Tensor::ones([3], DType::F32)?;
        let r = ops::range(Ctx::Eager, 0i64, 3i64, 1i64, DType::F32)?;
        let e = ops::eye(Ctx::Eager, 2, 3, DType::F32)?;
        let l = ops::linspace(Ctx::Eager, 0.0, 1.0, 3, DType::F32)?;
        let y = ops::add(&ops::add(&ops::add(&args[0], &z)?, &r)?, &ops::mul(&e, &o)?)?;
        let fill = ops::fill(Ctx::Eager, [2], 2.5, DType::F64)?;
        Ok(vec![y, r, l, ops::zeros_like(&args[0])?, ops::ones_like(&args[0])?, fill, z])
    });
    let x = f32s(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], &[2, 3]);
    for _ in 0..2 {
        let out = f.call(&[&x])?;
        assert!(out.iter().all(|t| !t.is_symbolic()));
        assert_eq!(out[0].to_vec::<f32>()?, vec![11.0, 21.0, 32.0, 40.0, 52.0, 62.0]);
        assert_eq!(out[1].to_vec::<f32>()?, vec![0.0, 1.0, 2.0]);
        assert_eq!(out[2].to_vec::<f32>()?, vec![0.0, 0.5, 1.0]);
        assert_eq!(out[3].to_vec::<f32>()?, vec![0.0; 6]);
        assert_eq!(out[4].to_vec::<f32>()?, vec![1.0; 6]);
        assert_eq!(out[5].to_vec::<f64>()?, vec![2.5, 2.5]);
        assert_eq!(dims(&out[6]), vec![2, 3]);
    }
    assert_eq!(f.num_traces(), 1);
    // Outside the trace creation ops are eager again.
    assert!(!Tensor::zeros([2], DType::F32)?.is_symbolic());
    assert!(!ops::range(Ctx::Eager, 0i64, 3i64, 1i64, DType::I32)?.is_symbolic());
    Ok(())
}

#[test]
fn random_ops_inside_a_trace_draw_new_numbers_each_call() -> Result<()> {
    let f = function(|args: &[Tensor]| {
        let u = ops::random_uniform(Ctx::Eager, [64], 0.0, 1.0, DType::F32, Some(7))?;
        let v = ops::random_uniform_like(&args[0], -1.0, 1.0, Some(8))?;
        Ok(vec![ops::add(&args[0], &u)?, v])
    });
    let x = f32s(&[0.0; 64], &[64]);
    let calls: Vec<Vec<Tensor>> = (0..3).map(|_| f.call(&[&x])).collect::<Result<_>>()?;
    assert_eq!(f.num_traces(), 1);
    for i in 0..3 {
        for j in 0..i {
            assert!(!calls[i][0].bitwise_eq(&calls[j][0]), "calls {j} and {i} drew the same uniform numbers");
            assert!(!calls[i][1].bitwise_eq(&calls[j][1]), "calls {j} and {i} drew the same _like numbers");
        }
        let u = calls[i][0].to_vec::<f32>()?;
        assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)), "{u:?}");
        let v = calls[i][1].to_vec::<f32>()?;
        assert!(v.iter().all(|&v| (-1.0..1.0).contains(&v)), "{v:?}");
    }
    // A second function over the same closure starts its own streams.
    let f2 = function(|args: &[Tensor]| {
        Ok(vec![ops::add(&args[0], &ops::random_uniform(Ctx::Eager, [64], 0.0, 1.0, DType::F32, Some(7))?)?])
    });
    assert_bitwise(&f2.call(&[&x])?[0], &calls[0][0], "same seed, first call");
    Ok(())
}

// ---------------------------------------------------------------------------
// Captured eager variables
// ---------------------------------------------------------------------------

#[test]
fn captured_variables_are_read_at_each_call() -> Result<()> {
    let v = Variable::new("scale", &f32s(&[1.0, 2.0], &[2]), false)?;
    let f = function(|args: &[Tensor]| Ok(vec![ops::mul(&args[0], &v.read())?]));
    let x = f32s(&[10.0, 10.0], &[2]);
    assert_eq!(f.call(&[&x])?[0].to_vec::<f32>()?, vec![10.0, 20.0]);
    v.assign(&f32s(&[3.0, 4.0], &[2]))?;
    assert_eq!(f.call(&[&x])?[0].to_vec::<f32>()?, vec![30.0, 40.0]);
    v.assign_add(&f32s(&[1.0, 1.0], &[2]))?;
    assert_eq!(f.call(&[&x])?[0].to_vec::<f32>()?, vec![40.0, 50.0]);
    assert_eq!(f.num_traces(), 1);
    // Reading inside the function does not change the variable.
    assert_eq!(v.current().to_vec::<f32>()?, vec![4.0, 5.0]);
    assert!(!v.current().is_symbolic());
    Ok(())
}

#[test]
fn assignments_inside_are_written_back() -> Result<()> {
    let total = Variable::new("total", &f32s(&[0.0, 0.0], &[2]), false)?;
    let calls = Variable::new("calls", &Tensor::scalar(0i64), false)?;
    let f = function(|args: &[Tensor]| {
        let new = total.assign_add(&args[0])?;
        calls.assign_add(&Tensor::scalar(1i64))?;
        Ok(vec![new])
    });
    let out = f.call(&[&f32s(&[1.0, 2.0], &[2])])?;
    assert_eq!(out[0].to_vec::<f32>()?, vec![1.0, 2.0]);
    assert_eq!(total.current().to_vec::<f32>()?, vec![1.0, 2.0]);
    f.call(&[&f32s(&[10.0, 10.0], &[2])])?;
    assert_eq!(total.current().to_vec::<f32>()?, vec![11.0, 12.0]);
    // An eager assignment between calls is what the next call starts from.
    total.assign(&f32s(&[-1.0, -1.0], &[2]))?;
    let out = f.call(&[&f32s(&[1.0, 1.0], &[2])])?;
    assert_eq!(out[0].to_vec::<f32>()?, vec![0.0, 0.0]);
    assert_eq!(total.current().to_vec::<f32>()?, vec![0.0, 0.0]);
    assert_eq!(calls.current().to_scalar::<i64>()?, 3);
    assert_eq!(f.num_traces(), 1);
    Ok(())
}

#[test]
fn reads_and_writes_inside_follow_program_order() -> Result<()> {
    // As in eager mode (and TensorFlow 2's automatic control dependencies):
    // a read before an assignment sees the old value, a read after it the
    // new one, and two assignments both apply.
    let step = |v: &Variable, x: &Tensor| -> Result<Vec<Tensor>> {
        let before = ops::mul(&v.read(), 1.5)?;
        v.assign_add(x)?;
        let after = ops::mul(&v.read(), 1.5)?;
        v.assign_add(x)?;
        Ok(vec![before, after])
    };
    let eager_v = Variable::new("ordered_eager", &f32s(&[1.0, 2.0], &[2]), false)?;
    let traced_v = Variable::new("ordered_traced", &f32s(&[1.0, 2.0], &[2]), false)?;
    let f = function(|args: &[Tensor]| step(&traced_v, &args[0]));
    let x = f32s(&[10.0, 100.0], &[2]);
    for call in 0..2 {
        let eager = step(&eager_v, &x)?;
        let traced = f.call(&[&x])?;
        assert_bitwise(&traced[0], &eager[0], &format!("call {call}: read before the assignments"));
        assert_bitwise(&traced_v.current(), &eager_v.current(), &format!("call {call}: variable"));
        assert_bitwise(&traced[1], &eager[1], &format!("call {call}: read between the assignments"));
    }
    assert_eq!(eager_v.current().to_vec::<f32>()?, vec![41.0, 402.0]);
    Ok(())
}

/// Calls of one trace from many threads overlap (there is no call lock):
/// counts kept with `assign_add`, optimizer steps and dropout's random
/// state lose nothing, and every call draws its own dropout mask.
#[test]
fn overlapping_calls_of_one_trace_lose_no_update_and_draw_their_own_masks() -> Result<()> {
    use rivulet::nn::{Dropout, Layer};
    let calls = Variable::new("overlap_calls", &Tensor::scalar(0i64), false)?;
    let w = Variable::new("overlap_w", &Tensor::scalar(0.0f64), true)?;
    let opt = Optimizer::sgd(1.0);
    let dropout = Dropout::new(0.5)?;
    let ones = Tensor::ones([64], DType::F32)?;
    dropout.build(&ones)?;
    let f = function(|args: &[Tensor]| {
        calls.assign_add(&Tensor::scalar(1i64))?;
        opt.apply_gradients(&[(Tensor::scalar(1.0f64), &w)])?;
        Ok(vec![dropout.call(&args[0], true)?])
    });
    f.call(&[&ones])?;
    let (threads, per_thread) = (8, 40);
    let masks: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<Vec<u8>>> {
                    (0..per_thread)
                        .map(|_| Ok(f.call(&[&ones])?[0].to_vec::<f32>()?.iter().map(|&x| (x > 0.0) as u8).collect()))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a calling thread panicked")).collect::<Result<Vec<_>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    let n = 1 + threads * per_thread;
    assert_eq!(calls.current().to_scalar::<i64>()?, n as i64, "assign_add counts every call");
    assert_eq!(w.current().to_scalar::<f64>()?, -(n as f64), "every SGD step of -1 landed");
    let state = dropout.variables()[0].current().to_vec::<i64>()?;
    assert_eq!(state[1], n as i64, "dropout counted every call");
    let distinct: std::collections::HashSet<&Vec<u8>> = masks.iter().collect();
    assert_eq!(distinct.len(), masks.len(), "two overlapping calls drew the same mask");
    assert_eq!(f.num_traces(), 1);
    Ok(())
}

/// A call made from a parallel loop that runs inside another call of the
/// same function (a pool thread waiting for a kernel's chunk picks up the
/// loop's next item) runs at once instead of waiting for the outer call.
#[test]
fn calls_from_a_parallel_loop_inside_another_call_do_not_wait_for_it() -> Result<()> {
    use rayon::prelude::*;
    let n = 1 << 20;
    let x = Tensor::from_slice(&(0..n).map(|i| (i % 7) as f32).collect::<Vec<_>>(), [n])?;
    let want: f32 = (0..n).map(|i| ((i % 7) * (i % 7)) as f32).sum();
    let f = function(|args: &[Tensor]| Ok(vec![ops::sum(&ops::mul(&args[0], &args[0])?, Axes::All, false)?]));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(8).build().expect("a thread pool");
    let sums: Vec<f32> = pool.install(|| {
        // Half the items run the same sum eagerly (no call), so that pool
        // threads are free to take a call's chunks and then wait for them.
        (0..256)
            .into_par_iter()
            .map(|i| match i % 2 {
                0 => f.call(&[&x])?[0].to_scalar::<f32>(),
                _ => ops::sum(&ops::mul(&x, &x)?, Axes::All, false)?.to_scalar::<f32>(),
            })
            .collect::<Result<_>>()
    })?;
    for s in sums {
        assert!((s - want).abs() <= want * 1e-5, "{s} vs {want}");
    }
    Ok(())
}

/// One training step on eager variables: the same code eagerly and traced.
fn train_step(vars: &[Variable], opt: &Optimizer, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let tape = GradientTape::new();
    let p: Vec<Tensor> = vars.iter().map(|v| v.read()).collect();
    let h = ops::relu(&ops::add(&ops::matmul(x, &p[0])?, &p[1])?)?;
    let out = ops::add(&ops::matmul(&h, &p[2])?, &p[3])?;
    let loss = ops::mean(&ops::square(&ops::sub(&out, y)?)?, Axes::All, false)?;
    let refs: Vec<&Variable> = vars.iter().collect();
    let grads = tape.gradient_vars(&loss, &refs)?;
    let pairs: Vec<(Tensor, &Variable)> =
        grads.into_iter().zip(&refs).map(|(g, v)| (g.expect("every variable is used"), *v)).collect();
    opt.apply_gradients(&pairs)?;
    Ok(loss)
}

fn train_vars(tag: &str) -> Result<Vec<Variable>> {
    let init = [filled(&[5, 12], 31, 0.6), filled(&[12], 32, 0.1), filled(&[12, 3], 33, 0.6), filled(&[3], 34, 0.1)];
    init.iter().enumerate().map(|(i, t)| Variable::new(&format!("{tag}/p{i}"), t, true)).collect()
}

#[test]
fn an_optimizer_step_inside_function_trains_like_eager() -> Result<()> {
    let eager_vars = train_vars("eager")?;
    let traced_vars = train_vars("traced")?;
    let eager_opt = Optimizer::adam(0.05);
    let traced_opt = Optimizer::adam(0.05);
    let step = function(|args: &[Tensor]| Ok(vec![train_step(&traced_vars, &traced_opt, &args[0], &args[1])?]));
    for call in 0..5 {
        let x = filled(&[8, 5], 40 + call, 1.0);
        let y = filled(&[8, 3], 50 + call, 1.0);
        let eager_loss = train_step(&eager_vars, &eager_opt, &x, &y)?;
        let traced_loss = step.call(&[&x, &y])?.remove(0);
        assert_bitwise(&traced_loss, &eager_loss, &format!("loss at call {call}"));
        for (e, t) in eager_vars.iter().zip(&traced_vars) {
            assert_bitwise(&t.current(), &e.current(), &format!("{} after call {call}", t.name()));
            // The slots, created on the first call, hold the same moments.
            let (es, ts) = (eager_opt.slots(e).expect("eager slots"), traced_opt.slots(t).expect("traced slots"));
            assert_eq!(es.len(), 2);
            assert_eq!(ts.len(), es.len());
            for (k, (a, b)) in es.iter().zip(&ts).enumerate() {
                assert!(!b.is_graph(), "slots of an eager variable are eager");
                assert_bitwise(&b.current(), &a.current(), &format!("slot {k} of {} after call {call}", t.name()));
            }
        }
        let (ei, ti) = (eager_opt.iterations().unwrap(), traced_opt.iterations().unwrap());
        assert_eq!(ti.current().to_scalar::<i64>()?, call as i64 + 1);
        assert_eq!(ei.current().to_scalar::<i64>()?, call as i64 + 1);
    }
    assert_eq!(step.num_traces(), 1);
    Ok(())
}

#[test]
fn a_gradient_tape_inside_function_matches_eager() -> Result<()> {
    let w = Variable::new("tape_w", &filled(&[3, 2], 60, 1.0), true)?;
    let body = |args: &[Tensor]| -> Result<Vec<Tensor>> {
        let x = &args[0];
        let tape = GradientTape::persistent();
        tape.watch(x);
        let h = ops::add(&ops::mul(&ops::sin(x)?, &ops::square(x)?)?, &ops::exp(&ops::mul(x, 0.5)?)?)?;
        let y = ops::sum(&ops::tanh(&ops::matmul(&h, &w.read())?)?, Axes::All, false)?;
        let dx = tape.gradient(&y, &[x])?.remove(0).expect("dy/dx");
        let dw = tape.gradient_vars(&y, &[&w])?.remove(0).expect("dy/dw");
        Ok(vec![y, dx, dw])
    };
    let f = function(body);
    for seed in 0..3 {
        let x = filled(&[4, 3], 70 + seed, 1.5);
        let eager = body(std::slice::from_ref(&x))?;
        let traced = f.call(&[&x])?;
        assert_all_bitwise(&traced, &eager, &format!("seed {seed}"));
        assert_eq!(dims(&traced[1]), vec![4, 3]);
        assert_eq!(dims(&traced[2]), vec![3, 2]);
    }
    assert_eq!(f.num_traces(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn calling_with_a_symbolic_tensor_is_a_graph_error() -> Result<()> {
    let f = function(|args: &[Tensor]| Ok(vec![ops::neg(&args[0])?]));
    let g = Graph::new();
    let p = g.placeholder("p", DType::F32, [2])?;
    let e = f.call(&[&p]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Graph, "{e}");
    let value = f32s(&[1.0, 2.0], &[2]);
    assert_eq!(kind(f.call(&[&value, &p])), ErrorKind::Graph);
    assert_eq!(f.num_traces(), 0);
    // Values still work.
    assert_eq!(f.call(&[&value])?[0].to_vec::<f32>()?, vec![-1.0, -2.0]);
    Ok(())
}

#[test]
fn errors_of_the_closure_propagate() -> Result<()> {
    let f = function(|_: &[Tensor]| -> Result<Vec<Tensor>> { Err(Error::new(ErrorKind::InvalidArgument, "boom")) });
    let x = f32s(&[1.0], &[1]);
    for _ in 0..2 {
        let e = f.call(&[&x]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.message(), "boom");
    }
    assert_eq!(f.num_traces(), 0);
    // The failed trace left no default graph behind: eager ops are eager.
    let y = ops::add(&x, 1.0)?;
    assert!(!y.is_symbolic());
    assert_eq!(y.to_vec::<f32>()?, vec![2.0]);

    // An op error while tracing, with its context.
    let g = function(|args: &[Tensor]| Ok(vec![ops::matmul(&args[0], &args[0])?]));
    let e = g.call(&[&f32s(&[1.0; 6], &[2, 3])]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
    assert_eq!(e.op_context().map(|c| c.op.as_str()), Some("MatMul"));
    // The same function works for arguments it accepts.
    assert_eq!(dims(&g.call(&[&f32s(&[1.0; 4], &[2, 2])])?[0]), vec![2, 2]);
    assert_eq!(g.num_traces(), 1);

    // A run-time error of the traced graph.
    let h = function(|args: &[Tensor]| Ok(vec![ops::truncate_div(&args[0], &args[1])?]));
    let (a, z) = (Tensor::from_slice(&[4i32, 6], [2])?, Tensor::from_slice(&[2i32, 0], [2])?);
    let e = h.call(&[&a, &z]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("division by zero"), "{e}");
    let ok = Tensor::from_slice(&[2i32, 3], [2])?;
    assert_eq!(h.call(&[&a, &ok])?[0].to_vec::<i32>()?, vec![2, 2]);

    // Returning a tensor of another graph.
    let other = Graph::new();
    let foreign = other.placeholder("foreign", DType::F32, [1])?;
    let k = function(|_: &[Tensor]| Ok(vec![foreign.clone()]));
    assert_eq!(kind(k.call(&[&x])), ErrorKind::Graph);
    Ok(())
}
