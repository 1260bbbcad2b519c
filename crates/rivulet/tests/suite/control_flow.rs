//! Control flow: cond, switch_case and while_loop, eagerly, in graphs and
//! inside traced functions, with gradients, on every backend.

use crate::common::values;
use rivulet::ops::{self, PadMode};
use rivulet::{
    cond, function, gradients, switch_case, while_loop, DType, ErrorKind, GradientTape, Graph, Result, Session, Shape,
    Tensor, Unconnected, Variable, WhileOptions, UNKNOWN,
};

const DEVICES: [&str; 2] = ["/cpu:0", "/reference:0"];

fn f64s(t: &Tensor) -> Vec<f64> {
    values(t)
}

fn one(t: &Tensor) -> f64 {
    f64s(t)[0]
}

fn lit(v: f64) -> Tensor {
    Tensor::scalar(v)
}

/// Newton's iteration for sqrt(a), to convergence, as a loop of (x, steps).
fn newton(a: &Tensor, x0: &Tensor) -> Result<(Tensor, Tensor)> {
    let steps0 = Tensor::scalar(0i32);
    while_loop(
        |(x, _): &(Tensor, Tensor)| ops::greater(&ops::abs(&ops::sub(&ops::mul(x, x)?, a)?)?, &lit(1e-12)),
        |(x, n): &(Tensor, Tensor)| {
            Ok((ops::mul(&ops::add(x, &ops::div(a, x)?)?, &lit(0.5))?, ops::add(n, &Tensor::scalar(1i32))?))
        },
        (x0.clone(), steps0),
        &WhileOptions::default(),
    )
}

#[test]
fn newton_sqrt_converges_in_a_while_loop_in_every_mode_and_on_every_device() -> Result<()> {
    for device in DEVICES {
        for a in [2.0f64, 10.0, 0.25, 1e6] {
            // Eager: a Rust loop of ops.
            let (x, n) = rivulet::device(device, || newton(&lit(a), &lit(1.0)))??;
            assert!((one(&x) - a.sqrt()).abs() <= 1e-12 * a.sqrt().max(1.0), "{device} eager sqrt({a}) = {}", one(&x));
            assert!(crate::common::ints(&n)[0] >= 1);
            // Graph: one While node, the trip count decided at run time.
            let g = Graph::new();
            let (pa, xg, ng) = rivulet::device(device, || -> Result<_> {
                let pa = g.placeholder("a", DType::F64, ())?;
                let x0 = ops::constant(&g, lit(1.0))?;
                let (x, n) = newton(&pa, &x0)?;
                Ok((pa, x, n))
            })??;
            assert!(g.nodes().iter().any(|n| n.op.type_name() == "While"));
            assert!(g.nodes().iter().all(|n| n.op.type_name() != "Sqrt"));
            let s = Session::new(&g);
            let out = s.run(&[&xg, &ng], &[(&pa, &lit(a))])?;
            assert_eq!(f64s(&out[0]), f64s(&x), "{device}: graph and eager agree exactly");
            assert_eq!(crate::common::ints(&out[1]), crate::common::ints(&n));
        }
    }
    Ok(())
}

/// `u` (n×n, zero Dirichlet boundary outside) plus `r` times its 5-point laplacian.
fn heat_step(u: &Tensor, n: usize, r: f64) -> Result<Tensor> {
    let p = ops::pad(u, &[(1, 1), (1, 1)], PadMode::Constant, 0.0)?;
    let n = n as i64;
    let at = |i: usize, j: usize| ops::slice(&p, &[i, j], &[n, n]);
    let neighbours = ops::add(&ops::add(&at(0, 1)?, &at(2, 1)?)?, &ops::add(&at(1, 0)?, &at(1, 2)?)?)?;
    let lap = ops::sub(&neighbours, &ops::mul(u, &lit(4.0))?)?;
    ops::add(u, &ops::mul(&lap, &lit(r))?)
}

/// The (1, 1) Fourier mode on an n×n interior grid of spacing h = 1/(n+1).
fn fourier_mode(n: usize) -> Result<Tensor> {
    let h = 1.0 / (n + 1) as f64;
    let v: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = ((k / n + 1) as f64, (k % n + 1) as f64);
            (std::f64::consts::PI * i * h).sin() * (std::f64::consts::PI * j * h).sin()
        })
        .collect();
    Tensor::from_slice(&v, [n, n])
}

