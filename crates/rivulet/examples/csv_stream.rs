//! Column statistics of a CSV file of any size, streamed: the file is read
//! in blocks, parsed in parallel, shuffled through a bounded buffer,
//! batched and prefetched, and only running sums are kept. Memory stays
//! bounded whatever the file's size (measure it with
//! `/usr/bin/time -v`, or cap it with `prlimit --as=BYTES`).
//!
//! `cargo run --release -p rivulet --example csv_stream -- FILE.csv [--make ROWS]`
//! (`--make ROWS` first writes a synthetic file of that many rows:
//! 8 float columns and an integer label).

use rivulet::data::{CsvOptions, Dataset, Field};
use rivulet::{ops, DType, Result};
use std::io::Write;
use std::path::Path;

/// Rows seen, and per numeric column its name, sum and mean.
pub struct ColumnStats {
    pub rows: u64,
    pub columns: Vec<(String, f64, f64)>,
}

/// Stream `path` through shuffle(buffer), batch(1024) and prefetch, summing every numeric column.
pub fn stats(path: &Path, shuffle_buffer: usize) -> Result<ColumnStats> {
    let ds = Dataset::csv(&[path], CsvOptions::default())?.shuffle(shuffle_buffer, 1)?.batch(1024, false)?.prefetch(4);
    let mut rows = 0u64;
    let mut columns: Vec<(String, f64, f64)> = Vec::new();
    for batch in &ds {
        let batch = batch?;
        let names = batch.names().unwrap_or_default();
        if columns.is_empty() {
            columns = names
                .iter()
                .zip(batch.fields())
                .filter(|(_, f)| matches!(f, Field::Tensor(_)))
                .map(|(n, _)| (n.clone(), 0.0, 0.0))
                .collect();
        }
        for (name, sum, _) in columns.iter_mut() {
            let col = ops::cast(batch.tensor_named(name)?, DType::F64)?;
            *sum += ops::sum(&col, rivulet::Axes::All, false)?.to_scalar::<f64>()?;
        }
        rows += batch.tensor(0).map_or(0, |t| t.shape().dims()[0]) as u64;
    }
    for (_, sum, mean) in columns.iter_mut() {
        *mean = *sum / rows.max(1) as f64;
    }
    Ok(ColumnStats { rows, columns })
}

/// Write `rows` rows of 8 float columns (`x0..x7`, row `i` column `j` is
/// `((i * 7 + j * 13) % 1000) / 100 - 5`) and an integer `label` (`i % 3`).
pub fn make(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(w, "x0,x1,x2,x3,x4,x5,x6,x7,label")?;
    for i in 0..rows {
        for j in 0..8u64 {
            let v = ((i * 7 + j * 13) % 1000) as f64 / 100.0 - 5.0;
            write!(w, "{v:.2},")?;
        }
        writeln!(w, "{}", i % 3)?;
    }
    w.flush()
}

#[allow(dead_code)]
fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        return Err("usage: csv_stream FILE.csv [--make ROWS]".into());
    };
    let path = Path::new(file);
    if let Some(i) = args.iter().position(|a| a == "--make") {
        let rows: u64 = args.get(i + 1).ok_or("--make needs a row count")?.parse()?;
        make(path, rows)?;
        println!("wrote {} ({} bytes)", path.display(), std::fs::metadata(path)?.len());
    }
    let t = std::time::Instant::now();
    let s = stats(path, 10_000)?;
    println!("{} rows in {:.1} s", s.rows, t.elapsed().as_secs_f64());
    for (name, sum, mean) in &s.columns {
        println!("  {name}: sum {sum:.2}, mean {mean:.6}");
    }
    Ok(())
}
