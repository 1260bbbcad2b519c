//! `rivulet::data::Dataset`: every source and transform against
//! hand-computed results (epoch boundaries, remainders, seeded shuffles
//! that differ across epochs, parallel map in order), CSV parsing with
//! quotes, gzip, schemas and defaults, and malformed input: an error naming
//! the file, line and column, after the rows before it.

use crate::common::*;
use rivulet::data::{
    Cardinality, ColumnType, Compression, CsvColumn, CsvOptions, Dataset, DefaultValue, Element, Field, Strings,
};
use rivulet::{DType, ErrorKind, Scalar, Tensor};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

type TestResult = rivulet::Result<()>;

/// The i64 scalars of a dataset of one i64 field per element.
fn i64s(ds: &Dataset) -> rivulet::Result<Vec<i64>> {
    ds.iter().map(|e| e?.tensor(0)?.to_scalar::<i64>()).collect()
}

/// Each element's first field as a flat i64 vector.
fn rows(ds: &Dataset) -> rivulet::Result<Vec<Vec<i64>>> {
    ds.iter().map(|e| e?.tensor(0)?.to_vec::<i64>()).collect()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn from_tensor_slices_yields_rows_with_names_and_tuples() -> TestResult {
    let x = Tensor::from_vec((0..10).map(|v| v as f32).collect::<Vec<_>>(), [5, 2])?;
    let y = Tensor::from_vec(vec![1i32, 0, 1, 1, 0], [5])?;
    let ds = Dataset::from_tensor_slices((x, y))?;
    assert_eq!(ds.cardinality(), Cardinality::Finite(5));
    let all = ds.collect()?;
    assert_eq!(all.len(), 5);
    assert_eq!(all[3].tensor(0)?.to_vec::<f32>()?, vec![6.0, 7.0]);
    assert_eq!(all[3].tensor(0)?.shape().dims(), &[2]);
    assert_eq!(all[3].tensor(1)?.to_scalar::<i32>()?, 1);
    let (a, b) = all[4].clone().into_pair()?;
    assert_eq!((a.to_vec::<f32>()?, b.to_scalar::<i32>()?), (vec![8.0, 9.0], 0));
    // A dictionary: fields by name.
    let d = Element::dict(vec![
        ("id".into(), Field::Tensor(Tensor::from_vec(vec![7i64, 8], [2])?)),
        ("word".into(), Field::Strings(Strings::vector(["a", "b"]))),
    ])?;
    let e = Dataset::from_tensor_slices(d)?.collect()?;
    assert_eq!(e[1].tensor_named("id")?.to_scalar::<i64>()?, 8);
    assert_eq!(e[1].get("word")?.as_strings().unwrap().values(), &["b".to_string()]);
    assert_eq!(e[1].signature(), "{id: i64[], word: string[]}");
    assert_eq!(e[0].get("nope").unwrap_err().kind(), ErrorKind::NotFound);
    // Rows must agree; scalars have none.
    let bad = Dataset::from_tensor_slices((Tensor::zeros([3], DType::F32)?, Tensor::zeros([4], DType::F32)?));
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::Shape);
    assert!(Dataset::from_tensor_slices(Tensor::scalar(1.0f32)).is_err());
    Ok(())
}

