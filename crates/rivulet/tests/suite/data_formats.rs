//! Dataset sources over files besides CSV, against values written by the
//! tools that made them (`tests/data/make_wine.py` with pyarrow,
//! `tests/data/make_arrays.py` with NumPy): Parquet row groups and column
//! projection, Arrow IPC, `.npy` (big-endian, Fortran order, truncated),
//! `.npz` (stored and deflated), text lines. Damaged files name the file
//! and the row group or rows, after the rows before them. Then `fit`,
//! `evaluate` and `predict` on datasets, and a custom loop over one.

use crate::common::*;
use rivulet::data::{Cardinality, Compression, Dataset, Element};
use rivulet::nn::{Activation, Dense, ExecutionMode, FitOptions, Loss, Metric, Optimizer, Sequential, Verbosity};
use rivulet::{DType, ErrorKind, GradientTape, Result, Tensor};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The first 3 rows of wine.csv, the source of the Parquet and Arrow files.
const FIRST_ALCOHOL: [f64; 3] = [12.25, 13.62, 12.64];

fn f64_column(rows: &[Element], name: &str) -> Result<Vec<f64>> {
    rows.iter().map(|e| e.tensor_named(name)?.to_scalar::<f64>()).collect()
}

#[test]
fn parquet_streams_row_groups_with_projection() -> Result<()> {
    let all = Dataset::parquet(&[data("wine.parquet")], None)?;
    assert_eq!(all.cardinality(), Cardinality::Unknown);
    let rows = all.collect()?;
    assert_eq!(rows.len(), 178);
    let names = rows[0].names().unwrap().to_vec();
    assert_eq!(names.len(), 15);
    assert_eq!((names[0].as_str(), names[13].as_str(), names[14].as_str()), ("alcohol", "class", "label"));
    assert_eq!(&f64_column(&rows, "alcohol")?[..3], &FIRST_ALCOHOL);
    // sum(proline) of the whole table, from pyarrow: 132947.
    assert_eq!(f64_column(&rows, "proline")?.iter().sum::<f64>(), 132947.0);
    assert_eq!(rows[0].get("class")?.as_strings().unwrap().values(), &["class_2".to_string()]);
    assert_eq!(rows[0].tensor_named("label")?.dtype(), DType::I32);
    assert_eq!(rows[0].tensor_named("label")?.to_scalar::<i32>()?, 2);
    // Projection in the order asked, batches across the 50-row groups.
    let picked = Dataset::parquet(&[data("wine.parquet")], Some(&["label", "alcohol"]))?.batch(64, false)?;
    let batches = picked.collect()?;
    assert_eq!(batches.iter().map(|b| b.tensor(0).unwrap().shape().dims()[0]).collect::<Vec<_>>(), vec![64, 64, 50]);
    assert_eq!(batches[0].names().unwrap(), &["label".to_string(), "alcohol".to_string()]);
    assert_eq!(&batches[0].tensor(1)?.to_vec::<f64>()?[..3], &FIRST_ALCOHOL);
    // Two files in turn.
    assert_eq!(Dataset::parquet(&[data("wine.parquet"), data("wine.parquet")], Some(&["hue"]))?.collect()?.len(), 356);
    // Unknown column, missing file, not Parquet.
    let e = Dataset::parquet(&[data("wine.parquet")], Some(&["nope"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("no column 'nope'") && e.to_string().contains("alcohol"), "{e}");
    assert_eq!(kind(Dataset::parquet(&[data("missing.parquet")], None)), ErrorKind::NotFound);
    assert_eq!(kind(Dataset::parquet(&[data("wine.arrow")], None)), ErrorKind::Format);
    Ok(())
}

#[test]
fn damaged_parquet_names_file_row_group_and_column_after_earlier_rows() -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = fresh_dir("data_formats", "parquet");
    let bytes = std::fs::read(data("wine.parquet")).unwrap();
    // Cut: the footer (and so the schema) is gone; the file is named.
    let cut = dir.join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Dataset::parquet(&[&cut], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.to_string().contains("cut.parquet"), "{e}");
    // Overwrite the first page of row group 2's 'hue' column: groups 0 and 1
    // (100 rows) come through, then an error naming group 2 and the column.
    let meta =
        SerializedFileReader::new(std::fs::File::open(data("wine.parquet")).unwrap()).unwrap().metadata().clone();
    let hue = meta.file_metadata().schema_descr().columns().iter().position(|c| c.name() == "hue").unwrap();
    let chunk = meta.row_group(2).column(hue);
    let start = chunk.data_page_offset() as usize;
    let mut damaged = bytes.clone();
    for b in &mut damaged[start..start + chunk.compressed_size() as usize] {
        *b = 0xA5;
    }
    let bad = dir.join("bad.parquet");
    std::fs::write(&bad, &damaged).unwrap();
    let items: Vec<_> = Dataset::parquet(&[&bad], None)?.iter().collect();
    let good = items.iter().take_while(|r| r.is_ok()).count();
    assert_eq!(good, 100);
    let e = items[good].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    let msg = e.to_string();
    assert!(msg.contains("bad.parquet") && msg.contains("row group 2") && msg.contains("column 'hue'"), "{msg}");
    // The rows before the damage are the file's.
    let first: Vec<f64> =
        items[..3].iter().map(|r| r.as_ref().unwrap().tensor_named("alcohol").unwrap().to_scalar().unwrap()).collect();
    assert_eq!(first, FIRST_ALCOHOL);
    Ok(())
}

#[test]
fn arrow_ipc_reads_batches_with_projection() -> Result<()> {
    let rows = Dataset::arrow_ipc(data("wine.arrow"), Some(&["class", "alcohol"]))?.collect()?;
    assert_eq!(rows.len(), 178);
    assert_eq!(rows[0].signature(), "{class: string[], alcohol: f64[]}");
    assert_eq!(&f64_column(&rows, "alcohol")?[..3], &FIRST_ALCOHOL);
    let whole = Dataset::arrow_ipc(data("wine.arrow"), None)?.collect()?;
    assert_eq!(f64_column(&whole, "proline")?.iter().sum::<f64>(), 132947.0);
    assert_eq!(kind(Dataset::arrow_ipc(data("wine.arrow"), Some(&["x"]))), ErrorKind::NotFound);
    assert_eq!(kind(Dataset::arrow_ipc(data("wine.parquet"), None)), ErrorKind::Format);
    Ok(())
}

#[test]
fn npy_streams_rows_in_every_layout_and_names_truncation() -> Result<()> {
    let dir = fresh_dir("data_formats", "npy");
    // Written here: 5000 rows of 3 f32, more than one block.
    let n = 5000usize;
    let t = Tensor::from_vec((0..n * 3).map(|v| v as f32).collect::<Vec<_>>(), [n, 3])?;
    let path = dir.join("big.npy");
    rivulet::save_npy(&t, &path)?;
    let rows = Dataset::npy(&path)?.collect()?;
    assert_eq!(rows.len(), n);
    assert_eq!(rows[4321].tensor(0)?.to_vec::<f32>()?, vec![12963.0, 12964.0, 12965.0]);
    // NumPy's big-endian f8 and a Fortran-order int32 array.
    let be = Dataset::npy(data("big_endian.npy"))?.batch(4, false)?.collect()?;
    assert_eq!(be[0].tensor(0)?.to_vec::<f64>()?, (0..8).map(f64::from).collect::<Vec<_>>());
    let fo = Dataset::npy(data("fortran.npy"))?.collect()?;
    assert_eq!(
        fo.iter().map(|e| e.tensor(0).unwrap().to_vec::<i32>().unwrap()).collect::<Vec<_>>(),
        vec![vec![0, 1], vec![2, 3], vec![4, 5]]
    );
    // Truncated: the complete blocks before the cut, then an error naming the rows.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() - 12 * 100]).unwrap();
    let items: Vec<_> = Dataset::npy(&cut)?.iter().collect();
    let good = items.iter().take_while(|r| r.is_ok()).count();
    assert!(good > 0 && good < n, "{good}");
    let msg = items[good].as_ref().unwrap_err().to_string();
    assert!(msg.contains("cut.npy") && msg.contains("truncated") && msg.contains("of 5000"), "{msg}");
    // A wrong header, and a scalar with no rows.
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4',").unwrap();
    let e = Dataset::npy(&junk).unwrap_err();
    assert!(e.to_string().contains("junk.npy"), "{e}");
    let scalar = dir.join("scalar.npy");
    rivulet::save_npy(&Tensor::scalar(1.0f32), &scalar)?;
    assert!(Dataset::npy(&scalar)?.collect().is_err());
    Ok(())
}

#[test]
fn npz_reads_named_arrays_stored_or_deflated() -> Result<()> {
    let mut keys = Dataset::npz_keys(data("arrays.npz"))?;
    keys.sort();
    assert_eq!(keys, vec!["name", "x", "y"]);
    for file in ["arrays.npz", "arrays_compressed.npz"] {
        let rows = Dataset::npz(data(file), &["y", "x"])?.collect()?;
        assert_eq!(rows.len(), 6, "{file}");
        assert_eq!(rows[5].tensor_named("y")?.to_scalar::<i64>()?, 50);
        assert_eq!(rows[5].tensor_named("x")?.to_vec::<f32>()?, vec![2.5, 2.75]);
        assert_eq!(rows[5].names().unwrap(), &["y".to_string(), "x".to_string()]);
    }
    // A key that is not there; an array NumPy holds but a tensor cannot.
    assert_eq!(kind(Dataset::npz(data("arrays.npz"), &["z"])), ErrorKind::NotFound);
    let e = Dataset::npz(data("arrays.npz"), &["name"]).unwrap_err();
    assert!(e.to_string().contains("'name'"), "{e}");
    assert_eq!(kind(Dataset::npz(data("wine.parquet"), &["x"])), ErrorKind::Format);
    Ok(())
}

#[test]
fn text_lines_across_files_crlf_gzip_and_bad_utf8() -> Result<()> {
    use std::io::Write;
    let dir = fresh_dir("data_formats", "text");
    std::fs::write(dir.join("a.txt"), "one\r\ntwo\n\nfour").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"five\nsix\n").unwrap();
    std::fs::write(dir.join("b.txt.gz"), gz.finish().unwrap()).unwrap();
    let ds = Dataset::text_lines(&[dir.join("a.txt"), dir.join("b.txt.gz")], Compression::Auto)?;
    let lines: Vec<String> =
        ds.iter().map(|e| e.unwrap().field(0).unwrap().as_strings().unwrap().values()[0].clone()).collect();
    assert_eq!(lines, vec!["one", "two", "", "four", "five", "six"]);
    std::fs::write(dir.join("bad.txt"), b"ok\n\xff\xfe\nlater\n").unwrap();
    let items: Vec<_> = Dataset::text_lines(&[dir.join("bad.txt")], Compression::None)?.iter().collect();
    assert!(items[0].is_ok());
    let msg = items[1].as_ref().unwrap_err().to_string();
    assert!(msg.contains("bad.txt") && msg.contains("line 2") && msg.contains("UTF-8"), "{msg}");
    assert!(Dataset::text_lines::<PathBuf>(&[], Compression::None).is_err());
    Ok(())
}

