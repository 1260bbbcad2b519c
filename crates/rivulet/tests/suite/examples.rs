//! The example programs, run as tests.

#[path = "../../examples/cavity.rs"]
mod cavity;

#[path = "../../examples/heat.rs"]
mod heat;

#[path = "../../examples/inverse.rs"]
mod inverse;

#[path = "../../examples/karman.rs"]
mod karman;

#[path = "../../examples/logistic_regression.rs"]
mod logistic_regression;

#[path = "../../examples/quickstart.rs"]
mod quickstart;

#[path = "../../examples/taylor_green.rs"]
mod taylor_green;

#[path = "../../examples/wave.rs"]
mod wave;

#[path = "../../examples/wine.rs"]
mod wine;

#[path = "../../examples/csv_stream.rs"]
mod csv_stream;

#[test]
fn logistic_regression_in_graph_mode_learns() {
    let acc = logistic_regression::run().expect("example runs");
    // Zeros are easy: a linear model separates them almost perfectly.
    assert!(acc > 0.98, "test accuracy {acc}");
}

#[test]
fn quickstart_runs() {
    quickstart::main().expect("example runs");
}

#[test]
fn heat_decays_as_the_analytic_fourier_mode() {
    let r = heat::run(32, 400).expect("example runs");
    // The scheme reproduces its own discrete decay to rounding, and the
    // analytic one within its O(h² + dt) error.
    assert!((r.amplitude.0 - r.scheme_amplitude).abs() < 1e-12, "{r:?}");
    assert!((r.amplitude.0 - r.amplitude.1).abs() < 2e-3 * r.amplitude.1.max(1e-3), "{r:?}");
    assert!(r.max_error < 5e-3, "{r:?}");
    assert!(r.amplitude.1 < 0.9, "the test should decay the mode noticeably: {r:?}");
}

#[test]
fn wave_leapfrog_conserves_its_discrete_energy() {
    let r = wave::simulate(48, 192, 4).expect("example runs");
    assert_eq!((r.frames.len(), r.energy.len()), (5, 5));
    assert!((r.energy[4].0 - 192.0 * r.dt).abs() < 1e-12 && (r.dt - 0.5 / 48.0).abs() < 1e-15);
    // Leapfrog conserves E exactly: rounding only, over 192 steps.
    assert!(r.drift < 1e-12, "drift {:e}", r.drift);
    // The bump has spread: the field at the end is not the initial one, and it is bounded.
    let first = r.frames[0].to_vec::<f64>().unwrap();
    let last = r.frames[4].to_vec::<f64>().unwrap();
    let moved = first.iter().zip(&last).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved > 0.3 && last.iter().all(|v| v.abs() < 1.0), "moved {moved}");
    // The energy is the initial potential energy ½ c² ∫|∇u|² of the bump at
    // rest: π/2 for exp(-r²/s) on the plane, whatever s (here 2.4 grid points
    // per standard deviation, so the grid's energy is within a few percent).
    let e0 = r.energy[0].1;
    assert!((e0 / std::f64::consts::FRAC_PI_2 - 1.0).abs() < 0.05, "energy {e0}");
}

#[test]
fn heat_frames_follow_the_analytic_decay() {
    let r = heat::simulate(32, 400, 4).expect("example runs");
    assert_eq!(r.frames.len(), 5);
    for (t, got, exact) in &r.amplitude {
        assert!((got - exact).abs() < 2e-3, "t = {t}: {got} vs {exact}");
    }
}

#[test]
fn taylor_green_converges_at_second_order_to_the_analytic_vortex() {
    let (runs, orders) = taylor_green::convergence(128, 256).expect("example runs");
    assert_eq!(runs.iter().map(|r| (r.n, r.steps)).collect::<Vec<_>>(), vec![(32, 64), (64, 128), (128, 256)]);
    // Stated bounds: 7% of the amplitude on 32², 2% on 64², 0.5% on 128²; the order between grids near 2.
    assert!(runs[0].error < 7e-2 && runs[1].error < 2e-2 && runs[2].error < 5e-3, "{runs:?}");
    for o in &orders {
        assert!((1.8..2.2).contains(o), "orders {orders:?}");
    }
    let last = &runs[2];
    assert!((last.energy_ratio - 1.0).abs() < 0.01 && last.divergence < 1e-3, "{last:?}");
    // The vorticity is 2 sin x sin y F(t), to the same accuracy.
    let (n, h) = (128, 2.0 * std::f64::consts::PI / 128.0);
    let amplitude = (-2.0 * taylor_green::NU * taylor_green::T_END).exp();
    let w = last.vorticity.to_vec::<f64>().unwrap();
    let worst = (0..n * n)
        .map(|p| (w[p] - 2.0 * ((p % n) as f64 * h).sin() * ((p / n) as f64 * h).sin() * amplitude).abs())
        .fold(0.0, f64::max);
    assert!(worst < 0.05 * 2.0 * amplitude, "vorticity error {worst}");
}

