//! C ABI of [`crate::track_id`].

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::track_id;

/// Track id of a generation: 64 lowercase hex digits of SHA-256 over the canonical JSON of
/// `params_json` (a UTF-8 JSON object; canonical form = Python's
/// `json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, see
/// `docs/dll_api.md`). Key order and whitespace of the input do not matter. Free `*out` with
/// `ace_string_free`.
///
/// Errors: null pointers, invalid UTF-8, invalid JSON, a top level that is not an object, NaN or
/// infinite numbers, integers outside the 64-bit range. Thread-safe.
///
/// # Safety
/// `params_json` must be a NUL-terminated string; `out` valid for one `char *`.
#[no_mangle]
pub unsafe extern "C" fn ace_track_id(params_json: *const c_char, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let text = ptr::str_in(params_json, "params_json")?;
        ptr::string_out(out, track_id::track_id(text)?, "out")
    })
}

/// The canonical JSON text that `ace_track_id` hashes (for hosts that want to check or store it).
/// Free `*out` with `ace_string_free`. Errors as for `ace_track_id`.
///
/// # Safety
/// `params_json` must be a NUL-terminated string; `out` valid for one `char *`.
#[no_mangle]
pub unsafe extern "C" fn ace_track_canonical_json(params_json: *const c_char, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let text = ptr::str_in(params_json, "params_json")?;
        ptr::string_out(out, track_id::canonical_json(text)?, "out")
    })
}
