//! The solvers of `rivulet::sim`: conjugate gradients against direct solves
//! and an analytic Poisson solution, eagerly, in a graph and under a tape;
//! Euler and RK4 against exact solutions, with their orders of convergence
//! measured.

use crate::common::*;
use rivulet::ops::grid::laplacian;
use rivulet::ops::{self, Boundary};
use rivulet::sim::{conjugate_gradient, integrate, CgOptions, Method};
use rivulet::{DType, ErrorKind, GradientTape, Graph, Session, Tensor, WhileOptions};

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape.to_vec()).unwrap()
}

/// An SPD matrix `M Mᵀ / n + I` and a right-hand side.
fn system(n: usize) -> (Tensor, Tensor) {
    let mut rng = Rng(0xC6);
    let m = t64((0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect(), &[n, n]);
    let a = ops::add(
        &ops::div(&ops::matmul_t(&m, &m, false, true).unwrap(), n as f64).unwrap(),
        &ops::eye(rivulet::Ctx::Eager, n, n, DType::F64).unwrap(),
    )
    .unwrap();
    let b = t64((0..n).map(|_| rng.uniform(-1.0, 1.0)).collect(), &[n, 1]);
    (a, b)
}

#[test]
fn conjugate_gradient_matches_a_direct_solve() {
    let (a, b) = system(30);
    let opts = CgOptions { tol: 1e-12, ..CgOptions::default() };
    let sol = conjugate_gradient(|x| ops::matmul(&a, x), &b, None, &opts).unwrap();
    let want = values(&ops::solve(&a, &b).unwrap());
    for (g, w) in values(&sol.x).iter().zip(&want) {
        assert!((g - w).abs() < 1e-10, "{g} vs {w}");
    }
    let iters = ints(&sol.iterations)[0];
    assert!(iters > 0 && iters <= 30, "CG in exact arithmetic needs at most n iterations, ran {iters}");
    assert!(
        values(&sol.residual_norm)[0]
            <= 1e-12 * values(&ops::norm(&b, ops::NormOrd::Euclidean, ops::NormAxes::All, false).unwrap())[0]
    );
    // The iteration cap stops it early; a zero right-hand side needs no iteration.
    let capped =
        conjugate_gradient(|x| ops::matmul(&a, x), &b, None, &CgOptions { max_iterations: 3, ..opts.clone() }).unwrap();
    assert_eq!(ints(&capped.iterations), vec![3]);
    let zero = conjugate_gradient(|x| ops::matmul(&a, x), &ops::zeros_like(&b).unwrap(), None, &opts).unwrap();
    assert_eq!(ints(&zero.iterations), vec![0]);
    assert!(values(&zero.x).iter().all(|&v| v == 0.0));
}

#[test]
fn conjugate_gradient_solves_poisson_with_a_stencil_operator() {
    // -u'' = π² sin(πx) on (0, 1), u = 0 at both ends: u = sin(πx), to the
    // scheme's O(h²).
    let n = 63;
    let h = 1.0 / (n + 1) as f64;
    let pi = std::f64::consts::PI;
    let f = t64((1..=n).map(|i| pi * pi * (pi * i as f64 * h).sin()).collect(), &[n]);
    let minus_lap = |u: &Tensor| ops::neg(&laplacian(u, &[h], Boundary::Dirichlet(0.0))?);
    let sol = conjugate_gradient(minus_lap, &f, None, &CgOptions { tol: 1e-12, ..CgOptions::default() }).unwrap();
    let err =
        values(&sol.x).iter().enumerate().map(|(i, u)| (u - (pi * (i + 1) as f64 * h).sin()).abs()).fold(0.0, f64::max);
    assert!(err < 1e-3 && err > 1e-6, "error {err:e} is not the scheme's O(h²)");
    // The same solve built as a graph, with the right-hand side fed.
    let g = Graph::new();
    let pf = g.placeholder("f", DType::F64, [n]).unwrap();
    let gsol = conjugate_gradient(minus_lap, &pf, None, &CgOptions { tol: 1e-12, ..CgOptions::default() }).unwrap();
    let out = Session::new(&g).run(&[&gsol.x], &[(&pf, &f)]).unwrap();
    for (a, b) in values(&out[0]).iter().zip(values(&sol.x)) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn conjugate_gradient_differentiates_through_its_loop() {
    // x = A⁻¹ b, so d sum(x) / db = A⁻ᵀ 1 = A⁻¹ 1.
    let (a, b) = system(8);
    let tape = GradientTape::new();
    tape.watch(&b);
    let sol = conjugate_gradient(|x| ops::matmul(&a, x), &b, None, &CgOptions { tol: 1e-14, ..CgOptions::default() })
        .unwrap();
    let loss = ops::sum(&sol.x, rivulet::Axes::All, false).unwrap();
    let g = tape.gradient(&loss, &[&b]).unwrap()[0].clone().unwrap();
    let want = values(&ops::solve(&a, &ops::ones_like(&b).unwrap()).unwrap());
    for (x, w) in values(&g).iter().zip(&want) {
        assert!((x - w).abs() < 1e-6, "{x} vs {w}");
    }
}

#[test]
fn euler_and_rk4_converge_at_their_orders() {
    // dy/dt = -y + sin(t), y(0) = 1: y = 1.5 e^-t + (sin t - cos t) / 2.
    let exact = |t: f64| 1.5 * (-t).exp() + 0.5 * (t.sin() - t.cos());
    let f = |t: &Tensor, y: &Tensor| ops::add(&ops::neg(y)?, &ops::sin(t)?);
    let y0 = t64(vec![1.0], &[1]);
    // (RK4 reaches its asymptotic rate from about 80 steps here: 20 -> 40 gives 3.3.)
    for (method, order, n) in [(Method::Euler, 1.0, 40), (Method::Rk4, 4.0, 80)] {
        let err = |steps: u64| {
            let y = integrate(f, &y0, 0.0, 2.0 / steps as f64, steps, method, &WhileOptions::default()).unwrap();
            (values(&y)[0] - exact(2.0)).abs()
        };
        let (e1, e2) = (err(n), err(2 * n));
        let measured = (e1 / e2).log2();
        assert!((measured - order).abs() < 0.15, "{method:?}: order {measured} (errors {e1:e}, {e2:e})");
    }
    let f32_state =
        integrate(f, &ops::cast(&y0, DType::F32).unwrap(), 0.0, 0.1, 20, Method::Rk4, &WhileOptions::default())
            .unwrap();
    assert_eq!(f32_state.dtype(), DType::F32);
    assert!((values(&f32_state)[0] - exact(2.0)).abs() < 1e-5);
    assert_eq!(
        kind(integrate(f, &t64(vec![1.0], &[1]), 0.0, f64::NAN, 1, Method::Euler, &WhileOptions::default())),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn adaptive_dormand_prince_meets_its_tolerance() {
    use rivulet::sim::{integrate_adaptive, AdaptiveOptions};
    // A harmonic oscillator y'' = -y as a first-order system: y(t) = (cos t, -sin t).
    let f = |_: &Tensor, y: &Tensor| {
        let p = ops::strided_slice(y, &[ops::SliceItem::Index(1)])?;
        let q = ops::strided_slice(y, &[ops::SliceItem::Index(0)])?;
        ops::stack(&[&p, &ops::neg(&q)?], 0)
    };
    let y0 = t64(vec![1.0, 0.0], &[2]);
    let t1 = 10.0;
    let mut last = (f64::INFINITY, 0);
    for rtol in [1e-4, 1e-7, 1e-10] {
        let sol = integrate_adaptive(
            f,
            &y0,
            0.0,
            t1,
            &AdaptiveOptions { rtol, atol: rtol * 1e-3, ..AdaptiveOptions::default() },
        )
        .unwrap();
        assert!((values(&sol.t)[0] - t1).abs() < 1e-12, "stopped at {:?}", values(&sol.t));
        let y = values(&sol.y);
        let err = (y[0] - t1.cos()).abs().max((y[1] + t1.sin()).abs());
        let steps = ints(&sol.steps)[0];
        // The global error follows the tolerance (within a modest factor of it times the interval).
        assert!(err < 50.0 * rtol * t1, "rtol {rtol}: error {err:e}");
        assert!(
            err < last.0 && steps > last.1,
            "tighter tolerance: error {err:e} after {:e}, steps {steps} after {}",
            last.0,
            last.1
        );
        last = (err, steps);
    }
    assert!(last.1 < 2000, "{} steps for rtol 1e-10", last.1);
    // Graph mode gives the same numbers; max_steps stops it short of t1.
    let g = Graph::new();
    let py = g.placeholder("y0", DType::F64, [2]).unwrap();
    let sol = integrate_adaptive(f, &py, 0.0, t1, &AdaptiveOptions::default()).unwrap();
    let out = Session::new(&g).run(&[&sol.y], &[(&py, &y0)]).unwrap();
    assert_eq!(values(&out[0]), values(&integrate_adaptive(f, &y0, 0.0, t1, &AdaptiveOptions::default()).unwrap().y));
    let short =
        integrate_adaptive(f, &y0, 0.0, t1, &AdaptiveOptions { max_steps: 3, ..AdaptiveOptions::default() }).unwrap();
    assert_eq!(ints(&short.steps), vec![3]);
    assert!(values(&short.t)[0] < t1);
    assert_eq!(kind(integrate_adaptive(f, &y0, 1.0, 0.0, &AdaptiveOptions::default())), ErrorKind::InvalidArgument);
}

#[test]
fn poisson_dirichlet_converges_at_second_order() {
    use rivulet::sim::poisson_dirichlet;
    // -∇²u = 2π² sin(πx) sin(πy) + 0 on the unit square, u = 1 + sin(πx) sin(πy) with u = 1 on the boundary.
    let pi = std::f64::consts::PI;
    let err = |n: usize| -> f64 {
        let h = 1.0 / (n + 1) as f64;
        let exact = |i: usize, j: usize| ((i + 1) as f64 * h * pi).sin() * ((j + 1) as f64 * h * pi).sin();
        let f: Vec<f64> = (0..n * n).map(|p| 2.0 * pi * pi * exact(p / n, p % n)).collect();
        let sol = poisson_dirichlet(&t64(f, &[n, n]), &[h, h], 1.0, &CgOptions { tol: 1e-12, ..CgOptions::default() })
            .unwrap();
        values(&sol.x).iter().enumerate().map(|(p, u)| (u - 1.0 - exact(p / n, p % n)).abs()).fold(0.0, f64::max)
    };
    let (e1, e2) = (err(15), err(31));
    let order = (e1 / e2).log2();
    assert!((order - 2.0).abs() < 0.15 && e2 < 1e-3, "order {order}, errors {e1:e} {e2:e}");
}

#[test]
fn poisson_periodic_inverts_the_stencil_and_converges() {
    use rivulet::sim::poisson_periodic;
    let pi = std::f64::consts::PI;
    // u = sin(2πx) cos(4πy) on [0, 1)² with spacing (1/n, 2/n) over [0, 2) in y: -∇²u = (4π² + 4π²) u.
    let solve = |n: usize| -> (f64, f64) {
        let (hx, hy) = (1.0 / n as f64, 2.0 / n as f64);
        let u = |i: usize, j: usize| (2.0 * pi * i as f64 * hx).sin() * (pi * j as f64 * hy).cos();
        let f: Vec<f64> = (0..n * n).map(|p| (4.0 * pi * pi + pi * pi) * u(p / n, p % n) + 0.75).collect();
        let f = t64(f, &[n, n]);
        let sol = poisson_periodic(&f, &[hx, hy]).unwrap();
        // The exact inverse of the periodic stencil, up to the dropped mean.
        let back = values(&ops::neg(&laplacian(&sol, &[hx, hy], Boundary::Periodic).unwrap()).unwrap());
        let stencil = back.iter().zip(values(&f)).map(|(b, f)| (b - (f - 0.75)).abs()).fold(0.0, f64::max);
        let mean = values(&sol).iter().sum::<f64>() / (n * n) as f64;
        assert!(mean.abs() < 1e-12, "mean {mean}");
        let err = values(&sol).iter().enumerate().map(|(p, v)| (v - u(p / n, p % n)).abs()).fold(0.0, f64::max);
        (stencil, err)
    };
    let (s1, e1) = solve(16);
    let (s2, e2) = solve(32);
    assert!(s1 < 1e-10 && s2 < 1e-10, "stencil residuals {s1:e} {s2:e}");
    let order = (e1 / e2).log2();
    assert!((order - 2.0).abs() < 0.1 && e2 < 5e-3, "order {order}, errors {e1:e} {e2:e}");
    // Batched 1-D, f32, and 3-D; a gradient through the solve (linear: its own adjoint).
    let x: Vec<f32> = (0..2 * 8).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
    let x = Tensor::from_slice(&x, [2, 8]).unwrap();
    let u = poisson_periodic(&x, &[0.5]).unwrap();
    assert_eq!((u.dtype(), u.shape().to_vec()), (DType::F32, vec![2, 8]));
    let back = values(&ops::neg(&laplacian(&u, &[0.5], Boundary::Periodic).unwrap()).unwrap());
    let xs = values(&x);
    for r in 0..2 {
        let m = xs[r * 8..r * 8 + 8].iter().sum::<f64>() / 8.0;
        for k in 0..8 {
            assert!((back[r * 8 + k] - (xs[r * 8 + k] - m)).abs() < 1e-5, "row {r}[{k}]");
        }
    }
    let cube = t64((0..4 * 4 * 6).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect(), &[4, 4, 6]);
    let v = poisson_periodic(&cube, &[1.0, 1.0, 0.5]).unwrap();
    let back = values(&ops::neg(&laplacian(&v, &[1.0, 1.0, 0.5], Boundary::Periodic).unwrap()).unwrap());
    let cm = values(&cube).iter().sum::<f64>() / 96.0;
    assert!(back.iter().zip(values(&cube)).all(|(b, c)| (b - (c - cm)).abs() < 1e-12));
    let tape = GradientTape::new();
    tape.watch(&cube);
    let w = t64((0..96).map(|i| (i % 5) as f64).collect(), &[4, 4, 6]);
    let l = ops::sum(
        &ops::mul(&poisson_periodic(&cube, &[1.0, 1.0, 0.5]).unwrap(), &w).unwrap(),
        rivulet::Axes::All,
        false,
    )
    .unwrap();
    let g = values(&tape.gradient(&l, &[&cube]).unwrap()[0].clone().unwrap());
    let want = values(&poisson_periodic(&w, &[1.0, 1.0, 0.5]).unwrap());
    assert!(g.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "the solve is self-adjoint");
    // Errors.
    let e = poisson_periodic(&x, &[0.5, 0.5, 0.5]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
    let e = poisson_periodic(&x, &[0.0]).unwrap_err();
    assert!(e.to_string().contains("spacing"), "{e}");
    let e = poisson_periodic(&ops::cast(&x, DType::I32).unwrap(), &[1.0]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DType, "{e}");
}

#[test]
fn poisson_dirichlet_sine_is_the_stencils_exact_inverse() {
    use rivulet::sim::{poisson_dirichlet, poisson_dirichlet_sine};
    // The same problem as the CG test: u = 1 + sin(πx) sin(πy), u = 1 on the boundary.
    let pi = std::f64::consts::PI;
    let n = 15;
    let h = 1.0 / (n + 1) as f64;
    let exact = |i: usize, j: usize| ((i + 1) as f64 * h * pi).sin() * ((j + 1) as f64 * h * pi).sin();
    let f = t64((0..n * n).map(|p| 2.0 * pi * pi * exact(p / n, p % n)).collect(), &[n, n]);
    let direct = values(&poisson_dirichlet_sine(&f, &[h, h], 1.0).unwrap());
    let cg = poisson_dirichlet(&f, &[h, h], 1.0, &CgOptions { tol: 1e-14, ..CgOptions::default() }).unwrap();
    let gap = direct.iter().zip(values(&cg.x)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(gap < 1e-11, "the sine solve and CG differ by {gap:e}");
    // The stencil applied to the solution gives f back, to rounding (uneven spacings, batched, 1-D and 3-D).
    let check = |dims: &[usize], spacing: &[f64], boundary: f64| {
        let count: usize = dims.iter().product();
        let f = t64((0..count).map(|i| ((i * 7 % 13) as f64 - 6.0) / 3.0).collect(), dims);
        let u = poisson_dirichlet_sine(&f, spacing, boundary).unwrap();
        assert_eq!(u.shape().to_vec(), dims.to_vec());
        let back = values(&ops::neg(&laplacian(&u, spacing, Boundary::Dirichlet(boundary)).unwrap()).unwrap());
        let worst = back.iter().zip(values(&f)).map(|(b, f)| (b - f).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-9, "{dims:?}: residual {worst:e}");
    };
    check(&[9], &[0.1], 0.0);
    check(&[3, 7], &[0.25], -2.0);
    check(&[6, 5], &[0.2, 0.1], 0.5);
    check(&[4, 3, 5], &[1.0, 0.5, 0.25], 0.0);
    // f32 keeps its dtype; the solve is linear and symmetric, so its gradient is itself.
    let f32s = ops::cast(&f, DType::F32).unwrap();
    assert_eq!(poisson_dirichlet_sine(&f32s, &[h, h], 0.0).unwrap().dtype(), DType::F32);
    let tape = GradientTape::new();
    tape.watch(&f);
    let w = t64((0..n * n).map(|i| (i % 4) as f64).collect(), &[n, n]);
    let l =
        ops::sum(&ops::mul(&poisson_dirichlet_sine(&f, &[h, h], 0.0).unwrap(), &w).unwrap(), rivulet::Axes::All, false)
            .unwrap();
    let g = values(&tape.gradient(&l, &[&f]).unwrap()[0].clone().unwrap());
    let want = values(&poisson_dirichlet_sine(&w, &[h, h], 0.0).unwrap());
    assert!(g.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-10), "the solve is self-adjoint");
    let e = poisson_dirichlet_sine(&f, &[h, h], f64::NAN).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = poisson_dirichlet_sine(&f, &[h, h, h], 0.0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape, "{e}");
}
