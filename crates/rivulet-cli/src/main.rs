//! The `rivulet` command line.

mod bench;
mod demo;
mod deploy;
mod inspect;
mod scaling;
mod simulate;
mod train_csv;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "rivulet", version, about = "Rivulet: dataflow-graph numerical computation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Run `f` with every op it creates placed on `device` (a device scope), or
/// placed automatically for `auto` (the default device: a GPU where there
/// is one).
fn on_device(device: &str, f: impl FnOnce() -> rivulet::Result<()>) -> rivulet::Result<()> {
    if device.eq_ignore_ascii_case("auto") {
        return f();
    }
    let _scope = rivulet::device_scope(device)?;
    f()
}

/// The device name `--device` resolves to (`auto`: the default device).
fn resolve_device(device: &str) -> String {
    if device.eq_ignore_ascii_case("auto") {
        rivulet::default_device().short_name()
    } else {
        device.to_string()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Time the BENCHMARKS.md workloads in eager and graph mode.
    Bench {
        /// Workload ids to run (B1 B2 B3 B4 B5 B7 B8 B9 B10); all when none are given.
        #[arg(value_parser = bench::WORKLOADS, ignore_case = true)]
        ids: Vec<String>,
        /// Print one JSON object per measurement (the peers' keys) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this mode.
        #[arg(long, value_parser = ["eager", "graph"])]
        mode: Option<String>,
        /// Run on this device (`cpu`, `gpu`, `reference`, a TensorFlow
        /// device name such as `/gpu:0`, or `auto`: the default device). The
        /// CPU by default, as the peers' figures are.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Train an MLP (or a CNN) on the bundled handwritten digits; prints the test accuracy.
    Demo {
        /// Run eagerly instead of as a graph in a session.
        #[arg(long)]
        eager: bool,
        /// The network: `mlp` (64-256-128-10) or `cnn` (two convolutions with pooling).
        #[arg(long, default_value = "mlp", value_parser = ["mlp", "cnn"])]
        model: String,
        /// Training epochs (default: 40 for the MLP, 100 for the CNN).
        #[arg(long)]
        epochs: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Train on this device (`cpu`, `gpu`, `reference`, `/gpu:0`...); by
        /// default placement is automatic (a GPU where there is one).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Write TensorBoard logs here (`train/`, `validation/`, `samples/`);
        /// view them with `tensorboard --logdir DIR`.
        #[arg(long)]
        logdir: Option<std::path::PathBuf>,
        /// Save the trained model as version 1 of this model base directory
        /// (for `rivulet serve`), with an example request in its assets.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
        /// Train data-parallel on the workers `mpirun` started
        /// (`mpirun -np 4 rivulet demo --distributed`; needs a build with
        /// `--features mpi`). Rank 0 prints and writes.
        #[arg(long)]
        distributed: bool,
    },
    /// Under `mpirun -np N`: all-reduce latency and bandwidth beside plain
    /// MPI_Allreduce, the 100 MB gradient all-reduce, and the B5 step with
    /// and without overlapping the all-reduce with the backward pass.
    Scaling {
        /// One JSON object per measurement.
        #[arg(long)]
        json: bool,
        /// The largest all-reduce, in MB.
        #[arg(long, default_value_t = 100)]
        max_mb: usize,
        /// B5 steps per block (five blocks per variant, alternating).
        #[arg(long, default_value_t = 40)]
        steps: usize,
    },
    /// Inspect or run a saved model (as TensorFlow's `saved_model_cli`).
    #[command(subcommand)]
    SavedModel(SavedModelCommand),
    /// Serve saved models over TensorFlow Serving's REST API.
    Serve(deploy::ServeArgs),
    /// Send requests to a server from several clients; report throughput and latency.
    Loadtest {
        /// The URL (`http://127.0.0.1:8501/v1/models/digits:predict`).
        url: String,
        /// The JSON body (`@FILE` reads a file); a GET when absent.
        #[arg(long)]
        body: Option<String>,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Stop after this many requests...
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// ...or after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show what graph optimization does to a graph (the B5 training step by default).
    Inspect {
        /// A graph saved with Graph::to_json.
        file: Option<std::path::PathBuf>,
        /// Tensors to fetch (`node:0`).
        #[arg(long)]
        fetch: Vec<String>,
        /// Tensors fed at run time (`node:0`).
        #[arg(long)]
        feed: Vec<String>,
        /// Operations run for their effect.
        #[arg(long)]
        target: Vec<String>,
        /// Write the graph after each pass as DOT and text into this directory.
        #[arg(long)]
        dot: Option<std::path::PathBuf>,
        /// Print the whole plan before and after optimization.
        #[arg(long)]
        full: bool,
        /// Also run the optimized plan this many times on made-up feeds and
        /// print the time of each step.
        #[arg(long)]
        profile: Option<usize>,
        /// Build (and profile) the default graph on this device (`cpu`, `gpu`,
        /// `reference`); by default placement is automatic.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Train a classifier or regressor on a CSV or Parquet table: numeric
    /// columns standardized, text columns one-hot encoded, a validation split.
    TrainCsv {
        /// The table (`.csv`, `.csv.gz` or `.parquet`).
        file: std::path::PathBuf,
        /// The column to predict.
        #[arg(long)]
        label: String,
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// The fraction of rows, from the end, held out to validate.
        #[arg(long, default_value_t = 0.2)]
        validation_split: f64,
        /// `classification` or `regression`; by default text and integer labels are classes.
        #[arg(long, default_value = "auto", value_parser = ["auto", "classification", "regression"])]
        task: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// List the devices Rivulet found (and what it looked for but did not find).
    Devices,
    /// Run a worked simulation and write its data and pictures.
    Simulate {
        /// Which simulation.
        #[arg(value_parser = simulate::SIMULATIONS)]
        name: String,
        /// Grid points per side.
        #[arg(long)]
        n: Option<usize>,
        /// Time steps (for `cavity`: the most steps before giving up on a steady state).
        #[arg(long)]
        steps: Option<u64>,
        /// The Reynolds number (`cavity`: 100, 400 or 1000 compare with published data; `karman`).
        #[arg(long)]
        re: Option<f64>,
        /// Where to write (a directory per simulation inside it).
        #[arg(long, default_value = "simulations")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum SavedModelCommand {
    /// Signatures, inputs and outputs, variables and ops of a saved model.
    Show {
        dir: std::path::PathBuf,
        /// Every signature in full, every variable, op counts.
        #[arg(long)]
        all: bool,
        /// Only this signature, in full.
        #[arg(long = "signature_def", visible_alias = "signature")]
        signature: Option<String>,
    },
    /// Run a signature on inputs from `.npy` files; print or save the outputs.
    Run {
        dir: std::path::PathBuf,
        #[arg(long = "signature_def", visible_alias = "signature", default_value = "serving_default")]
        signature: String,
        /// `NAME=FILE.npy`, once per input.
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// Save each output as `NAME.npy` here instead of printing it.
        #[arg(long = "outdir", visible_alias = "output-dir")]
        output_dir: Option<std::path::PathBuf>,
    },
}

/// A closed pipe (`rivulet bench --json | head`) ends the process quietly,
/// as it does for other command-line tools, instead of a panic in `println!`.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the signal's default disposition at startup, before
    // any other thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { ids, json, mode, device } => {
            on_device(&device, || bench::run(&ids, json, mode.as_deref(), &resolve_device(&device)))
        }
        Command::Demo { eager, model, epochs, quiet, device, logdir, export, distributed } => {
            let mode = if eager { rivulet::nn::ExecutionMode::Eager } else { rivulet::nn::ExecutionMode::Graph };
            let cnn = model == "cnn";
            let epochs = epochs.unwrap_or(if cnn { 100 } else { 40 });
            let outputs = demo::Outputs { logdir: logdir.as_deref(), export: export.as_deref(), distributed };
            let done = on_device(&device, || demo::run(mode, cnn, epochs, quiet, &outputs));
            // MPI_Finalize, once the model and its strategy are gone.
            rivulet::distribute::shutdown();
            done
        }
        Command::Scaling { json, max_mb, steps } => scaling::run(json, max_mb, steps),
        Command::SavedModel(SavedModelCommand::Show { dir, all, signature }) => {
            deploy::show(&dir, all, signature.as_deref()).map(|s| print!("{s}"))
        }
        Command::SavedModel(SavedModelCommand::Run { dir, signature, inputs, output_dir }) => {
            deploy::run(&dir, &signature, &inputs, output_dir.as_deref()).map(|s| print!("{s}"))
        }
        Command::Serve(args) => deploy::serve(&args),
        Command::Loadtest { url, body, concurrency, requests, duration, json } => {
            deploy::loadtest(&url, body.as_deref(), concurrency, requests, duration, json)
        }
        Command::Inspect { file, fetch, feed, target, dot, full, profile, device } => {
            on_device(&device, || inspect::run(file, fetch, feed, target, dot, full, profile))
        }
        Command::TrainCsv { file, label, epochs, batch_size, validation_split, task, seed, quiet } => {
            let task = match task.as_str() {
                "classification" => train_csv::Task::Classification,
                "regression" => train_csv::Task::Regression,
                _ => train_csv::Task::Auto,
            };
            let o = train_csv::TrainCsv { epochs, batch_size, validation_split, task, seed, quiet };
            train_csv::run(&file, &label, &o)
        }
        Command::Simulate { name, n, steps, re, out } => simulate::run(&name, n, steps, re, &out),
        Command::Devices => {
            for d in rivulet::devices() {
                match d.kind {
                    rivulet::DeviceKind::Cpu => println!(
                        "{d}  (cpu: optimized kernels, simd={}, threads={})",
                        rivulet::simd_level(),
                        rayon_threads()
                    ),
                    rivulet::DeviceKind::Reference => {
                        println!("{d}  (reference: plain scalar loops on the host, the oracle for other backends)")
                    }
                    rivulet::DeviceKind::Gpu => println!("{d}  ({})", rivulet::gpu_status()),
                }
            }
            println!("default device: {} (set RIVULET_DEFAULT_DEVICE to choose another)", rivulet::default_device());
            let driver = rivulet::cuda_probe().describe();
            println!("{driver}");
            if rivulet::collective::MPI_BUILT {
                println!("MPI: built in (`mpirun -np N rivulet demo --distributed`)");
            } else {
                println!("MPI: not built in (rebuild with `--features mpi` for multi-worker training)");
            }
            let status = rivulet::gpu_status();
            if status != driver && !rivulet::devices().iter().any(|d| d.kind == rivulet::DeviceKind::Gpu) {
                println!("CUDA backend: {status}");
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
