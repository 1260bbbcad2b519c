//! `rivulet train-csv FILE --label COLUMN`: a classifier or regressor for a
//! table (CSV or Parquet), with the preprocessing Keras users write by
//! hand: numeric columns standardized (`Normalization` adapted on the
//! training rows), text columns looked up (`StringLookup`) and one-hot
//! encoded (`CategoryEncoding`), a text or integer label turned into class
//! indices, a validation split from the end, and the Keras progress bar.

use rivulet::data::{CsvOptions, Dataset, Element, Field};
use rivulet::nn::{
    Activation, CategoryEncoding, Dense, EncodingMode, FitOptions, IntegerLookup, Layer, LearningRate, Loss, Metric,
    Normalization, Optimizer, Sequential, StringLookup, Verbosity,
};
use rivulet::{ops, DType, Error, ErrorKind, Result, Tensor};
use std::path::Path;
use std::sync::Arc;

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Auto,
    Classification,
    Regression,
}

/// Options of `train-csv`.
pub struct TrainCsv {
    pub epochs: usize,
    pub batch_size: usize,
    pub validation_split: f64,
    pub task: Task,
    pub seed: u64,
    pub quiet: bool,
}

/// How one feature column becomes numbers.
enum Encoder {
    /// Standardized (one input per column, stacked before `Normalization`).
    Numeric,
    /// Looked up and one-hot encoded.
    Text(StringLookup, usize),
}

