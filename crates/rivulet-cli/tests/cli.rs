//! The command line refuses nonsense: unknown workloads and modes, missing
//! files and malformed settings are errors with a non-zero exit status and a
//! message that names what was wrong.

use std::process::Command;

fn rivulet(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("the binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_workloads_and_modes_are_refused() {
    let (ok, err) = rivulet(&["bench", "B99"], &[]);
    assert!(!ok, "bench B99 must fail");
    assert!(err.contains("B99") && err.contains("B1"), "names the bad id and the good ones: {err}");
    let (ok, err) = rivulet(&["bench", "B1", "--mode", "foo"], &[]);
    assert!(!ok, "--mode foo must fail");
    assert!(err.contains("foo") && err.contains("eager") && err.contains("graph"), "{err}");
}

#[test]
fn inspect_names_a_missing_file() {
    let (ok, err) = rivulet(&["inspect", "/nonexistent/graph.json"], &[]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/graph.json"), "names the path: {err}");
}

#[test]
fn an_invalid_demo_seed_is_an_error() {
    let (ok, err) = rivulet(&["demo", "--epochs", "1", "--quiet"], &[("RIVULET_DEMO_SEED", "abc")]);
    assert!(!ok);
    assert!(err.contains("RIVULET_DEMO_SEED") && err.contains("abc"), "{err}");
}
