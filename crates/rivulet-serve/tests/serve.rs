//! The real server on 127.0.0.1 (port 0), driven by a real HTTP client
//! (`reqwest`): every endpoint, both request formats, predictions bitwise
//! against the model in this process, error bodies and codes, fuzzed
//! bodies, batching, several models, and a hot reload under load with no
//! failed request.

use rivulet::nn::{Activation, Dense, ExecutionMode, Loss, Optimizer, Sequential};
use rivulet::saved_model;
use rivulet::{ops, Tensor};
use rivulet_serve::{BatchingOptions, ModelConfig, Server, ServerOptions, VersionPolicy};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("rivulet-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// A small classifier (8 features, 4 classes) with weights drawn from `seed`.
fn model(seed: u64) -> Sequential {
    rivulet::set_random_seed(seed);
    let mut m =
        Sequential::new(vec![Box::new(Dense::new(16, Activation::Relu)), Box::new(Dense::new(4, Activation::Softmax))]);
    m.compile(
        Optimizer::sgd(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: false },
        &[],
        ExecutionMode::Graph,
    );
    m.predict(&inputs(1), 8).unwrap();
    m
}

/// `n` rows of made-up features, with awkward floats.
fn inputs(n: usize) -> Tensor {
    let v: Vec<f32> = (0..n * 8).map(|i| ((i as f32) * 0.37).sin() * 3.1 + 1e-3 / (i as f32 + 1.0)).collect();
    Tensor::from_vec(v, [n, 8]).unwrap()
}

fn rows_json(x: &Tensor) -> Value {
    serde_json::from_str(&rivulet_serve::json::Output::new(x).unwrap().to_json()).unwrap()
}

fn save_version(base: &Path, version: u64, m: &Sequential) {
    saved_model::save(base.join(version.to_string()), m, &[]).unwrap();
}

fn start(models: Vec<ModelConfig>, batching: Option<BatchingOptions>) -> Server {
    let options = ServerOptions {
        models,
        batching,
        max_body_bytes: 1 << 20,
        max_elements: 1 << 16,
        poll_interval: Duration::from_millis(50),
        load: saved_model::LoadOptions::exact(),
        http_threads: 2,
    };
    Server::start("127.0.0.1:0".parse().unwrap(), options).unwrap()
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Client { rt, http: reqwest::Client::new(), base: format!("http://{addr}") }
    }
    fn get(&self, path: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
            let status = r.status().as_u16();
            (status, parse(&r.text().await.unwrap()))
        })
    }
    fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.rt.block_on(post(&self.http, &format!("{}{path}", self.base), body.into()))
    }
}

async fn post(http: &reqwest::Client, url: &str, body: reqwest::Body) -> (u16, Value) {
    let r = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, parse(&r.text().await.unwrap()))
}

/// A response body. Non-finite numbers come as TensorFlow Serving writes
/// them (`NaN`, `Infinity`), which JSON has no literal for: read as null.
fn parse(text: &str) -> Value {
    let text = text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Predictions (rows of f32) as bits.
fn bits(v: &Value) -> Vec<u32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<u32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push((n.as_f64().unwrap() as f32).to_bits()),
            other => panic!("not a number: {other}"),
        }
    }
    walk(v, &mut out);
    out
}

