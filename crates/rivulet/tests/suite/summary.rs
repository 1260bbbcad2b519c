//! TensorBoard event files (`rivulet::summary`) and the `TensorBoard`
//! callback: everything written is read back with our reader, which checks
//! the TFRecord CRCs, and compared with hand-computed values.

use rivulet::nn::{
    Activation, Dense, ExecutionMode, FitOptions, Loss, Metric, Optimizer, Sequential, SharedCallback, TensorBoard,
    UpdateFreq, Verbosity,
};
use rivulet::summary::proto::summary::value::Value;
use rivulet::summary::proto::{attr_value, event, DataType, Event, GraphDef, HistogramProto, Message};
use rivulet::summary::{
    graph_def, histogram_proto, masked_crc32c, read_events, split_records, tfrecord, SummaryWriter, DEFAULT_BUCKETS,
    FILE_VERSION,
};
use rivulet::{ops, DType, ErrorKind, Graph, Tensor};
use std::path::{Path, PathBuf};

type TestResult = rivulet::Result<()>;

/// A fresh directory, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("rivulet-summary-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// The event files of a log directory, sorted by name.
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    v.sort();
    v
}

/// `(tag, step, value)` of every summary value in `events`.
fn values(events: &[Event]) -> Vec<(String, i64, Value)> {
    let mut out = Vec::new();
    for e in events {
        if let Some(event::What::Summary(s)) = &e.what {
            for v in &s.value {
                out.push((v.tag.clone(), e.step, v.value.clone().expect("a value")));
            }
        }
    }
    out
}

/// The scalar series of `tag`: `(step, value)`.
fn scalars(events: &[Event], tag: &str) -> Vec<(i64, f32)> {
    values(events)
        .into_iter()
        .filter(|(t, _, _)| t == tag)
        .map(|(_, step, v)| match v {
            Value::SimpleValue(x) => (step, x),
            other => panic!("{tag} is not a scalar: {other:?}"),
        })
        .collect()
}

/// CRC-32C bit by bit (reflected polynomial 0x82F63B78): the reference the
/// library's table-driven `crc32c` is checked against.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn masked_crc32c_known_answers() {
    // The CRC-32C check value: crc("123456789") = 0xE3069283; masked, it is
    // rotated right by 15 bits plus 0xa282ead8.
    let masked = masked_crc32c(b"123456789");
    assert_eq!(masked.wrapping_sub(0xa282_ead8).rotate_left(15), 0xE306_9283);
    assert_eq!(masked, 0xC78A_B0E5);
    for data in [&b""[..], b"a", b"hello, tensorboard", &[0u8; 37], &[0xffu8; 5]] {
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8, wrapping.
        let crc = crc32c_bitwise(data);
        assert_eq!(masked_crc32c(data), crc.rotate_right(15).wrapping_add(0xa282_ead8), "{data:?}");
    }
    // A whole record of a known payload.
    let record = tfrecord(b"abc");
    let mut expected = vec![3, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&0x0E49_99B0u32.to_le_bytes());
    expected.extend_from_slice(b"abc");
    expected.extend_from_slice(&0x21F1_576Eu32.to_le_bytes());
    assert_eq!(record, expected);
    let two = [tfrecord(b"abc"), tfrecord(b"")].concat();
    let records = split_records(&two).unwrap();
    assert_eq!(records, vec![(0, &b"abc"[..]), (19, &b""[..])]);
}

