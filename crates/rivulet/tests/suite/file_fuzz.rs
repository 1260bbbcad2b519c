//! Hostile files: a fuzzer over the three formats Rivulet reads from
//! outside, `.npy` arrays, checkpoints (safetensors with a checksum, and the
//! manager's index) and serialized graphs. Inputs are valid files damaged
//! by byte-level mutations (bit flips, random and format-alphabet bytes,
//! deleted, repeated and inserted spans, numbers replaced by extreme ones)
//! and by structure-aware ones (a JSON value replaced by an extreme one).
//! Checkpoints are also re-sealed after a mutation, so that the parser
//! behind the checksum is fuzzed too.
//!
//! Every input must load or fail with a `Format` error, never panic; what
//! loads must be usable (a loaded graph runs, or fails with an error).
//!
//! `RIVULET_FILE_FUZZ_CASES` sets the mutations per format (default sized for CI).

use crate::common::Rng;

use rivulet::io::checkpoint::{from_bytes, to_bytes};
use rivulet::io::{CheckpointData, CheckpointManager};
use rivulet::ops;
use rivulet::{DType, ErrorKind, Graph, Session, Tensor, UNKNOWN};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn cases() -> usize {
    std::env::var("RIVULET_FILE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// What went wrong with inputs, kept short: a count and a few examples.
#[derive(Default)]
struct Findings {
    count: usize,
    examples: Vec<String>,
}

impl Findings {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }

    #[track_caller]
    fn assert_none(&self, format: &str) {
        assert!(self.count == 0, "{format}: {} inputs mishandled, e.g.:\n{}", self.count, self.examples.join("\n"));
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Keep an input that was mishandled, where `RIVULET_FILE_FUZZ_DUMP` names a directory.
fn dump(name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("RIVULET_FILE_FUZZ_DUMP") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), bytes);
    }
}

/// Run `f`, turning a panic into a finding.
fn guarded<T>(findings: &mut Findings, what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            findings.add(format!("{what}: panicked: {}", panic_text(p)));
            None
        }
    }
}

const EXTREME_NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1",
    "255",
    "65536",
    "4294967296",
    "281474976710656",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e308",
    "0.5",
];

/// One random byte-level damage to `b`. `alphabet` holds the bytes the format is made of.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, alphabet: &[u8], hot: usize) {
    if b.is_empty() {
        b.push(alphabet[rng.below(alphabet.len())]);
        return;
    }
    // Most damage lands in the first `hot` bytes (the header), some anywhere.
    let at = if rng.chance(0.75) { rng.below(b.len().min(hot)) } else { rng.below(b.len()) };
    match rng.below(7) {
        0 => b[at] ^= 1 << rng.below(8),
        1 => b[at] = rng.next_u64() as u8,
        2 => b[at] = alphabet[rng.below(alphabet.len())],
        3 => {
            let end = (at + 1 + rng.below(16)).min(b.len());
            b.drain(at..end);
        }
        4 => {
            let end = (at + 1 + rng.below(16)).min(b.len());
            let span: Vec<u8> = b[at..end].to_vec();
            b.splice(at..at, span);
        }
        5 => {
            let ins: Vec<u8> = (0..1 + rng.below(8)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            b.splice(at..at, ins);
        }
        _ => {
            // Replace the run of digits at or after `at` with an extreme number.
            if let Some(start) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) {
                let end = (start..b.len()).find(|&i| !b[i].is_ascii_digit()).unwrap_or(b.len());
                let n = EXTREME_NUMBERS[rng.below(EXTREME_NUMBERS.len())].as_bytes().to_vec();
                b.splice(start..end, n);
            }
        }
    }
}