fn tensor_bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_endpoint_and_both_formats_answer_bitwise() {
    let dir = temp_dir("endpoints");
    let base = dir.0.join("digits");
    let m = model(1);
    save_version(&base, 1, &m);
    let mut config = ModelConfig::new("digits", &base);
    config.labels.insert("stable".into(), 1);
    let server = start(vec![config], None);
    let c = Client::new(server.local_addr());

    let (status, body) = c.get("/v1/models/digits");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version_status"][0]["version"], "1");
    assert_eq!(body["model_version_status"][0]["state"], "AVAILABLE");
    assert_eq!(body["model_version_status"][0]["status"]["error_code"], "OK");
    assert_eq!(c.get("/v1/models/digits/versions/1").0, 200);
    assert_eq!(c.get("/v1/models/digits/labels/stable").0, 200);

    let (status, meta) = c.get("/v1/models/digits/metadata");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["model_spec"]["version"], "1");
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    assert_eq!(sig["inputs"]["inputs"]["dtype"], "DT_FLOAT");
    assert_eq!(sig["inputs"]["inputs"]["tensor_shape"]["dim"][0]["size"], "-1");
    assert_eq!(sig["inputs"]["inputs"]["tensor_shape"]["dim"][1]["size"], "8");
    assert_eq!(sig["outputs"]["outputs"]["dtype"], "DT_FLOAT");

    let x = inputs(5);
    let want = tensor_bits(&m.predict(&x, 8).unwrap());
    let rows = rows_json(&x);
    for path in
        ["/v1/models/digits:predict", "/v1/models/digits/versions/1:predict", "/v1/models/digits/labels/stable:predict"]
    {
        let (status, body) = c.post(path, json!({"instances": rows}).to_string());
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(bits(&body["predictions"]), want, "{path}");
        assert_eq!(body["predictions"].as_array().unwrap().len(), 5);
    }
    // Row format with named inputs; columnar with and without the name.
    let named: Vec<Value> = rows.as_array().unwrap().iter().map(|r| json!({"inputs": r})).collect();
    let (status, body) = c.post("/v1/models/digits:predict", json!({"instances": named}).to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(bits(&body["predictions"]), want);
    for request in [
        json!({"inputs": rows}),
        json!({"inputs": {"inputs": rows}}),
        json!({"signature_name": "serving_default", "inputs": rows}),
    ] {
        let (status, body) = c.post("/v1/models/digits:predict", request.to_string());
        assert_eq!(status, 200, "{body}");
        assert_eq!(bits(&body["outputs"]), want);
    }
    // Binary values carry the raw bytes of each row.
    let b64: Vec<Value> = (0..5)
        .map(|i| {
            let row = rivulet::ops::slice(&x, &[i, 0], &[1, -1]).unwrap();
            json!({"b64": base64_of(&row.to_le_bytes().unwrap())})
        })
        .collect();
    let (status, body) = c.post("/v1/models/digits:predict", json!({"instances": b64}).to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(bits(&body["predictions"]), want);

    let metrics = c.rt.block_on(async {
        c.http.get(format!("{}/monitoring/prometheus/metrics", c.base)).send().await.unwrap().text().await.unwrap()
    });
    assert!(
        metrics.contains("rivulet_serving_requests_total{model_name=\"digits\",api=\"predict\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("rivulet_serving_request_latency_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("rivulet_serving_model_versions{model_name=\"digits\"} 1"), "{metrics}");
    server.shutdown().unwrap();
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn bad_requests_get_tensorflow_serving_errors() {
    let dir = temp_dir("errors");
    let base = dir.0.join("m");
    save_version(&base, 1, &model(2));
    let server = start(vec![ModelConfig::new("m", &base)], None);
    let c = Client::new(server.local_addr());
    let row: Vec<f32> = vec![0.5; 8];
    let (strings, short, long) = (vec!["a"; 8], vec![1.0f32; 7], vec![1.0f32; 8]);
    let deep = format!("{{\"instances\": {}1{}}}", "[".repeat(300), "]".repeat(300));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/models/m:predict", "{not json".into(), 400, "JSON Parse error"),
        ("/v1/models/m:predict", "[1, 2]".into(), 400, "JSON object"),
        ("/v1/models/m:predict", json!({"instances": [row], "inputs": [row]}).to_string(), 400, "not both"),
        ("/v1/models/m:predict", json!({"foo": 1}).to_string(), 400, "missing 'inputs' or 'instances'"),
        ("/v1/models/m:predict", json!({"instances": []}).to_string(), 400, "empty"),
        ("/v1/models/m:predict", json!({"instances": [strings]}).to_string(), 400, "expected a number"),
        ("/v1/models/m:predict", json!({"instances": [short]}).to_string(), 400, "shape"),
        ("/v1/models/m:predict", json!({"instances": [long, short]}).to_string(), 400, "ragged"),
        ("/v1/models/m:predict", json!({"instances": [[long]]}).to_string(), 400, "shape"),
        ("/v1/models/m:predict", json!({"instances": vec![vec![1.0; 8]; 9000]}).to_string(), 400, "limit"),
        ("/v1/models/m:predict", deep, 400, "JSON Parse error"),
        ("/v1/models/m:predict", json!({"instances": [{"b64": "!!!"}]}).to_string(), 400, "base64"),
        ("/v1/models/m:predict", json!({"instances": [{"b64": "AAAA"}]}).to_string(), 400, "whole number"),
        ("/v1/models/m:predict", json!({"instances": [{"b64": 5}]}).to_string(), 400, "b64"),
        ("/v1/models/m:predict", json!({"instances": [{"other": row}]}).to_string(), 400, "no input 'other'"),
        (
            "/v1/models/m:predict",
            json!({"signature_name": "nope", "instances": [row]}).to_string(),
            400,
            "not found in signature def",
        ),
        ("/v1/models/m:predict", json!({"signature_name": 3, "instances": [row]}).to_string(), 400, "signature_name"),
        ("/v1/models/m:classify", json!({"instances": [row]}).to_string(), 400, "method_name"),
        ("/v1/models/m:explode", json!({"instances": [row]}).to_string(), 400, "Malformed"),
        ("/v1/models/m/a/b:predict", json!({"instances": [row]}).to_string(), 400, "Malformed"),
        ("/v1/models/nope:predict", json!({"instances": [row]}).to_string(), 404, "Servable not found"),
        ("/v1/models/m/versions/7:predict", json!({"instances": [row]}).to_string(), 404, "Specific(m, 7)"),
        ("/v1/models/m/versions/x:predict", json!({"instances": [row]}).to_string(), 400, "Invalid version"),
        ("/v1/models/m/labels/none:predict", json!({"instances": [row]}).to_string(), 400, "label"),
        ("/v2/models/m:predict", json!({"instances": [row]}).to_string(), 404, "Malformed"),
        ("/v1/models/m:predict", "x".repeat((1 << 20) + 1000), 413, "limit"),
    ];
    for (path, body, code, needle) in cases {
        let (status, v) = c.post(path, body.clone());
        assert_eq!(status, code, "{path} {}: {v}", &body[..body.len().min(80)]);
        let message = v["error"].as_str().unwrap_or_else(|| panic!("no error field: {v}"));
        assert!(message.contains(needle), "{path}: '{message}' lacks '{needle}'");
    }
    assert_eq!(c.get("/v1/models/nope").0, 404);
    assert_eq!(c.get("/v1/models/m/versions/9").0, 404);
    assert_eq!(c.get("/v1/models/m:predict").0, 400);
    // Still serving.
    let (status, _) = c.post("/v1/models/m:predict", json!({"instances": [row]}).to_string());
    assert_eq!(status, 200);
}

/// Resident memory of this process in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

#[test]
fn thousands_of_fuzzed_bodies_get_4xx_and_memory_stays_flat() {
    let dir = temp_dir("fuzz");
    let base = dir.0.join("m");
    save_version(&base, 1, &model(3));
    let server = start(vec![ModelConfig::new("m", &base)], None);
    let c = Client::new(server.local_addr());
    let valid =
        json!({"instances": rows_json(&inputs(3)), "signature_name": "serving_default"}).to_string().into_bytes();
    let url = format!("{}/v1/models/m:predict", c.base);
    // A small deterministic generator.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let run = |rounds: usize, next: &mut dyn FnMut() -> u64| {
        let mut bodies = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let mut b = valid.clone();
            match next() % 4 {
                0 => {
                    let at = (next() as usize) % b.len();
                    b[at] = b"[]{}\":,0123456789.-eE\\ ab\x00\xff"[(next() % 27) as usize];
                }
                1 => b.truncate((next() as usize) % b.len()),
                2 => {
                    let at = (next() as usize) % b.len();
                    let piece = b[at..].iter().take(1 + (next() % 40) as usize).copied().collect::<Vec<u8>>();
                    b.splice(at..at, piece);
                }
                _ => {
                    for _ in 0..8 {
                        let at = (next() as usize) % b.len();
                        b[at] = (next() % 256) as u8;
                    }
                }
            }
            bodies.push(b);
        }
        c.rt.block_on(async {
            for b in bodies {
                let (status, v) = post(&c.http, &url, b.into()).await;
                assert!(status == 200 || (400..500).contains(&status), "{status}: {v}");
                if status != 200 {
                    assert!(v["error"].is_string(), "{v}");
                }
            }
        });
    };
    run(500, &mut next);
    let before = rss();
    run(2500, &mut next);
    let after = rss();
    assert!(after < before + (64 << 20), "memory grew from {before} to {after} bytes");
    let (status, _) = c.post("/v1/models/m:predict", valid);
    assert_eq!(status, 200);
}

#[test]
fn batched_requests_each_get_their_own_rows() {
    let dir = temp_dir("batching");
    let base = dir.0.join("m");
    let m = model(4);
    save_version(&base, 1, &m);
    let batching = BatchingOptions {
        max_batch_size: 8,
        batch_timeout: Duration::from_millis(2),
        max_enqueued_batches: 100,
        num_batch_threads: 2,
    };
    let server = start(vec![ModelConfig::new("m", &base)], Some(batching));
    let c = Client::new(server.local_addr());
    let url = format!("{}/v1/models/m:predict", c.base);
    // 48 concurrent requests of 1 to 3 rows each.
    let requests: Vec<Tensor> =
        (0..48).map(|i| ops::mul(&inputs(1 + i % 3), &Tensor::scalar(1.0 + i as f32 * 0.1)).unwrap()).collect();
    let answers = c.rt.block_on(async {
        let tasks: Vec<_> = requests
            .iter()
            .map(|x| {
                let (http, url, body) = (c.http.clone(), url.clone(), json!({"instances": rows_json(x)}).to_string());
                tokio::spawn(async move { post(&http, &url, body.into()).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (x, (status, body)) in requests.iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        assert_eq!(bits(&body["predictions"]), tensor_bits(&m.predict(x, 8).unwrap()));
    }
    let metrics = c.rt.block_on(async {
        c.http.get(format!("{}/monitoring/prometheus/metrics", c.base)).send().await.unwrap().text().await.unwrap()
    });
    let rows: usize = requests.iter().map(|x| x.shape()[0]).sum();
    assert!(metrics.contains(&format!("rivulet_serving_batch_size_sum{{model_name=\"m\"}} {rows}.0")), "{metrics}");
}

#[test]
fn several_models_with_policies_and_labels() {
    let dir = temp_dir("config");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let (m1, m2, m3) = (model(5), model(6), model(7));
    save_version(&a, 1, &m1);
    save_version(&a, 2, &m2);
    save_version(&b, 1, &m1);
    save_version(&b, 2, &m2);
    save_version(&b, 3, &m3);
    let text = format!(
        "model_config_list {{ config {{ name: 'a' base_path: '{}' model_version_policy {{ all {{}} }} version_labels {{ key: 'old' value: 1 }} }}
           config {{ name: 'b' base_path: '{}' model_version_policy {{ specific {{ versions: 2 }} }} }} }}",
        a.display(),
        b.display()
    );
    let models = rivulet_serve::config::models_from_text(&text).unwrap();
    assert_eq!(models[0].policy, VersionPolicy::All);
    let server = start(models, None);
    let c = Client::new(server.local_addr());
    let x = inputs(2);
    let body = json!({"instances": rows_json(&x)}).to_string();
    let check = |path: &str, m: &Sequential| {
        let (status, v) = c.post(path, body.clone());
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(bits(&v["predictions"]), tensor_bits(&m.predict(&x, 8).unwrap()), "{path}");
    };
    check("/v1/models/a:predict", &m2);
    check("/v1/models/a/versions/1:predict", &m1);
    check("/v1/models/a/labels/old:predict", &m1);
    check("/v1/models/b:predict", &m2);
    assert_eq!(c.post("/v1/models/b/versions/3:predict", body.clone()).0, 404);
    let (_, status) = c.get("/v1/models/a");
    assert_eq!(status["model_version_status"].as_array().unwrap().len(), 2);
}

#[test]
fn a_new_version_is_served_without_a_failed_request() {
    let dir = temp_dir("reload");
    let base = dir.0.join("m");
    let (v1, v2) = (model(8), model(9));
    save_version(&base, 1, &v1);
    let server = start(vec![ModelConfig::new("m", &base)], None);
    let c = Client::new(server.local_addr());
    let x = inputs(4);
    let (want1, want2) = (tensor_bits(&v1.predict(&x, 8).unwrap()), tensor_bits(&v2.predict(&x, 8).unwrap()));
    assert_ne!(want1, want2);
    let body = json!({"instances": rows_json(&x)}).to_string();
    let url = format!("{}/v1/models/m:predict", c.base);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_v2) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, body, stop, ok, failed, saw_v2) =
                (c.http.clone(), url.clone(), body.clone(), stop.clone(), ok.clone(), failed.clone(), saw_v2.clone());
            let (want1, want2) = (want1.clone(), want2.clone());
            c.rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, v) = post(&http, &url, body.clone().into()).await;
                    let got = if status == 200 { Some(bits(&v["predictions"])) } else { None };
                    match got {
                        Some(b) if b == want1 => ok.fetch_add(1, Ordering::Relaxed),
                        Some(b) if b == want2 => saw_v2.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    save_version(&base, 2, &v2);
    // The poll (every 50 ms) loads version 2, then unloads version 1.
    for _ in 0..200 {
        if c.get("/v1/models/m/metadata").1["model_spec"]["version"] == "2" {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    c.rt.block_on(async {
        for t in clients {
            t.await.unwrap();
        }
    });
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 0 && saw_v2.load(Ordering::Relaxed) > 0);
    let (_, status) = c.get("/v1/models/m");
    let states: Vec<(String, String)> = status["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["version"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, vec![("2".into(), "AVAILABLE".into()), ("1".into(), "END".into())]);
    // A damaged version 3 is reported, and version 2 keeps serving.
    std::fs::create_dir_all(base.join("3")).unwrap();
    std::fs::write(base.join("3").join("saved_model.json"), "{}").unwrap();
    for _ in 0..100 {
        if c.get("/v1/models/m/versions/3").0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let (status, v) = c.get("/v1/models/m/versions/3");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model_version_status"][0]["state"], "END");
    assert!(v["model_version_status"][0]["status"]["error_message"].as_str().unwrap().contains("saved model"));
    let (status, v) = c.post("/v1/models/m:predict", body);
    assert_eq!(status, 200);
    assert_eq!(bits(&v["predictions"]), want2);
}
