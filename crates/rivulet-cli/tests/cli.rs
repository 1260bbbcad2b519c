//! The command line refuses nonsense: unknown workloads and modes, missing
//! files and malformed settings are errors with a non-zero exit status and a
//! message that names what was wrong; `devices` reports a missing GPU
//! driver instead of failing.

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

/// `rivulet devices` without an NVIDIA driver (or with a library that is
/// not one) lists the CPU devices and says what it looked for, exit 0.
#[test]
fn devices_says_what_driver_it_looked_for() {
    for (driver, says) in [
        ("/nonexistent/libcuda.so.1", "no NVIDIA driver: looked for /nonexistent/libcuda.so.1"),
        ("libc.so.6", "NVIDIA driver libc.so.6 loaded, but it has no cuInit"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .arg("devices")
            .env("RIVULET_CUDA_DRIVER", driver)
            .output()
            .expect("the binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{driver}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("/device:CPU:0") && stdout.contains(says), "{driver}: {stdout}");
        assert!(stdout.contains("running on the CPU"), "{stdout}");
        assert!(stdout.contains("default device: /device:CPU:0"), "no GPU: the CPU is the default: {stdout}");
    }
    // RIVULET_DEFAULT_DEVICE chooses another default; a name that is no
    // device here is ignored, saying why.
    for (name, default, warns) in
        [("/reference:0", "/device:REFERENCE:0", false), ("/device:GPU:7", "/device:CPU:0", true)]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .arg("devices")
            .env("RIVULET_CUDA_DRIVER", "/nonexistent/libcuda.so.1")
            .env("RIVULET_DEFAULT_DEVICE", name)
            .output()
            .expect("the binary runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stdout.contains(&format!("default device: {default}")), "{name}: {stdout}");
        assert_eq!(stderr.contains("ignoring RIVULET_DEFAULT_DEVICE"), warns, "{name}: {stderr}");
    }
}

#[test]
fn simulate_writes_data_and_pictures() {
    let out = std::env::temp_dir().join(format!("rivulet-simulate-{}", std::process::id()));
    let dir = out.to_str().unwrap();
    let (ok, err) = rivulet(&["simulate", "heat", "--n", "16", "--steps", "32", "--out", dir], &[]);
    assert!(ok, "{err}");
    for f in ["heat/field.png", "heat/heat.gif", "heat/amplitude.csv", "heat/amplitude.png"] {
        let bytes = std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes.len() > 100, "{f} is {} bytes", bytes.len());
    }
    let csv = std::fs::read_to_string(out.join("heat/amplitude.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 17, "a header and 17 frames: {csv}");
    assert!(csv.starts_with("t,amplitude,analytic\n0,1,1\n"), "{csv}");
    let (ok, err) = rivulet(&["simulate", "cavity", "--n", "17", "--re", "100", "--out", dir], &[]);
    assert!(ok, "{err}");
    for f in ["u_centerline.csv", "v_centerline.csv", "speed.png", "vorticity.png", "centerlines.png"] {
        let bytes = std::fs::read(out.join("cavity").join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes.len() > 100, "{f} is {} bytes", bytes.len());
    }
    let csv = std::fs::read_to_string(out.join("cavity/u_centerline.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 17, "{csv}");
    assert!(csv.starts_with("y,u\n0,0\n") && csv.trim_end().ends_with("1,1"), "{csv}");
    let (ok, err) = rivulet(&["simulate", "taylor-green", "--n", "32", "--steps", "32", "--out", dir], &[]);
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(out.join("taylor-green/convergence.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let (ok, err) = rivulet(&["simulate", "karman", "--n", "16", "--steps", "64", "--re", "80", "--out", dir], &[]);
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(out.join("karman/probe.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 64, "a header and a probe value per step: {csv}");
    assert!(std::fs::metadata(out.join("karman/karman.gif")).unwrap().len() > 1000);
    let (ok, err) = rivulet(&["simulate", "inverse", "--n", "16", "--steps", "5", "--out", dir], &[]);
    assert!(ok, "{err}");
    let csv = std::fs::read_to_string(out.join("inverse/loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    assert!(std::fs::metadata(out.join("inverse/fields.png")).unwrap().len() > 1000);
    let (ok, err) = rivulet(&["simulate", "heat", "--re", "100", "--out", dir], &[]);
    assert!(!ok && err.contains("--re"), "{err}");
    let (ok, err) = rivulet(&["simulate", "wave", "--n", "4", "--out", dir], &[]);
    assert!(!ok && err.contains("--n"), "{err}");
    let (ok, err) = rivulet(&["simulate", "tsunami", "--out", dir], &[]);
    assert!(!ok && err.contains("tsunami"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// The CNN demo learns the digits: at least 98.5% on the held-out split.
#[test]
fn the_cnn_demo_reaches_its_accuracy() {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["demo", "--model", "cnn", "--quiet"])
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let accuracy: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy line in {text}"));
    assert!(accuracy >= 0.985, "test accuracy {accuracy}");
    let (ok, err) = rivulet(&["demo", "--model", "resnet"], &[]);
    assert!(!ok && err.contains("resnet") && err.contains("cnn"), "{err}");
}

/// The value printed after `key ` on train-csv's last line.
fn final_metric(stdout: &str, key: &str) -> f64 {
    let last =
        stdout.lines().rev().find(|l| l.starts_with("after ")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let at = last.find(&format!("{key} ")).unwrap_or_else(|| panic!("no {key} in {last}"));
    last[at + key.len() + 1..].split(',').next().unwrap().trim().parse().unwrap()
}

fn train_csv(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_rivulet")).arg("train-csv").args(args).output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn train_csv_classifies_the_wine_table_from_csv_and_parquet() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../rivulet");
    let csv = format!("{root}/data/tabular/wine.csv");
    let (ok, out, err) = train_csv(&[&csv, "--label", "class", "--epochs", "40", "--quiet"]);
    assert!(ok, "{err}");
    assert!(out.contains("178 rows (142 to train, 36 to validate)") && out.contains("3 classes"), "{out}");
    assert!(final_metric(&out, "val_accuracy") > 0.9, "{out}");
    // The Parquet copy, with the integer label column and the text class column as a feature.
    let parquet = format!("{root}/tests/data/wine.parquet");
    let (ok, out, err) = train_csv(&[&parquet, "--label", "label", "--epochs", "40", "--quiet"]);
    assert!(ok, "{err}");
    assert!(out.contains("class (text, 4 one-hot)"), "{out}");
    assert!(final_metric(&out, "val_accuracy") > 0.9, "{out}");
    // A float label is regressed: proline (278..1680) from the rest, mean absolute error reported.
    let (ok, out, err) = train_csv(&[&csv, "--label", "proline", "--epochs", "5", "--quiet"]);
    assert!(ok, "{err}");
    assert!(out.contains("regression") && final_metric(&out, "val_mae").is_finite(), "{out}");
}

#[test]
fn train_csv_names_a_missing_label_file_or_bad_split() {
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/../rivulet/data/tabular/wine.csv");
    let (ok, _, err) = train_csv(&[csv, "--label", "colour", "--quiet"]);
    assert!(!ok && err.contains("no column 'colour'") && err.contains("alcohol"), "{err}");
    let (ok, _, err) = train_csv(&["/nonexistent/t.csv", "--label", "y", "--quiet"]);
    assert!(!ok && err.contains("/nonexistent/t.csv"), "{err}");
    let (ok, _, err) = train_csv(&[csv, "--label", "class", "--validation-split", "1.5", "--quiet"]);
    assert!(!ok && err.contains("--validation-split"), "{err}");
}

fn rivulet_out(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet")).args(args).output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's deployment path, each step its own process: the demo
/// exports version 1; `saved-model show` and `run` read it; `serve` answers
/// the example request with what `run` computed; `loadtest` drives it; and
/// SIGTERM stops it cleanly.
#[test]
fn export_show_run_serve_and_loadtest() {
    let dir = std::env::temp_dir().join(format!("rivulet-cli-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = dir.join("digits");
    let base_s = base.to_str().unwrap();
    let (ok, stdout, stderr) = rivulet_out(&["demo", "--epochs", "2", "--quiet", "--export", base_s]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("predictions bitwise equal"), "{stdout}");
    let model = base.join("1");
    let model_s = model.to_str().unwrap();

    let (ok, show, stderr) = rivulet_out(&["saved-model", "show", model_s, "--all"]);
    assert!(ok, "{stderr}");
    for needle in [
        "signature_def['serving_default']",
        "inputs['inputs']",
        "shape: [?, 64]",
        "outputs['outputs']",
        "variables: 6",
        "MatMul",
    ] {
        assert!(show.contains(needle), "'{needle}' missing from:\n{show}");
    }
    let (ok, _, stderr) = rivulet_out(&["saved-model", "show", dir.join("nowhere").to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a saved model"), "{stderr}");

    // The example request's instances as a .npy, run through `saved-model run`.
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("assets/example_request.json")).unwrap()).unwrap();
    let rows: Vec<f32> = request["instances"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect();
    let npy = dir.join("x.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, 64), }}", rows.len() / 64);
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    rows.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(&npy, bytes).unwrap();
    let (ok, ran, stderr) =
        rivulet_out(&["saved-model", "run", model_s, "--input", &format!("inputs={}", npy.display())]);
    assert!(ok, "{stderr}");
    let printed = ran.split_once(": ").map(|(_, json)| json.trim().to_string()).unwrap_or_default();
    let offline: serde_json::Value = serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {ran}"));
    let (ok, _, stderr) = rivulet_out(&["saved-model", "run", model_s, "--input", "inputs"]);
    assert!(!ok && stderr.contains("NAME=FILE.npy"), "{stderr}");

    // Serve on a free port and ask with the example request.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--model_name",
            "digits",
            "--model_base_path",
            base_s,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/models/digits:predict");
    let body = format!("@{}", model.join("assets/example_request.json").display());
    let mut report = None;
    for _ in 0..100 {
        let (ok, out, _) =
            rivulet_out(&["loadtest", &url, "--body", &body, "--concurrency", "4", "--requests", "200", "--json"]);
        if ok && out.contains("\"errors\":0") {
            report = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let report: serde_json::Value = serde_json::from_str(&report.expect("the server answered")).unwrap();
    assert_eq!(report["requests"], 200);
    assert!(report["p99_ms"].as_f64().unwrap() > 0.0);
    // What the server says is what `saved-model run` computed.
    let v: serde_json::Value =
        serde_json::from_str(&http_post(port, "/v1/models/digits:predict", &request.to_string())).unwrap();
    assert_eq!(v["predictions"], offline);
    // SIGTERM: a clean stop.
    #[cfg(unix)]
    {
        // SAFETY: sends a signal to the child we spawned.
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        let status = server.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
    #[cfg(not(unix))]
    {
        let _ = server.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The body of the answer to a POST (HTTP/1.1, connection closed after).
fn http_post(port: u16, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// `mpirun -np 2 rivulet demo --distributed` trains on two workers and
/// reports once, from rank 0 (where the binary has MPI and `mpirun` is
/// installed; `RIVULET_REQUIRE_MPI=1` makes their absence a failure).
#[test]
fn the_distributed_demo_trains_on_two_workers_and_reports_once() {
    let devices = Command::new(env!("CARGO_BIN_EXE_rivulet")).arg("devices").output().expect("the binary runs");
    let built = String::from_utf8_lossy(&devices.stdout).contains("MPI: built in");
    let mpirun = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("mpirun")).find(|p| p.is_file()));
    let (true, Some(mpirun)) = (built, mpirun) else {
        assert!(
            std::env::var("RIVULET_REQUIRE_MPI").map_or(true, |v| v != "1"),
            "RIVULET_REQUIRE_MPI=1 but the binary has no MPI or mpirun is missing"
        );
        eprintln!("skipped: no MPI in this build or no mpirun");
        return;
    };
    let out = Command::new(mpirun)
        .args(["-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(env!("CARGO_BIN_EXE_rivulet"))
        .args(["demo", "--distributed", "--epochs", "8", "--quiet"])
        .output()
        .expect("mpirun runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("test accuracy:").count(), 1, "{stdout}");
    assert!(stdout.contains("distributed: 2 workers"), "{stdout}");
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy: ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy:\n{stdout}"));
    assert!(accuracy > 0.85, "{stdout}");
}
