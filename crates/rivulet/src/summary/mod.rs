//! TensorBoard event files, as `tf.summary` writes them.
//!
//! A [`SummaryWriter`] (`tf.summary.create_file_writer(logdir)`) appends
//! events to `logdir/events.out.tfevents.<secs>.<host>.<pid>.<n>`: scalars,
//! histograms, PNG images, text and graphs, each with its step and wall
//! time. TensorBoard reads such a directory as one run
//! (`tensorboard --logdir logdir`). [`read_events`] reads a file back,
//! checking every record's CRCs.
//!
//! The format: TFRecord framing ([`tfrecord`]) around `tensorflow.Event`
//! protocol buffers ([`proto`], declared with `prost`). Scalars are
//! classic `simple_value`s, histograms `HistogramProto`s and images
//! `Summary.Image`s (what TensorBoard's `EventAccumulator` exposes as
//! Scalars, Histograms and Images); text is a string tensor for the
//! `text` plugin, as `tf.summary.text` writes it.
//!
//! ```
//! use rivulet::summary::{read_events, SummaryWriter};
//! let dir = std::env::temp_dir().join(format!("rivulet-summary-doc-{}", std::process::id()));
//! let writer = SummaryWriter::create(&dir)?;
//! writer.scalar("loss", 0.25, 1)?;
//! writer.text("notes", "*hello*", 1)?;
//! writer.flush()?;
//! let events = read_events(writer.path())?;
//! assert_eq!(events.len(), 3); // the file version, then one per summary
//! # drop(writer);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), rivulet::Error>(())
//! ```

mod graph_def;
mod histogram;
mod image;
pub mod proto;
mod record;

pub use graph_def::{data_type, graph_def, shape_proto};
pub use histogram::{histogram_proto, HistogramData, DEFAULT_BUCKETS};
pub use record::{masked_crc32c, read_events, split_records, tfrecord};

