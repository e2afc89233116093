//! C ABI of the model package and the request schema (`ace_package_*`, `ace_request_normalize`).

use std::ffi::c_char;
use std::sync::Arc;

use super::guard::guard;
use super::ptr;
use super::AceStatus;
use crate::package::{OpenOptions, Package};

/// An opened, checked model package. Immutable: may be used from several threads at once, and
/// by any number of generations (each keeps it alive; freeing the package first is allowed).
pub struct AcePackage {
    pub(crate) inner: Arc<Package>,
}

/// Opens the model package in directory `dir` (NUL-terminated UTF-8 path) and writes it to
/// `*out`; free it with `ace_package_free`. `options_json` may be null or a JSON object:
/// `{"verify_sha256": true}` also checks every file's sha256 (reads the whole package).
///
/// Checks: manifest format version, every listed file inside the package directory, present and
/// of the listed size; component signatures; `silence_latent` (and `null_condition_emb` when
/// listed) as float32 `.npy`; the text tokenizer.
///
/// Errors: `ACE_STATUS_IO` (missing directory, manifest or file; the message names it),
/// `ACE_STATUS_INVALID_JSON` (manifest or options not valid), `ACE_STATUS_INVALID_ARGUMENT`
/// (unsupported format version, wrong size or sha256, bad array), `ACE_STATUS_TOKENIZER`.
///
/// # Safety
/// `dir` a NUL-terminated string; `options_json` null or a NUL-terminated string; `out` a valid
/// `AcePackage *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_package_open(
    dir: *const c_char,
    options_json: *const c_char,
    out: *mut *mut AcePackage,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let dir = ptr::str_in(dir, "dir")?;
        let options = OpenOptions::from_json(ptr::opt_str_in(options_json, "options_json")?)?;
        let package = Package::open(dir, &options)?;
        ptr::handle_out(out, AcePackage { inner: Arc::new(package) }, "out")
    })
}

/// Frees a package. Null is a no-op. Generations created from it stay valid.
///
/// # Safety
/// `pkg` null or a handle from `ace_package_open` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_package_free(pkg: *mut AcePackage) -> AceStatus {
    guard(|| {
        ptr::handle_free(pkg);
        Ok(())
    })
}

/// Writes a JSON description of the package to `*out` (free with `ace_string_free`): path,
/// model family / variant / kind, `random_weights`, precision, components with file, bytes and
/// input/output signatures, total bytes, exporter, manifest sha256.
///
/// # Safety
/// `pkg` a live handle; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_package_info_json(pkg: *const AcePackage, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        let p = ptr::handle_ref(pkg, "pkg")?;
        ptr::string_out(out, p.inner.info_json(), "out")
    })
}

/// Normalises a request (`request_json`, a JSON object) with the schema of the package's model
/// family (ACE-Step 1.5 or v1; a key of the other family is an error naming it) and kind, and writes
/// `{"request": {...}, "notes": [...]}` to `*out` (free with `ace_string_free`): aliases applied,
/// defaults filled, numbers in one form, values the model kind ignores dropped and reported in
/// `notes`. Seeds are resolved by `ace_generation_create`, not here.
///
/// Errors: `ACE_STATUS_INVALID_JSON` (not a JSON object, duplicate key),
/// `ACE_STATUS_INVALID_ARGUMENT` (unknown or unsupported key, wrong type or range; the message
/// starts with `request.<field>`).
///
/// # Safety
/// `pkg` a live handle; `request_json` a NUL-terminated string; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_request_normalize(
    pkg: *const AcePackage,
    request_json: *const c_char,
    out: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let p = ptr::handle_ref(pkg, "pkg")?;
        let text = ptr::str_in(request_json, "request_json")?;
        let json = match p.inner.family() {
            crate::package::Family::V15 => {
                let n = crate::request::normalize(text, p.inner.kind())?;
                serde_json::json!({"request": n.request.to_json(), "notes": n.notes})
            }
            crate::package::Family::V1 => {
                let r = crate::request_v1::normalize(text)?;
                serde_json::json!({"request": r.to_json(), "notes": []})
            }
        };
        ptr::string_out(out, json.to_string(), "out")
    })
}
