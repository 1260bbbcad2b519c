//! Request errors with TensorFlow Serving's status codes.

use axum::http::StatusCode;

/// A failed request: its canonical (gRPC) code and a message. The HTTP
/// status follows TensorFlow Serving's mapping of the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeError {
    pub code: Code,
    pub message: String,
}

/// The canonical error codes the REST API returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    Internal,
    /// The body is over the server's limit (HTTP 413; TensorFlow Serving has no limit).
    PayloadTooLarge,
}

impl Code {
    /// TensorFlow Serving's HTTP status for the code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl ServeError {
    pub fn new(code: Code, message: impl Into<String>) -> ServeError {
        ServeError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ServeError {
        ServeError::new(Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> ServeError {
        ServeError::new(Code::NotFound, message)
    }
}

/// A model's error while it runs a request: bad inputs are the caller's
/// fault, anything else is the server's.
impl From<rivulet::Error> for ServeError {
    fn from(e: rivulet::Error) -> ServeError {
        use rivulet::ErrorKind as K;
        let code = match e.kind() {
            K::Shape | K::DType | K::InvalidArgument => Code::InvalidArgument,
            K::NotFound => Code::NotFound,
            _ => Code::Internal,
        };
        ServeError::new(code, e.to_string())
    }
}
