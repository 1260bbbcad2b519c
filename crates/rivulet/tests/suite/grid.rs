//! Grid operations: `roll` against TensorFlow's semantics, and the finite
//! differences against hand-worked values and the exact discrete
//! eigenvalues of Fourier modes, on each boundary.

use crate::common::*;
use rivulet::ops::grid::{divergence, gradient, laplacian};
use rivulet::ops::{self, Boundary};
use rivulet::{ErrorKind, Tensor};

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape.to_vec()).unwrap()
}

#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn roll_moves_elements_forward_cyclically() {
    let x = t64((0..12).map(f64::from).collect(), &[3, 4]);
    assert_eq!(values(&ops::roll(&x, &[1], &[1]).unwrap()), vec![3., 0., 1., 2., 7., 4., 5., 6., 11., 8., 9., 10.]);
    assert_eq!(values(&ops::roll(&x, &[-1], &[0]).unwrap()), vec![4., 5., 6., 7., 8., 9., 10., 11., 0., 1., 2., 3.]);
    // Shifts along a repeated axis add up; whole turns are identities.
    assert_eq!(values(&ops::roll(&x, &[1, 1], &[-1, -1]).unwrap()), values(&ops::roll(&x, &[2], &[1]).unwrap()));
    assert_eq!(values(&ops::roll(&x, &[8], &[1]).unwrap()), values(&x));
    assert_eq!(kind(ops::roll(&x, &[1], &[])), ErrorKind::InvalidArgument);
    let e = ops::roll(&x, &[1], &[2]).unwrap_err();
    assert!(e.to_string().contains("Roll") && e.to_string().contains("grid.rs"), "{e}");
}

#[test]
fn finite_differences_by_hand_on_each_boundary() {
    let u = t64(vec![1.0, 2.0, 4.0], &[3]);
    // u'' with h = 1: ghost values 0 (Dirichlet 0), mirrored (Neumann), wrapped (periodic).
    close("dirichlet", &values(&laplacian(&u, &[1.0], Boundary::Dirichlet(0.0)).unwrap()), &[-0.0, 1.0, -6.0], 0.0);
    close("dirichlet 5", &values(&laplacian(&u, &[1.0], Boundary::Dirichlet(5.0)).unwrap()), &[5.0, 1.0, -1.0], 0.0);
    close("neumann", &values(&laplacian(&u, &[1.0], Boundary::Neumann).unwrap()), &[2.0, 1.0, -4.0], 0.0);
    close("periodic", &values(&laplacian(&u, &[1.0], Boundary::Periodic).unwrap()), &[4.0, 1.0, -5.0], 0.0);
    close("gradient", &values(&gradient(&u, &[0.5], Boundary::Neumann).unwrap()), &[0.0, 3.0, 0.0], 0.0);
    assert_eq!(dims(&gradient(&u, &[0.5], Boundary::Neumann).unwrap()), vec![3, 1]);
}

#[test]
fn fourier_modes_are_eigenfunctions_of_the_periodic_stencils() {
    // u = sin(kx) sin(ly) on a periodic [0, 2π)² grid: the discrete laplacian
    // multiplies it by (2cos(kh)-2)/h² + (2cos(lg)-2)/g², exactly.
    let (nx, ny) = (16, 12);
    let (h, g) = (2.0 * std::f64::consts::PI / nx as f64, 2.0 * std::f64::consts::PI / ny as f64);
    let (k, l) = (3.0, 2.0);
    let u: Vec<f64> = (0..nx * ny).map(|p| ((p / ny) as f64 * h * k).sin() * ((p % ny) as f64 * g * l).sin()).collect();
    let once = t64(u.clone(), &[1, nx, ny]);
    let field = ops::concat(&[&once, &ops::mul(&once, 2.0).unwrap()], 0).unwrap();
    let lambda = (2.0 * (k * h).cos() - 2.0) / (h * h) + (2.0 * (l * g).cos() - 2.0) / (g * g);
    let lap = values(&laplacian(&field, &[h, g], Boundary::Periodic).unwrap());
    let want: Vec<f64> = u.iter().map(|v| v * lambda).chain(u.iter().map(|v| 2.0 * v * lambda)).collect();
    close("periodic laplacian of a mode (batched)", &lap, &want, 1e-12);
    // The gradient of the mode, and the divergence of that gradient (a wider laplacian).
    let one = t64(u.clone(), &[nx, ny]);
    let grad = gradient(&one, &[h, g], Boundary::Periodic).unwrap();
    assert_eq!(dims(&grad), vec![nx, ny, 2]);
    let gv = values(&grad);
    for p in 0..nx * ny {
        let (x, y) = ((p / ny) as f64 * h, (p % ny) as f64 * g);
        let dx = (k * x).cos() * (l * y).sin() * (k * h).sin() / h;
        let dy = (k * x).sin() * (l * y).cos() * (l * g).sin() / g;
        close("gradient", &gv[2 * p..2 * p + 2], &[dx, dy], 1e-12);
    }
    let wide = (k * h).sin().powi(2) / (h * h) + (l * g).sin().powi(2) / (g * g);
    let div = values(&divergence(&grad, &[h, g], Boundary::Periodic).unwrap());
    close("div grad", &div, &u.iter().map(|v| -v * wide).collect::<Vec<_>>(), 1e-12);
}

