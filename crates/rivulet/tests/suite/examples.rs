//! The example programs, run as tests.

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