#[test]
fn range_from_iter_and_generator_are_reiterable() -> TestResult {
    assert_eq!(i64s(&Dataset::range(0, 10, 3)?)?, vec![0, 3, 6, 9]);
    assert_eq!(i64s(&Dataset::range(5, 0, -2)?)?, vec![5, 3, 1]);
    assert_eq!(i64s(&Dataset::range(3, 3, 1)?)?, Vec::<i64>::new());
    assert_eq!(Dataset::range(0, 10, 3)?.cardinality(), Cardinality::Finite(4));
    assert!(Dataset::range(0, 1, 0).is_err());
    // 3000 elements: several internal chunks.
    let ds = Dataset::from_iter((0..3000i64).map(Tensor::scalar).collect::<Vec<_>>());
    for _ in 0..2 {
        assert_eq!(i64s(&ds)?, (0..3000).collect::<Vec<_>>());
    }
    // A generator's error comes after the elements before it.
    let g = Dataset::from_generator(|| {
        (0..5i64).map(|i| {
            if i == 3 {
                Err(rivulet::Error::new(ErrorKind::InvalidArgument, "bad three"))
            } else {
                Ok(Tensor::scalar(i).into())
            }
        })
    });
    let items: Vec<_> = g.iter().collect();
    assert_eq!(items.len(), 5);
    assert!(items[3].as_ref().unwrap_err().message().contains("bad three"));
    assert_eq!(items[4].as_ref().unwrap().tensor(0)?.to_scalar::<i64>()?, 4);
    assert_eq!(i64s(&g.ignore_errors())?, vec![0, 1, 2, 4]);
    // Elements of different shapes pass through unchanged.
    let ragged = Dataset::from_iter(vec![
        Tensor::from_vec(vec![1i64], [1])?,
        Tensor::from_vec(vec![2i64, 2], [2])?,
        Tensor::from_vec(vec![3i64, 3], [2])?,
    ]);
    assert_eq!(rows(&ragged)?, vec![vec![1], vec![2, 2], vec![3, 3]]);
    Ok(())
}

#[test]
fn batch_unbatch_rebatch_and_remainders() -> TestResult {
    let ds = Dataset::range(0, 5, 1)?;
    let b = ds.batch(2, false)?;
    assert_eq!(rows(&b)?, vec![vec![0, 1], vec![2, 3], vec![4]]);
    assert_eq!(b.cardinality(), Cardinality::Finite(3));
    let d = ds.batch(2, true)?;
    assert_eq!(rows(&d)?, vec![vec![0, 1], vec![2, 3]]);
    assert_eq!(d.cardinality(), Cardinality::Finite(2));
    assert_eq!(i64s(&b.unbatch())?, vec![0, 1, 2, 3, 4]);
    assert_eq!(rows(&b.rebatch(3, false)?)?, vec![vec![0, 1, 2], vec![3, 4]]);
    // Batches of vectors: [n, 2].
    let x = Tensor::from_vec((0..8i64).collect::<Vec<_>>(), [4, 2])?;
    let bx = Dataset::from_tensor_slices(x)?.batch(3, false)?.collect()?;
    assert_eq!(bx[0].tensor(0)?.shape().dims(), &[3, 2]);
    assert_eq!(bx[1].tensor(0)?.to_vec::<i64>()?, vec![6, 7]);
    // Elements of different shapes cannot be batched.
    let ragged = Dataset::from_iter(vec![Tensor::from_vec(vec![1i64], [1])?, Tensor::from_vec(vec![2i64, 2], [2])?]);
    let err = ragged.batch(2, false)?.collect().unwrap_err();
    assert!(err.message().contains("i64[1]") && err.message().contains("i64[2]"), "{}", err.message());
    assert!(ds.batch(0, false).is_err());
    Ok(())
}