#[test]
fn the_heat_equation_in_a_while_loop_decays_a_fourier_mode_as_the_analysis_says() -> Result<()> {
    let (n, r, steps) = (15usize, 0.2, 40i32);
    let h = 1.0 / (n + 1) as f64;
    // The discrete operator's exact factor per step, and the PDE's decay.
    let factor = 1.0 - 8.0 * r * (std::f64::consts::PI * h / 2.0).sin().powi(2);
    let discrete = factor.powi(steps);
    let continuous = (-2.0 * std::f64::consts::PI.powi(2) * r * h * h * steps as f64).exp();
    let u0 = fourier_mode(n)?;
    for device in DEVICES {
        let g = Graph::new();
        let (k, u) = rivulet::device(device, || -> Result<_> {
            let u0 = ops::constant(&g, u0.clone())?;
            let k0 = ops::constant(&g, Tensor::scalar(0i32))?;
            while_loop(
                |(k, _): &(Tensor, Tensor)| ops::less(k, &Tensor::scalar(steps)),
                |(k, u): &(Tensor, Tensor)| Ok((ops::add(k, &Tensor::scalar(1i32))?, heat_step(u, n, r)?)),
                (k0, u0),
                &WhileOptions::default(),
            )
        })??;
        let out = Session::new(&g).run(&[&k, &u], &[])?;
        assert_eq!(crate::common::ints(&out[0]), vec![steps as i128]);
        let (got, start) = (f64s(&out[1]), f64s(&u0));
        for (i, (x, x0)) in got.iter().zip(&start).enumerate() {
            assert!((x - discrete * x0).abs() <= 1e-12, "{device}: element {i}: {x} vs {}", discrete * x0);
            // The grid's answer is the PDE's to O(h^2).
            assert!((x - continuous * x0).abs() <= 2e-3 * x0.abs() + 1e-12, "{device}: element {i}");
        }
    }
    Ok(())
}

/// y ← y + w·sin(y), `n` times (n fed at run time), from y = x.
fn sine_map(g: &Graph, x: &Tensor, w: &Tensor, n: &Tensor, options: &WhileOptions) -> Result<Tensor> {
    let i0 = ops::constant(g, Tensor::scalar(0i32))?;
    let (_, y) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, n),
        |(i, y): &(Tensor, Tensor)| {
            Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(y, &ops::mul(w, &ops::sin(y)?)?)?))
        },
        (i0, x.clone()),
        options,
    )?;
    Ok(y)
}

#[test]
fn while_loop_gradients_match_the_unrolled_loop_and_finite_differences() -> Result<()> {
    let (xv, wv, steps) = (0.3f64, 0.7f64, 9usize);
    let xs = Tensor::from_slice(&[0.3f64, -1.1, 2.0], [3])?;
    for device in DEVICES {
        for every in [None, Some(1u64), Some(2), Some(4), Some(100)] {
            let g = Graph::new();
            let (x, w, n, y, grads) = rivulet::device(device, || -> Result<_> {
                let x = g.placeholder("x", DType::F64, [3])?;
                let w = g.placeholder("w", DType::F64, ())?;
                let n = g.placeholder("n", DType::I32, ())?;
                let options = WhileOptions { checkpoint_every: every, ..WhileOptions::default() };
                let y = ops::sum(&sine_map(&g, &x, &w, &n, &options)?, rivulet::Axes::All, false)?;
                let grads = gradients(&[&y], &[&x, &w], None, Unconnected::None)?;
                Ok((x, w, n, y, grads))
            })??;
            // The same map unrolled in Rust, differentiated the same way.
            let (ux, uw, uy, ugrads) = {
                let ux = g.placeholder("ux", DType::F64, [3])?;
                let uw = g.placeholder("uw", DType::F64, ())?;
                let mut y = ux.clone();
                for _ in 0..steps {
                    y = ops::add(&y, &ops::mul(&uw, &ops::sin(&y)?)?)?;
                }
                let uy = ops::sum(&y, rivulet::Axes::All, false)?;
                let ugrads = gradients(&[&uy], &[&ux, &uw], None, Unconnected::None)?;
                (ux, uw, uy, ugrads)
            };
            let s = Session::new(&g);
            let run = |xv: &Tensor, wv: f64| -> Result<Vec<Tensor>> {
                let fetches = [&y, grads[0].as_ref().unwrap(), grads[1].as_ref().unwrap()];
                let mut out = s.run(&fetches, &[(&x, xv), (&w, &lit(wv)), (&n, &Tensor::scalar(steps as i32))])?;
                let unrolled = s.run(
                    &[&uy, ugrads[0].as_ref().unwrap(), ugrads[1].as_ref().unwrap()],
                    &[(&ux, xv), (&uw, &lit(wv))],
                )?;
                out.extend(unrolled);
                Ok(out)
            };
            let out = run(&xs, wv)?;
            let what = format!("{device}, checkpoint_every {every:?}");
            // Loop and unrolled loop: the same arithmetic, to rounding.
            assert!((one(&out[0]) - one(&out[3])).abs() < 1e-12, "{what}: values");
            for (a, b) in f64s(&out[1]).iter().zip(f64s(&out[4])) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{what}: d/dx {a} vs {b}");
            }
            assert!((one(&out[2]) - one(&out[5])).abs() <= 1e-12 * (1.0 + one(&out[5]).abs()), "{what}: d/dw");
            // Central differences in w and in x[0].
            let eps = 1e-6;
            let fd_w = (one(&run(&xs, wv + eps)?[0]) - one(&run(&xs, wv - eps)?[0])) / (2.0 * eps);
            assert!((fd_w - one(&out[2])).abs() < 1e-6, "{what}: fd {fd_w} vs {}", one(&out[2]));
            let bump = |d: f64| Tensor::from_slice(&[xv + d, -1.1, 2.0], [3]);
            let fd_x = (one(&run(&bump(eps)?, wv)?[0]) - one(&run(&bump(-eps)?, wv)?[0])) / (2.0 * eps);
            assert!((fd_x - f64s(&out[1])[0]).abs() < 1e-6, "{what}: fd {fd_x}");
            // No iterations: the gradient of the identity.
            let zero = s.run(
                &[grads[0].as_ref().unwrap(), grads[1].as_ref().unwrap()],
                &[(&x, &xs), (&w, &lit(wv)), (&n, &Tensor::scalar(0i32))],
            )?;
            assert_eq!(f64s(&zero[0]), vec![1.0; 3], "{what}");
            assert_eq!(f64s(&zero[1]), vec![0.0], "{what}");
        }
    }
    Ok(())
}

