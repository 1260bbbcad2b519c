//! Matrix factorizations and solves (`tf.linalg`): hand-worked values, the
//! defining identities of each factorization checked in float64 on random,
//! batched and ill-conditioned matrices, float32 against float64, graph mode,
//! the composed functions (lstsq, pinv, lu_solve, norms, diagonals), and the
//! errors and NaNs that singular or indefinite inputs give. Gradients are
//! checked against finite differences in `gradients.rs` and on every backend
//! in `devices.rs`.

use crate::common::*;
use rivulet::ops::{self, NormAxes, NormOrd};
use rivulet::{DType, ErrorKind, Graph, Session, Tensor};

/// A row-major matrix product of `a` (`m×k`) and `b` (`k×n`).
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

fn tr(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

fn eye(n: usize) -> Vec<f64> {
    (0..n * n).map(|p| if p / n == p % n { 1.0 } else { 0.0 }).collect()
}

/// Largest difference, relative to the largest magnitude of `want` (at least 1).
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max) / scale
}

#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}\n got {got:?}\nwant {want:?}");
}

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape.to_vec()).unwrap()
}

fn random(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// A well-conditioned `n×n` matrix: random plus `n/2` on the diagonal.
fn general(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut a = random(rng, n * n);
    for i in 0..n {
        a[i * n + i] += n as f64 / 2.0;
    }
    a
}

/// A symmetric positive definite `n×n` matrix `M Mᵀ / n + I`.
fn spd(rng: &mut Rng, n: usize) -> Vec<f64> {
    let m = random(rng, n * n);
    let mut a = mm(&m, &tr(&m, n, n), n, n, n);
    for (p, v) in a.iter_mut().enumerate() {
        *v /= n as f64;
        if p / n == p % n {
            *v += 1.0;
        }
    }
    a
}

fn symmetric(rng: &mut Rng, n: usize) -> Vec<f64> {
    let m = random(rng, n * n);
    let t = tr(&m, n, n);
    m.iter().zip(&t).map(|(a, b)| (a + b) / 2.0).collect()
}

#[test]
fn hand_worked_values() {
    let a = t64(vec![4.0, 2.0, 2.0, 3.0], &[2, 2]);
    let l = ops::cholesky(&a).unwrap();
    close("cholesky", &values(&l), &[2.0, 0.0, 1.0, 2f64.sqrt()], 1e-15);
    let b = t64(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    close("det", &values(&ops::det(&b).unwrap()), &[-2.0], 1e-15);
    close("inv", &values(&ops::inv(&b).unwrap()), &[-2.0, 1.0, 1.5, -0.5], 1e-15);
    let (sign, logabs) = ops::slogdet(&b).unwrap();
    close("slogdet", &[values(&sign)[0], values(&logabs)[0]], &[-1.0, 2f64.ln()], 1e-15);
    let rhs = t64(vec![5.0, 6.0], &[2, 1]);
    close("solve", &values(&ops::solve(&b, &rhs).unwrap()), &[-4.0, 4.5], 1e-15);
    // Aᵀ x = rhs: [[1, 3], [2, 4]] x = [5, 6].
    close("solve adjoint", &values(&ops::solve_t(&b, &rhs, true).unwrap()), &[-1.0, 2.0], 1e-15);
    // Partial pivoting swaps the rows: P A = [[3, 4], [1, 2]] = [[1, 0], [1/3, 1]] [[3, 4], [0, 2/3]].
    let (lu, p) = ops::lu(&b).unwrap();
    close("lu", &values(&lu), &[3.0, 4.0, 1.0 / 3.0, 2.0 / 3.0], 1e-15);
    assert_eq!(p.dtype(), DType::I32);
    assert_eq!(ints(&p), vec![1, 0]);
    // Triangular solves read only their triangle.
    let t = t64(vec![2.0, 99.0, 1.0, 4.0], &[2, 2]);
    close("lower solve", &values(&ops::triangular_solve(&t, &rhs, true, false).unwrap()), &[2.5, 0.875], 1e-15);
    let up = t64(vec![2.0, 1.0, 99.0, 4.0], &[2, 2]);
    close("upper solve", &values(&ops::triangular_solve(&up, &rhs, false, false).unwrap()), &[1.75, 1.5], 1e-15);
    // expm of a nilpotent matrix and of a rotation generator.
    let nil = t64(vec![0.0, 1.0, 0.0, 0.0], &[2, 2]);
    close("expm nilpotent", &values(&ops::expm(&nil).unwrap()), &[1.0, 1.0, 0.0, 1.0], 1e-15);
    for theta in [0.1, 1.0, 3.0, 20.0] {
        let g = t64(vec![0.0, -theta, theta, 0.0], &[2, 2]);
        let (c, s) = (f64::cos(theta), f64::sin(theta));
        close(&format!("expm rotation {theta}"), &values(&ops::expm(&g).unwrap()), &[c, -s, s, c], 1e-13);
    }
    // Eigenvalues of [[2, 1], [1, 2]] are 1 and 3; singular values of diag(3, -4) are 4 and 3.
    let s = t64(vec![2.0, 1.0, 1.0, 2.0], &[2, 2]);
    close("eigvalsh", &values(&ops::eigvalsh(&s).unwrap()), &[1.0, 3.0], 1e-15);
    let d = t64(vec![3.0, 0.0, 0.0, -4.0], &[2, 2]);
    close("singular values", &values(&ops::singular_values(&d).unwrap()), &[4.0, 3.0], 1e-15);
    close("trace", &values(&ops::trace(&b).unwrap()), &[5.0], 0.0);
    close("band_part", &values(&ops::band_part(&b, 0, -1).unwrap()), &[1.0, 2.0, 0.0, 4.0], 0.0);
    // [[1, 2], [2, 4]] has singular values 5 and 0; [[1, 2], [2, 4.001]] has one below 1e-3.
    assert_eq!(ints(&ops::matrix_rank(&t64(vec![1.0, 2.0, 2.0, 4.0], &[2, 2]), None).unwrap()), vec![1]);
    let near = t64(vec![1.0, 2.0, 2.0, 4.001], &[2, 2]);
    assert_eq!(ints(&ops::matrix_rank(&near, None).unwrap()), vec![2]);
    assert_eq!(ints(&ops::matrix_rank(&near, Some(1e-3)).unwrap()), vec![1]);
}

#[test]
fn factorizations_satisfy_their_identities() {
    let mut rng = Rng(0x11A1);
    for n in [1, 3, 8, 33, 70] {
        let a = general(&mut rng, n);
        let ta = t64(a.clone(), &[n, n]);
        // LU: Pᵀ L U = A.
        let (lu, p) = ops::lu(&ta).unwrap();
        close(&format!("lu_reconstruct {n}"), &values(&ops::lu_reconstruct(&lu, &p).unwrap()), &a, 1e-13);
        // Inverse and solve.
        let inv = values(&ops::inv(&ta).unwrap());
        close(&format!("A inv(A) {n}"), &mm(&a, &inv, n, n, n), &eye(n), 1e-12);
        let b = random(&mut rng, n * 4);
        let x = values(&ops::solve(&ta, &t64(b.clone(), &[n, 4])).unwrap());
        close(&format!("A x = b {n}"), &mm(&a, &x, n, n, 4), &b, 1e-12);
        let xt = values(&ops::solve_t(&ta, &t64(b.clone(), &[n, 4]), true).unwrap());
        close(&format!("Aᵀ x = b {n}"), &mm(&tr(&a, n, n), &xt, n, n, 4), &b, 1e-12);
        let xl = values(&ops::lu_solve(&lu, &p, &t64(b.clone(), &[n, 4])).unwrap());
        close(&format!("lu_solve {n}"), &xl, &x, 1e-12);
        // det(A) from slogdet agrees with det.
        let det = values(&ops::det(&ta).unwrap())[0];
        let (sign, logabs) = ops::slogdet(&ta).unwrap();
        let from_log = values(&sign)[0] * values(&logabs)[0].exp();
        assert!((det - from_log).abs() <= 1e-10 * det.abs(), "det {det} vs slogdet {from_log}");
        // Cholesky: L Lᵀ = S, L lower.
        let s = spd(&mut rng, n);
        let ts = t64(s.clone(), &[n, n]);
        let l = values(&ops::cholesky(&ts).unwrap());
        assert!((0..n).all(|i| (i + 1..n).all(|j| l[i * n + j] == 0.0)), "cholesky is not lower");
        close(&format!("L Lᵀ {n}"), &mm(&l, &tr(&l, n, n), n, n, n), &s, 1e-13);
        let xc = values(&ops::cholesky_solve(&ops::cholesky(&ts).unwrap(), &t64(b.clone(), &[n, 4])).unwrap());
        close(&format!("cholesky_solve {n}"), &mm(&s, &xc, n, n, 4), &b, 1e-12);
        let logdet = values(&ops::logdet(&ts).unwrap())[0];
        let (_, la) = ops::slogdet(&ts).unwrap();
        assert!((logdet - values(&la)[0]).abs() <= 1e-11 * (1.0 + logdet.abs()), "logdet");
        // eigh: S V = V diag(e), Vᵀ V = I, e ascending; and expm(S) = V exp(e) Vᵀ.
        let sym = symmetric(&mut rng, n);
        let (e, v) = ops::eigh(&t64(sym.clone(), &[n, n])).unwrap();
        let (e, v) = (values(&e), values(&v));
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "eigenvalues not ascending: {e:?}");
        let ve: Vec<f64> = (0..n * n).map(|p| v[p] * e[p % n]).collect();
        close(&format!("S V = V diag(e) {n}"), &mm(&sym, &v, n, n, n), &ve, 1e-12);
        close(&format!("Vᵀ V {n}"), &mm(&tr(&v, n, n), &v, n, n, n), &eye(n), 1e-12);
        let vexp: Vec<f64> = (0..n * n).map(|p| v[p] * e[p % n].exp()).collect();
        let want = mm(&vexp, &tr(&v, n, n), n, n, n);
        close(&format!("expm(S) {n}"), &values(&ops::expm(&t64(sym.clone(), &[n, n])).unwrap()), &want, 1e-12);
        // expm(A) expm(-A) = I for a general A.
        let neg: Vec<f64> = a.iter().map(|x| -x / n as f64).collect();
        let pos: Vec<f64> = a.iter().map(|x| x / n as f64).collect();
        let ep = values(&ops::expm(&t64(pos, &[n, n])).unwrap());
        let en = values(&ops::expm(&t64(neg, &[n, n])).unwrap());
        close(&format!("expm(A) expm(-A) {n}"), &mm(&ep, &en, n, n, n), &eye(n), 1e-12);
    }
    // QR and SVD of tall, wide and square matrices, thin and full.
    for (m, n) in [(5, 3), (3, 5), (4, 4), (40, 17), (1, 6)] {
        let a = random(&mut rng, m * n);
        let ta = t64(a.clone(), &[m, n]);
        let k = m.min(n);
        for full in [false, true] {
            let (q, r) = ops::qr(&ta, full).unwrap();
            let (qc, rr) = if full { (m, m) } else { (k, k) };
            assert_eq!((dims(&q), dims(&r)), (vec![m, qc], vec![rr, n]), "qr shapes");
            let (q, r) = (values(&q), values(&r));
            close(&format!("Q R {m}x{n} full={full}"), &mm(&q, &r, m, qc, n), &a, 1e-13);
            close(&format!("Qᵀ Q {m}x{n}"), &mm(&tr(&q, m, qc), &q, qc, m, qc), &eye(qc), 1e-13);
            assert!((0..rr).all(|i| (0..i.min(n)).all(|j| r[i * n + j] == 0.0)), "R is not upper");
            let (s, u, v) = ops::svd(&ta, full).unwrap();
            let (uc, vc) = if full { (m, n) } else { (k, k) };
            assert_eq!((dims(&s), dims(&u), dims(&v)), (vec![k], vec![m, uc], vec![n, vc]), "svd shapes");
            let (s, u, v) = (values(&s), values(&u), values(&v));
            assert!(s.windows(2).all(|w| w[0] >= w[1]) && s.iter().all(|&x| x >= 0.0), "singular values {s:?}");
            let us: Vec<f64> = (0..m * k).map(|p| u[(p / k) * uc + p % k] * s[p % k]).collect();
            let v1: Vec<f64> = (0..n * k).map(|p| v[(p / k) * vc + p % k]).collect();
            close(&format!("U S Vᵀ {m}x{n} full={full}"), &mm(&us, &tr(&v1, n, k), m, k, n), &a, 1e-13);
            close(&format!("Uᵀ U {m}x{n}"), &mm(&tr(&u, m, uc), &u, uc, m, uc), &eye(uc), 1e-13);
            close(&format!("Vᵀ V {m}x{n}"), &mm(&tr(&v, n, vc), &v, vc, n, vc), &eye(vc), 1e-13);
        }
        // pinv: A A⁺ A = A; lstsq (both paths) agrees with the pseudo-inverse's solution.
        let p = values(&ops::pinv(&ta, None).unwrap());
        close(&format!("A A⁺ A {m}x{n}"), &mm(&mm(&a, &p, m, n, m), &a, m, m, n), &a, 1e-12);
        let b = random(&mut rng, m * 2);
        let want = mm(&p, &b, n, m, 2);
        for fast in [true, false] {
            let x = values(&ops::lstsq(&ta, &t64(b.clone(), &[m, 2]), 0.0, fast).unwrap());
            close(&format!("lstsq {m}x{n} fast={fast}"), &x, &want, 1e-9);
        }
        let rank = ops::matrix_rank(&ta, None).unwrap();
        assert_eq!(ints(&rank), vec![k as i128], "matrix_rank of a random {m}x{n}");
    }
}

/// From 512² elements one matrix is factored on all threads, and every
/// temporary and result comes from the CPU buffer cache, which hands a
/// later call the previous call's memory: the identities hold at that
/// size, and results are the same bits when the same call runs again after
/// calls on other inputs have left their values in the reused buffers.
#[test]
fn large_matrices_factor_on_all_threads_and_reused_buffers_leave_no_trace() {
    let mut rng = Rng(0x5120);
    let n = 520;
    let (s1, s2) = (spd(&mut rng, n), spd(&mut rng, n));
    let a = general(&mut rng, n);
    let b = random(&mut rng, n * 16);
    let sym = symmetric(&mut rng, n);
    let chol = |s: &[f64]| values(&ops::cholesky(&t64(s.to_vec(), &[n, n])).unwrap());
    let l1 = chol(&s1);
    assert!((0..n).all(|i| (i + 1..n).all(|j| l1[i * n + j] == 0.0)), "cholesky is not lower");
    close("L Lᵀ 520", &mm(&l1, &tr(&l1, n, n), n, n, n), &s1, 1e-13);
    let l2 = chol(&s2);
    close("L Lᵀ 520, second input", &mm(&l2, &tr(&l2, n, n), n, n, n), &s2, 1e-13);
    let x = values(&ops::solve(&t64(a.clone(), &[n, n]), &t64(b.clone(), &[n, 16])).unwrap());
    close("A x = b 520", &mm(&a, &x, n, n, 16), &b, 1e-12);
    let (e, v) = ops::eigh(&t64(sym.clone(), &[n, n])).unwrap();
    let (e, v) = (values(&e), values(&v));
    let ve: Vec<f64> = (0..n * n).map(|p| v[p] * e[p % n]).collect();
    close("S V = V diag(e) 520", &mm(&sym, &v, n, n, n), &ve, 1e-12);
    close("Vᵀ V 520", &mm(&tr(&v, n, n), &v, n, n, n), &eye(n), 1e-12);
    // The same calls again, now on buffers the calls above filled.
    assert!(chol(&s1) == l1, "cholesky changed on a second call");
    let again = values(&ops::solve(&t64(a.clone(), &[n, n]), &t64(b.clone(), &[n, 16])).unwrap());
    assert!(again == x, "solve changed on a second call");
    let (e2, v2) = ops::eigh(&t64(sym.clone(), &[n, n])).unwrap();
    assert!(values(&e2) == e && values(&v2) == v, "eigh changed on a second call");
}

#[test]
fn batches_and_broadcasting_match_one_matrix_at_a_time() {
    let mut rng = Rng(0xBA7C);
    let n = 4;
    let mats: Vec<Vec<f64>> = (0..6).map(|_| general(&mut rng, n)).collect();
    let batch = t64(mats.concat(), &[2, 3, n, n]);
    let rhs = random(&mut rng, n * 2);
    // One right-hand side broadcast against the batch, and a batch of them against one matrix.
    let x = values(&ops::solve(&batch, &t64(rhs.clone(), &[n, 2])).unwrap());
    let inv = values(&ops::inv(&batch).unwrap());
    let det = values(&ops::det(&batch).unwrap());
    let (s, _, _) = ops::svd(&batch, false).unwrap();
    assert_eq!(dims(&s), vec![2, 3, n]);
    let s = values(&s);
    for (i, a) in mats.iter().enumerate() {
        let ta = t64(a.clone(), &[n, n]);
        close(
            "batched solve",
            &x[i * n * 2..(i + 1) * n * 2],
            &values(&ops::solve(&ta, &t64(rhs.clone(), &[n, 2])).unwrap()),
            0.0,
        );
        close("batched inv", &inv[i * n * n..(i + 1) * n * n], &values(&ops::inv(&ta).unwrap()), 0.0);
        close("batched det", &det[i..i + 1], &values(&ops::det(&ta).unwrap()), 0.0);
        close("batched svd", &s[i * n..(i + 1) * n], &values(&ops::singular_values(&ta).unwrap()), 0.0);
    }
    let rhs_batch = random(&mut rng, 3 * n * 2);
    let a0 = t64(mats[0].clone(), &[n, n]);
    let xb = values(&ops::triangular_solve(&a0, &t64(rhs_batch.clone(), &[3, n, 2]), true, false).unwrap());
    for i in 0..3 {
        let one = t64(rhs_batch[i * n * 2..(i + 1) * n * 2].to_vec(), &[n, 2]);
        close(
            "broadcast triangular_solve",
            &xb[i * n * 2..(i + 1) * n * 2],
            &values(&ops::triangular_solve(&a0, &one, true, false).unwrap()),
            0.0,
        );
    }
    // Empty batches and 0x0 matrices.
    let empty = t64(vec![], &[0, 3, 3]);
    assert_eq!(dims(&ops::inv(&empty).unwrap()), vec![0, 3, 3]);
    let zero = t64(vec![], &[0, 0]);
    assert_eq!(values(&ops::det(&zero).unwrap()), vec![1.0], "the determinant of a 0x0 matrix is 1");
    assert_eq!(dims(&ops::cholesky(&zero).unwrap()), vec![0, 0]);
}

/// The Hilbert matrix (condition number ~1.5e7 at n = 6) and its exact
/// integer inverse.
#[test]
fn ill_conditioned_matrices_keep_their_accuracy() {
    let n = 6;
    let h: Vec<f64> = (0..n * n).map(|p| 1.0 / ((p / n + p % n + 1) as f64)).collect();
    let binom = |a: i64, b: i64| -> f64 { (0..b).fold(1.0, |acc, i| acc * (a - i) as f64 / (i + 1) as f64) };
    let exact: Vec<f64> = (0..n * n)
        .map(|p| {
            let (i, j) = ((p / n) as i64 + 1, (p % n) as i64 + 1);
            let nn = n as i64;
            let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            sign * (i + j - 1) as f64
                * binom(nn + i - 1, nn - j)
                * binom(nn + j - 1, nn - i)
                * binom(i + j - 2, i - 1).powi(2)
        })
        .collect();
    let th = t64(h.clone(), &[n, n]);
    close("inv(hilbert 6)", &values(&ops::inv(&th).unwrap()), &exact, 1e-7);
    // Cholesky of the (positive definite) Hilbert matrix reconstructs it.
    let l = values(&ops::cholesky(&th).unwrap());
    close("L Lᵀ hilbert", &mm(&l, &tr(&l, n, n), n, n, n), &h, 1e-15);
    // Its determinant is 1 / (product of the inverse's ...): compare with slogdet of the exact inverse.
    let (_, la) = ops::slogdet(&th).unwrap();
    let (_, lb) = ops::slogdet(&t64(exact, &[n, n])).unwrap();
    assert!((values(&la)[0] + values(&lb)[0]).abs() < 1e-6, "log det H = -log det H⁻¹");
}

#[test]
fn float32_agrees_with_float64() {
    let mut rng = Rng(0xF32);
    let n = 12;
    let a = general(&mut rng, n);
    let s = spd(&mut rng, n);
    let sym = symmetric(&mut rng, n);
    let f32t = |v: &[f64]| ops::cast(&t64(v.to_vec(), &[n, n]), DType::F32).unwrap();
    let pairs: Vec<(&str, Tensor, Tensor)> = vec![
        ("inv", ops::inv(&f32t(&a)).unwrap(), ops::inv(&t64(a.clone(), &[n, n])).unwrap()),
        ("cholesky", ops::cholesky(&f32t(&s)).unwrap(), ops::cholesky(&t64(s.clone(), &[n, n])).unwrap()),
        ("eigvalsh", ops::eigvalsh(&f32t(&sym)).unwrap(), ops::eigvalsh(&t64(sym.clone(), &[n, n])).unwrap()),
        (
            "singular values",
            ops::singular_values(&f32t(&a)).unwrap(),
            ops::singular_values(&t64(a.clone(), &[n, n])).unwrap(),
        ),
        ("det", ops::det(&f32t(&a)).unwrap(), ops::det(&t64(a.clone(), &[n, n])).unwrap()),
        ("expm", ops::expm(&f32t(&sym)).unwrap(), ops::expm(&t64(sym.clone(), &[n, n])).unwrap()),
    ];
    for (what, got, want) in pairs {
        assert_eq!(got.dtype(), DType::F32, "{what}");
        close(what, &values(&got), &values(&want), 2e-5);
    }
}

#[test]
fn factorizations_run_in_graphs_with_an_unknown_batch() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [None, Some(3), Some(3)]).unwrap();
    let (e, _) = ops::eigh(&x).unwrap();
    assert_eq!(e.shape().to_vec()[1], 3);
    let d = ops::det(&x).unwrap();
    let l = ops::cholesky(&x).unwrap();
    let sess = Session::new(&g);
    let mut rng = Rng(0x6A);
    let mats: Vec<f64> = (0..2).flat_map(|_| spd(&mut rng, 3)).collect();
    let feed = t64(mats.clone(), &[2, 3, 3]);
    let out = sess.run(&[&e, &d, &l], &[(&x, &feed)]).unwrap();
    close("graph eigh", &values(&out[0]), &values(&ops::eigvalsh(&feed).unwrap()), 0.0);
    close("graph det", &values(&out[1]), &values(&ops::det(&feed).unwrap()), 0.0);
    close("graph cholesky", &values(&out[2]), &values(&ops::cholesky(&feed).unwrap()), 0.0);
}