#[test]
fn padded_batch_pads_to_the_longest_or_a_fixed_shape() -> TestResult {
    let ds = Dataset::from_iter(vec![
        Tensor::from_vec(vec![1i64], [1])?,
        Tensor::from_vec(vec![2i64, 2], [2])?,
        Tensor::from_vec(vec![3i64, 3, 3], [3])?,
        Tensor::from_vec(vec![4i64], [1])?,
    ]);
    let b = ds.padded_batch(3, None, Some(vec![Scalar::I64(-1)]), false)?.collect()?;
    assert_eq!(b[0].tensor(0)?.shape().dims(), &[3, 3]);
    assert_eq!(b[0].tensor(0)?.to_vec::<i64>()?, vec![1, -1, -1, 2, 2, -1, 3, 3, 3]);
    assert_eq!(b[1].tensor(0)?.to_vec::<i64>()?, vec![4]);
    let fixed = ds.padded_batch(2, Some(vec![vec![Some(4)]]), None, true)?.collect()?;
    assert_eq!(fixed.len(), 2);
    assert_eq!(fixed[1].tensor(0)?.to_vec::<i64>()?, vec![3, 3, 3, 0, 4, 0, 0, 0]);
    let too_small = ds.padded_batch(4, Some(vec![vec![Some(2)]]), None, false)?.collect();
    assert!(too_small.unwrap_err().message().contains("more than the padded 2"));
    // Matrices pad along both axes.
    let m = Dataset::from_iter(vec![
        Tensor::from_vec(vec![1.0f32, 2.0], [1, 2])?,
        Tensor::from_vec(vec![3.0f32, 4.0], [2, 1])?,
    ]);
    let p = m.padded_batch(2, None, None, false)?.collect()?;
    assert_eq!(p[0].tensor(0)?.shape().dims(), &[2, 2, 2]);
    assert_eq!(p[0].tensor(0)?.to_vec::<f32>()?, vec![1.0, 2.0, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0]);
    Ok(())
}

#[test]
fn shuffle_is_seeded_a_permutation_and_new_each_epoch() -> TestResult {
    let ds = Dataset::range(0, 2000, 1)?.shuffle(100, 7)?;
    let e1 = i64s(&ds)?;
    let e2 = i64s(&ds)?;
    let again = i64s(&Dataset::range(0, 2000, 1)?.shuffle(100, 7)?)?;
    let other_seed = i64s(&Dataset::range(0, 2000, 1)?.shuffle(100, 8)?)?;
    assert_eq!(e1, again, "the same seed gives the same first epoch");
    assert_ne!(e1, e2, "each epoch draws a new order");
    assert_ne!(e1, other_seed);
    for e in [&e1, &e2] {
        let mut s = e.clone();
        s.sort();
        assert_eq!(s, (0..2000).collect::<Vec<_>>());
    }
    assert_ne!(e1, (0..2000).collect::<Vec<_>>());
    // A buffer of n draws from the first n: element i comes out no earlier than i - (n - 1) places.
    for (pos, &v) in e1.iter().enumerate() {
        assert!(v as usize <= pos + 99, "{v} at {pos}");
    }
    // A buffer of one keeps the order; without reshuffling, epochs repeat.
    assert_eq!(i64s(&Dataset::range(0, 50, 1)?.shuffle(1, 3)?)?, (0..50).collect::<Vec<_>>());
    let fixed = Dataset::range(0, 100, 1)?.shuffle_with(10, 3, false)?;
    assert_eq!(i64s(&fixed)?, i64s(&fixed)?);
    // Shuffle then batch keeps every row, and the last batch is the remainder.
    let b = Dataset::range(0, 1000, 1)?.shuffle(1000, 1)?.batch(256, false)?;
    let sizes: Vec<usize> = rows(&b)?.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![256, 256, 256, 232]);
    let mut all: Vec<i64> = rows(&b)?.concat();
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert!(Dataset::range(0, 1, 1)?.shuffle(0, 1).is_err());
    Ok(())
}