#[test]
fn an_untaken_branch_that_would_give_nan_or_inf_poisons_neither_value_nor_gradient() -> Result<()> {
    for device in DEVICES {
        // Graph.
        let g = Graph::new();
        let (x, y, dy) = rivulet::device(device, || -> Result<_> {
            let x = g.placeholder("x", DType::F64, ())?;
            let y = cond(&ops::greater(&x, &lit(0.0))?, || ops::sqrt(&x), || ops::mul(&x, &lit(0.0)))?;
            let y = ops::add(&y, &cond(&ops::greater(&x, &lit(0.0))?, || ops::log(&x), || ops::mul(&x, &lit(2.0)))?)?;
            let dy = gradients(&[&y], &[&x], None, Unconnected::None)?[0].clone().unwrap();
            Ok((x, y, dy))
        })??;
        let s = Session::new(&g);
        let out = s.run(&[&y, &dy], &[(&x, &lit(-4.0))])?;
        assert_eq!((one(&out[0]), one(&out[1])), (-8.0, 2.0), "{device}");
        let out = s.run(&[&y, &dy], &[(&x, &lit(4.0))])?;
        assert!((one(&out[0]) - (2.0 + 4f64.ln())).abs() < 1e-15, "{device}");
        assert!((one(&out[1]) - (0.25 + 0.25)).abs() < 1e-15, "{device}");
        // Eager, on a tape: only the taken closure runs and is recorded.
        let xv = lit(-4.0).to_device(device)?;
        let tape = GradientTape::new();
        tape.watch(&xv);
        let ye =
            rivulet::device(device, || cond(&ops::greater(&xv, &lit(0.0))?, || ops::sqrt(&xv), || ops::neg(&xv)))??;
        let de = tape.gradient(&ye, &[&xv])?[0].clone().unwrap();
        assert_eq!((one(&ye), one(&de)), (4.0, -1.0), "{device}");
    }
    Ok(())
}