#[test]
fn second_order_convergence_on_a_dirichlet_problem() {
    // u = sin(πx) on (0, 1), zero at x = 0 and 1 (one spacing outside the
    // grid): the laplacian's error against -π² u falls 4x per halving of h.
    let err = |n: usize| -> f64 {
        let h = 1.0 / (n + 1) as f64;
        let u: Vec<f64> = (1..=n).map(|i| (std::f64::consts::PI * i as f64 * h).sin()).collect();
        let lap = values(&laplacian(&t64(u.clone(), &[n]), &[h], Boundary::Dirichlet(0.0)).unwrap());
        lap.iter().zip(&u).map(|(l, v)| (l + std::f64::consts::PI.powi(2) * v).abs()).fold(0.0, f64::max)
    };
    let (e1, e2, e3) = (err(15), err(31), err(63));
    for (a, b) in [(e1, e2), (e2, e3)] {
        let order = (a / b).log2();
        assert!((order - 2.0).abs() < 0.1, "order {order} (errors {e1:e} {e2:e} {e3:e})");
    }
}

#[test]
fn grid_errors_name_the_problem() {
    let u = t64(vec![1.0, 2.0], &[2]);
    assert_eq!(kind(laplacian(&u, &[], Boundary::Periodic)), ErrorKind::InvalidArgument);
    assert_eq!(kind(laplacian(&u, &[1.0, 1.0], Boundary::Periodic)), ErrorKind::InvalidArgument);
    assert_eq!(kind(laplacian(&u, &[0.0], Boundary::Periodic)), ErrorKind::InvalidArgument);
    assert_eq!(kind(laplacian(&t64(vec![1.0], &[1]), &[1.0], Boundary::Neumann)), ErrorKind::Shape);
    assert_eq!(kind(divergence(&t64(vec![1.0; 6], &[3, 2]), &[1.0], Boundary::Periodic)), ErrorKind::Shape);
}

#[test]
fn interpolation_by_hand_and_on_affine_fields() {
    use rivulet::ops::grid::interpolate;
    let f = t64(vec![0.0, 10.0, 20.0, 30.0], &[4]);
    let at = |c: Vec<f64>, b| values(&interpolate(&f, &t64(c.clone(), &[c.len(), 1]), b).unwrap());
    close("neumann", &at(vec![0.5, 2.25, 3.0, 3.5, -1.0], Boundary::Neumann), &[5.0, 22.5, 30.0, 30.0, 0.0], 1e-15);
    close("periodic", &at(vec![3.5, -0.5, 4.0], Boundary::Periodic), &[15.0, 15.0, 0.0], 1e-15);
    close("dirichlet", &at(vec![3.5, -0.5, 1.5], Boundary::Dirichlet(100.0)), &[65.0, 50.0, 15.0], 1e-15);
    // d-linear interpolation reproduces affine fields exactly, in 2-D with two channels and in 3-D.
    let mut rng = Rng(0x1E);
    let (h, w) = (5, 7);
    let field: Vec<f64> = (0..h * w)
        .flat_map(|p| {
            let (y, x) = ((p / w) as f64, (p % w) as f64);
            [2.0 * y + 3.0 * x + 1.0, -y + 0.5 * x]
        })
        .collect();
    let pts: Vec<f64> =
        (0..20).flat_map(|_| [rng.uniform(0.0, (h - 1) as f64), rng.uniform(0.0, (w - 1) as f64)]).collect();
    let got = values(&interpolate(&t64(field, &[h, w, 2]), &t64(pts.clone(), &[4, 5, 2]), Boundary::Neumann).unwrap());
    let want: Vec<f64> = pts.chunks(2).flat_map(|p| [2.0 * p[0] + 3.0 * p[1] + 1.0, -p[0] + 0.5 * p[1]]).collect();
    close("bilinear on an affine field", &got, &want, 1e-13);
    let n = 4;
    let cube: Vec<f64> =
        (0..n * n * n).map(|p| (p / 16) as f64 - 2.0 * ((p / 4) % 4) as f64 + 0.5 * (p % 4) as f64).collect();
    let pts: Vec<f64> = (0..30).map(|_| rng.uniform(0.0, 3.0)).collect();
    let got = values(&interpolate(&t64(cube, &[n, n, n]), &t64(pts.clone(), &[10, 3]), Boundary::Periodic).unwrap());
    let want: Vec<f64> = pts.chunks(3).map(|p| p[0] - 2.0 * p[1] + 0.5 * p[2]).collect();
    close("trilinear on an affine field", &got, &want, 1e-13);
    assert_eq!(kind(interpolate(&f, &t64(vec![0.5; 4], &[1, 4]), Boundary::Neumann)), ErrorKind::Shape);
    assert_eq!(
        kind(interpolate(&f, &ops::cast(&t64(vec![0.5], &[1, 1]), rivulet::DType::F32).unwrap(), Boundary::Neumann)),
        ErrorKind::DType
    );
}
