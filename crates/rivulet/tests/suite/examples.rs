//! The example programs, run as tests.

#[path = "../../examples/heat.rs"]
mod heat;

#[path = "../../examples/logistic_regression.rs"]
mod logistic_regression;

#[path = "../../examples/quickstart.rs"]
mod quickstart;

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