/// Replace one value somewhere in `doc` with an extreme or ill-typed one.
fn mutate_json(rng: &mut Rng, doc: &mut Json) {
    // Collect the paths of all values, pick one.
    fn count(v: &Json) -> usize {
        1 + match v {
            Json::Array(a) => a.iter().map(count).sum(),
            Json::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn nth(v: &mut Json, mut n: usize) -> Option<&mut Json> {
        if n == 0 {
            return Some(v);
        }
        n -= 1;
        let children: Vec<&mut Json> = match v {
            Json::Array(a) => a.iter_mut().collect(),
            Json::Object(o) => o.values_mut().collect(),
            _ => return None,
        };
        for c in children {
            let k = count(c);
            if n < k {
                return nth(c, n);
            }
            n -= k;
        }
        None
    }
    let total = count(doc);
    let Some(target) = nth(doc, rng.below(total)) else { return };
    *target = match rng.below(10) {
        0 => Json::Null,
        1 => Json::Bool(rng.chance(0.5)),
        2 => Json::String(["", "F32", "I64", "Bool", "Add", "MatMul", "?", "x:0"][rng.below(8)].into()),
        3 => Json::Array(vec![]),
        4 => match target.clone() {
            // An array with one element repeated or one dropped.
            Json::Array(mut a) if !a.is_empty() => {
                if rng.chance(0.5) {
                    let e = a[rng.below(a.len())].clone();
                    a.push(e);
                } else {
                    a.remove(rng.below(a.len()));
                }
                Json::Array(a)
            }
            other => other,
        },
        5 => match target.clone() {
            // An object with one key dropped.
            Json::Object(mut o) if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).unwrap().clone();
                o.remove(&k);
                Json::Object(o)
            }
            other => other,
        },
        6 => match target {
            // A nearby integer.
            Json::Number(n) if n.is_u64() => {
                Json::from(n.as_u64().unwrap().wrapping_add(rng.below(5) as u64).wrapping_sub(2))
            }
            _ => Json::from(rng.below(4)),
        },
        _ => serde_json::from_str(EXTREME_NUMBERS[rng.below(EXTREME_NUMBERS.len())]).unwrap(),
    };
}