#[test]
fn structure_ops_and_norms() {
    let x = t64((1..=6).map(f64::from).collect(), &[2, 3]);
    assert_eq!(values(&ops::diag_part(&x).unwrap()), vec![1.0, 5.0]);
    assert_eq!(values(&ops::set_diag(&x, &t64(vec![-1.0, -2.0], &[2])).unwrap()), vec![-1.0, 2.0, 3.0, 4.0, -2.0, 6.0]);
    assert_eq!(values(&ops::diag(&t64(vec![7.0, 8.0], &[2])).unwrap()), vec![7.0, 0.0, 0.0, 8.0]);
    assert_eq!(values(&ops::band_part(&x, 0, 0).unwrap()), vec![1.0, 0.0, 0.0, 0.0, 5.0, 0.0]);
    assert_eq!(values(&ops::band_part(&x, 1, 0).unwrap()), vec![1.0, 0.0, 0.0, 4.0, 5.0, 0.0]);
    assert_eq!(values(&ops::adjoint(&x).unwrap()), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let v = t64(vec![1.0, 0.0, 1.0], &[3]);
    assert_eq!(values(&ops::matvec(&x, &v).unwrap()), vec![4.0, 10.0]);
    let e1 = t64(vec![1.0, 0.0, 0.0], &[3]);
    let e2 = t64(vec![0.0, 1.0, 0.0], &[3]);
    assert_eq!(values(&ops::cross(&e1, &e2).unwrap()), vec![0.0, 0.0, 1.0]);
    // Norms: [[1, 2, 3], [4, 5, 6]].
    let fro = (91f64).sqrt();
    let n = |ord, axes, keep| values(&ops::norm(&x, ord, axes, keep).unwrap());
    close("fro", &n(NormOrd::Euclidean, NormAxes::All, false), &[fro], 1e-15);
    close("matrix fro", &n(NormOrd::Fro, NormAxes::Matrix(0, 1), false), &[fro], 1e-15);
    close("matrix 1", &n(NormOrd::P(1.0), NormAxes::Matrix(0, 1), false), &[9.0], 0.0);
    close("matrix inf", &n(NormOrd::Inf, NormAxes::Matrix(0, 1), false), &[15.0], 0.0);
    let sv = values(&ops::singular_values(&x).unwrap());
    close("matrix 2", &n(NormOrd::P(2.0), NormAxes::Matrix(0, 1), false), &[sv[0]], 1e-15);
    close("vector 1", &n(NormOrd::P(1.0), NormAxes::Vector(1), false), &[6.0, 15.0], 0.0);
    close("vector inf", &n(NormOrd::Inf, NormAxes::Vector(0), false), &[4.0, 5.0, 6.0], 0.0);
    close("vector 3", &n(NormOrd::P(3.0), NormAxes::Vector(1), false), &[36f64.cbrt(), 405f64.cbrt()], 1e-15);
    let kept = ops::norm(&x, NormOrd::P(2.0), NormAxes::Matrix(0, 1), true).unwrap();
    assert_eq!(dims(&kept), vec![1, 1]);
    let (unit, norms) = ops::normalize(&x, NormOrd::Euclidean, NormAxes::Vector(1)).unwrap();
    close("normalize", &values(&norms), &[14f64.sqrt(), 77f64.sqrt()], 1e-15);
    close(
        "normalized rows",
        &values(&ops::norm(&unit, NormOrd::Euclidean, NormAxes::Vector(1), false).unwrap()),
        &[1.0, 1.0],
        1e-15,
    );
    close("global_norm", &values(&ops::global_norm(&[&x, &v]).unwrap()), &[93f64.sqrt()], 1e-15);
    assert_eq!(kind(ops::norm(&x, NormOrd::P(3.0), NormAxes::Matrix(0, 1), false)), ErrorKind::InvalidArgument);
    assert_eq!(kind(ops::norm(&x, NormOrd::P(-1.0), NormAxes::All, false)), ErrorKind::InvalidArgument);
}

#[test]
fn singular_and_indefinite_inputs_give_tensorflows_errors_or_values() {
    let singular = t64(vec![1.0, 2.0, 2.0, 4.0], &[2, 2]);
    let rhs = t64(vec![1.0, 1.0], &[2, 1]);
    for r in [ops::solve(&singular, &rhs).map(|_| ()), ops::inv(&singular).map(|_| ())] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("not invertible"), "{e}");
    }
    assert_eq!(values(&ops::det(&singular).unwrap()), vec![0.0]);
    let (sign, logabs) = ops::slogdet(&singular).unwrap();
    assert_eq!((values(&sign)[0], values(&logabs)[0]), (0.0, f64::NEG_INFINITY));
    let indefinite = t64(vec![1.0, 2.0, 2.0, 1.0], &[2, 2]);
    let e = ops::cholesky(&indefinite).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("Cholesky") && e.to_string().contains("positive definite"), "{e}");
    // Errors name the op and the caller's line.
    assert!(e.to_string().contains("factorizations.rs"), "{e}");
    let nan = t64(vec![f64::NAN, 0.0, 0.0, 1.0], &[2, 2]);
    assert_eq!(kind(ops::cholesky(&nan)), ErrorKind::InvalidArgument);
    assert!(values(&ops::singular_values(&nan).unwrap()).iter().all(|v| v.is_nan()));
    assert!(values(&ops::eigvalsh(&nan).unwrap()).iter().all(|v| v.is_nan()));
    assert!(values(&ops::expm(&nan).unwrap()).iter().all(|v| v.is_nan()));
    // Types and shapes.
    let ints32 = Tensor::from_vec(vec![1i32, 0, 0, 1], vec![2, 2]).unwrap();
    assert_eq!(kind(ops::inv(&ints32)), ErrorKind::DType);
    assert_eq!(kind(ops::cholesky(&t64(vec![1.0; 6], &[2, 3]))), ErrorKind::Shape);
    assert_eq!(kind(ops::det(&t64(vec![1.0; 3], &[3]))), ErrorKind::Shape);
    let id = t64(vec![1.0, 0.0, 0.0, 1.0], &[2, 2]);
    assert_eq!(kind(ops::solve(&id, &t64(vec![1.0; 3], &[3, 1]))), ErrorKind::Shape);
    assert_eq!(kind(ops::solve(&id, &ops::cast(&rhs, DType::F32).unwrap())), ErrorKind::DType);
    assert_eq!(kind(ops::solve(&id, &t64(vec![1.0; 2], &[2]))), ErrorKind::Shape);
}

