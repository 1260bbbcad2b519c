//! Saved models: round trips of plain graphs (with control flow reading
//! variables), traced functions and `Sequential` models in both modes,
//! bitwise against the original, in this process and in another one;
//! pruning and freezing; atomic replacement; damaged, foreign and newer
//! directories as errors, never panics.

use crate::common::*;

use rivulet::nn::{Activation, Dense, Dropout, ExecutionMode, FitOptions, Loss, Optimizer, Sequential, Verbosity};
use rivulet::saved_model::{self, LoadOptions, SaveOptions, Signature, DEFAULT_SIGNATURE};
use rivulet::{cond, function, ops, DType, ErrorKind, Graph, Session, Shape, Tensor, Variable, UNKNOWN};
use std::path::Path;

fn temp_dir(name: &str) -> TempDir {
    fresh_dir("saved-model", name)
}

/// A graph with a placeholder, two variables, a `cond` reading one of them
/// in its branches, and a training branch the signature does not need.
fn graph_model() -> (Graph, Session, Tensor, Tensor) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, Shape::from(vec![UNKNOWN, 3])).unwrap();
    let w = Variable::in_graph(&g, "w", &Tensor::from([[0.5f32, -1.0], [2.0, 0.25], [-0.75, 1.5]]), true).unwrap();
    let b = Variable::in_graph(&g, "b", &Tensor::from(vec![0.1f32, -0.2]), true).unwrap();
    let unused = Variable::in_graph(&g, "unused", &Tensor::from(vec![1.0f32; 5]), true).unwrap();
    let y = {
        let _d = g.as_default();
        let z = ops::add(&ops::matmul(&x, &w.read()).unwrap(), &b.read()).unwrap();
        let total = ops::sum(&z, &[0i64, 1][..], false).unwrap();
        let pred = ops::greater(&total, &Tensor::scalar(0.0f32)).unwrap();
        let y = cond(&pred, || ops::mul(&z, &b.read()), || ops::sub(&z, &b.read())).unwrap();
        let _train = unused.assign_add(&Tensor::from(vec![1.0f32; 5])).unwrap();
        y.named("y").unwrap()
    };
    let sess = Session::new(&g);
    sess.run_targets(&[&g.global_variables_initializer().unwrap()]).unwrap();
    (g, sess, x, y)
}

fn inputs() -> Tensor {
    Tensor::from([[1.0f32, 2.0, 3.0], [-4.0, 0.5, 0.25]])
}

#[test]
fn a_graph_round_trips_bitwise_with_control_flow_pruned_and_frozen() {
    let dir = temp_dir("graph");
    let (_g, sess, x, y) = graph_model();
    let sig = Signature::new().input("x", &x).output("y", &y);
    saved_model::save(dir.join("m"), &sess, &[(DEFAULT_SIGNATURE, sig)]).unwrap();
    let m = saved_model::load(dir.join("m")).unwrap();
    for batch in [inputs(), ops::neg(&inputs()).unwrap(), Tensor::from([[0.0f32, 0.0, 1.0]])] {
        let want = sess.run(&[&y], &[(&x, &batch)]).unwrap().remove(0);
        let got = m.call(DEFAULT_SIGNATURE, &[("x", &batch)]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "y");
        assert!(got[0].1.bitwise_eq(&want), "{:?} vs {:?}", got[0].1.to_vec::<f32>(), want.to_vec::<f32>());
    }
    // Pruned: the training branch and its variable are gone; the others are saved.
    let names: Vec<&str> = m.variables().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["w", "b"]);
    assert_eq!(m.variable_bytes(), 2 * 4 + 6 * 4);
    assert!(m.ops_used().contains_key("If") && m.ops_used().contains_key("VariableV2"));
    assert!(!m.ops_used().contains_key("AssignAddVariableOp"), "{:?}", m.ops_used());
    // Frozen: no variable is left in the served graph, at any depth.
    fn variables_in(g: &Graph) -> usize {
        g.nodes().iter().filter(|n| n.op.type_name() == "VariableV2").count()
            + g.functions().iter().map(|f| variables_in(&f.graph)).sum::<usize>()
    }
    assert_eq!(variables_in(m.graph()), 0);
    let sig = m.signature(DEFAULT_SIGNATURE).unwrap();
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    assert_eq!(sig.inputs[0].0.shape, Shape::from(vec![UNKNOWN, 3]));
}

