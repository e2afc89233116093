//! The C ABI (`ace_*`, ABI v1). This module and its children hold every `extern "C"` function and
//! all of the crate's `unsafe`; the rest of the crate is safe Rust that knows nothing of C.
//!
//! Conventions every entry point follows (see `docs/dll_api.md`):
//! - returns an [`AceStatus`]; results go through out-parameters;
//! - its body runs inside [`guard::guard`], so errors and panics become a status plus a
//!   thread-local message, and nothing unwinds into C;
//! - pointers are converted only through [`ptr`], which null-checks them; every buffer comes with
//!   its element count and that count is checked against the shape it claims;
//! - objects are created by `ace_<type>_create`/`ace_create_<type>` and freed by the matching
//!   `_free`; strings returned by the library are freed with [`ace_string_free`].

mod context;
mod frames;
mod generation;
mod package;
pub mod guard;
mod guidance;
mod noise;
mod ort_ops;
mod peak_guard;
mod resample;
mod schedule;
mod solver;
pub(crate) mod ptr;
pub mod status;
mod fsm;
mod metadata;
mod prompt;
mod sampling;
mod tiling;
mod tokenizer;
mod track_id;

use std::ffi::{c_char, CString};

pub use status::AceStatus;

use guard::guard;

/// The ABI version this library implements. Version 1 only grows: no signature ever changes.
pub const ACE_ABI_VERSION: u32 = 1;

/// Returns the ABI version of the loaded library (compare with `ACE_ABI_VERSION` from the header).
#[no_mangle]
pub extern "C" fn ace_abi_version() -> u32 {
    ACE_ABI_VERSION
}

/// Writes the library's version string (crate version, e.g. "0.1.0") to `*out`; free it with
/// `ace_string_free`.
///
/// # Safety
/// `out` must be a valid pointer to a `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_version_string(out: *mut *mut c_char) -> AceStatus {
    guard(|| ptr::string_out(out, env!("CARGO_PKG_VERSION").to_string(), "out"))
}

/// Writes the message of this thread's last error to `*out` (an empty string if the most recent
/// call succeeded); free it with `ace_string_free`. Does not change the last error.
///
/// # Safety
/// `out` must be a valid pointer to a `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_last_error(out: *mut *mut c_char) -> AceStatus {
    let message = guard::last_error().map(|(_, m)| m).unwrap_or_default();
    last_error_out(out, message)
}

/// Writes this thread's last error as JSON `{"code": <int>, "name": "<status>", "message": "..."}`
/// to `*out` (code 0 if the most recent call succeeded); free it with `ace_string_free`. Does not
/// change the last error.
///
/// # Safety
/// `out` must be a valid pointer to a `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_last_error_json(out: *mut *mut c_char) -> AceStatus {
    let (status, message) = guard::last_error().unwrap_or((AceStatus::Ok, String::new()));
    let json = serde_json::json!({
        "code": status as i32,
        "name": status.name(),
        "message": message,
    });
    last_error_out(out, json.to_string())
}

/// Reading the last error must not overwrite it, so these two bypass `guard`.
unsafe fn last_error_out(out: *mut *mut c_char, text: String) -> AceStatus {
    if out.is_null() {
        return AceStatus::NullPointer;
    }
    // Interior NULs cannot occur in our messages, but never panic here.
    let text = text.replace('\0', " ");
    match CString::new(text) {
        Ok(s) => {
            out.write(s.into_raw());
            AceStatus::Ok
        }
        Err(_) => AceStatus::InvalidArgument,
    }
}

/// Frees a string returned by this library. Null is a no-op.
///
/// # Safety
/// `s` must be null or a pointer this library returned and that has not been freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_string_free(s: *mut c_char) {
    if !s.is_null() {
        drop(CString::from_raw(s));
    }
}
