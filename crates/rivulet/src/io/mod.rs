//! Files: checkpoints (safetensors with a JSON index). NumPy `.npy` files
//! are in [`crate::tensor::npy`].

pub mod checkpoint;
pub(crate) mod checksum;
pub mod npy;

pub use checkpoint::{load_file, save_file, CheckpointData, CheckpointManager};

use crate::error::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What every temporary file name of [`write_atomic`] contains after the
/// target's name: `<name>.tmp-<pid>-<n>`.
pub(crate) const TEMP_MARKER: &str = ".tmp-";

/// A temporary name beside `path` that no other write in any process uses:
/// the process id and a per-process counter (two threads saving the same
/// path each get their own).
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TEMP_MARKER}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    path.with_file_name(name)
}

/// Write a file through a temporary file beside it and a rename, so that a
/// crash never leaves a half-written file under `path`: the data and then
/// the directory entry are flushed to disk before this returns.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let written = (|| -> Result<()> {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::from(e).with_path(&tmp))?;
        let mut w = BufWriter::new(f);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::from(e).with_path(path)
    })?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Flush a directory's entries (a rename or unlink in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::from(e).with_path(dir))?;
    // Elsewhere a directory cannot be opened as a file; the rename is as durable as the OS makes it.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
