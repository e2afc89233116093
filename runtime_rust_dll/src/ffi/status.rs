//! `AceStatus`: the return value of every `ace_*` function.

use crate::error::ErrorKind;

/// Result code of every `ace_*` function. `ACE_STATUS_OK` is 0; on any other value the call changed
/// nothing the caller owns except where its documentation says so, and `ace_last_error` describes it.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AceStatus {
    Ok = 0,
    InvalidArgument = 1,
    NullPointer = 2,
    LengthMismatch = 3,
    InvalidJson = 4,
    InvalidUtf8 = 5,
    InvalidState = 6,
    Io = 7,
    Tokenizer = 8,
    /// A bug inside the library was caught at the boundary; the object involved should be freed.
    Panic = 99,
}

impl From<ErrorKind> for AceStatus {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => AceStatus::InvalidArgument,
            ErrorKind::NullPointer => AceStatus::NullPointer,
            ErrorKind::LengthMismatch => AceStatus::LengthMismatch,
            ErrorKind::InvalidJson => AceStatus::InvalidJson,
            ErrorKind::InvalidUtf8 => AceStatus::InvalidUtf8,
            ErrorKind::InvalidState => AceStatus::InvalidState,
            ErrorKind::Io => AceStatus::Io,
            ErrorKind::Tokenizer => AceStatus::Tokenizer,
        }
    }
}

impl AceStatus {
    /// Stable lower-case name used in the JSON form of the last error.
    pub fn name(self) -> &'static str {
        match self {
            AceStatus::Ok => "ok",
            AceStatus::InvalidArgument => "invalid_argument",
            AceStatus::NullPointer => "null_pointer",
            AceStatus::LengthMismatch => "length_mismatch",
            AceStatus::InvalidJson => "invalid_json",
            AceStatus::InvalidUtf8 => "invalid_utf8",
            AceStatus::InvalidState => "invalid_state",
            AceStatus::Io => "io",
            AceStatus::Tokenizer => "tokenizer",
            AceStatus::Panic => "panic",
        }
    }
}