#[test]
fn second_order_gradients_through_cond() -> Result<()> {
    for device in DEVICES {
        let g = Graph::new();
        let (x, d1, d2) = rivulet::device(device, || -> Result<_> {
            let x = g.placeholder("x", DType::F64, ())?;
            let y = cond(
                &ops::greater(&x, &lit(1.0))?,
                || ops::mul(&ops::mul(&x, &x)?, &x),
                || ops::mul(&ops::sin(&x)?, &x),
            )?;
            let d1 = gradients(&[&y], &[&x], None, Unconnected::None)?[0].clone().unwrap();
            let d2 = gradients(&[&d1], &[&x], None, Unconnected::None)?[0].clone().unwrap();
            Ok((x, d1, d2))
        })??;
        let s = Session::new(&g);
        for v in [2.0f64, 0.5, -3.0] {
            let out = s.run(&[&d1, &d2], &[(&x, &lit(v))])?;
            let (want1, want2) =
                if v > 1.0 { (3.0 * v * v, 6.0 * v) } else { (v.cos() * v + v.sin(), 2.0 * v.cos() - v * v.sin()) };
            assert!((one(&out[0]) - want1).abs() < 1e-12, "{device} x={v}: {} vs {want1}", one(&out[0]));
            assert!((one(&out[1]) - want2).abs() < 1e-12, "{device} x={v}: {} vs {want2}", one(&out[1]));
        }
    }
    Ok(())
}

#[test]
fn switch_case_runs_the_chosen_branch_and_the_default_out_of_range() -> Result<()> {
    let branch = |k: f64| move || -> Result<Tensor> { Ok(lit(k)) };
    let (b0, b1, b2) = (branch(10.0), branch(11.0), branch(12.0));
    let dflt = branch(-1.0);
    let branches: [&dyn Fn() -> Result<Tensor>; 3] = [&b0, &b1, &b2];
    let g = Graph::new();
    let i = g.placeholder("i", DType::I32, ())?;
    let with_default = switch_case(&i, &branches, Some(&dflt))?;
    let without = switch_case(&i, &branches, None)?;
    let s = Session::new(&g);
    for (k, want, want_last) in [(0, 10.0, 10.0), (2, 12.0, 12.0), (3, -1.0, 12.0), (-1, -1.0, 12.0)] {
        let out = s.run(&[&with_default, &without], &[(&i, &Tensor::scalar(k))])?;
        assert_eq!((one(&out[0]), one(&out[1])), (want, want_last), "index {k}");
        let eager = switch_case(&Tensor::scalar(k), &branches, Some(&dflt))?;
        assert_eq!(one(&eager), want, "eager index {k}");
    }
    // Gradients flow through the chosen branch only.
    let x = g.placeholder("x", DType::F64, ())?;
    let (sq, cube, neg) = (|| ops::mul(&x, &x), || ops::mul(&ops::mul(&x, &x)?, &x), || ops::neg(&x));
    let fs: [&dyn Fn() -> Result<Tensor>; 3] = [&sq, &cube, &neg];
    let y = switch_case(&i, &fs, None)?;
    let dy = gradients(&[&y], &[&x], None, Unconnected::None)?[0].clone().unwrap();
    for (k, want) in [(0, 6.0), (1, 27.0), (2, -1.0), (7, -1.0)] {
        let out = s.run(&[&dy], &[(&i, &Tensor::scalar(k)), (&x, &lit(3.0))])?;
        assert_eq!(one(&out[0]), want, "branch {k}");
    }
    Ok(())
}

#[test]
fn nested_loops_and_conds_in_both_directions_with_gradients() -> Result<()> {
    // sum_{i<n} (i odd ? x^i : sum_{j<i} x)  via a while holding a cond holding a while.
    let reference = |x: f64, n: i32| -> (f64, f64) {
        let (mut v, mut d) = (0.0, 0.0);
        for i in 0..n {
            if i % 2 == 1 {
                v += x.powi(i);
                d += i as f64 * x.powi(i - 1);
            } else {
                v += i as f64 * x;
                d += i as f64;
            }
        }
        (v, d)
    };
    for device in DEVICES {
        let g = Graph::new();
        let (x, n, total, dx) = rivulet::device(device, || -> Result<_> {
            let x = g.placeholder("x", DType::F64, ())?;
            let n = g.placeholder("n", DType::I32, ())?;
            let (_, total) = while_loop(
                |(i, _): &(Tensor, Tensor)| ops::less(i, &n),
                |(i, acc): &(Tensor, Tensor)| {
                    let odd = ops::equal(&ops::floor_mod(i, &Tensor::scalar(2i32))?, &Tensor::scalar(1i32))?;
                    let term = cond(
                        &odd,
                        || ops::pow(&x, &ops::cast(i, DType::F64)?),
                        || {
                            let (_, s) = while_loop(
                                |(j, _): &(Tensor, Tensor)| ops::less(j, i),
                                |(j, s): &(Tensor, Tensor)| Ok((ops::add(j, &Tensor::scalar(1i32))?, ops::add(s, &x)?)),
                                (Tensor::scalar(0i32), ops::mul(&x, &lit(0.0))?),
                                &WhileOptions::default(),
                            )?;
                            Ok(s)
                        },
                    )?;
                    Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(acc, &term)?))
                },
                (Tensor::scalar(0i32), ops::mul(&x, &lit(0.0))?),
                &WhileOptions::default(),
            )?;
            let dx = gradients(&[&total], &[&x], None, Unconnected::None)?[0].clone().unwrap();
            Ok((x, n, total, dx))
        })??;
        let s = Session::new(&g);
        for (xv, nv) in [(1.5f64, 6i32), (0.7, 5), (2.0, 0)] {
            let out = s.run(&[&total, &dx], &[(&x, &lit(xv)), (&n, &Tensor::scalar(nv))])?;
            let (v, d) = reference(xv, nv);
            assert!(
                (one(&out[0]) - v).abs() < 1e-12 * (1.0 + v.abs()),
                "{device} x={xv} n={nv}: {} vs {v}",
                one(&out[0])
            );
            assert!(
                (one(&out[1]) - d).abs() < 1e-11 * (1.0 + d.abs()),
                "{device} x={xv} n={nv}: {} vs {d}",
                one(&out[1])
            );
        }
    }
    Ok(())
}