#[test]
fn scalars_round_trip_with_steps_and_the_file_version_first() -> TestResult {
    let dir = temp_dir("scalars");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let writer = SummaryWriter::create(dir.join("run"))?;
    writer.scalar("loss", 0.75, 0)?;
    writer.scalar("loss", 0.5, 1)?;
    writer.scalar("lr", 1e-3, 1)?;
    writer.scalar("loss", 1.0 / 3.0, 10)?;
    let path = writer.path().to_path_buf();
    writer.close()?;

    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(&parts[..3], &["events", "out", "tfevents"], "{name}");
    assert_eq!(parts[3].len(), 10, "{name}: seconds in 10 digits");
    assert!(parts[3].parse::<u64>().is_ok(), "{name}");
    assert_eq!(parts[parts.len() - 2], std::process::id().to_string(), "{name}");
    assert_eq!(event_files(&dir.join("run")), vec![path.clone()]);

    let events = read_events(&path)?;
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].what, Some(event::What::FileVersion(FILE_VERSION.to_string())));
    assert_eq!(FILE_VERSION, "brain.Event:2");
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(events.iter().all(|e| e.wall_time >= before - 1.0 && e.wall_time <= after + 1.0));
    assert_eq!(scalars(&events, "loss"), vec![(0, 0.75), (1, 0.5), (10, (1.0f64 / 3.0) as f32)]);
    assert_eq!(scalars(&events, "lr"), vec![(1, 1e-3f64 as f32)]);
    assert_eq!(SummaryWriter::create(&*dir)?.scalar("", 1.0, 0).map_err(|e| e.kind()), Err(ErrorKind::InvalidArgument));
    Ok(())
}

#[test]
fn histogram_buckets_are_hand_computed() -> TestResult {
    // min 1, max 5, 4 buckets of width 1: limits 2, 3, 4, 5; a value on a
    // limit belongs to the bucket above it, the maximum to the last.
    let h = histogram_proto(&[1.0, 2.0, 2.5, 3.0, 5.0], 4)?;
    let expected = HistogramProto {
        min: 1.0,
        max: 5.0,
        num: 5.0,
        sum: 13.5,
        sum_squares: 1.0 + 4.0 + 6.25 + 9.0 + 25.0,
        bucket_limit: vec![2.0, 3.0, 4.0, 5.0],
        bucket: vec![1.0, 2.0, 1.0, 1.0],
    };
    assert_eq!(h, expected);
    // All equal: one bucket; none: no buckets.
    let same = histogram_proto(&[2.0, 2.0, 2.0], 30)?;
    assert_eq!((same.bucket_limit, same.bucket, same.num, same.sum), (vec![2.0], vec![3.0], 3.0, 6.0));
    let empty = histogram_proto(&[], 30)?;
    assert_eq!(empty, HistogramProto::default());
    for bad in [f64::NAN, f64::INFINITY] {
        assert_eq!(histogram_proto(&[1.0, bad], 30).map_err(|e| e.kind()), Err(ErrorKind::InvalidArgument));
    }
    assert!(histogram_proto(&[1.0], 0).is_err());

    // Through the writer: 0..=30 as an i32 tensor in the default 30
    // buckets of width 1: one value each, and 29 and 30 share the last.
    let dir = temp_dir("histograms");
    let writer = SummaryWriter::create(&*dir)?;
    let ints: Vec<i32> = (0..=30).collect();
    writer.histogram("ints", &Tensor::from_vec(ints, [31])?, 3)?;
    writer.histogram("slice", &[1.0, 2.0, 2.5, 3.0, 5.0][..], 4)?;
    writer.histogram("array", &[0.5, 0.5], 5)?;
    assert!(writer.histogram("bad", &Tensor::from_vec(vec![true, false], [2])?, 0).is_err());
    writer.flush()?;
    let events = read_events(writer.path())?;
    let histos: Vec<(String, i64, HistogramProto)> = values(&events)
        .into_iter()
        .map(|(tag, step, v)| match v {
            Value::Histo(h) => (tag, step, h),
            other => panic!("not a histogram: {other:?}"),
        })
        .collect();
    assert_eq!(histos.len(), 3);
    let (tag, step, h) = &histos[0];
    assert_eq!((tag.as_str(), *step), ("ints", 3));
    assert_eq!((h.min, h.max, h.num, h.sum, h.sum_squares), (0.0, 30.0, 31.0, 465.0, 9455.0));
    assert_eq!(h.bucket_limit, (1..=30).map(f64::from).collect::<Vec<_>>());
    let mut counts = vec![1.0; 30];
    counts[29] = 2.0;
    assert_eq!(h.bucket, counts);
    // The slice in the default 30 buckets (width 4/30): 1 in the first,
    // 2 in the 8th (limits 1.93.. and 2.07..), 2.5 in the 12th (2.47..,
    // 2.6), 3 (on the 15th limit) in the 16th, 5 in the last.
    let mut counts = vec![0.0; 30];
    for i in [0, 7, 11, 15, 29] {
        counts[i] = 1.0;
    }
    assert_eq!((histos[1].0.as_str(), histos[1].1, &histos[1].2.bucket), ("slice", 4, &counts));
    assert_eq!(histos[1].2, histogram_proto(&[1.0, 2.0, 2.5, 3.0, 5.0], DEFAULT_BUCKETS)?);
    assert_eq!((histos[2].2.bucket.clone(), histos[2].2.num), (vec![2.0], 2.0));
    Ok(())
}

