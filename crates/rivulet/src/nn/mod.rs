//! Neural networks: initializers, layers, losses, metrics, optimizers and a
//! Keras-like `Sequential` model with `fit`.

pub mod composed_rules;
pub mod init;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod optimizers;

pub use composed_rules::ComposedRule;
pub use init::Initializer;
pub use layers::{
    Activation, ActivationLayer, BatchNormalization, Dense, Dropout, Embedding, Flatten, Layer, LayerNorm,
};
pub use losses::{Loss, Reduction};
pub use metrics::Metric;
pub use model::{ExecutionMode, FitOptions, History, Sequential, Verbosity};
pub use optimizers::{clip_by_global_norm, LearningRate, Optimizer, Update};