/// Resident memory in bytes (Linux), to see that a long loop does not grow.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_100000_iteration_loop_keeps_the_stack_and_memory_flat() -> Result<()> {
    // Alone in a child process: resident memory is process-wide.
    if !crate::common::run_alone("control_flow::a_100000_iteration_loop_keeps_the_stack_and_memory_flat") {
        return Ok(());
    }
    let g = Graph::new();
    let n = 100_000i32;
    let v0 = ops::constant(&g, Tensor::zeros([4096], DType::F32)?)?;
    let (i, v) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(n)),
        |(i, v): &(Tensor, Tensor)| Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(v, &Tensor::scalar(1.0f32))?)),
        (Tensor::scalar(0i32), v0),
        &WhileOptions::default(),
    )?;
    let s = Session::new(&g);
    // Warm up (plan, allocator), then run the long loop on a small stack:
    // a loop that recursed or kept its iterations would overflow or grow.
    let short = s.run(&[&v], &[])?;
    assert_eq!(f64s(&short[0])[0], n as f64);
    let before = resident_bytes();
    let handle = std::thread::Builder::new().stack_size(256 << 10).spawn(move || -> Result<Vec<Tensor>> {
        let mut last = Vec::new();
        for _ in 0..3 {
            last = s.run(&[&i, &v], &[])?;
        }
        Ok(last)
    });
    let out = handle.map_err(|e| rivulet::Error::new(ErrorKind::Io, e.to_string()))?.join().expect("no panic")?;
    assert_eq!(crate::common::ints(&out[0]), vec![n as i128]);
    assert!(f64s(&out[1]).iter().all(|&x| x == n as f64));
    if let (Some(a), Some(b)) = (before, resident_bytes()) {
        // 300,000 iterations of a 16 KiB state: keeping them would be ~5 GB.
        assert!(b < a + (64 << 20), "resident memory grew from {a} to {b} bytes");
    }
    Ok(())
}

#[test]
fn shape_invariants_let_a_dimension_grow_and_maximum_iterations_stops_a_loop() -> Result<()> {
    let g = Graph::new();
    let start = ops::constant(&g, Tensor::from_slice(&[1.0f32], [1])?)?;
    let options = WhileOptions::default().shape_invariants(vec![Shape::from(vec![UNKNOWN])]);
    let grown = while_loop(
        |v: &Tensor| ops::less(&ops::size(v, DType::I32)?, &Tensor::scalar(5i32)),
        |v: &Tensor| ops::concat(&[v, &ops::add(&ops::slice(v, &[0], &[1])?, &Tensor::scalar(1.0f32))?], 0),
        start,
        &options,
    )?;
    assert_eq!(grown.shape().dims(), &[UNKNOWN]);
    let out = Session::new(&g).run(&[&grown], &[])?;
    assert_eq!(f64s(&out[0]), vec![1.0, 2.0, 2.0, 2.0, 2.0]);
    // maximum_iterations, in a graph and eagerly.
    let forever = |x: &Tensor| ops::greater(x, &Tensor::scalar(-1i32));
    let step = |x: &Tensor| ops::add(x, &Tensor::scalar(1i32));
    let capped = WhileOptions::default().maximum_iterations(7);
    let lazy = while_loop(forever, step, ops::constant(&g, Tensor::scalar(0i32))?, &capped)?;
    assert_eq!(crate::common::ints(&Session::new(&g).run(&[&lazy], &[])?[0]), vec![7]);
    assert_eq!(crate::common::ints(&while_loop(forever, step, Tensor::scalar(0i32), &capped)?), vec![7]);
    Ok(())
}