/// The pixels of a PNG, decoded by the `image` crate, with its color type.
fn decode_png(bytes: &[u8]) -> (u32, u32, image::ColorType, Vec<u8>) {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("a PNG");
    (img.width(), img.height(), img.color(), img.as_bytes().to_vec())
}

#[test]
fn images_are_pngs_of_the_right_pixels() -> TestResult {
    let dir = temp_dir("images");
    let writer = SummaryWriter::create(&*dir)?;
    // 2 x 3 RGB, u8.
    let rgb: Vec<u8> = (0..18).map(|i| (i * 14) as u8).collect();
    writer.image("rgb", &Tensor::from_vec(rgb.clone(), [2, 3, 3])?, 7)?;
    // Floats in [0, 1] become v * 255.5, truncated and clamped.
    let gray = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 0.25, -0.5, 2.0], [2, 3, 1])?;
    writer.image("gray", &gray, 8)?;
    // A batch of two 1 x 2 RGBA images.
    let rgba: Vec<u8> = (0..16).map(|i| 255 - i as u8).collect();
    writer.image("batch", &Tensor::from_vec(rgba.clone(), [2, 1, 2, 4])?, 9)?;
    for bad in [
        Tensor::from_vec(vec![0u8; 10], [2, 1, 5])?,
        Tensor::from_vec(vec![0u8; 4], [4])?,
        Tensor::from_vec(vec![0i32; 4], [2, 2, 1])?,
        Tensor::from_vec(Vec::<u8>::new(), [0, 2, 1])?,
    ] {
        assert!(writer.image("bad", &bad, 0).is_err(), "{:?}", bad.shape());
    }
    writer.flush()?;
    let events = read_events(writer.path())?;
    let images: Vec<(String, i64, _)> = values(&events)
        .into_iter()
        .map(|(tag, step, v)| match v {
            Value::Image(img) => (tag, step, img),
            other => panic!("not an image: {other:?}"),
        })
        .collect();
    let tags: Vec<(&str, i64)> = images.iter().map(|(t, s, _)| (t.as_str(), *s)).collect();
    assert_eq!(tags, vec![("rgb", 7), ("gray", 8), ("batch/image/0", 9), ("batch/image/1", 9)]);

    let img = &images[0].2;
    assert_eq!((img.height, img.width, img.colorspace), (2, 3, 3));
    assert_eq!(decode_png(&img.encoded_image_string), (3, 2, image::ColorType::Rgb8, rgb));
    let img = &images[1].2;
    assert_eq!((img.height, img.width, img.colorspace), (2, 3, 1));
    assert_eq!(decode_png(&img.encoded_image_string), (3, 2, image::ColorType::L8, vec![0, 127, 255, 63, 0, 255]));
    for (k, (_, _, img)) in images[2..].iter().enumerate() {
        assert_eq!((img.height, img.width, img.colorspace), (1, 2, 4));
        assert_eq!(
            decode_png(&img.encoded_image_string),
            (2, 1, image::ColorType::Rgba8, rgba[k * 8..(k + 1) * 8].to_vec())
        );
    }
    Ok(())
}