#[test]
fn map_parallel_keeps_order_and_matches_sequential() -> TestResult {
    let ds = Dataset::range(0, 5000, 1)?;
    let f = |e: Element| -> rivulet::Result<Element> {
        let v = e.tensor(0)?.to_scalar::<i64>()?;
        Ok((Tensor::scalar(v * v), Tensor::scalar(v as f32 / 2.0)).into())
    };
    let seq = ds.map(f).collect()?;
    let par = ds.map_parallel(f, 0).collect()?;
    assert_eq!(seq.len(), 5000);
    for (i, (a, b)) in seq.iter().zip(&par).enumerate() {
        assert_eq!(a.tensor(0)?.to_scalar::<i64>()?, (i * i) as i64);
        assert_eq!(b.tensor(0)?.to_scalar::<i64>()?, (i * i) as i64);
        assert_eq!(b.tensor(1)?.to_scalar::<f32>()?, i as f32 / 2.0);
    }
    // An error in the closure is that element's item; the rest follow.
    let failing = ds.take(10).map_parallel(
        |e| {
            let v = e.tensor(0)?.to_scalar::<i64>()?;
            if v == 4 {
                return Err(rivulet::Error::new(ErrorKind::InvalidArgument, "four"));
            }
            Ok(e)
        },
        4,
    );
    let items: Vec<_> = failing.iter().collect();
    assert_eq!(items.len(), 10);
    assert!(items[4].is_err());
    assert_eq!(i64s(&failing.ignore_errors())?, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    Ok(())
}

#[test]
fn filter_take_skip_shard_enumerate() -> TestResult {
    let ds = Dataset::range(0, 10, 1)?;
    assert_eq!(i64s(&ds.filter(|e| Ok(e.tensor(0)?.to_scalar::<i64>()? % 2 == 0)))?, vec![0, 2, 4, 6, 8]);
    assert_eq!(i64s(&ds.take(3))?, vec![0, 1, 2]);
    assert_eq!(i64s(&ds.skip(8))?, vec![8, 9]);
    assert_eq!(i64s(&ds.skip(20))?, Vec::<i64>::new());
    assert_eq!(ds.skip(3).take(4).cardinality(), Cardinality::Finite(4));
    assert_eq!(i64s(&ds.shard(3, 1)?)?, vec![1, 4, 7]);
    assert_eq!(ds.shard(3, 1)?.cardinality(), Cardinality::Finite(3));
    assert_eq!(ds.shard(3, 0)?.cardinality(), Cardinality::Finite(4));
    assert!(ds.shard(3, 3).is_err());
    let en = ds.skip(5).enumerate(100).collect()?;
    assert_eq!(en[2].tensor(0)?.to_scalar::<i64>()?, 102);
    assert_eq!(en[2].tensor(1)?.to_scalar::<i64>()?, 7);
    // Take across chunk boundaries of a 3000-element source.
    let big = Dataset::range(0, 3000, 1)?;
    assert_eq!(i64s(&big.skip(1000).take(30))?, (1000..1030).collect::<Vec<_>>());
    assert_eq!(i64s(&big.shard(1000, 999)?)?, vec![999, 1999, 2999]);
    Ok(())
}

#[test]
fn zip_concatenate_repeat_window() -> TestResult {
    let a = Dataset::range(0, 5, 1)?;
    let b = Dataset::range(10, 13, 1)?;
    let z = Dataset::zip(&[a.clone(), b.clone()])?.collect()?;
    assert_eq!(z.len(), 3);
    assert_eq!((z[2].tensor(0)?.to_scalar::<i64>()?, z[2].tensor(1)?.to_scalar::<i64>()?), (2, 12));
    assert_eq!(Dataset::zip(&[a.clone(), b.clone()])?.cardinality(), Cardinality::Finite(3));
    assert_eq!(i64s(&a.concatenate(&b))?, vec![0, 1, 2, 3, 4, 10, 11, 12]);
    assert_eq!(i64s(&b.repeat(Some(2)))?, vec![10, 11, 12, 10, 11, 12]);
    assert_eq!(b.repeat(Some(2)).cardinality(), Cardinality::Finite(6));
    assert_eq!(i64s(&b.repeat(None).take(7))?, vec![10, 11, 12, 10, 11, 12, 10]);
    assert_eq!(b.repeat(None).cardinality(), Cardinality::Infinite);
    // An empty dataset repeated forever is empty.
    assert_eq!(i64s(&b.take(0).repeat(None))?, Vec::<i64>::new());
    // Repeat reshuffles: the two epochs of a shuffled repeat differ.
    let rs = i64s(&Dataset::range(0, 100, 1)?.shuffle(100, 5)?.repeat(Some(2)))?;
    assert_ne!(rs[..100], rs[100..]);
    // Windows (TensorFlow's window(3, shift=2) then batch).
    let w = Dataset::range(0, 7, 1)?;
    assert_eq!(rows(&w.window(3, 2, 1, false)?)?, vec![vec![0, 1, 2], vec![2, 3, 4], vec![4, 5, 6], vec![6]]);
    assert_eq!(rows(&w.window(3, 2, 1, true)?)?, vec![vec![0, 1, 2], vec![2, 3, 4], vec![4, 5, 6]]);
    assert_eq!(rows(&w.window(2, 3, 1, false)?)?, vec![vec![0, 1], vec![3, 4], vec![6]]);
    assert_eq!(rows(&w.window(2, 1, 3, true)?)?, vec![vec![0, 3], vec![1, 4], vec![2, 5], vec![3, 6]]);
    Ok(())
}

#[test]
fn prefetch_and_cache() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ds = Dataset::range(0, 3000, 1)?.map(move |e| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok(e)
    });
    let pre = ds.prefetch(2);
    assert_eq!(i64s(&pre)?, (0..3000).collect::<Vec<_>>());
    // A consumer that stops early does not hang the background thread.
    assert_eq!(i64s(&pre.take(5))?, vec![0, 1, 2, 3, 4]);
    // (That pass's thread may still finish a chunk: count on a fresh map.)
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ds = Dataset::range(0, 3000, 1)?.map(move |e| {
        c.fetch_add(1, Ordering::Relaxed);
        Ok(e)
    });
    let cached = ds.cache();
    assert_eq!(i64s(&cached)?.len(), 3000);
    assert_eq!(i64s(&cached)?, (0..3000).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::Relaxed), 3000, "the second pass replays the first");
    // An unfinished pass is not kept.
    calls.store(0, Ordering::Relaxed);
    let partial = ds.cache();
    assert_eq!(i64s(&partial.take(10))?.len(), 10);
    assert_eq!(i64s(&partial)?.len(), 3000);
    assert!(calls.load(Ordering::Relaxed) > 3000);
    // To a file: another dataset (another process) reads it back.
    let dir = fresh_dir("datasets", "cache");
    let file = dir.join("cache.bin");
    let strings = Dataset::from_tensor_slices(Element::dict(vec![
        ("n".into(), Field::Tensor(Tensor::from_vec(vec![1.5f32, 2.5, 3.5], [3])?)),
        ("s".into(), Field::Strings(Strings::vector(["x", "y", "z"]))),
    ])?)?;
    let first = strings.cache_to_file(&file).collect()?;
    assert!(file.exists());
    let source_gone = Dataset::from_tensor_slices(Tensor::zeros([1], DType::F32)?)?.cache_to_file(&file);
    let replay = source_gone.collect()?;
    assert_eq!(replay.len(), 3);
    assert_eq!(replay[2].tensor_named("n")?.to_scalar::<f32>()?, 3.5);
    assert_eq!(replay[2].get("s")?.as_strings().unwrap().values(), first[2].get("s")?.as_strings().unwrap().values());
    // A damaged cache is an error naming the file, not wrong data.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 12;
    bytes[at] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let err = source_gone.collect().unwrap_err();
    assert!(err.message().contains("cache.bin") && err.message().contains("checksum"), "{}", err.message());
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(source_gone.collect().unwrap_err().kind(), ErrorKind::Format);
    Ok(())
}