#[test]
fn bodies_read_and_assign_variables_in_a_session_and_gradients_reach_them() -> Result<()> {
    let g = Graph::new();
    let counter = Variable::in_graph(&g, "counter", &Tensor::scalar(0.0f64), false)?;
    let w = Variable::in_graph(&g, "w", &lit(1.5), true)?;
    let n = g.placeholder("n", DType::I32, ())?;
    let x = g.placeholder("x", DType::F64, ())?;
    // Each iteration adds 1 to the counter and multiplies y by w (read inside).
    let (_, y) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &n),
        |(i, y): &(Tensor, Tensor)| {
            counter.assign_add(&lit(1.0))?;
            Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::mul(y, &w.read())?))
        },
        (Tensor::scalar(0i32), x.clone()),
        &WhileOptions::default(),
    )?;
    let dw = gradients(&[&y], &[&w.read()], None, Unconnected::None)?[0].clone().unwrap();
    let s = Session::new(&g);
    s.run_targets(&[&g.global_variables_initializer()?])?;
    let out = s.run(&[&y, &dw], &[(&n, &Tensor::scalar(4i32)), (&x, &lit(2.0))])?;
    assert!((one(&out[0]) - 2.0 * 1.5f64.powi(4)).abs() < 1e-12);
    assert!((one(&out[1]) - 2.0 * 4.0 * 1.5f64.powi(3)).abs() < 1e-12, "{}", one(&out[1]));
    // The loop ran once in that request (the gradient's loop that keeps
    // its states took the plain loop's place): 4 increments.
    assert_eq!(one(&s.variable_value(&counter)?), 4.0);
    s.run(&[&y], &[(&n, &Tensor::scalar(3i32)), (&x, &lit(2.0))])?;
    assert_eq!(one(&s.variable_value(&counter)?), 7.0);
    // Saved and loaded, the stand-ins still find their variables; a
    // document whose stand-in lost its alias is refused.
    let text = g.to_json()?;
    let h = Graph::from_json(&text)?;
    let s = Session::new(&h);
    s.run_targets(&[&h.operation("counter/Assign")?, &h.operation("w/Assign")?])?;
    let hy = h.tensor(&y.name().unwrap())?;
    let out = s.run(&[&hy], &[(&h.tensor("n")?, &Tensor::scalar(4i32)), (&h.tensor("x")?, &lit(2.0))])?;
    assert!((one(&out[0]) - 2.0 * 1.5f64.powi(4)).abs() < 1e-12);
    assert!(text.contains("\"aliases\":[["));
    assert!(Graph::from_json(&text.replace("\"aliases\":[[", "\"ignored\":[[")).is_err());
    Ok(())
}

#[test]
fn traced_functions_turn_control_flow_into_nodes_and_see_variable_updates() -> Result<()> {
    let total = Variable::new("total", &lit(0.0), false)?;
    let f = function(|args: &[Tensor]| {
        let x = &args[0];
        let (_, acc) = while_loop(
            |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(3i32)),
            |(i, acc): &(Tensor, Tensor)| {
                total.assign_add(x)?;
                Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(acc, &ops::mul(x, x)?)?))
            },
            (Tensor::scalar(0i32), ops::mul(x, &lit(0.0))?),
            &WhileOptions::default(),
        )?;
        let signed = cond(&ops::greater(x, &lit(0.0))?, || Ok(acc.clone()), || ops::neg(&acc))?;
        // Read after the loop: sees the loop's assignments.
        Ok(vec![signed, total.read()])
    });
    let out = f.call(&[&lit(2.0)])?;
    assert_eq!((one(&out[0]), one(&out[1])), (12.0, 6.0));
    let out = f.call(&[&lit(-1.0)])?;
    assert_eq!((one(&out[0]), one(&out[1])), (-3.0, 3.0));
    assert_eq!(f.num_traces(), 1);
    assert_eq!(one(&total.read()), 3.0);
    Ok(())
}

