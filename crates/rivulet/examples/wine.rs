//! A tabular classifier the tf.data + Keras way: the bundled wine table
//! (scikit-learn's copy of the UCI wine data, 178 wines, 13 measurements,
//! 3 cultivars) read as a CSV dataset, split, its numeric columns
//! standardized by a `Normalization` layer adapted on the training rows,
//! the text label looked up by a `StringLookup`, then shuffled, batched,
//! prefetched and fed to `fit`.
//!
//! `cargo run --release -p rivulet --example wine`

use rivulet::data::{CsvOptions, Dataset, Element};
use rivulet::nn::{
    Activation, Dense, ExecutionMode, FitOptions, Layer, Loss, Metric, Normalization, Optimizer, Sequential,
    StringLookup, Verbosity,
};
use rivulet::{ops, DType, Result, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

/// The result of a run: the validation accuracy and the class names.
pub struct WineRun {
    pub val_accuracy: f64,
    pub classes: Vec<String>,
}

/// Train for `epochs` and evaluate on the last 20% of the table.
pub fn run(epochs: usize, verbose: bool) -> Result<WineRun> {
    rivulet::set_random_seed(7);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/tabular/wine.csv");
    let table = Dataset::csv(&[&path], CsvOptions::default())?;
    let rows = table.iter().count();
    let (train, val) = (table.take(rows * 4 / 5), table.skip(rows * 4 / 5));

    // The 13 numeric columns as one [batch, 13] f32 tensor.
    let first = table
        .iter()
        .next()
        .ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::InvalidArgument, "wine.csv is empty"))??;
    let features: Arc<Vec<String>> =
        Arc::new(first.names().unwrap_or_default().iter().filter(|n| *n != "class").cloned().collect());
    let stack = move |e: &Element| -> Result<Tensor> {
        let cols = features.iter().map(|c| ops::cast(e.tensor_named(c)?, DType::F32)).collect::<Result<Vec<_>>>()?;
        ops::stack(&cols.iter().collect::<Vec<_>>(), -1)
    };

    // Preprocessing learned from the training rows only.
    let mut norm = Normalization::new();
    let s = stack.clone();
    norm.adapt(&train.batch(64, false)?.map(move |e| Ok(Element::from(s(&e)?))))?;
    let mut lookup = StringLookup::new(0, None);
    lookup.adapt(&train.map(|e| Ok(Element::from(e.get("class")?.clone()))))?;
    let classes = lookup.vocabulary();

    // Batches of named columns to (x, y).
    let (norm, lookup) = (Arc::new(norm), Arc::new(lookup));
    let prepare = move |e: Element| -> Result<Element> {
        let x = norm.call(&stack(&e)?, false)?;
        let class = e
            .get("class")?
            .as_strings()
            .ok_or_else(|| rivulet::Error::new(rivulet::ErrorKind::InvalidArgument, "class is not text"))?;
        let y = lookup.lookup(class)?;
        Ok((x, y).into())
    };
    let train = train.shuffle(256, 7)?.batch(16, false)?.map(prepare.clone()).prefetch(2);
    let val = val.batch(64, false)?.map(prepare);

    let mut model = Sequential::new(vec![Box::new(Dense::new(16, Activation::Relu))]);
    model.add(Dense::new(classes.len(), Activation::Linear));
    model.compile(
        Optimizer::adam(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        ExecutionMode::Graph,
    );
    let options = FitOptions {
        epochs,
        verbose: if verbose { Verbosity::Auto } else { Verbosity::Silent },
        validation_dataset: Some(val.clone()),
        ..FitOptions::default()
    };
    model.fit_dataset(&train, &options)?;
    let logs = model.evaluate_dataset(&val)?;
    let val_accuracy = logs.iter().find(|(k, _)| k == "accuracy").map_or(0.0, |(_, v)| *v);
    Ok(WineRun { val_accuracy, classes })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let r = run(30, true)?;
    println!("classes {:?}: validation accuracy {:.3}", r.classes, r.val_accuracy);
    Ok(())
}