/// How the label becomes a target.
enum Target {
    Strings(StringLookup),
    Integers(IntegerLookup),
    Value,
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// The table as a dataset of named columns.
fn open_table(path: &Path) -> Result<Dataset> {
    let parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if parquet {
        Dataset::parquet(&[path], None)
    } else {
        Dataset::csv(&[path], CsvOptions::default())
    }
}

/// The dataset of one column's values (scalars per row).
fn column(ds: &Dataset, name: &str) -> Dataset {
    let name = name.to_string();
    ds.map(move |e| Ok(Element::from(e.get(&name)?.clone())))
}

pub fn run(path: &Path, label: &str, o: &TrainCsv) -> Result<()> {
    rivulet::set_random_seed(o.seed);
    let table = open_table(path)?;
    let first = table.iter().next().ok_or_else(|| invalid(format!("{}: no rows", path.display())))??;
    let names: Vec<String> = first.names().map(<[String]>::to_vec).unwrap_or_default();
    if !names.iter().any(|n| n == label) {
        return Err(invalid(format!("{}: no column '{label}' (columns: {})", path.display(), names.join(", "))));
    }
    let rows = table.iter().try_fold(0usize, |n, e| e.map(|_| n + 1))?;
    if !(0.0..1.0).contains(&o.validation_split) {
        return Err(invalid(format!("--validation-split must be in [0, 1), got {}", o.validation_split)));
    }
    let held = ((rows as f64) * o.validation_split).round() as usize;
    let train_rows = rows - held;
    if train_rows == 0 {
        return Err(invalid(format!("{}: {rows} rows leave none for training", path.display())));
    }
    let train = table.take(train_rows);
    let val = table.skip(train_rows);

    // The label: text or integers are classes; floats a value to regress.
    let label_field = first.get(label)?.clone();
    let task = match (o.task, &label_field) {
        (Task::Auto, Field::Strings(_)) => Task::Classification,
        (Task::Auto, Field::Tensor(t)) if t.dtype().is_int() || t.dtype() == DType::Bool => Task::Classification,
        (Task::Auto, _) => Task::Regression,
        (t, _) => t,
    };
    let target = match (task, &label_field) {
        (Task::Classification, Field::Strings(_)) => {
            let mut l = StringLookup::new(0, None);
            l.adapt(&column(&train, label))?;
            Target::Strings(l)
        }
        (Task::Classification, Field::Tensor(_)) => {
            let mut l = IntegerLookup::new(0, None);
            l.adapt(&column(&train, label).map(|e| Ok(Element::from(ops::cast(e.tensor(0)?, DType::I64)?))))?;
            Target::Integers(l)
        }
        (_, Field::Strings(_)) => return Err(invalid(format!("a text label ('{label}') cannot be regressed"))),
        _ => Target::Value,
    };
    let classes = match &target {
        Target::Strings(l) => l.vocabulary_size(),
        Target::Integers(l) => l.vocabulary_size(),
        Target::Value => 1,
    };

    // The features.
    let mut encoders = Vec::new();
    let mut numeric = Vec::new();
    for (name, field) in names.iter().zip(first.fields()) {
        if name == label {
            continue;
        }
        match field {
            Field::Strings(_) => {
                let mut l = StringLookup::new(1, None);
                l.adapt(&column(&train, name))?;
                let size = l.vocabulary_size();
                encoders.push((name.clone(), Encoder::Text(l, size)));
            }
            Field::Tensor(_) => {
                numeric.push(name.clone());
                encoders.push((name.clone(), Encoder::Numeric));
            }
        }
    }
    let numeric_rows = {
        let cols = numeric.clone();
        move |e: &Element| -> Result<Tensor> {
            let parts = cols.iter().map(|c| ops::cast(e.tensor_named(c)?, DType::F32)).collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = parts.iter().collect();
            ops::stack(&refs, -1)
        }
    };
    let mut norm = Normalization::new();
    if !numeric.is_empty() {
        let f = numeric_rows.clone();
        norm.adapt(&train.batch(1024, false)?.map(move |e| Ok(Element::from(f(&e)?))))?;
    }
    let width: usize = encoders
        .iter()
        .map(|(_, e)| match e {
            Encoder::Numeric => 1,
            Encoder::Text(_, size) => *size,
        })
        .sum();
    let about: Vec<String> = encoders
        .iter()
        .map(|(n, e)| match e {
            Encoder::Numeric => n.clone(),
            Encoder::Text(_, size) => format!("{n} (text, {size} one-hot)"),
        })
        .collect();
    println!(
        "{}: {rows} rows ({train_rows} to train, {held} to validate); label '{label}': {}; features ({width} inputs): {}",
        path.display(),
        match task {
            Task::Regression => "regression".to_string(),
            _ => format!("{classes} classes"),
        },
        about.join(", ")
    );

    // One batch of named columns to (x, y).
    let encoders = Arc::new(encoders);
    let norm = Arc::new(norm);
    let target = Arc::new(target);
    let label_name = label.to_string();
    let prepare = move |e: Element| -> Result<Element> {
        let mut parts = Vec::new();
        if !numeric.is_empty() {
            parts.push(norm.call(&numeric_rows(&e)?, false)?);
        }
        for (name, enc) in encoders.iter() {
            if let Encoder::Text(lookup, size) = enc {
                let s = e.get(name)?.as_strings().ok_or_else(|| invalid(format!("column '{name}' is not text")))?;
                let idx = lookup.lookup(s)?;
                parts.push(CategoryEncoding::new(*size, EncodingMode::OneHot).call(&idx, false)?);
            }
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let x = ops::concat(&refs, -1)?;
        let y = match (target.as_ref(), e.get(&label_name)?) {
            (Target::Strings(l), Field::Strings(s)) => l.lookup(s)?,
            (Target::Integers(l), Field::Tensor(t)) => l.lookup(&ops::cast(t, DType::I64)?)?,
            (Target::Value, Field::Tensor(t)) => ops::reshape(&ops::cast(t, DType::F32)?, &[-1, 1])?,
            _ => return Err(invalid(format!("label '{label_name}' changed type"))),
        };
        if y.dtype() == DType::I64 && y.to_vec::<i64>()?.iter().any(|&v| v < 0) {
            return Err(invalid(format!("label '{label_name}': a class not seen in the training rows")));
        }
        Ok((x, y).into())
    };
    let prepare = Arc::new(prepare);
    let p = prepare.clone();
    let train_ds = train.shuffle(train_rows, o.seed)?.batch(o.batch_size, false)?.map(move |e| p(e));
    let p = prepare.clone();
    let val_ds = if held > 0 { Some(val.batch(256, false)?.map(move |e| p(e))) } else { None };

    let head = if task == Task::Regression { 1 } else { classes };
    let mut model = Sequential::new(vec![
        Box::new(Dense::new(64, Activation::Relu)) as Box<dyn Layer>,
        Box::new(Dense::new(32, Activation::Relu)),
        Box::new(Dense::new(head, Activation::Linear)),
    ]);
    let (loss, metric) = if task == Task::Regression {
        (Loss::MeanSquaredError, Metric::Loss(Loss::MeanAbsoluteError).named("mae"))
    } else {
        (Loss::SparseCategoricalCrossentropy { from_logits: true }, Metric::SparseCategoricalAccuracy.named("accuracy"))
    };
    model.compile(Optimizer::adam(LearningRate::Constant(3e-3)), loss, &[metric], Default::default());
    let options = FitOptions {
        epochs: o.epochs,
        validation_dataset: val_ds.clone(),
        verbose: if o.quiet { Verbosity::Silent } else { Verbosity::Auto },
        ..FitOptions::default()
    };
    let history = model.fit_dataset(&train_ds, &options)?;
    let shown: Vec<String> =
        history.epochs.last().map(|logs| logs.iter().map(|(k, v)| format!("{k} {v:.4}")).collect()).unwrap_or_default();
    println!("after {} epochs: {}", o.epochs, shown.join(", "));
    Ok(())
}