#[test]
fn empty_and_degenerate_shapes_never_panic() {
    let shapes: &[&[usize]] = &[&[0, 0], &[0, 3], &[3, 0], &[2, 0, 0], &[1, 1], &[0, 2, 2]];
    for &s in shapes {
        let n: usize = s.iter().product();
        let x = t64(vec![0.5; n], s);
        let square = s[s.len() - 1] == s[s.len() - 2];
        let runs: Vec<(&str, rivulet::Result<Vec<Tensor>>)> = vec![
            ("qr", ops::qr(&x, false).map(|(q, r)| vec![q, r])),
            ("qr full", ops::qr(&x, true).map(|(q, r)| vec![q, r])),
            ("svd", ops::svd(&x, false).map(|(s, u, v)| vec![s, u, v])),
            ("svd full", ops::svd(&x, true).map(|(s, u, v)| vec![s, u, v])),
            ("pinv", ops::pinv(&x, None).map(|p| vec![p])),
            ("norm 2", ops::norm(&x, NormOrd::P(2.0), NormAxes::Matrix(-2, -1), false).map(|p| vec![p])),
        ];
        for (what, r) in runs {
            let out = r.unwrap_or_else(|e| panic!("{what} of {s:?}: {e}"));
            assert!(out.iter().all(|t| t.numel().is_some()), "{what} of {s:?}");
        }
        let square_runs: Vec<(&str, rivulet::Result<Tensor>)> = vec![
            ("inv", ops::inv(&x)),
            ("det", ops::det(&x)),
            ("expm", ops::expm(&x)),
            ("eigvalsh", ops::eigvalsh(&x)),
            ("cholesky", ops::cholesky(&ops::add(&x, 1.0).unwrap())),
            ("lu", ops::lu(&x).map(|(l, _)| l)),
            ("solve", ops::solve(&x, &t64(vec![], &[s[s.len() - 1], 0]))),
            ("triangular_solve", ops::triangular_solve(&x, &t64(vec![], &[s[s.len() - 1], 0]), true, false)),
        ];
        for (what, r) in square_runs {
            match (square, r) {
                (true, Ok(_)) | (false, Err(_)) => {}
                // A 1x1 matrix of 0.5 is invertible and positive definite: every square case succeeds.
                (true, Err(e)) => panic!("{what} of {s:?}: {e}"),
                (false, Ok(_)) => panic!("{what} of non-square {s:?} succeeded"),
            }
        }
    }
    // 0x0 identities: det 1, slogdet (1, 0), an empty inverse.
    let (sign, logabs) = ops::slogdet(&t64(vec![], &[0, 0])).unwrap();
    assert_eq!((values(&sign), values(&logabs)), (vec![1.0], vec![0.0]));
}