#[test]
fn csv_infers_types_and_reads_quotes_defaults_and_gzip() -> TestResult {
    let dir = fresh_dir("datasets", "csv");
    let text = "id,score,name,big\n1,0.5,\"Smith, J\",3000000000\n2,1e3,\"say \"\"hi\"\"\",-1\n3,-2,\"two\nlines\",7\n";
    let path = write(&dir, "a.csv", text);
    let cols = Dataset::csv_columns(&path, &CsvOptions::default())?;
    let kinds: Vec<ColumnType> = cols.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ColumnType::Numeric(DType::I32),
            ColumnType::Numeric(DType::F32),
            ColumnType::Text,
            ColumnType::Numeric(DType::I64)
        ]
    );
    // Blocks of 7 bytes: rows longer than a block, and cuts inside quotes avoided.
    for block in [7, 64, 1 << 20] {
        let opts = CsvOptions { block_bytes: block, ..CsvOptions::default() };
        let rows = Dataset::csv(&[&path], opts)?.collect()?;
        assert_eq!(rows.len(), 3, "block {block}");
        assert_eq!(rows[0].names().unwrap(), &["id", "score", "name", "big"]);
        assert_eq!(rows[0].tensor_named("big")?.to_scalar::<i64>()?, 3_000_000_000);
        assert_eq!(rows[1].tensor_named("score")?.to_scalar::<f32>()?, 1000.0);
        let names: Vec<String> =
            rows.iter().map(|r| r.get("name").unwrap().as_strings().unwrap().values()[0].clone()).collect();
        assert_eq!(names, vec!["Smith, J", "say \"hi\"", "two\nlines"]);
    }
    // Selected columns, in the order asked; a schema with defaults for empty fields.
    let path2 = write(&dir, "b.csv", "a,b,c\n1,,x\n,2.5,\n");
    let schema = vec![
        CsvColumn::numeric("a", DType::I64).with_default(DefaultValue::Number(Scalar::I64(-1))),
        CsvColumn::numeric("b", DType::F64).with_default(DefaultValue::Number(Scalar::F64(0.25))),
        CsvColumn::text("c").with_default(DefaultValue::Text("?".into())),
    ];
    let r = Dataset::csv(&[&path2], CsvOptions::default().schema(schema.clone()).select(["c", "a"]))?.collect()?;
    assert_eq!(r[0].names().unwrap(), &["c", "a"]);
    assert_eq!(r[0].tensor_named("a")?.to_scalar::<i64>()?, 1);
    assert_eq!(r[1].tensor_named("a")?.to_scalar::<i64>()?, -1);
    assert_eq!(r[1].get("c")?.as_strings().unwrap().values()[0], "?");
    let all = Dataset::csv(&[&path2], CsvOptions::default().schema(schema))?.collect()?;
    assert_eq!(all[0].tensor_named("b")?.to_scalar::<f64>()?, 0.25);
    assert!(Dataset::csv(&[&path2], CsvOptions::default().select(["zz"]))
        .unwrap_err()
        .message()
        .contains("no column 'zz'"));
    // Gzip, detected by name or by content, and several files in turn.
    let gz = dir.join("c.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(b"id,score,name,big\n9,9.5,nine,9\n").unwrap();
    enc.finish().unwrap();
    let both = Dataset::csv(&[&path, &gz], CsvOptions::default())?.collect()?;
    assert_eq!(both.len(), 4);
    assert_eq!(both[3].tensor_named("score")?.to_scalar::<f32>()?, 9.5);
    let renamed = dir.join("c.data");
    std::fs::copy(&gz, &renamed).unwrap();
    assert_eq!(Dataset::csv(&[&renamed], CsvOptions::default())?.collect()?.len(), 1);
    let plain = Dataset::csv(&[&renamed], CsvOptions::default().compression(Compression::None));
    let e = plain.unwrap_err();
    assert!(e.message().contains("c.data") && e.message().contains("not UTF-8"), "{}", e.message());
    // No header: names column_0...; a header-only file is empty.
    let nh = write(&dir, "nh.csv", "1,2\n3,4\n");
    let r = Dataset::csv(&[&nh], CsvOptions::default().header(false))?.collect()?;
    assert_eq!((r.len(), r[1].tensor_named("column_1")?.to_scalar::<i32>()?), (2, 4));
    let empty = write(&dir, "empty.csv", "a,b\n");
    assert!(Dataset::csv(&[&empty], CsvOptions::default())?.collect()?.is_empty());
    Ok(())
}