#[test]
fn text_is_a_string_tensor_for_the_text_plugin() -> TestResult {
    let dir = temp_dir("text");
    let writer = SummaryWriter::create(&*dir)?;
    writer.text("notes", "# Hello\n*ünïcode*", 2)?;
    writer.flush()?;
    let events = read_events(writer.path())?;
    let Some(event::What::Summary(s)) = &events[1].what else { panic!("{:?}", events[1]) };
    assert_eq!(events[1].step, 2);
    let v = &s.value[0];
    assert_eq!(v.tag, "notes");
    let plugin = v.metadata.as_ref().and_then(|m| m.plugin_data.as_ref()).expect("plugin data");
    assert_eq!((plugin.plugin_name.as_str(), plugin.content.len()), ("text", 0));
    let Some(Value::Tensor(t)) = &v.value else { panic!("{v:?}") };
    assert_eq!(t.dtype, DataType::DtString as i32);
    assert_eq!(t.tensor_shape.as_ref().map(|s| s.dim.len()), Some(0));
    assert_eq!(t.string_val, vec!["# Hello\n*ünïcode*".as_bytes().to_vec()]);
    Ok(())
}

#[test]
fn graph_def_lists_the_nodes_and_their_inputs() -> TestResult {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)])?;
    let (top, idx) = ops::top_k(&x, 2)?;
    let first = ops::cast(&idx, DType::F32)?;
    let gate = ops::identity(&x)?;
    let sum = {
        let _after = g.control_dependencies(&[&gate.op().unwrap()])?;
        ops::add(&top, &first)?
    };
    let sum_op = sum.op().unwrap();
    let top_op = top.op().unwrap();
    let def = graph_def(&g);
    let names: Vec<&str> = def.node.iter().map(|n| n.name.as_str()).collect();
    let expected: Vec<String> = g.nodes().iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let node = |name: &str| def.node.iter().find(|n| n.name == name).unwrap();

    let px = node("x");
    assert_eq!((px.op.as_str(), px.input.len()), ("Placeholder", 0));
    let Some(attr_value::Value::Shape(shape)) = &px.attr["shape"].value else { panic!("{px:?}") };
    assert_eq!(shape.dim.iter().map(|d| d.size).collect::<Vec<_>>(), vec![-1, 3]);
    assert_eq!(px.attr["dtype"].value, Some(attr_value::Value::Type(DataType::DtFloat as i32)));

    // Output 0 is named by its node, output 1 as `node:1`; control inputs as `^node`.
    let cast = node(&first.op().unwrap().name());
    assert_eq!(cast.input, vec![format!("{}:1", top_op.name())]);
    let add = node(&sum_op.name());
    assert_eq!(add.op, sum_op.op_type());
    let gate_name = gate.op().unwrap().name();
    assert_eq!(add.input, vec![top_op.name(), cast.name.clone(), format!("^{gate_name}")]);
    let topk = node(&top_op.name());
    let Some(attr_value::Value::List(list)) = &topk.attr["_output_shapes"].value else { panic!("{topk:?}") };
    let shapes: Vec<Vec<i64>> = list.shape.iter().map(|s| s.dim.iter().map(|d| d.size).collect()).collect();
    assert_eq!(shapes, vec![vec![-1, 2], vec![-1, 2]]);

    // Through the writer, as a graph_def event.
    let dir = temp_dir("graph");
    let writer = SummaryWriter::create(&*dir)?;
    writer.graph(&g)?;
    writer.flush()?;
    let events = read_events(writer.path())?;
    let Some(event::What::GraphDef(bytes)) = &events[1].what else { panic!("{:?}", events[1]) };
    assert_eq!(GraphDef::decode(&bytes[..]).unwrap(), def);
    Ok(())
}