#[test]
fn calls_check_their_inputs() {
    let dir = temp_dir("inputs");
    let (_g, sess, x, y) = graph_model();
    saved_model::save(dir.join("m"), &sess, &[("s", Signature::new().input("x", &x).output("y", &y))]).unwrap();
    let m = saved_model::load(dir.join("m")).unwrap();
    let err = |r: rivulet::Result<Vec<(String, Tensor)>>| r.unwrap_err();
    assert_eq!(err(m.call("s", &[])).kind(), ErrorKind::InvalidArgument);
    assert_eq!(err(m.call("nope", &[("x", &inputs())])).kind(), ErrorKind::NotFound);
    let e = err(m.call("s", &[("x", &Tensor::from([[1.0f64, 2.0, 3.0]]))]));
    assert!(e.message().contains("must be f32"), "{e}");
    let e = err(m.call("s", &[("x", &Tensor::from([[1.0f32, 2.0]]))]));
    assert!(e.message().contains("shape"), "{e}");
    let e = err(m.call("s", &[("x", &inputs()), ("z", &inputs())]));
    assert!(e.message().contains("no input 'z'"), "{e}");
}

#[test]
fn save_refuses_what_it_cannot_write() {
    let dir = temp_dir("refuse");
    let (g, sess, x, y) = graph_model();
    // No signature and no default.
    assert!(saved_model::save(dir.join("a"), &sess, &[]).is_err());
    // A value, not a tensor of the graph.
    let bad = Signature::new().input("x", &inputs()).output("y", &y);
    assert!(saved_model::save(dir.join("a"), &sess, &[("s", bad)]).is_err());
    // Duplicate names, no outputs.
    let dup = Signature::new().input("x", &x).input("x", &x).output("y", &y);
    assert!(saved_model::save(dir.join("a"), &sess, &[("s", dup)]).is_err());
    assert!(saved_model::save(dir.join("a"), &sess, &[("s", Signature::new().input("x", &x))]).is_err());
    // An uninitialized variable.
    let fresh = Session::new(&g);
    let e = saved_model::save(dir.join("a"), &fresh, &[("s", Signature::new().input("x", &x).output("y", &y))])
        .unwrap_err();
    assert!(e.message().contains("no value"), "{e}");
    assert!(!dir.join("a").exists());
    // Nothing half-written was left beside it.
    assert_eq!(std::fs::read_dir(&*dir).unwrap().count(), 0);
}

fn trained_model(mode: ExecutionMode) -> (Sequential, Tensor) {
    rivulet::set_random_seed(11);
    let mut model = Sequential::new(vec![
        Box::new(Dense::new(16, Activation::Relu)),
        Box::new(Dropout::new(0.25).unwrap()),
        Box::new(Dense::new(3, Activation::Softmax)),
    ]);
    model.compile(Optimizer::adam(0.01), Loss::SparseCategoricalCrossentropy { from_logits: false }, &[], mode);
    let x = ops::random_normal(rivulet::Ctx::Eager, [64, 5], 0.0, 1.0, DType::F32, Some(3)).unwrap();
    let y = Tensor::from((0..64).map(|i: i32| i % 3).collect::<Vec<_>>());
    let options = FitOptions { epochs: 2, batch_size: 16, verbose: Verbosity::Silent, ..FitOptions::default() };
    model.fit(&x, &y, &options).unwrap();
    (model, x)
}

#[test]
fn sequential_models_round_trip_bitwise_in_both_modes() {
    for mode in [ExecutionMode::Graph, ExecutionMode::Eager] {
        let dir = temp_dir(&format!("sequential-{mode:?}"));
        let (model, x) = trained_model(mode);
        saved_model::save(dir.join("1"), &model, &[]).unwrap();
        let m = saved_model::load_with(dir.join("1"), &LoadOptions::exact()).unwrap();
        assert_eq!(m.signature_names(), vec![DEFAULT_SIGNATURE]);
        let want = model.predict(&x, 64).unwrap();
        let got = m.call(DEFAULT_SIGNATURE, &[("inputs", &x)]).unwrap().remove(0);
        assert_eq!(got.0, "outputs");
        assert!(got.1.bitwise_eq(&want), "{mode:?}");
        // Any batch size.
        let one = ops::slice(&x, &[5, 0], &[1, -1]).unwrap();
        let got = m.call(DEFAULT_SIGNATURE, &[("inputs", &one)]).unwrap().remove(0).1;
        assert!(got.bitwise_eq(&model.predict(&one, 1).unwrap()), "{mode:?}");
        // Only the weights: no optimizer slots, no dropout state.
        assert_eq!(m.variables().len(), 4, "{mode:?}: {:?}", m.variables());
        assert!(m.variables().iter().all(|v| v.trainable));
    }
}