#[test]
fn non_finite_entries_never_panic() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308] {
        let mut v = vec![1.0, 0.2, 0.1, 0.2, 2.0, 0.3, 0.1, 0.3, 3.0];
        v[4] = bad;
        let x = t64(v, &[3, 3]);
        let rhs = t64(vec![1.0, 2.0, 3.0], &[3, 1]);
        // Each either errors or gives values; none may panic.
        let _ = ops::cholesky(&x);
        let _ = ops::solve(&x, &rhs);
        let _ = ops::inv(&x);
        let _ = ops::triangular_solve(&x, &rhs, true, false);
        let _ = ops::lu(&x);
        let _ = ops::qr(&x, true);
        let _ = ops::svd(&x, false);
        let _ = ops::eigh(&x);
        let _ = ops::det(&x);
        let _ = ops::slogdet(&x);
        let _ = ops::expm(&x);
        let _ = ops::pinv(&x, None);
        let _ = ops::lstsq(&x, &rhs, 0.0, false);
        let _ = ops::matrix_rank(&x, None);
    }
    // Huge finite entries overflow in expm's squarings to inf or NaN, not a panic or a hang.
    let big = t64(vec![1e300, 0.0, 0.0, 1e300], &[2, 2]);
    assert!(values(&ops::expm(&big).unwrap()).iter().all(|v| !v.is_finite() || *v == 0.0));
}
