//! The run stage: sessions and their compiled plans.

mod plan;
mod session;

pub use session::{Session, SessionOptions};