#[test]
fn graphs_with_control_flow_round_trip_through_json_and_show_their_bodies() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F64, ())?;
    let (x, n) = newton(&a, &ops::constant(&g, lit(1.0))?)?;
    let y = cond(&ops::greater(&a, &lit(4.0))?, || ops::mul(&x, &lit(10.0)), || Ok(x.clone()))?;
    let text = g.to_json()?;
    let h = Graph::from_json(&text)?;
    let fetch = |graph: &Graph, t: &Tensor| graph.tensor(&t.name().unwrap());
    let s = Session::new(&h);
    let out = s.run(&[&fetch(&h, &y)?, &fetch(&h, &n)?], &[(&h.tensor("a:0")?, &lit(9.0))])?;
    assert!((one(&out[0]) - 30.0).abs() < 1e-12);
    assert_eq!(h.functions().len(), g.functions().len());
    assert_eq!(h.to_json()?, text, "a second round trip is byte for byte the same");
    // DOT: a cluster per function, nested.
    let dot = g.to_dot();
    assert_eq!(dot.matches("subgraph cluster_").count(), g.functions().len());
    assert!(dot.contains("while/body") && dot.contains("cond/then") && dot.contains("label=\"body\""));
    // explain and the profiler show the bodies' steps.
    let s = Session::new(&g);
    let report = s.explain(&[&y], &[&a], &[])?;
    assert!(report.bodies.iter().any(|(_, f, r)| f == "while/body" && r.steps > 0));
    let profile = s.profile(&[&y], &[(&a, &lit(9.0))], &[], 2)?;
    assert!(profile.steps.iter().any(|p| p.node.contains("/body/") && p.op == "AddV2"), "{:?}", profile.steps);
    // A damaged document is an error, not a panic.
    let broken = text.replacen("\"outputs\":[{\"node\"", "\"outputs\":[{\"node\":999999,\"x\"", 1);
    assert!(Graph::from_json(&broken).is_err());
    Ok(())
}

#[test]
fn bad_bodies_and_predicates_are_errors_that_name_the_op_and_the_line() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [3])?;
    let here = file!();
    let check = |r: Result<Tensor>, op: &str, what: &str| {
        let e = r.expect_err(what);
        let text = e.to_string();
        assert!(text.contains(op), "{what}: {text}");
        assert!(text.contains(here), "{what}: the error points at the caller: {text}");
    };
    // The body changes the dtype, or the shape beyond the invariant.
    check(
        while_loop(
            |v: &Tensor| ops::less(&ops::sum(v, rivulet::Axes::All, false)?, &Tensor::scalar(9.0f32)),
            |v: &Tensor| ops::cast(v, DType::F64),
            x.clone(),
            &WhileOptions::default(),
        ),
        "While",
        "dtype change",
    );
    check(
        while_loop(
            |v: &Tensor| ops::less(&ops::sum(v, rivulet::Axes::All, false)?, &Tensor::scalar(9.0f32)),
            |v: &Tensor| ops::concat(&[v, v], 0),
            x.clone(),
            &WhileOptions::default(),
        ),
        "While",
        "shape change",
    );
    // A non-scalar or non-bool predicate.
    check(
        cond(&ops::greater(&x, &Tensor::scalar(0.0f32))?, || Ok(x.clone()), || Ok(x.clone())),
        "If",
        "vector predicate",
    );
    check(cond(&x, || Ok(x.clone()), || Ok(x.clone())), "If", "float predicate");
    check(
        while_loop(|v: &Tensor| Ok(v.clone()), |v: &Tensor| Ok(v.clone()), x.clone(), &WhileOptions::default()),
        "While",
        "float loop condition",
    );
    // Branches returning different structures or dtypes.
    let p = g.placeholder("p", DType::Bool, ())?;
    let e = cond(&p, || Ok(vec![x.clone()]), || Ok(vec![x.clone(), x.clone()])).map(|v| v[0].clone());
    check(e, "If", "structure");
    check(cond(&p, || Ok(x.clone()), || ops::cast(&x, DType::F64)), "If", "dtype");
    // Eagerly too.
    check(
        while_loop(
            |v: &Tensor| ops::less(&ops::sum(v, rivulet::Axes::All, false)?, &Tensor::scalar(9.0f32)),
            |v: &Tensor| ops::concat(&[v, v], 0),
            Tensor::ones([3], DType::F32)?,
            &WhileOptions::default(),
        ),
        "While",
        "eager shape change",
    );
    check(cond(&Tensor::ones([2], DType::Bool)?, || Ok(x.clone()), || Ok(x.clone())), "If", "eager vector predicate");
    // Nothing was added to the graph by the failed calls that could break a run.
    let y = ops::add(&x, &Tensor::scalar(1.0f32))?;
    let out = Session::new(&g).run(&[&y], &[(&x, &Tensor::ones([3], DType::F32)?)])?;
    assert_eq!(f64s(&out[0]), vec![2.0; 3]);
    Ok(())
}

