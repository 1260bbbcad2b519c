//! Rivulet's integration tests, one module per area, built as one test
//! binary: the crate and its dependencies are linked once, not once per file.
//!
//! `cargo test -p rivulet --test suite <module>::` runs one area.

#[macro_use]
mod common;

mod checkpoints;
mod collectives;
mod compile_time;
mod concurrency;
mod control_flow;
mod conv;
mod data_formats;
mod datasets;
mod devices;
mod differential;
mod elementwise;
mod errors_io;
mod examples;
mod factorizations;
mod fidelity;
mod file_fuzz;
mod fuzz;
mod gradients;
mod graph_session;
mod grid;
mod keras_metrics;
mod layering;
mod linalg_creation_nn;
mod movement;
mod mpi;
mod parity;
mod passes;
mod plot;
mod preprocessing;
mod reduce;
mod saved_model;
mod sim;
mod spectral;
mod summary;
mod tf_reference;
mod tracing;
mod training;