#[test]
fn malformed_csv_names_file_line_and_column_and_keeps_earlier_rows() -> TestResult {
    let dir = fresh_dir("datasets", "bad-csv");
    let mut text = String::from("x,y\n");
    for i in 0..3000 {
        match i {
            1200 => text.push_str("1.5\n"),
            2500 => text.push_str("2.5,abc\n"),
            _ => text.push_str(&format!("{i}.5,{i}\n")),
        }
    }
    let path = write(&dir, "bad.csv", &text);
    let schema = vec![CsvColumn::numeric("x", DType::F32), CsvColumn::numeric("y", DType::I32)];
    for block in [100, 4096, 1 << 20] {
        let opts = CsvOptions { block_bytes: block, ..CsvOptions::default().schema(schema.clone()) };
        let ds = Dataset::csv(&[&path], opts)?;
        let items: Vec<_> = ds.iter().collect();
        assert_eq!(items.len(), 3000, "block {block}");
        let first_err = items.iter().position(|r| r.is_err()).unwrap();
        assert_eq!(first_err, 1200, "every row before the bad one comes first");
        let m1 = items[1200].as_ref().unwrap_err().message().to_string();
        assert!(m1.contains("bad.csv") && m1.contains("line 1202") && m1.contains("1 fields, expected 2"), "{m1}");
        let m2 = items[2500].as_ref().unwrap_err().message().to_string();
        assert!(m2.contains("line 2502") && m2.contains("column 'y'") && m2.contains("'abc'"), "{m2}");
        assert_eq!(items[2501].as_ref().unwrap().tensor_named("y")?.to_scalar::<i32>()?, 2501);
        let kept = ds.ignore_errors().batch(1000, false)?.collect()?;
        let sizes: Vec<usize> = kept.iter().map(|b| b.tensor(0).unwrap().shape()[0]).collect();
        assert_eq!(sizes, vec![1000, 1000, 998]);
    }
    // A missing required field, an unknown file, and a wrong column count in the schema.
    let p = write(&dir, "missing.csv", "x,y\n1.0,\n");
    let err = Dataset::csv(&[&p], CsvOptions::default().schema(schema.clone()))?.collect().unwrap_err();
    assert!(err.message().contains("column 'y'") && err.message().contains("no default"), "{}", err.message());
    assert_eq!(Dataset::csv(&[dir.join("nope.csv")], CsvOptions::default()).unwrap_err().kind(), ErrorKind::NotFound);
    let three = vec![CsvColumn::numeric("a", DType::F32); 3];
    assert!(Dataset::csv(&[&p], CsvOptions::default().schema(three)).is_err());
    // Overflow of a narrow integer column is a parse error, not a wrap.
    let o = write(&dir, "overflow.csv", "v\n300\n");
    let err = Dataset::csv(&[&o], CsvOptions::default().schema(vec![CsvColumn::numeric("v", DType::U8)]))?
        .collect()
        .unwrap_err();
    assert!(err.message().contains("'300' as u8"), "{}", err.message());
    Ok(())
}

#[test]
fn interleave_takes_blocks_from_files_in_turn() -> TestResult {
    let dir = fresh_dir("datasets", "interleave");
    let a = write(&dir, "a.csv", "v\n1\n2\n3\n4\n5\n");
    let b = write(&dir, "b.csv", "v\n10\n20\n30\n");
    let files = Dataset::from_strings([a.display().to_string(), b.display().to_string()])?;
    let ds = files.interleave(
        |e| {
            let path = e.field(0)?.as_strings().unwrap().values()[0].clone();
            Dataset::csv(&[path], CsvOptions::default().schema(vec![CsvColumn::numeric("v", DType::I64)]))
        },
        2,
        2,
    )?;
    assert_eq!(i64s(&ds)?, vec![1, 2, 10, 20, 3, 4, 30, 5]);
    let flat = files.interleave(|e| Dataset::from_tensors(e.field(0)?.clone()), 1, 1)?.collect()?;
    assert_eq!(flat.len(), 2);
    Ok(())
}
