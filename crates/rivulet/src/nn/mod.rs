//! Neural networks: initializers, layers, losses, metrics, optimizers and a
//! Keras-like `Sequential` model with `fit`.

pub mod composed_rules;
pub mod conv_layers;
pub mod init;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod optimizers;

pub use composed_rules::ComposedRule;
pub use conv_layers::{
    AveragePooling1D, AveragePooling2D, AveragePooling3D, Conv, Conv1D, Conv2D, Conv3D, GlobalAveragePooling1D,
    GlobalAveragePooling2D, GlobalAveragePooling3D, GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D,
    GlobalPooling, MaxPooling1D, MaxPooling2D, MaxPooling3D, Pooling,
};
pub use init::Initializer;
pub use layers::{
    Activation, ActivationLayer, BatchNormalization, Dense, Dropout, Embedding, Flatten, Layer, LayerNorm,
};
pub use losses::{Loss, Reduction};
pub use metrics::Metric;
pub use model::{ExecutionMode, FitOptions, History, Sequential, Verbosity};
pub use optimizers::{clip_by_global_norm, LearningRate, Optimizer, Update};
