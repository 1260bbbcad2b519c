//! The example programs, run as tests.

#[path = "../../examples/heat.rs"]
mod heat;

#[path = "../../examples/logistic_regression.rs"]
mod logistic_regression;

#[path = "../../examples/quickstart.rs"]
mod quickstart;

#[path = "../../examples/wave.rs"]
mod wave;

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