#[test]
fn damaged_files_are_errors_naming_the_file_and_offset() -> TestResult {
    let dir = temp_dir("damaged");
    let writer = SummaryWriter::create(&*dir)?;
    writer.scalar("a", 1.0, 1)?;
    writer.scalar("b", 2.0, 2)?;
    let path = writer.path().to_path_buf();
    writer.close()?;
    let good = std::fs::read(&path).unwrap();
    let records = split_records(&good)?;
    assert_eq!(records.len(), 3);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();

    let damaged = dir.join("damaged");
    let read_damaged = |bytes: &[u8]| {
        std::fs::write(&damaged, bytes).unwrap();
        read_events(&damaged).expect_err("a damaged file must not read")
    };
    // Every single flipped bit anywhere is caught by one of the CRCs.
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let e = read_damaged(&bad);
        assert_eq!(e.kind(), ErrorKind::Format, "byte {at}: {e}");
        assert!(e.to_string().contains("damaged"), "{e}");
    }
    // A flip in the data of the second record names that record's offset.
    let second = records[1].0;
    let mut bad = good.clone();
    bad[second + 14] ^= 1;
    let e = read_damaged(&bad);
    assert!(e.to_string().contains(&format!("corrupt record at offset {second}")), "{e}");
    // Cut anywhere inside a record: truncated, named by file and offset.
    for cut in 1..good.len() {
        if records.iter().any(|&(off, _)| off == cut) {
            continue; // a cut between records leaves a shorter, valid file
        }
        let e = read_damaged(&good[..cut]);
        assert_eq!(e.kind(), ErrorKind::Format, "cut at {cut}: {e}");
        assert!(e.to_string().contains("damaged") && e.to_string().contains("truncated record at offset"), "{e}");
    }
    // A forged huge length with a valid CRC allocates nothing and errors.
    let len = u64::MAX.to_le_bytes();
    let mut forged = len.to_vec();
    forged.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    forged.extend_from_slice(b"tiny");
    let e = read_damaged(&forged);
    assert!(e.to_string().contains("truncated record at offset 0"), "{e}");
    // A valid record that is not an Event.
    let e = read_damaged(&tfrecord(&[0xff, 0xff, 0xff]));
    assert!(e.to_string().contains("not a tensorflow.Event"), "{e}");
    // A missing file names itself.
    let e = read_events(dir.join("missing")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing"), "{e}");
    // The good file still reads.
    assert_eq!(read_events(&path)?.len(), 3, "{name}");
    Ok(())
}

fn separable(n: usize) -> (Tensor, Tensor) {
    let mut xs = Vec::with_capacity(n * 2);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 0.91).cos());
        xs.extend([a, b]);
        ys.push(i32::from(a + b > 0.0));
    }
    (Tensor::from_vec(xs, [n, 2]).unwrap(), Tensor::from(ys))
}