/// Use a loaded tensor the way a caller would: read every element and reduce it.
fn use_tensor(t: &Tensor) -> rivulet::Result<()> {
    let _ = t.to_vec::<f64>().or_else(|_| ops::cast(t, DType::F64).and_then(|c| c.to_vec::<f64>()))?;
    if t.dtype().is_float() {
        t.sum_all()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// .npy
// ---------------------------------------------------------------------------

fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let mut b = Vec::new();
    rivulet::write_npy(t, &mut b).unwrap();
    b
}

fn valid_npy_files() -> Vec<Vec<u8>> {
    let ts = [
        Tensor::from_vec(vec![1.5f32, -0.0, f32::NAN, 7.0, 1e30, -2.0], [2, 3]).unwrap(),
        Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap(),
        Tensor::from_vec(vec![i64::MIN, 0, i64::MAX, 5], [2, 1, 2]).unwrap(),
        Tensor::from_vec(vec![1i32, -1], [2]).unwrap(),
        Tensor::from_vec(vec![0u8, 255, 7], [3, 1]).unwrap(),
        Tensor::from_vec(vec![true, false, true, true], [4]).unwrap(),
        Tensor::from_vec(vec![half::f16::from_f32(0.5); 4], [2, 2]).unwrap(),
        Tensor::from_vec(vec![2.5f32], Vec::<usize>::new()).unwrap(),
        Tensor::from_vec(Vec::<f32>::new(), [0, 3]).unwrap(),
    ];
    ts.iter().map(npy_bytes).collect()
}

#[test]
fn damaged_npy_files_load_or_fail_with_format_errors() {
    let valid = valid_npy_files();
    let alphabet = b"\x93NUMPY\x01\x02\x00{}[]()'\":, <>|=0123456789fiubc?TrueFalsdecrorshap_nl\n";
    let mut rng = Rng(0x6e70_795f_6675_7a7a);
    let mut findings = Findings::default();
    let (mut loaded, mut rejected) = (0, 0);
    for case in 0..cases() {
        let mut b = valid[rng.below(valid.len())].clone();
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(&mut rng, &mut b, alphabet, 128);
        }
        let what = format!("npy mutation #{case}");
        let Some(r) = guarded(&mut findings, &what, || rivulet::read_npy(&b[..])) else { continue };
        match r {
            Ok(t) => {
                loaded += 1;
                if let Some(Err(e)) = guarded(&mut findings, &what, || use_tensor(&t)) {
                    // A tensor that loaded must be usable; only memory may run out.
                    if !e.to_string().contains("out of memory") {
                        findings.add(format!("{what}: loaded, then {e}"));
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Format => rejected += 1,
            Err(e) => findings.add(format!("{what}: {:?} error: {e}", e.kind())),
        }
    }
    println!("npy: {loaded} damaged files loaded, {rejected} rejected");
    findings.assert_none("npy");
}

// ---------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------

fn valid_checkpoint() -> Vec<u8> {
    let mut tensors = BTreeMap::new();
    tensors.insert("dense/kernel".to_string(), Tensor::from_vec(vec![0.25f32; 12], [3, 4]).unwrap());
    tensors.insert("dense/bias".to_string(), Tensor::from_vec(vec![-1.0f64, 2.0, 3.5, f64::NAN], [4]).unwrap());
    tensors.insert("step".to_string(), Tensor::from_vec(vec![7i64], Vec::<usize>::new()).unwrap());
    tensors.insert("mask".to_string(), Tensor::from_vec(vec![true, false], [2, 1]).unwrap());
    tensors.insert("empty".to_string(), Tensor::from_vec(Vec::<i32>::new(), [0]).unwrap());
    let mut metadata = BTreeMap::new();
    metadata.insert("epoch".to_string(), "3".to_string());
    to_bytes(&CheckpointData { tensors, metadata }).unwrap()
}

/// Write a fresh checksum into a (damaged) checkpoint, as a forger would:
/// with the digits zeroed, the CRC-32 of every byte, over the digits. None
/// when the damage left no single checksum entry.
fn reseal(mut b: Vec<u8>) -> Option<Vec<u8>> {
    let mut found = b.windows(6).enumerate().filter(|(_, w)| *w == b"crc32:").map(|(i, _)| i + 6);
    let (Some(at), None) = (found.next(), found.next()) else { return None };
    if at + 8 > b.len() {
        return None;
    }
    b[at..at + 8].copy_from_slice(b"00000000");
    let crc = crc32fast::hash(&b);
    b[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    Some(b)
}

/// The checkpoint's header JSON, mutated as a value and written back with
/// its length prefix (and the data after it unchanged).
fn mutate_checkpoint_header(rng: &mut Rng, b: &[u8]) -> Option<Vec<u8>> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header: Json = serde_json::from_slice(b.get(8..8 + n)?).ok()?;
    let mut header = header;
    mutate_json(rng, &mut header);
    let mut text = serde_json::to_vec(&header).ok()?;
    // safetensors pads the header with spaces to a multiple of 8.
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&b[8 + n..]);
    Some(out)
}

fn check_checkpoint(findings: &mut Findings, what: &str, b: &[u8], must_fail: bool) -> bool {
    let Some(r) = guarded(findings, what, || from_bytes(b)) else { return false };
    match r {
        Ok(_) if must_fail => {
            findings.add(format!("{what}: loaded despite a wrong checksum"));
            true
        }
        Ok(data) => {
            for (name, t) in &data.tensors {
                if let Some(Err(e)) = guarded(findings, what, || use_tensor(t)) {
                    findings.add(format!("{what}: tensor {name} loaded, then {e}"));
                }
            }
            true
        }
        Err(e) if e.kind() == ErrorKind::Format => false,
        Err(e) => {
            findings.add(format!("{what}: {:?} error: {e}", e.kind()));
            false
        }
    }
}

#[test]
fn damaged_checkpoints_fail_with_format_errors_even_when_resealed() {
    let valid = valid_checkpoint();
    let alphabet = b"{}[]\":,0123456789 _/FIBUdtypeshapdata_offsetsmetaformatcrc32:abcdef";
    let mut rng = Rng(0x636b_7074_5f66_757a);
    let mut findings = Findings::default();
    let (mut resealed_loaded, mut resealed_rejected) = (0, 0);
    for case in 0..cases() {
        let mut b = if rng.chance(0.3) {
            match mutate_checkpoint_header(&mut rng, &valid) {
                Some(b) => b,
                None => continue,
            }
        } else {
            let mut b = valid.clone();
            let hot = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            for _ in 0..1 + rng.below(3) {
                mutate_bytes(&mut rng, &mut b, alphabet, hot);
            }
            b
        };
        if b == valid {
            continue;
        }
        // As damaged: the checksum no longer matches.
        check_checkpoint(&mut findings, &format!("checkpoint mutation #{case}"), &b, true);
        // Re-sealed: the damage reaches the parser.
        if let Some(sealed) = reseal(std::mem::take(&mut b)) {
            if check_checkpoint(&mut findings, &format!("resealed checkpoint mutation #{case}"), &sealed, false) {
                resealed_loaded += 1;
            } else {
                resealed_rejected += 1;
            }
        }
    }
    println!("checkpoints: resealed damage loaded {resealed_loaded} times, rejected {resealed_rejected} times");
    assert!(resealed_rejected > 0 && resealed_loaded > 0, "the fuzzer must reach both outcomes behind the checksum");
    findings.assert_none("checkpoints");
}

#[test]
fn damaged_checkpoint_indexes_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("rivulet-file-fuzz-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mgr = CheckpointManager::new(&dir, 3);
    let data = from_bytes(&valid_checkpoint()).unwrap();
    for step in 1..=3 {
        mgr.save(step, &data).unwrap();
    }
    let index_path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.extension().is_some_and(|e| e == "safetensors" || e == "lock"))
        .expect("an index file");
    let index = std::fs::read(&index_path).unwrap();
    let alphabet = b"{}[]\":,0123456789 ._-/ckptsafetensorscrc32:abcdefversion";
    let mut rng = Rng(0x696e_6465_785f_667a);
    let mut findings = Findings::default();
    let mut loaded = 0;
    for case in 0..cases() / 4 {
        let mut b = index.clone();
        for _ in 0..1 + rng.below(3) {
            let hot = b.len();
            mutate_bytes(&mut rng, &mut b, alphabet, hot);
        }
        let (b, resealed) = match rng.chance(0.5).then(|| reseal(b.clone())).flatten() {
            Some(sealed) => (sealed, true),
            None => (b, false),
        };
        if b == index {
            continue;
        }
        std::fs::write(&index_path, &b).unwrap();
        let what = format!("index mutation #{case}");
        match guarded(&mut findings, &what, || mgr.restore_latest()) {
            Some(Ok(_)) if !resealed => findings.add(format!("{what}: restored despite a wrong checksum")),
            Some(Ok(Some(d))) => {
                loaded += 1;
                if d.tensors.len() != data.tensors.len() {
                    findings.add(format!("{what}: restored a different checkpoint"));
                }
            }
            Some(Ok(None)) => {}
            Some(Err(e)) if matches!(e.kind(), ErrorKind::Format | ErrorKind::NotFound) => {}
            Some(Err(e)) => findings.add(format!("{what}: {:?} error: {e}", e.kind())),
            None => {}
        }
        // Listing must not panic either.
        let _ = guarded(&mut findings, &what, || mgr.checkpoints());
    }
    std::fs::write(&index_path, &index).unwrap();
    assert!(mgr.restore_latest().unwrap().is_some(), "the undamaged index restores");
    let _ = std::fs::remove_dir_all(&dir);
    println!("checkpoint index: {loaded} damaged indexes still restored");
    findings.assert_none("checkpoint index");
}

// ---------------------------------------------------------------------------
// Serialized graphs
// ---------------------------------------------------------------------------

/// A graph with many kinds of nodes and attributes: placeholders with
/// unknown dimensions, constants of several dtypes, reductions, movement,
/// gathers, casts, splits, control dependencies.
fn rich_graph() -> Graph {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [UNKNOWN, 4]).unwrap();
    let idx = g.placeholder("idx", DType::I64, [3]).unwrap();
    let w = g
        .constant(Tensor::from_vec((0..12).map(|i| i as f32 * 0.25 - 1.0).collect::<Vec<_>>(), [4, 3]).unwrap())
        .unwrap();
    let b = g.constant(Tensor::from_vec(vec![0.5f64, -0.5, 1.0], [3]).unwrap()).unwrap();
    let y = ops::matmul(&x, &w).unwrap();
    let y = ops::relu(&ops::add(&y, &ops::cast(&b, DType::F32).unwrap()).unwrap()).unwrap();
    let _c = g.control_dependencies(&[&w.op().unwrap()]).unwrap();
    let s = ops::sum(&y, [1], true).unwrap();
    drop(_c);
    let r = ops::reshape(&y, &[-1]).unwrap();
    let t = ops::transpose(&y, &[1, 0]).unwrap();
    let gth = ops::gather(&w, &idx, 0, 0).unwrap();
    let sl = ops::slice(&w, &[1, 0], &[2, -1]).unwrap();
    let parts = ops::split(&w, 2, 0).unwrap();
    let cat = ops::concat(&[&parts[1], &parts[0]], 0).unwrap();
    let cs = ops::cumsum(&x, 1, false, true).unwrap();
    let oh = ops::one_hot(&idx, 5).unwrap();
    let mx = ops::max(&t, [0], false).unwrap();
    let am = ops::argmax(&x, 1).unwrap();
    let sm = ops::softmax(&x, -1).unwrap();
    let tiled = ops::tile(&b, &[2]).unwrap();
    let p = ops::pad(&sl, &[(1, 0), (0, 2)], ops::PadMode::Constant, 0.0).unwrap();
    let (tv, ti) = ops::top_k(&x, 2).unwrap();
    let f = ops::fill(&g, [2, 2], f64::NAN, DType::F32).unwrap();
    for (t, name) in [
        (s, "s"),
        (r, "r"),
        (gth, "gth"),
        (cat, "cat"),
        (cs, "cs"),
        (oh, "oh"),
        (mx, "mx"),
        (am, "am"),
        (sm, "sm"),
        (tiled, "tiled"),
        (p, "p"),
        (tv, "tv"),
        (ti, "ti"),
        (f, "f"),
    ] {
        ops::identity(&t).unwrap().named(name).unwrap();
    }
    g
}

