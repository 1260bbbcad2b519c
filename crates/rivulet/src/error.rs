//! The one error type of the library.
//!
//! Every fallible public entry point returns [`Result`]. An error carries a
//! [`ErrorKind`], a message, and — when it comes from an operation — the op's
//! type, its node name, the dtypes and shapes of its inputs, and the source
//! location of the call that created it.
//!
//! The location is the caller's line, also when the op was built inside the
//! library on the caller's behalf (a composite like `stack`, a loss, a
//! model's training step). One case Rust cannot trace: an op function
//! passed as a value (`.map(ops::relu)`) reports a line in the standard
//! library, because `#[track_caller]` does not reach through function
//! pointers or the `Fn` traits; write `.map(|x| ops::relu(x))` to get yours.

use std::fmt;
use std::panic::Location;

/// What went wrong, broadly; match on it, read the message for the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Shapes that do not fit the operation (rank, broadcasting, sizes).
    Shape,
    /// A dtype the operation does not accept, or dtypes that disagree.
    DType,
    /// An attribute or argument out of its domain (axis, index, count, ...).
    InvalidArgument,
    /// A name, node or file that does not exist.
    NotFound,
    /// An operating-system I/O failure.
    Io,
    /// A file or serialized graph that is damaged or of an unknown format.
    Format,
    /// State that must be set first (an unfed placeholder, an uninitialized variable).
    FailedPrecondition,
    /// Tensors from different graphs, or a symbolic tensor where a value is needed.
    Graph,
    /// Something the library does not support (yet), said plainly.
    Unimplemented,
    /// An accelerator failed: a driver call, a kernel compilation, or its
    /// memory ran out.
    Device,
    /// A collective could not complete: a peer worker died, hung past the
    /// timeout, or the communicator failed earlier (TensorFlow's UNAVAILABLE).
    Unavailable,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Shape => "shape error",
            ErrorKind::DType => "dtype error",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::Io => "I/O error",
            ErrorKind::Format => "format error",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Graph => "graph error",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Device => "device error",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// Where an error arose inside a computation: which op, which node, which inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct OpContext {
    /// The op type, e.g. `MatMul`.
    pub op: String,
    /// The node name in a graph (`layer1/matmul`); `None` in eager mode.
    pub node: Option<String>,
    /// Inputs as `dtype[shape]`, e.g. `f32[2, 3]`.
    pub inputs: Vec<String>,
    /// `file:line:column` of the call that created the op.
    pub location: String,
}

/// The error type of every fallible Rivulet call.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Option<Box<OpContext>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`, without op context.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), context: None }
    }
    pub(crate) fn shape(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Shape, message)
    }
    pub(crate) fn dtype(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::DType, message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }
    pub(crate) fn format(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Format, message)
    }
    pub(crate) fn graph(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Graph, message)
    }
    pub(crate) fn precondition(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::FailedPrecondition, message)
    }
    pub(crate) fn unimplemented(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unimplemented, message)
    }
    pub(crate) fn device(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Device, message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// The broad kind of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message without the op context.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The op that raised it, when it came from an operation.
    pub fn op_context(&self) -> Option<&OpContext> {
        self.context.as_deref()
    }

    /// Prefix the message with the file it concerns.
    pub(crate) fn with_path(mut self, path: &std::path::Path) -> Error {
        self.message = format!("{}: {}", path.display(), self.message);
        self
    }

    /// The error as seen from a public function `op` called at `location`
    /// with `inputs`: the context is set to that call unless it already
    /// points at code outside the library (the caller's own op). An inner
    /// op's name stays in the message (`ExpandDims: ...`).
    pub(crate) fn at_caller(mut self, context: impl FnOnce() -> OpContext) -> Error {
        let inner = match &self.context {
            Some(c) if !is_library_location(&c.location) => return self,
            Some(c) => Some(c.op.clone()),
            None => None,
        };
        let outer = context();
        if let Some(inner) = inner.filter(|i| *i != outer.op && !self.message.starts_with(&format!("{i}: "))) {
            self.message = format!("{inner}: {}", self.message);
        }
        self.context = Some(Box::new(outer));
        self
    }

    /// The error as returned by a public method `op` (not an op of its own,
    /// like `Sequential.fit`) called at `location`: an op context that
    /// points inside the library keeps its op, node and inputs but takes
    /// the caller's line; an error without one gets `op` and the line.
    pub(crate) fn relocated(mut self, op: &str, location: &Location<'_>) -> Error {
        match &mut self.context {
            Some(c) if is_library_location(&c.location) => c.location = location_string(location),
            Some(_) => {}
            None => {
                self.context = Some(Box::new(OpContext {
                    op: op.to_string(),
                    node: None,
                    inputs: Vec::new(),
                    location: location_string(location),
                }))
            }
        }
        self
    }

    /// Attach the op context unless one is already there (the innermost op wins).
    pub(crate) fn with_context(mut self, context: impl FnOnce() -> OpContext) -> Error {
        if self.context.is_none() {
            self.context = Some(Box::new(context()));
        }
        self
    }
}

/// The directory of this library's sources as the compiler names them
/// (`crates/rivulet/src/` in the workspace, a registry path elsewhere).
fn library_sources() -> &'static str {
    let this = file!();
    this.strip_suffix("error.rs").unwrap_or(this)
}

/// Whether a formatted location (`file:line:col`) lies inside this library:
/// an op created there on behalf of a caller (a composite, a loss, a model
/// step) should report the caller's line instead.
pub(crate) fn is_library_location(location: &str) -> bool {
    location.is_empty() || location.starts_with(library_sources())
}

/// Format a source location the way compilers print it.
pub(crate) fn location_string(location: &Location<'_>) -> String {
    format!("{}:{}:{}", location.file(), location.line(), location.column())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.label())?;
        if let Some(c) = &self.context {
            write!(f, " in {}", c.op)?;
            if let Some(node) = &c.node {
                write!(f, " '{node}'")?;
            }
            if !c.inputs.is_empty() {
                write!(f, " (inputs {})", c.inputs.join(", "))?;
            }
            write!(f, " created at {}", c.location)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Io };
        Error::new(kind, e.to_string())
    }
}

/// Return early with an error of the given constructor, formatted like `format!`.
macro_rules! bail {
    ($ctor:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$ctor(format!($($arg)*)))
    };
}
pub(crate) use bail;
