//! The run stage: sessions, their compiled plans, and the variables whose
//! values persist across runs.

mod capture;
mod control;
mod plan;
mod session;
mod store;
mod variable;

pub(crate) use store::VariableCell;
pub(crate) use variable::State;

pub use capture::{enable_graph_capture, graph_capture_enabled, GraphStatus};
pub use plan::PlanReport;
pub use session::{RunProfile, Session, SessionOptions, StepProfile};
pub use variable::Variable;
