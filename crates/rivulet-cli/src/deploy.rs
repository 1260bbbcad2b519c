//! `rivulet saved-model show|run`, `rivulet serve` and `rivulet loadtest`.

use rivulet::saved_model::{self, SavedModel};
use rivulet::{Error, ErrorKind, Result, Tensor};
use rivulet_serve::{BatchingOptions, ModelConfig, Server, ServerOptions, VersionPolicy};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{}: {e}", path.display()))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Bytes as KB/MB with two decimals.
fn human(bytes: usize) -> String {
    let (mut size, mut unit) = (bytes as f64, 0);
    while size >= 1024.0 && unit < 3 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.2} {}", ["B", "KB", "MB", "GB"][unit])
}

fn describe_signature(model: &SavedModel, name: &str, out: &mut String) -> Result<()> {
    let sig = model.signature(name)?;
    out.push_str(&format!(
        "signature_def['{name}']:\n  The given SavedModel SignatureDef contains the following input(s):\n"
    ));
    for (i, _) in &sig.inputs {
        out.push_str(&format!(
            "    inputs['{}'] tensor_info:\n        dtype: {}\n        shape: {}\n        name: {}\n",
            i.key, i.dtype, i.shape, i.tensor_name
        ));
    }
    out.push_str("  The given SavedModel SignatureDef contains the following output(s):\n");
    for (i, _) in &sig.outputs {
        out.push_str(&format!(
            "    outputs['{}'] tensor_info:\n        dtype: {}\n        shape: {}\n        name: {}\n",
            i.key, i.dtype, i.shape, i.tensor_name
        ));
    }
    out.push_str(&format!("  Method name is: {}\n", sig.method_name));
    Ok(())
}

/// `rivulet saved-model show DIR [--all] [--signature NAME]`.
pub fn show(dir: &Path, all: bool, signature: Option<&str>) -> Result<String> {
    let model = saved_model::load(dir)?;
    let mut out = format!("saved model {} ({})\n", dir.display(), model.producer());
    match signature {
        Some(name) => describe_signature(&model, name, &mut out)?,
        None if all => {
            for name in model.signature_names() {
                describe_signature(&model, name, &mut out)?;
                out.push('\n');
            }
        }
        None => {
            out.push_str("The given SavedModel contains the following signatures:\n");
            for name in model.signature_names() {
                out.push_str(&format!("  {name}\n"));
            }
        }
    }
    let vars = model.variables();
    out.push_str(&format!("variables: {} ({})\n", vars.len(), human(model.variable_bytes())));
    if all {
        for v in vars {
            out.push_str(&format!(
                "  {} {}{}{}\n",
                v.name,
                v.dtype,
                v.shape,
                if v.trainable { "" } else { " (not trainable)" }
            ));
        }
    }
    let ops = model.ops_used();
    let listed: Vec<String> = ops.iter().map(|(op, n)| if all { format!("{op} x{n}") } else { op.clone() }).collect();
    out.push_str(&format!("ops used ({}): {}\n", ops.len(), listed.join(", ")));
    Ok(out)
}

/// `rivulet saved-model run DIR --signature NAME --input x=FILE.npy [--output-dir D]`.
pub fn run(dir: &Path, signature: &str, inputs: &[String], output_dir: Option<&Path>) -> Result<String> {
    let model = saved_model::load(dir)?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for spec in inputs {
        let (name, file) =
            spec.split_once('=').ok_or_else(|| invalid(format!("--input '{spec}': expected NAME=FILE.npy")))?;
        named.push((name.to_string(), rivulet::load_npy(file)?));
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = model.call(signature, &refs)?;
    let mut out = String::new();
    for (name, t) in &outputs {
        match output_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
                let path = d.join(format!("{name}.npy"));
                rivulet::save_npy(t, &path)?;
                out.push_str(&format!("{name}: {}{} written to {}\n", t.dtype(), t.shape(), path.display()));
            }
            None => {
                let json = rivulet_serve::json::Output::new(t).map_err(|e| invalid(e.message))?.to_json();
                out.push_str(&format!("{name} ({}{}): {json}\n", t.dtype(), t.shape()));
            }
        }
    }
    Ok(out)
}