#[test]
fn cavity_matches_ghia_at_re_100() {
    let setup = cavity::CavitySetup { n: 65, re: 100.0, max_steps: 20_000, tolerance: 1e-3 };
    let run = cavity::solve(&setup).expect("example runs");
    assert!(run.steady && run.steps > 1000 && run.residual < 1e-3, "steps {} residual {}", run.steps, run.residual);
    // Ghia, Ghia & Shin (1982) on their 129² grid; this 65² grid is within 0.01 of them everywhere tabulated.
    let (du, dv) = run.ghia_deviation().expect("Re 100 is tabulated");
    assert!(du < 0.01 && dv < 0.01, "deviations u {du}, v {dv}");
    // The lid and walls: u = 1 on top, 0 on the bottom; the main vortex turns clockwise (ψ < 0) with
    // its minimum near Ghia's -0.1034 at (0.6172, 0.7344).
    let ul = run.u_centerline();
    assert_eq!((ul[0].1, ul[64].1), (0.0, 1.0));
    let (k, min) = run.psi.iter().enumerate().fold((0, f64::INFINITY), |b, (k, p)| if *p < b.1 { (k, *p) } else { b });
    assert!((min + 0.1034).abs() < 0.003, "psi min {min}");
    let (y, x) = ((k / 65) as f64 / 64.0, (k % 65) as f64 / 64.0);
    assert!((x - 0.6172).abs() < 0.03 && (y - 0.7344).abs() < 0.03, "vortex centre ({x}, {y})");
    // Its vorticity is negative (clockwise, ω = ∂v/∂x - ∂u/∂y) and is -∇²ψ there, as the solve makes it.
    let p = &run.psi;
    let lap = (p[k + 1] + p[k - 1] + p[k + 65] + p[k - 65] - 4.0 * p[k]) * 64.0 * 64.0;
    assert!(
        run.omega[k] < -1.0 && (run.omega[k] + lap).abs() < 1e-8,
        "vorticity {} vs -lap psi {}",
        run.omega[k],
        -lap
    );
    // Only tabulated Reynolds numbers compare; bad setups are errors.
    let other = cavity::solve(&cavity::CavitySetup { n: 9, re: 50.0, max_steps: 10, tolerance: 1e-3 }).unwrap();
    assert!(other.ghia_deviation().is_none() && !other.steady && other.steps == 10);
    for bad in [(64, 100.0), (65, 0.0), (3, 100.0)] {
        let e = cavity::solve(&cavity::CavitySetup { n: bad.0, re: bad.1, max_steps: 10, tolerance: 1e-3 });
        assert!(e.is_err(), "{bad:?}");
    }
}

#[test]
fn inverse_problem_recovers_the_initial_field_to_one_percent() {
    let r = inverse::recover(32, 150).expect("example runs");
    // The observation really is blurred (the peak lost over a quarter), and the recovery undoes it.
    let peak = |t: &rivulet::Tensor| t.to_vec::<f64>().unwrap().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(peak(&r.observed) < 0.8 * peak(&r.truth), "observed peak {}", peak(&r.observed));
    assert!(r.error < 0.01, "recovery error {}", r.error);
    let gap = r
        .recovered
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .zip(r.truth.to_vec::<f64>().unwrap())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap < 0.02, "largest pointwise error {gap}");
    assert_eq!(r.losses.len(), 150);
    assert!(r.losses[149] < 1e-6 * r.losses[0], "loss {} -> {}", r.losses[0], r.losses[149]);
}

#[test]
fn karman_street_sheds_at_the_strouhal_number() {
    // A short channel at Re 100: the probe must oscillate at St within the measured 0.14-0.22.
    let setup = karman::KarmanSetup { n: 48, re: 100.0, steps: 9_000, frame_every: 50 };
    let run = karman::simulate(&setup).expect("example runs");
    assert_eq!((run.frames.len(), run.diameter), (180, 9.0));
    let st = run.strouhal.expect("the wake oscillates");
    assert!((0.14..0.22).contains(&st), "Strouhal number {st}");
    let last = run.frames.last().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(last.len(), 48 * 192);
    let (nan, finite) = (last.iter().filter(|w| w.is_nan()).count(), last.iter().filter(|w| w.is_finite()).count());
    assert!(nan > 50 && nan + finite == last.len(), "the cylinder is NaN ({nan} cells), the rest finite");
    assert!(karman::simulate(&karman::KarmanSetup { n: 8, ..setup }).is_err());
}

#[test]
fn wine_learns_the_three_cultivars_from_the_csv() {
    let r = wine::run(30, false).expect("example runs");
    assert_eq!(r.classes, vec!["class_1", "class_0", "class_2"], "most frequent first, as Keras orders them");
    // 36 held-out wines; a standardized linear-ish model gets nearly all.
    assert!(r.val_accuracy > 0.9, "validation accuracy {}", r.val_accuracy);
}

#[test]
fn csv_stream_sums_every_column_of_its_synthetic_file() {
    let dir = crate::common::fresh_dir("examples", "csv_stream");
    let path = dir.join("synthetic.csv");
    let n = 20_011u64;
    csv_stream::make(&path, n).unwrap();
    let s = csv_stream::stats(&path, 1000).expect("example runs");
    assert_eq!(s.rows, n);
    let names: Vec<&str> = s.columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, vec!["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "label"]);
    // The same sums by hand, from the formula that wrote the file, of the
    // values as the inferred f32 columns hold them, summed in f64: equal
    // whatever order the shuffle put the rows in.
    for (j, (_, sum, mean)) in s.columns.iter().take(8).enumerate() {
        let want: f64 = (0..n).map(|i| f64::from((((i * 7 + j as u64 * 13) % 1000) as f64 / 100.0 - 5.0) as f32)).sum();
        assert!((sum - want).abs() < 1e-6, "x{j}: {sum} vs {want}");
        assert!((mean - want / n as f64).abs() < 1e-9);
    }
    let labels: u64 = (0..n).map(|i| i % 3).sum();
    assert_eq!(s.columns[8].1, labels as f64);
}