use crate::error::{bail, Error, Result};
use crate::graph::{Graph, Tensor};
use parking_lot::Mutex;
use prost::Message;
use proto::summary::value::Value as SummaryValue;
use proto::{event, summary, summary_metadata, DataType, Event, Summary, SummaryMetadata, TensorProto};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `file_version` of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.DataClass`'s `DATA_CLASS_TENSOR`.
const DATA_CLASS_TENSOR: i32 = 2;

/// Event files made by this process so far: the last part of their names,
/// so that two writers opened in the same second get different files.
static FILES_MADE: AtomicU64 = AtomicU64::new(0);

/// Writes summaries to a new event file in a log directory, like
/// `tf.summary.create_file_writer`. Events are buffered; [`flush`]
/// (Self::flush) writes them out, and so does dropping the writer
/// ([`close`](Self::close) reports the errors a drop would swallow). The
/// methods take `&self`: one writer can be shared between threads.
pub struct SummaryWriter {
    path: PathBuf,
    file: Mutex<Option<BufWriter<File>>>,
}

impl std::fmt::Debug for SummaryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryWriter").field("path", &self.path).finish()
    }
}

/// Seconds since the Unix epoch, the events' `wall_time`.
fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The machine's name, for the file name (as TensorFlow puts it there).
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // A file name part: no separators or oddities from the environment.
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// `e` with the summary's tag in front of its message.
fn for_tag(e: Error, tag: &str) -> Error {
    Error::new(e.kind(), format!("summary '{tag}': {}", e.message()))
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() {
        bail!(invalid, "a summary needs a non-empty tag");
    }
    Ok(())
}

impl SummaryWriter {
    /// Create `logdir` (and its parents) if needed and a new event file in
    /// it, starting with the `file_version` event.
    pub fn create(logdir: impl AsRef<Path>) -> Result<SummaryWriter> {
        let logdir = logdir.as_ref();
        std::fs::create_dir_all(logdir).map_err(|e| Error::from(e).with_path(logdir))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let n = FILES_MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("events.out.tfevents.{secs:010}.{}.{}.{n}", hostname(), std::process::id());
        let path = logdir.join(name);
        // Never append to (or truncate) a file that is already there.
        let file =
            File::options().write(true).create_new(true).open(&path).map_err(|e| Error::from(e).with_path(&path))?;
        let writer = SummaryWriter { path, file: Mutex::new(Some(BufWriter::new(file))) };
        writer.write_event(&Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event (framed as a TFRecord) to the file.
    pub fn write_event(&self, event: &Event) -> Result<()> {
        let record = tfrecord(&event.encode_to_vec());
        let mut guard = self.file.lock();
        let Some(file) = guard.as_mut() else {
            bail!(precondition, "{}: the summary writer is closed", self.path.display());
        };
        file.write_all(&record).map_err(|e| Error::from(e).with_path(&self.path))
    }

    /// Append a summary of one tagged value at `step`.
    fn write_value(&self, tag: &str, value: SummaryValue, metadata: Option<SummaryMetadata>, step: i64) -> Result<()> {
        check_tag(tag)?;
        let value = summary::Value { tag: tag.to_string(), metadata, value: Some(value) };
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(event::What::Summary(Summary { value: vec![value] })),
        })
    }

    /// A scalar (`tf.summary.scalar`), stored as a 32-bit `simple_value`
    /// as TensorBoard's scalar charts read it.
    pub fn scalar(&self, tag: &str, value: f64, step: i64) -> Result<()> {
        self.write_value(tag, SummaryValue::SimpleValue(value as f32), None, step)
    }

    /// A histogram of `values` (a real or integer [`Tensor`], or `f64`s) in
    /// [`DEFAULT_BUCKETS`] equal-width buckets from the smallest to the
    /// largest value (see [`histogram_proto`]).
    pub fn histogram<V: HistogramData + ?Sized>(&self, tag: &str, values: &V, step: i64) -> Result<()> {
        check_tag(tag)?;
        let histo = histogram_proto(&values.histogram_values()?, DEFAULT_BUCKETS).map_err(|e| for_tag(e, tag))?;
        self.write_value(tag, SummaryValue::Histo(histo), None, step)
    }

    /// Images from a `[h, w, c]` or `[n, h, w, c]` tensor of `u8` pixels or
    /// float pixels in `[0, 1]` (1 to 4 channels: gray, gray + alpha, RGB,
    /// RGBA), PNG-encoded. One image is written under `tag`; a batch of
    /// `n` under `tag/image/0` ... `tag/image/{n-1}`, as TensorFlow 1's
    /// `tf.summary.image` names them.
    pub fn image(&self, tag: &str, images: &Tensor, step: i64) -> Result<()> {
        check_tag(tag)?;
        let encoded = image::encode_images(images).map_err(|e| for_tag(e, tag))?;
        let single = images.rank() == 3;
        for (i, img) in encoded.into_iter().enumerate() {
            let tag = if single { tag.to_string() } else { format!("{tag}/image/{i}") };
            self.write_value(&tag, SummaryValue::Image(img), None, step)?;
        }
        Ok(())
    }

    /// Text (markdown), as `tf.summary.text` writes it: a scalar string
    /// tensor for TensorBoard's `text` plugin.
    pub fn text(&self, tag: &str, text: &str, step: i64) -> Result<()> {
        let tensor = TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: Some(proto::TensorShapeProto::default()),
            string_val: vec![text.as_bytes().to_vec()],
        };
        let metadata = SummaryMetadata {
            plugin_data: Some(summary_metadata::PluginData {
                plugin_name: "text".to_string(),
                // TextPluginData { version: 0 } serializes to nothing.
                content: Vec::new(),
            }),
            data_class: DATA_CLASS_TENSOR,
        };
        self.write_value(tag, SummaryValue::Tensor(tensor), Some(metadata), step)
    }

    /// The graph, as a `GraphDef` event (TensorBoard's Graphs tab; see
    /// [`graph_def`] for what each node carries).
    pub fn graph(&self, graph: &Graph) -> Result<()> {
        let bytes = graph_def(graph).encode_to_vec();
        self.write_event(&Event { wall_time: wall_time(), step: 0, what: Some(event::What::GraphDef(bytes)) })
    }

    /// Write the buffered events to the file.
    pub fn flush(&self) -> Result<()> {
        match self.file.lock().as_mut() {
            Some(file) => file.flush().map_err(|e| Error::from(e).with_path(&self.path)),
            None => Ok(()),
        }
    }

    /// Flush and close the file, reporting any error.
    pub fn close(self) -> Result<()> {
        let file = self.file.lock().take();
        match file {
            Some(mut file) => file.flush().map_err(|e| Error::from(e).with_path(&self.path)),
            None => Ok(()),
        }
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        if let Some(mut file) = self.file.get_mut().take() {
            // Nothing to report to: `close` is the way to see the error.
            let _ = file.flush();
        }
    }
}
