//! The one error type of the core. Safe modules return [`Result`]; the `ffi` layer turns an
//! [`Error`] into an `AceStatus` plus the thread-local message the caller can read back.

use std::fmt;

/// What went wrong, coarse enough for a caller to branch on. Each kind maps to one `AceStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An argument has a value the function cannot accept (range, NaN, unknown name, ...).
    InvalidArgument,
    /// A required pointer was null.
    NullPointer,
    /// A buffer length does not match the shape it claims, or is zero where data is required.
    LengthMismatch,
    /// A JSON argument did not parse, or has unknown / missing / mistyped keys.
    InvalidJson,
    /// A string argument is not valid UTF-8.
    InvalidUtf8,
    /// The object is in a state where this call is not allowed (e.g. accept after completion).
    InvalidState,
    /// Reading a file failed.
    Io,
    /// The tokenizer rejected its file or an input.
    Tokenizer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn length_mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LengthMismatch, message)
    }
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidJson, message)
    }
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Checks that every value of a buffer is finite; `what` names the buffer in the message.
pub fn ensure_finite(values: &[f32], what: &str) -> Result<()> {
    // A branch-free scan per chunk vectorises; an early-exit search does not. The position is
    // looked up only once a chunk is known to hold a bad value.
    const CHUNK: usize = 4096;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        if !chunk.iter().fold(true, |ok, v| ok & v.is_finite()) {
            let i = c * CHUNK + chunk.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::invalid_argument(format!(
                "{what} contains a non-finite value ({}) at index {i}",
                values[i]
            )));
        }
    }
    Ok(())
}

/// Checks a computed result: finite inputs can still overflow float32 (x = 3e38, v = −3e38), and
/// an infinite latent is an error, not a success. `what` names the output buffer.
pub fn ensure_finite_result(values: &[f32], what: &str) -> Result<()> {
    ensure_finite(values, what).map_err(|e| {
        Error::invalid_argument(format!("{}: the inputs overflow float32", e.message))
    })
}

/// Parses a JSON object into `T` with the strict rules of [`crate::json`] (top level an object,
/// no duplicate keys, no arrays for structs, errors naming the key path), mapping every failure to
/// an `InvalidJson` error that names `what`. Use `#[serde(deny_unknown_fields)]` on `T` so unknown
/// keys are rejected too.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    crate::json::parse(text, what)
}