/// Run every output of every node of a loaded graph, feeding its
/// placeholders with values of their dtype (unknown dimensions as 2).
fn run_everything(g: &Graph) -> Vec<rivulet::Error> {
    let mut errors = Vec::new();
    let mut feeds: Vec<(Tensor, Tensor)> = Vec::new();
    let mut fetches: Vec<Tensor> = Vec::new();
    for node in g.nodes() {
        let Ok(op) = g.operation(&node.name) else { continue };
        for i in 0..op.num_outputs() {
            let Ok(t) = op.output(i) else { continue };
            if op.op_type() == "Placeholder" {
                let dims: Vec<usize> =
                    t.shape().dims().iter().map(|&d| if d == UNKNOWN { 2 } else { d.min(8) }).collect();
                let n: usize = dims.iter().product();
                let v = Tensor::from_vec((0..n).map(|i| (i % 3) as f64).collect::<Vec<_>>(), dims)
                    .and_then(|v| ops::cast(&v, t.dtype()));
                match v {
                    Ok(v) => feeds.push((t, v)),
                    Err(e) => errors.push(e),
                }
            } else {
                fetches.push(t);
            }
        }
    }
    let s = Session::new(g);
    let feed_refs: Vec<(&Tensor, &Tensor)> = feeds.iter().map(|(a, b)| (a, b)).collect();
    for f in &fetches {
        if let Err(e) = s.run(&[f], &feed_refs) {
            errors.push(e);
        }
    }
    errors
}

