//! Neural networks: initializers, layers, losses, metrics, optimizers and a
//! Keras-like `Sequential` model with `fit`.

pub mod callbacks;
pub mod composed_rules;
pub mod conv_layers;
pub mod init;
pub mod layers;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod optimizers;
pub mod preprocessing;
pub mod reshaping_layers;
pub mod tensorboard;

pub use callbacks::{Callback, SharedCallback};
pub use composed_rules::ComposedRule;
pub use conv_layers::{
    AveragePooling1D, AveragePooling2D, AveragePooling3D, Conv, Conv1D, Conv2D, Conv2DTranspose, Conv3D,
    Conv3DTranspose, DepthwiseConv2D, GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAveragePooling3D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D, GlobalPooling, MaxPooling1D, MaxPooling2D,
    MaxPooling3D, Pooling, SeparableConv2D,
};
pub use init::Initializer;
pub use layers::{
    Activation, ActivationLayer, BatchNormalization, Dense, Dropout, Embedding, Flatten, GroupNormalization, Identity,
    Layer, LayerNorm, LayerNormalization, LeakyReLU, Rescaling,
};
pub use losses::{Loss, Reduction};
pub use metrics::Metric;
pub use model::{ExecutionMode, FitOptions, History, Sequential, Verbosity};
pub use optimizers::{clip_by_global_norm, LearningRate, Optimizer, Update};
pub use preprocessing::{
    CategoryEncoding, Discretization, EncodingMode, Hashing, IntegerLookup, Normalization, StringLookup,
};
pub use reshaping_layers::{
    Cropping, Cropping1D, Cropping2D, Cropping3D, Permute, RepeatVector, Reshape, Resizing, UpSampling, UpSampling1D,
    UpSampling2D, UpSampling3D, ZeroPadding, ZeroPadding1D, ZeroPadding2D, ZeroPadding3D,
};
pub use tensorboard::{TensorBoard, UpdateFreq};
