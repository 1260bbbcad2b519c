//! A soak test: many threads run Session calls, traced calls with optimizer
//! steps and eager `assign_add`s on shared variables at once, with control
//! flow in the graphs. Nothing deadlocks, no update is lost (the counts are
//! exact), and every result equals the single-threaded one.
//!
//! A few seconds by default; `RIVULET_SOAK_SECONDS=60` runs it for a minute.

use rivulet::nn::Optimizer;
use rivulet::ops;
use rivulet::{function, while_loop, DType, Graph, Result, Session, Tensor, Variable, WhileOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// sum of 1..=10 by a loop (55), the value every loop below must give.
fn loop_sum(start: &Tensor) -> Result<Tensor> {
    let (_, s) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less_equal(i, &Tensor::scalar(10.0f64)),
        |(i, s): &(Tensor, Tensor)| Ok((ops::add(i, &Tensor::scalar(1.0f64))?, ops::add(s, i)?)),
        (start.clone(), ops::mul(start, &Tensor::scalar(0.0f64))?),
        &WhileOptions::default(),
    )?;
    Ok(s)
}

#[test]
fn eight_threads_of_sessions_traced_steps_and_eager_updates_lose_nothing() -> Result<()> {
    let seconds: f64 = std::env::var("RIVULET_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);

    // Shared state: an eager counter, an eager weight trained by SGD with a
    // gradient of one (it falls by exactly lr = 1 a step), a graph counter.
    let hits = Variable::new("hits", &Tensor::scalar(0.0f64), false)?;
    let w = Variable::new("w", &Tensor::scalar(0.0f64), true)?;
    let g = Graph::new();
    let runs = Variable::in_graph(&g, "runs", &Tensor::scalar(0.0f64), false)?;
    let bump = runs.assign_add(&Tensor::scalar(1.0f64))?;
    let start = g.placeholder("start", DType::F64, ())?;
    let summed = loop_sum(&start)?;
    let session = Session::new(&g);
    session.run_targets(&[&g.global_variables_initializer()?])?;
    let opt = Optimizer::sgd(1.0);
    let step = function(|args: &[Tensor]| {
        let s = loop_sum(&args[0])?;
        hits.assign_add(&Tensor::scalar(1.0f64))?;
        opt.apply_gradients(&[(Tensor::scalar(1.0f64), &w)])?;
        Ok(vec![s])
    });
    // The single-threaded results every concurrent call must reproduce.
    let one = Tensor::scalar(1.0f64);
    let want = session.run(&[&summed], &[(&start, &one)])?[0].to_scalar::<f64>()?;
    assert_eq!(want, 55.0);
    assert_eq!(step.call(&[&one])?[0].to_scalar::<f64>()?, 55.0);
    let (eager_adds, traced_calls, session_runs) = (AtomicU64::new(0), AtomicU64::new(1), AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (hits, session, step, bump, summed, start) = (&hits, &session, &step, &bump, &summed, &start);
            let (eager_adds, traced_calls, session_runs) = (&eager_adds, &traced_calls, &session_runs);
            let failures = failures.clone();
            scope.spawn(move || {
                let one = Tensor::scalar(1.0f64);
                let fail = |m: String| failures.lock().map(|mut f| f.push(m)).unwrap_or(());
                while Instant::now() < deadline {
                    let r: Result<()> = match t % 3 {
                        0 => hits.assign_add(&one).map(|_| {
                            eager_adds.fetch_add(1, Ordering::Relaxed);
                        }),
                        1 => step.call(&[&one]).and_then(|out| {
                            traced_calls.fetch_add(1, Ordering::Relaxed);
                            let v = out[0].to_scalar::<f64>()?;
                            if v != want {
                                fail(format!("traced loop gave {v}"));
                            }
                            Ok(())
                        }),
                        _ => session
                            .run_with_targets(&[summed], &[(start, &one)], &[&bump.op().expect("a node")])
                            .and_then(|out| {
                                session_runs.fetch_add(1, Ordering::Relaxed);
                                let v = out[0].to_scalar::<f64>()?;
                                if v != want {
                                    fail(format!("session loop gave {v}"));
                                }
                                Ok(())
                            }),
                    };
                    if let Err(e) = r {
                        fail(e.to_string());
                        return;
                    }
                }
            });
        }
    });
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert!(failures.is_empty(), "{failures:?}");
    let (e, c, s) = (
        eager_adds.load(Ordering::Relaxed),
        traced_calls.load(Ordering::Relaxed),
        session_runs.load(Ordering::Relaxed),
    );
    assert!(e > 0 && c > 1 && s > 0, "every kind of thread made progress: {e} {c} {s}");
    // Counts are exact: every update landed once.
    assert_eq!(hits.read().to_scalar::<f64>()?, (e + c) as f64);
    assert_eq!(w.read().to_scalar::<f64>()?, -(c as f64));
    assert_eq!(session.variable_value(&runs)?.to_scalar::<f64>()?, s as f64);
    Ok(())
}
