//! `rivulet demo`: train an MLP (or, with `--model cnn`, a convolutional
//! network) on the bundled handwritten digits and report its accuracy on
//! the held-out split. With `--logdir`, the run is logged for TensorBoard.

use rivulet::data::load_digits;
use rivulet::distribute::{MultiWorkerMirroredStrategy, Strategy};
use rivulet::nn::{
    Activation, Conv2D, Dense, Dropout, ExecutionMode, FitOptions, Flatten, Layer, LearningRate, Loss, MaxPooling2D,
    Metric, Optimizer, Sequential, SharedCallback, TensorBoard, Verbosity,
};
use rivulet::ops::{self, Padding};
use rivulet::summary::SummaryWriter;
use rivulet::{Error, ErrorKind, Result, Tensor};
use std::path::Path;
use std::time::Instant;

/// How many test digits the image summary shows.
const SHOWN: usize = 10;

/// Where and what the demo writes besides its report.
#[derive(Default)]
pub struct Outputs<'a> {
    /// TensorBoard logs.
    pub logdir: Option<&'a Path>,
    /// A model base directory: the trained model is saved as version 1.
    pub export: Option<&'a Path>,
    /// Train on the workers `mpirun` started; rank 0 prints and writes.
    pub distributed: bool,
}

pub fn run(mode: ExecutionMode, cnn: bool, epochs: usize, quiet: bool, outputs: &Outputs<'_>) -> Result<()> {
    let logdir = outputs.logdir;
    let start = Instant::now();
    let seed: u64 = match std::env::var("RIVULET_DEMO_SEED") {
        Ok(s) => s.trim().parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("RIVULET_DEMO_SEED must be a non-negative integer, got '{s}'"),
            )
        })?,
        Err(std::env::VarError::NotPresent) => 2026,
        Err(std::env::VarError::NotUnicode(s)) => {
            return Err(Error::new(ErrorKind::InvalidArgument, format!("RIVULET_DEMO_SEED is not text: {s:?}")))
        }
    };
    rivulet::set_random_seed(seed);
    let strategy = if outputs.distributed { Some(MultiWorkerMirroredStrategy::new()?) } else { None };
    let chief = strategy.as_ref().is_none_or(|s| s.is_chief());
    let d = load_digits()?;
    let (layers, about): (Vec<Box<dyn Layer>>, &str) = if cnn {
        (
            vec![
                Box::new(Conv2D::new(32, [3, 3], Activation::Relu).padding(Padding::Same)),
                Box::new(MaxPooling2D::new([2, 2])),
                Box::new(Conv2D::new(64, [3, 3], Activation::Relu).padding(Padding::Same)),
                Box::new(MaxPooling2D::new([2, 2])),
                Box::new(Flatten::new()),
                Box::new(Dropout::new(0.3)?),
                Box::new(Dense::new(10, Activation::Linear)),
            ],
            "CNN conv3x3x32-pool-conv3x3x64-pool-dense10",
        )
    } else {
        (
            vec![
                Box::new(Dense::new(256, Activation::Relu)),
                Box::new(Dropout::new(0.2)?),
                Box::new(Dense::new(128, Activation::Relu)),
                Box::new(Dense::new(10, Activation::Linear)),
            ],
            "MLP 64-256-128-10",
        )
    };
    if chief {
        println!(
            "digits: {} training and {} test images of 8x8 pixels; {about}, Adam, {mode:?} mode",
            d.train_x.shape()[0],
            d.test_x.shape()[0]
        );
    }
    if let (Some(s), true) = (&strategy, chief) {
        println!("distributed: {} workers ({}), global batch 32 split over them", s.num_workers(), describe(s));
    }
    // The CNN sees each image as an 8x8 grid of one channel.
    let images = |x: &rivulet::Tensor| if cnn { ops::reshape(x, &[-1, 8, 8, 1]) } else { Ok(x.clone()) };
    let (train_x, test_x) = (images(&d.train_x)?, images(&d.test_x)?);
    let mut model = Sequential::new(layers);
    model.compile(
        Optimizer::adam(LearningRate::CosineDecay { initial: 3e-3, decay_steps: (epochs * 41) as f64, alpha: 0.05 }),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::SparseCategoricalAccuracy.named("accuracy")],
        mode,
    );
    if let Some(s) = &strategy {
        model.distribute(s)?;
    }
    let mut options = FitOptions {
        epochs,
        batch_size: 32,
        validation_split: 0.1,
        seed: 7,
        verbose: if quiet { Verbosity::Silent } else { Verbosity::Auto },
        ..FitOptions::default()
    };
    if let Some(dir) = logdir {
        // Losses and accuracy per epoch, weight histograms each epoch, the graph.
        options = options.callback(SharedCallback::new(TensorBoard::new(dir).histogram_freq(1)));
    }
    model.fit(&train_x, &d.train_y, &options)?;
    if !chief {
        // Rank 0 evaluates, reports and writes; the others are done.
        return Ok(());
    }
    let results = model.evaluate(&test_x, &d.test_y, 256)?;
    let accuracy = results.iter().find(|(k, _)| k == "accuracy").map(|(_, v)| *v).unwrap_or(0.0);
    println!("trained in {:.1} s", start.elapsed().as_secs_f64());
    println!("test accuracy: {accuracy:.4}");
    if let Some(dir) = logdir {
        write_samples(dir, &d.test_x, &d.test_y, accuracy, epochs)?;
        println!("TensorBoard logs in {}: run `tensorboard --logdir {}`", dir.display(), dir.display());
    }
    if let Some(base) = outputs.export {
        export(&model, base, &test_x)?;
    }
    Ok(())
}

