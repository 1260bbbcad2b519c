//! Files: checkpoints (safetensors with a JSON index). NumPy `.npy` files
//! are in [`crate::tensor::npy`].

pub mod checkpoint;

pub use checkpoint::{load_file, save_file, CheckpointData, CheckpointManager};
