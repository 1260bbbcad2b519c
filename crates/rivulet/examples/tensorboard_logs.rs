//! TensorBoard logs of a short training run, and the values they must hold.
//!
//! `cargo run -p rivulet --example tensorboard_logs -- LOGDIR EXPECTED.json`
//! trains a small classifier on the bundled digits with the `TensorBoard`
//! callback (epoch and batch scalars, weight histograms, the graph), adds
//! an image and a text summary under `LOGDIR/samples`, and writes what
//! `fit` returned to `EXPECTED.json`. `scripts/check_tensorboard.sh` then
//! reads `LOGDIR` with TensorBoard's own `EventAccumulator` and compares.

use rivulet::data::load_digits;
use rivulet::nn::{
    Activation, Dense, ExecutionMode, FitOptions, Loss, Metric, Optimizer, Sequential, SharedCallback, TensorBoard,
    UpdateFreq, Verbosity,
};
use rivulet::summary::SummaryWriter;
use rivulet::{Error, ErrorKind, Result, Tensor};
use std::path::PathBuf;

/// Batch values are written at every this many batch steps.
const BATCH_EVERY: u64 = 5;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [logdir, expected] = &args[..] else {
        return Err(Error::new(ErrorKind::InvalidArgument, "usage: tensorboard_logs LOGDIR EXPECTED.json"));
    };
    let (logdir, expected) = (PathBuf::from(logdir), PathBuf::from(expected));
    rivulet::set_random_seed(5);
    let d = load_digits()?;
    let mut model = Sequential::new(vec![Box::new(Dense::new(32, Activation::Relu))]);
    model.add(Dense::new(10, Activation::Linear));
    model.compile(
        Optimizer::adam(3e-3),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        ExecutionMode::Graph,
    );
    let tb = TensorBoard::new(&logdir).histogram_freq(1).update_freq(UpdateFreq::Every(BATCH_EVERY));
    let (epochs, batch_size) = (3, 64);
    let options = FitOptions {
        epochs,
        batch_size,
        validation_split: 0.1,
        seed: 1,
        verbose: Verbosity::Silent,
        ..FitOptions::default()
    }
    .callback(SharedCallback::new(tb));
    let history = model.fit(&d.train_x, &d.train_y, &options)?;

    // Three digits as a batch of 8 x 8 gray images, and a line of text.
    let pixels = d.train_x.to_vec::<f32>()?;
    let images = Tensor::from_vec(pixels[..3 * 64].to_vec(), [3, 8, 8, 1])?;
    let samples = SummaryWriter::create(logdir.join("samples"))?;
    samples.image("digits", &images, 0)?;
    let text = format!("final training loss **{:.4}**", history.last("loss").unwrap_or(f64::NAN));
    samples.text("notes", &text, 0)?;
    samples.close()?;

    let graph = model.graph().ok_or_else(|| Error::new(ErrorKind::FailedPrecondition, "no graph"))?;
    let weights: Vec<(String, usize)> =
        model.get_weights()?.into_iter().map(|(name, w)| (name.replace(':', "_"), w.numel().unwrap_or(0))).collect();
    let held = (d.train_x.shape()[0] as f64 * 0.1).round() as usize;
    let batches = (d.train_x.shape()[0] - held).div_ceil(batch_size) as u64;
    let batch_steps: Vec<u64> = (0..epochs as u64 * batches).filter(|s| s % BATCH_EVERY == 0).collect();
    let json = serde_json::json!({
        "epochs": epochs,
        "train": { "epoch_loss": history.get("loss"), "epoch_accuracy": history.get("accuracy") },
        "validation": { "epoch_loss": history.get("val_loss"), "epoch_accuracy": history.get("val_accuracy") },
        "batch_steps": batch_steps,
        "histograms": weights,
        "images": { "tags": ["digits/image/0", "digits/image/1", "digits/image/2"], "height": 8, "width": 8,
                    "first_pixels": pixels[..64].iter().map(|&v| (f64::from(v) * 255.5).clamp(0.0, 255.0) as u8).collect::<Vec<u8>>() },
        "text": { "tag": "notes", "value": text },
        "graph_nodes": graph.nodes().into_iter().map(|n| n.name).collect::<Vec<String>>(),
    });
    std::fs::write(&expected, json.to_string())
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", expected.display())))?;
    println!("wrote TensorBoard logs to {} and the expected values to {}", logdir.display(), expected.display());
    Ok(())
}