/// Two Gaussian-ish blobs, labels 0 and 1, from a fixed LCG.
fn blobs(n: usize) -> (Tensor, Tensor) {
    let mut s = 12345u64;
    let mut u = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = (i % 2) as f32;
        x.push(2.0 * c - 1.0 + u() as f32);
        x.push(1.0 - 2.0 * c + u() as f32);
        y.push(c as i32);
    }
    (Tensor::from_vec(x, [n, 2]).unwrap(), Tensor::from_vec(y, [n]).unwrap())
}

fn model() -> Sequential {
    let mut m = Sequential::new(vec![Box::new(Dense::new(8, Activation::Tanh))]);
    m.add(Dense::new(2, Activation::Linear));
    m.compile(
        Optimizer::adam(0.05),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        ExecutionMode::Graph,
    );
    m
}

#[test]
fn fit_evaluate_and_predict_take_datasets() -> Result<()> {
    let (x, y) = blobs(200);
    let train = Dataset::from_tensor_slices((x.clone(), y.clone()))?.shuffle(200, 4)?.batch(16, false)?;
    let (vx, vy) = blobs(64);
    let val = Dataset::from_tensor_slices((vx.clone(), vy.clone()))?.batch(10, false)?;
    let m = model();
    let opts = FitOptions {
        epochs: 6,
        verbose: Verbosity::Silent,
        validation_dataset: Some(val.clone()),
        ..FitOptions::default()
    };
    let h = m.fit_dataset(&train, &opts)?;
    assert_eq!(h.epochs.len(), 6);
    let loss = h.get("loss");
    assert!(loss[5] < 0.5 * loss[0], "{loss:?}");
    assert!(h.last("val_accuracy").unwrap() > 0.95, "{:?}", h.get("val_accuracy"));
    // evaluate on the dataset = evaluate on the tensors in the same batches = val_*.
    let on_ds = m.evaluate_dataset(&val)?;
    let on_tensors = m.evaluate(&vx, &vy, 10)?;
    assert_eq!(on_ds, on_tensors);
    assert_eq!(on_ds[0].1, h.last("val_loss").unwrap());
    // predict ignores the label field and concatenates the batches.
    let p = m.predict_dataset(&val)?;
    assert_eq!(dims(&p), vec![64, 2]);
    assert_eq!(values(&p), values(&m.predict(&vx, 64)?));
    // An infinite dataset cannot be an epoch; elements need (x, y).
    assert_eq!(kind(m.fit_dataset(&train.repeat(None), &opts)), ErrorKind::InvalidArgument);
    assert!(m.fit_dataset(&Dataset::from_tensor_slices(x)?.batch(8, false)?, &opts).is_err());
    assert!(m.evaluate_dataset(&val.take(0)).is_err());
    Ok(())
}

