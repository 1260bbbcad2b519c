//! Files: checkpoints (safetensors with a JSON index). NumPy `.npy` files
//! are in [`crate::tensor::npy`].

pub mod checkpoint;

pub use checkpoint::{load_file, save_file, CheckpointData, CheckpointManager};

use crate::error::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write a file through a temporary file beside it and a rename, so that a
/// crash never leaves a half-written file under `path`.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<()>) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
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
    })
}