#[test]
fn fit_with_the_tensorboard_callback_logs_what_history_holds() -> TestResult {
    let dir = temp_dir("fit");
    let (x, y) = separable(100);
    let mut model = Sequential::new(vec![Box::new(Dense::new(4, Activation::Tanh))]);
    model.add(Dense::new(2, Activation::Linear));
    model.compile(
        Optimizer::adam(0.05),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        ExecutionMode::Graph,
    );
    let tb = TensorBoard::new(&*dir).histogram_freq(2).update_freq(UpdateFreq::Every(3));
    let options = FitOptions {
        epochs: 3,
        batch_size: 16,
        validation_split: 0.2,
        verbose: Verbosity::Silent,
        ..FitOptions::default()
    }
    .callback(SharedCallback::new(tb));
    let history = model.fit(&x, &y, &options)?;

    let train_files = event_files(&dir.join("train"));
    let val_files = event_files(&dir.join("validation"));
    assert_eq!((train_files.len(), val_files.len()), (1, 1));
    let train = read_events(&train_files[0])?;
    let val = read_events(&val_files[0])?;
    let series = |events: &[Event], tag: &str| scalars(events, tag);
    let expect = |key: &str| -> Vec<(i64, f32)> {
        history.get(key).into_iter().enumerate().map(|(e, v)| (e as i64, v as f32)).collect()
    };
    assert_eq!(series(&train, "epoch_loss"), expect("loss"));
    assert_eq!(series(&train, "epoch_accuracy"), expect("accuracy"));
    assert_eq!(series(&val, "epoch_loss"), expect("val_loss"));
    assert_eq!(series(&val, "epoch_accuracy"), expect("val_accuracy"));
    assert_eq!(series(&train, "epoch_loss").len(), 3);
    assert!(series(&train, "epoch_val_loss").is_empty());

    // 80 training examples in batches of 16: 5 a epoch, 15 in all;
    // every third batch step (0, 3, ..., 12) is written.
    let batch_steps: Vec<i64> = series(&train, "batch_loss").iter().map(|(s, _)| *s).collect();
    assert_eq!(batch_steps, vec![0, 3, 6, 9, 12]);
    assert_eq!(series(&train, "batch_accuracy").len(), 5);
    // The last batch of an epoch logs the epoch's loss so far: all of it.
    let batch_loss = series(&train, "batch_loss");
    assert_eq!(batch_loss.iter().find(|(s, _)| *s == 9).map(|p| p.1), expect("loss").get(1).map(|p| p.1));

    // Histograms of every weight at epochs 0 and 2, tagged by variable name.
    let weights = model.get_weights()?;
    let histos: Vec<(String, i64, HistogramProto)> = values(&train)
        .into_iter()
        .filter_map(|(tag, step, v)| match v {
            Value::Histo(h) => Some((tag, step, h)),
            _ => None,
        })
        .collect();
    let mut expected_tags = Vec::new();
    for epoch in [0, 2] {
        for (name, _) in &weights {
            expected_tags.push((name.replace(':', "_"), epoch));
        }
    }
    let tags: Vec<(String, i64)> = histos.iter().map(|(t, s, _)| (t.clone(), *s)).collect();
    assert_eq!(tags, expected_tags);
    // The last ones are of the final weights.
    let last = &histos[histos.len() - weights.len()..];
    for ((_, _, h), (name, w)) in last.iter().zip(&weights) {
        let v: Vec<f64> = w.to_vec::<f32>()?.into_iter().map(f64::from).collect();
        assert_eq!(h.num as usize, v.len(), "{name}");
        assert_eq!(*h, histogram_proto(&v, 30)?, "{name}");
    }

    // The graph, once, with the model graph's nodes.
    let graphs: Vec<GraphDef> = train
        .iter()
        .filter_map(|e| match &e.what {
            Some(event::What::GraphDef(b)) => Some(GraphDef::decode(&b[..]).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(graphs.len(), 1);
    let g = model.graph().expect("a graph-mode model has a graph");
    assert!(graphs[0].node.len() > 10);
    assert!(graphs[0].node.len() <= g.num_nodes());
    let names: std::collections::BTreeSet<String> = g.nodes().into_iter().map(|n| n.name).collect();
    assert!(graphs[0].node.iter().all(|n| names.contains(&n.name)));
    Ok(())
}

#[test]
fn eager_models_log_without_a_graph_and_bad_settings_are_errors() -> TestResult {
    let dir = temp_dir("eager");
    let (x, y) = separable(40);
    let mut model = Sequential::new(vec![Box::new(Dense::new(2, Activation::Linear))]);
    model.compile(
        Optimizer::sgd(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
        ExecutionMode::Eager,
    );
    let options = FitOptions { epochs: 2, batch_size: 20, verbose: Verbosity::Silent, ..FitOptions::default() };
    let tb = TensorBoard::new(&*dir).update_freq(UpdateFreq::Batch);
    let history = model.fit(&x, &y, &options.clone().callback(SharedCallback::new(tb)))?;
    let train = read_events(&event_files(&dir.join("train"))[0])?;
    let expected: Vec<(i64, f32)> =
        history.get("loss").iter().enumerate().map(|(e, v)| (e as i64, *v as f32)).collect();
    assert_eq!(scalars(&train, "epoch_loss"), expected);
    assert_eq!(scalars(&train, "batch_loss").iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(train.iter().all(|e| !matches!(e.what, Some(event::What::GraphDef(_)))));
    // Without validation data there is no validation run.
    assert!(!dir.join("validation").exists());

    let tb = TensorBoard::new(dir.join("bad")).update_freq(UpdateFreq::Every(0));
    let e = model.fit(&x, &y, &options.callback(SharedCallback::new(tb))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    Ok(())
}