/// The flags of `rivulet serve` (TensorFlow Serving's names).
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Port of the REST API.
    #[arg(long = "rest_api_port", visible_alias = "port", default_value_t = 8501)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// The model's name in request paths.
    #[arg(long = "model_name")]
    pub model_name: Option<String>,
    /// A directory of numbered version directories, each a saved model.
    #[arg(long = "model_base_path")]
    pub model_base_path: Option<PathBuf>,
    /// Several models: TensorFlow Serving's model config file (text format).
    #[arg(long = "model_config_file")]
    pub model_config_file: Option<PathBuf>,
    /// Versions served: `latest`, `latest:N`, `all` or `specific:1,2`.
    #[arg(long = "version_policy", default_value = "latest")]
    pub version_policy: String,
    /// Merge concurrent requests into batches.
    #[arg(long = "enable_batching")]
    pub enable_batching: bool,
    /// TensorFlow Serving's batching parameters file (text format).
    #[arg(long = "batching_parameters_file")]
    pub batching_parameters_file: Option<PathBuf>,
    /// Rows in one merged batch.
    #[arg(long = "max_batch_size")]
    pub max_batch_size: Option<usize>,
    /// The longest a batch waits for more requests.
    #[arg(long = "batch_timeout_micros")]
    pub batch_timeout_micros: Option<u64>,
    /// Seconds between checks of the base paths for new versions.
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1.0)]
    pub poll_seconds: f64,
    /// Largest request body, in bytes.
    #[arg(long = "max_body_bytes", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// No pass that may change results by rounding (batch-norm folding).
    #[arg(long)]
    pub exact: bool,
}

fn policy(s: &str) -> Result<VersionPolicy> {
    if s == "all" {
        return Ok(VersionPolicy::All);
    }
    if let Some(n) = s.strip_prefix("latest") {
        let n = n.trim_start_matches(':');
        return Ok(VersionPolicy::Latest(if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| invalid(format!("bad policy '{s}'")))?
        }));
    }
    if let Some(v) = s.strip_prefix("specific:") {
        let v = v.split(',').map(|x| x.trim().parse::<u64>()).collect::<std::result::Result<Vec<_>, _>>();
        return Ok(VersionPolicy::Specific(v.map_err(|_| invalid(format!("bad policy '{s}'")))?));
    }
    Err(invalid(format!("--version_policy must be latest[:N], all or specific:V1,V2..., got '{s}'")))
}

/// `rivulet serve`.
pub fn serve(a: &ServeArgs) -> Result<()> {
    let models = match (&a.model_config_file, &a.model_name, &a.model_base_path) {
        (Some(f), None, None) => {
            let text = std::fs::read_to_string(f).map_err(|e| io(f, e))?;
            rivulet_serve::config::models_from_text(&text)?
        }
        (None, Some(name), Some(base)) => {
            let mut c = ModelConfig::new(name, base);
            c.policy = policy(&a.version_policy)?;
            vec![c]
        }
        _ => return Err(invalid("give --model_name and --model_base_path, or --model_config_file")),
    };
    let mut batching = None;
    if a.enable_batching {
        let mut b = match &a.batching_parameters_file {
            Some(f) => BatchingOptions::from_text(&std::fs::read_to_string(f).map_err(|e| io(f, e))?)?,
            None => BatchingOptions::default(),
        };
        if let Some(n) = a.max_batch_size {
            b.max_batch_size = n;
        }
        if let Some(t) = a.batch_timeout_micros {
            b.batch_timeout = Duration::from_micros(t);
        }
        batching = Some(b);
    }
    if !(a.poll_seconds > 0.0 && a.poll_seconds.is_finite()) {
        return Err(invalid("--file_system_poll_wait_seconds must be positive"));
    }
    let options = ServerOptions {
        models,
        batching,
        max_body_bytes: a.max_body_bytes,
        poll_interval: Duration::from_secs_f64(a.poll_seconds),
        load: if a.exact { saved_model::LoadOptions::exact() } else { saved_model::LoadOptions::default() },
        ..ServerOptions::default()
    };
    let addr: std::net::SocketAddr =
        format!("{}:{}", a.host, a.port).parse().map_err(|_| invalid(format!("bad address {}:{}", a.host, a.port)))?;
    let names: Vec<String> = options.models.iter().map(|m| m.name.clone()).collect();
    let server = Server::start(addr, options)?;
    let at = server.local_addr();
    println!(
        "serving {} on http://{at} (REST API: /v1/models/{}:predict; metrics: /monitoring/prometheus/metrics)",
        names.join(", "),
        names[0]
    );
    server.wait()?;
    println!("stopped");
    Ok(())
}

/// `rivulet loadtest`.
pub fn loadtest(
    url: &str,
    body: Option<&str>,
    concurrency: usize,
    requests: usize,
    duration: Option<f64>,
    json: bool,
) -> Result<()> {
    let body = match body {
        Some(b) => match b.strip_prefix('@') {
            Some(file) => std::fs::read(file).map_err(|e| io(Path::new(file), e))?,
            None => b.as_bytes().to_vec(),
        },
        None => Vec::new(),
    };
    let duration = match duration {
        Some(d) if d > 0.0 && d.is_finite() => Some(Duration::from_secs_f64(d)),
        Some(_) => return Err(invalid("--duration must be positive")),
        None => None,
    };
    let report = rivulet_serve::loadtest::run(&rivulet_serve::loadtest::LoadOptions {
        url: url.to_string(),
        body,
        concurrency,
        requests,
        duration,
    })?;
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.summary());
        if let Some(e) = &report.first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}