#[test]
fn loop_invariant_work_is_hoisted_out_of_the_body_and_runs_once() -> Result<()> {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F64, [8, 8])?;
    let x0 = g.placeholder("x0", DType::F64, [8])?;
    // The body multiplies by a matrix built from captures only (invariant).
    let (_, x) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(5i32)),
        |(i, x): &(Tensor, Tensor)| {
            let m = ops::mul(&ops::exp(&ops::neg(&ops::matmul(&a, &a)?)?)?, &lit(0.5))?;
            let y = ops::squeeze(&ops::matmul(&m, &ops::expand_dims(x, 1)?)?, &[1])?;
            Ok((ops::add(i, &Tensor::scalar(1i32))?, y))
        },
        (Tensor::scalar(0i32), x0.clone()),
        &WhileOptions::default(),
    )?;
    let av: Vec<f64> = (0..64).map(|k| ((k * 7) % 11) as f64 * 0.05 - 0.2).collect();
    let xv: Vec<f64> = (0..8).map(|k| k as f64 - 3.0).collect();
    let (at, xt) = (Tensor::from_slice(&av, [8, 8])?, Tensor::from_slice(&xv, [8])?);
    // Reference: the same arithmetic unrolled, in f64 by hand.
    let mut aa = [[0.0f64; 8]; 8];
    for i in 0..8 {
        for j in 0..8 {
            aa[i][j] = 0.5 * (-(0..8).map(|k| av[i * 8 + k] * av[k * 8 + j]).sum::<f64>()).exp();
        }
    }
    let mut want = xv.clone();
    for _ in 0..5 {
        want = (0..8).map(|i| (0..8).map(|j| aa[i][j] * want[j]).sum()).collect();
    }
    let mut runs = Vec::new();
    for options in [rivulet::SessionOptions::default(), rivulet::SessionOptions::unoptimized()] {
        let hoisting = options.passes.loop_invariant_code_motion;
        let s = Session::with_options(&g, options);
        let out = s.run(&[&x], &[(&a, &at), (&x0, &xt)])?;
        for (p, q) in f64s(&out[0]).iter().zip(&want) {
            assert!((p - q).abs() <= 1e-9 * (1.0 + q.abs()), "{p} vs {q}");
        }
        // The profile: the invariant matmul runs in the hoisted plan, once.
        let profile = s.profile(&[&x], &[(&a, &at), (&x0, &xt)], &[], 1)?;
        let in_body = |p: &rivulet::StepProfile| p.node.contains("/body/") && p.op == "MatMul";
        let hoisted = |p: &rivulet::StepProfile| p.node.contains("/loop invariants/") && p.op == "MatMul";
        assert_eq!(profile.steps.iter().filter(|p| in_body(p)).count(), if hoisting { 1 } else { 2 });
        assert_eq!(profile.steps.iter().filter(|p| hoisted(p)).count(), if hoisting { 1 } else { 0 });
        runs.push(f64s(&out[0]));
    }
    assert_eq!(runs[0], runs[1], "hoisting changes no bit");
    Ok(())
}

#[test]
fn a_read_in_a_body_sees_the_assignments_before_it() -> Result<()> {
    let g = Graph::new();
    let counter = Variable::in_graph(&g, "counter", &lit(0.0), false)?;
    let building = g.as_default();
    let (_, seen) = while_loop(
        |(i, _): &(Tensor, Tensor)| ops::less(i, &Tensor::scalar(4i32)),
        |(i, seen): &(Tensor, Tensor)| {
            let before = counter.read();
            counter.assign_add(&lit(1.0))?;
            let after = counter.read();
            // 10 * before + after: the read before sees k, the one after k + 1.
            let term = ops::add(&ops::mul(&before, &lit(10.0))?, &after)?;
            Ok((ops::add(i, &Tensor::scalar(1i32))?, ops::add(seen, &term)?))
        },
        (Tensor::scalar(0i32), lit(0.0)),
        &WhileOptions::default(),
    )?;
    let after_loop = counter.read();
    drop(building);
    for options in [rivulet::SessionOptions::default(), rivulet::SessionOptions::unoptimized()] {
        let s = Session::with_options(&g, options);
        s.run_targets(&[&g.global_variables_initializer()?])?;
        let out = s.run(&[&seen], &[])?;
        // sum over k = 0..3 of (10k + k + 1) = 60 + 10.
        assert_eq!(one(&out[0]), 70.0);
        assert_eq!(one(&s.variable_value(&counter)?), 4.0);
        assert_eq!(one(&s.run(&[&after_loop], &[])?[0]), 4.0);
    }
    Ok(())
}