#[test]
fn a_custom_training_loop_iterates_a_dataset() -> Result<()> {
    // Least squares y = 3x - 1 by hand-written SGD over shuffled batches.
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 32.0 - 1.0).collect();
    let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 1.0).collect();
    let ds = Dataset::from_tensor_slices((Tensor::from_vec(xs, [64])?, Tensor::from_vec(ys, [64])?))?
        .shuffle(64, 1)?
        .batch(8, true)?;
    let w = rivulet::Variable::new("w", &Tensor::scalar(0.0f32), true)?;
    let b = rivulet::Variable::new("b", &Tensor::scalar(0.0f32), true)?;
    let mut steps = 0;
    for _epoch in 0..60 {
        for e in &ds {
            let (x, y) = e?.into_pair()?;
            let tape = GradientTape::new();
            let pred = rivulet::ops::add(&rivulet::ops::mul(&x, &w.read())?, &b.read())?;
            let err = rivulet::ops::sub(&pred, &y)?;
            let loss = rivulet::ops::mean(&rivulet::ops::mul(&err, &err)?, rivulet::Axes::All, false)?;
            let g = tape.gradient_vars(&loss, &[&w, &b])?;
            let (gw, gb) = (g[0].clone().unwrap(), g[1].clone().unwrap());
            w.assign_sub(&rivulet::ops::mul(&gw, &Tensor::scalar(0.3f32))?)?;
            b.assign_sub(&rivulet::ops::mul(&gb, &Tensor::scalar(0.3f32))?)?;
            steps += 1;
        }
    }
    assert_eq!(steps, 60 * 8);
    assert!((w.current().to_scalar::<f32>()? - 3.0).abs() < 1e-3);
    assert!((b.current().to_scalar::<f32>()? + 1.0).abs() < 1e-3);
    Ok(())
}