#[test]
fn a_model_that_was_never_called_cannot_be_exported() {
    let dir = temp_dir("uncalled");
    let model = Sequential::new(vec![Box::new(Dense::new(2, Activation::Linear))]);
    let e = saved_model::save(dir.join("m"), &model, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn traced_functions_round_trip_and_keep_the_variables_they_assign() {
    let dir = temp_dir("function");
    let scale = Variable::new("scale", &Tensor::from(vec![2.0f32, -3.0]), true).unwrap();
    let calls = Variable::new("calls", &Tensor::scalar(0i64), false).unwrap();
    let f = function(|args: &[Tensor]| {
        calls.assign_add(&Tensor::scalar(1i64))?;
        Ok(vec![ops::mul(&args[0], &scale.read())?, ops::exp(&args[0])?])
    });
    let concrete = f.concrete(&[(DType::F32, Shape::from(vec![UNKNOWN, 2]))]).unwrap();
    saved_model::save(dir.join("m"), &concrete, &[]).unwrap();
    let m = saved_model::load(dir.join("m")).unwrap();
    let x = Tensor::from([[1.5f32, -0.5], [0.0, 4.0]]);
    let out = m.call(DEFAULT_SIGNATURE, &[("input_0", &x)]).unwrap();
    assert_eq!(out[0].0, "output_0");
    assert_eq!(out[0].1.to_vec::<f32>().unwrap(), vec![3.0, 1.5, 0.0, -12.0]);
    assert!(out[1].1.bitwise_eq(&ops::exp(&x).unwrap()));
    // The assignment runs on every call, on the loaded model's own copy.
    assert_eq!(m.variable_value("captured/calls").unwrap().to_scalar::<i64>().unwrap(), 1);
    m.call(DEFAULT_SIGNATURE, &[("input_0", &x)]).unwrap();
    assert_eq!(m.variable_value("captured/calls").unwrap().to_scalar::<i64>().unwrap(), 2);
    assert_eq!(calls.current().to_scalar::<i64>().unwrap(), 0);
    assert_eq!(m.variable_value("captured/scale").unwrap().to_vec::<f32>().unwrap(), vec![2.0, -3.0]);
    assert_eq!(m.variable_value("nope").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn save_never_deletes_a_directory_that_is_not_a_saved_model() {
    let dir = temp_dir("not-a-model");
    let (_g, sess, x, y) = graph_model();
    std::fs::write(dir.join("precious.txt"), "keep me").unwrap();
    let e = saved_model::save(&*dir, &sess, &[("s", Signature::new().input("x", &x).output("y", &y))]).unwrap_err();
    assert!(e.message().contains("not a saved model"), "{e}");
    assert_eq!(std::fs::read_to_string(dir.join("precious.txt")).unwrap(), "keep me");
    // An empty directory is filled.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    saved_model::save(&empty, &sess, &[("s", Signature::new().input("x", &x).output("y", &y))]).unwrap();
    assert!(saved_model::load(&empty).is_ok());
}

#[test]
fn saving_over_a_model_replaces_it_whole() {
    let dir = temp_dir("replace");
    let (_g, sess, x, y) = graph_model();
    let sig = || Signature::new().input("x", &x).output("y", &y);
    let target = dir.join("m");
    saved_model::save(&target, &sess, &[("first", sig())]).unwrap();
    let asset = dir.join("vocab.txt");
    std::fs::write(&asset, "a\nb\n").unwrap();
    saved_model::save_with(&target, &sess, &[("second", sig())], &SaveOptions { assets: vec![asset] }).unwrap();
    let m = saved_model::load(&target).unwrap();
    assert_eq!(m.signature_names(), vec!["second"]);
    assert_eq!(std::fs::read_to_string(m.asset("vocab.txt").unwrap()).unwrap(), "a\nb\n");
    assert!(m.asset("other").is_err());
    // Only the model and the asset's source: no temporary or old directory left.
    let mut left: Vec<String> =
        std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, vec!["m", "vocab.txt"]);
}

/// A saved model's files, to damage.
fn saved(dir: &Path) -> std::path::PathBuf {
    let (_g, sess, x, y) = graph_model();
    let m = dir.join("m");
    saved_model::save(&m, &sess, &[("s", Signature::new().input("x", &x).output("y", &y))]).unwrap();
    m
}

fn load_error(dir: &Path) -> rivulet::Error {
    let r = std::panic::catch_unwind(|| saved_model::load(dir));
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("a damaged model loaded"),
        Err(_) => panic!("loading a damaged model panicked"),
    }
}

#[test]
fn damaged_foreign_and_newer_models_are_errors() {
    let dir = temp_dir("damaged");
    let m = saved(&dir);
    let manifest = std::fs::read_to_string(m.join("saved_model.json")).unwrap();
    let graph = std::fs::read(m.join("graph.json")).unwrap();
    let vars = std::fs::read(m.join("variables/variables.safetensors")).unwrap();
    let restore = || {
        std::fs::write(m.join("saved_model.json"), &manifest).unwrap();
        std::fs::write(m.join("graph.json"), &graph).unwrap();
        std::fs::write(m.join("variables/variables.safetensors"), &vars).unwrap();
    };
    assert!(saved_model::contains_saved_model(&m));
    assert!(!saved_model::contains_saved_model(&*dir));
    assert!(!saved_model::contains_saved_model(dir.join("nowhere")));
    // Truncated variables.
    std::fs::write(m.join("variables/variables.safetensors"), &vars[..vars.len() - 7]).unwrap();
    assert_eq!(load_error(&m).kind(), ErrorKind::Format);
    restore();
    // One changed byte in the graph (a constant's digit or a name).
    let mut g2 = graph.clone();
    let at = g2.len() / 2;
    g2[at] = if g2[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(m.join("graph.json"), &g2).unwrap();
    let e = load_error(&m);
    assert!(e.message().contains("damaged"), "{e}");
    restore();
    // A newer version, a foreign format, a changed manifest.
    std::fs::write(m.join("saved_model.json"), manifest.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let e = load_error(&m);
    assert!(e.message().contains("newer"), "{e}");
    std::fs::write(m.join("saved_model.json"), manifest.replace("rivulet.saved_model", "tensorflow.saved_model"))
        .unwrap();
    assert_eq!(load_error(&m).kind(), ErrorKind::Format);
    std::fs::write(m.join("saved_model.json"), manifest.replace("\"trainable\": true", "\"trainable\": false"))
        .unwrap();
    assert!(load_error(&m).message().contains("checksum"));
    std::fs::write(m.join("saved_model.json"), "{").unwrap();
    assert_eq!(load_error(&m).kind(), ErrorKind::Format);
    restore();
    // Missing files.
    std::fs::remove_file(m.join("graph.json")).unwrap();
    load_error(&m);
    restore();
    std::fs::remove_file(m.join("saved_model.json")).unwrap();
    assert_eq!(load_error(&m).kind(), ErrorKind::NotFound);
    assert_eq!(load_error(&dir.join("nowhere")).kind(), ErrorKind::NotFound);
    restore();
    assert!(saved_model::load(&m).is_ok());
}

#[test]
fn every_truncation_and_byte_flip_of_the_manifest_is_caught() {
    let dir = temp_dir("flips");
    let m = saved(&dir);
    let manifest = std::fs::read(m.join("saved_model.json")).unwrap();
    let step = (manifest.len() / 97).max(1);
    for at in (0..manifest.len()).step_by(step) {
        let mut bad = manifest.clone();
        bad[at] ^= 0x20;
        std::fs::write(m.join("saved_model.json"), &bad).unwrap();
        load_error(&m);
        std::fs::write(m.join("saved_model.json"), &manifest[..at]).unwrap();
        load_error(&m);
    }
}

/// The child half of the cross-process test: save a trained model and its
/// predictions where the parent says.
#[test]
fn cross_process_child_saves_a_model() {
    let Some(out) = std::env::var_os("RIVULET_SAVED_MODEL_CHILD") else { return };
    let out = std::path::PathBuf::from(out);
    let (model, x) = trained_model(ExecutionMode::Graph);
    saved_model::save(out.join("model"), &model, &[]).unwrap();
    rivulet::save_npy(&x, out.join("x.npy")).unwrap();
    rivulet::save_npy(&model.predict(&x, 64).unwrap(), out.join("want.npy")).unwrap();
}

#[test]
fn a_model_saved_by_another_process_predicts_bitwise_the_same() {
    let dir = temp_dir("cross-process");
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args(["saved_model::cross_process_child_saves_a_model", "--exact", "--test-threads=1"])
        .env("RIVULET_SAVED_MODEL_CHILD", &*dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stdout));
    let m = saved_model::load_with(dir.join("model"), &LoadOptions::exact()).unwrap();
    let x = rivulet::load_npy(dir.join("x.npy")).unwrap();
    let want = rivulet::load_npy(dir.join("want.npy")).unwrap();
    let got = m.call(DEFAULT_SIGNATURE, &[("inputs", &x)]).unwrap().remove(0).1;
    assert!(got.bitwise_eq(&want));
}