/// Save the model as version 1 under `base`, with a request of three test
/// digits as an asset, and check that the saved model predicts bit for bit
/// what the trained one does.
fn export(model: &Sequential, base: &Path, test_x: &Tensor) -> Result<()> {
    use rivulet::saved_model::{self, SaveOptions};
    let dir = base.join("1");
    std::fs::create_dir_all(base).map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", base.display())))?;
    let rank = test_x.rank();
    let mut size = vec![-1i64; rank];
    size[0] = 3;
    let sample = ops::slice(test_x, &vec![0; rank], &size)?;
    let staging_dir = std::env::temp_dir().join(format!("rivulet-export-{}", std::process::id()));
    std::fs::create_dir_all(&staging_dir)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", staging_dir.display())))?;
    let staging = staging_dir.join("example_request.json");
    let request = format!("{{\"instances\": {}}}\n", rows_json(&sample)?);
    std::fs::write(&staging, &request).map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", staging.display())))?;
    let saved = saved_model::save_with(&dir, model, &[], &SaveOptions { assets: vec![staging.clone()] });
    let _ = std::fs::remove_dir_all(&staging_dir);
    saved?;
    let loaded = saved_model::load_with(&dir, &saved_model::LoadOptions::exact())?;
    let here = model.predict(&sample, 32)?;
    let there = loaded.call(saved_model::DEFAULT_SIGNATURE, &[("inputs", &sample)])?;
    let same = there.first().is_some_and(|(_, t)| t.bitwise_eq(&here));
    println!(
        "exported to {} (reloaded: predictions {}); serve it with `rivulet serve --model_name digits --model_base_path {}`",
        dir.display(),
        if same { "bitwise equal" } else { "DIFFER" },
        base.display()
    );
    if !same {
        return Err(Error::new(ErrorKind::FailedPrecondition, "the exported model predicts differently"));
    }
    Ok(())
}

/// A batch as JSON (nested lists, one per row).
fn rows_json(x: &Tensor) -> Result<String> {
    let rows = rivulet_serve::json::Output::new(x).map_err(|e| Error::new(ErrorKind::InvalidArgument, e.message))?;
    Ok(rows.to_json())
}

/// Under `dir/samples`: the first test digits side by side as one image,
/// and a text summary of the run.
fn write_samples(dir: &Path, test_x: &Tensor, test_y: &Tensor, accuracy: f64, epochs: usize) -> Result<()> {
    let pixels = test_x.to_vec::<f32>()?;
    let labels = test_y.to_vec::<i32>()?;
    let shown = SHOWN.min(labels.len());
    // An 8 x (8 * shown) strip: row r of the strip is row r of each digit in turn.
    let mut strip = Vec::with_capacity(64 * shown);
    for r in 0..8 {
        for digit in 0..shown {
            strip.extend_from_slice(&pixels[digit * 64 + r * 8..digit * 64 + r * 8 + 8]);
        }
    }
    let writer = SummaryWriter::create(dir.join("samples"))?;
    let step = epochs as i64;
    writer.image("test_digits", &Tensor::from_vec(strip, [8, 8 * shown, 1])?, step)?;
    let labels: Vec<String> = labels[..shown].iter().map(i32::to_string).collect();
    let text = format!(
        "Trained for {epochs} epochs; test accuracy **{accuracy:.4}**.\n\nThe digits in `test_digits` are labelled {}.",
        labels.join(", ")
    );
    writer.text("about", &text, step)?;
    writer.close()
}

/// The workers' communicator, in words.
fn describe(s: &Strategy) -> String {
    s.group().map_or_else(|| "one process".to_string(), |g| g.communicator().describe())
}