#[test]
fn the_rich_graph_runs_once_loaded() {
    let g = Graph::from_json(&rich_graph().to_json().unwrap()).unwrap();
    let errors = run_everything(&g);
    assert!(errors.is_empty(), "{errors:?}");
}

/// Regression: a reduction whose axes repeat or are out of order (which
/// the public functions never make) loaded, and its kernel indexed out of
/// bounds.
#[test]
fn reductions_with_repeated_or_unordered_axes_do_not_load() {
    let text = rich_graph().to_json().unwrap();
    for axes in [[1, 1], [1, 0]] {
        let mut doc: Json = serde_json::from_str(&text).unwrap();
        let sum = doc["nodes"].as_array_mut().unwrap().iter_mut().find(|n| n["op"]["type"] == "reduce").unwrap();
        sum["op"]["axes"] = serde_json::json!(axes);
        let Err(e) = Graph::from_json(&doc.to_string()) else { panic!("axes {axes:?} loaded") };
        assert_eq!(e.kind(), ErrorKind::Format, "{e}");
        assert!(e.to_string().contains("increasing order"), "{e}");
    }
}

#[test]
fn damaged_graph_documents_load_and_run_or_fail_with_format_errors() {
    let text = rich_graph().to_json().unwrap();
    let doc: Json = serde_json::from_str(&text).unwrap();
    let alphabet = b"0123456789[]{}\",:-.eE truefalsnul";
    let mut rng = Rng(0x6772_6170_685f_667a);
    let mut findings = Findings::default();
    let (mut loaded, mut rejected, mut run_errors) = (0, 0, 0);
    for case in 0..cases() {
        let damaged = if rng.chance(0.6) {
            let mut d = doc.clone();
            for _ in 0..1 + rng.below(2) {
                mutate_json(&mut rng, &mut d);
            }
            serde_json::to_string(&d).unwrap()
        } else {
            let mut b = text.clone().into_bytes();
            for _ in 0..1 + rng.below(3) {
                let hot = b.len();
                mutate_bytes(&mut rng, &mut b, alphabet, hot);
            }
            String::from_utf8_lossy(&b).into_owned()
        };
        let what = format!("graph mutation #{case}");
        let Some(r) = guarded(&mut findings, &what, || Graph::from_json(&damaged)) else { continue };
        match r {
            Ok(g) => {
                loaded += 1;
                match guarded(&mut findings, &format!("{what} (running it)"), || run_everything(&g)) {
                    Some(errors) => run_errors += errors.len(),
                    None => dump(&format!("graph-{case}.json"), damaged.as_bytes()),
                }
            }
            Err(e) if e.kind() == ErrorKind::Format => rejected += 1,
            Err(e) => findings.add(format!("{what}: {:?} error: {e}", e.kind())),
        }
    }
    println!("graphs: {loaded} damaged documents loaded and ran ({run_errors} run errors), {rejected} rejected");
    findings.assert_none("graphs");
}
