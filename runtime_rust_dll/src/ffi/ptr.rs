//! Pointer conversions, in one place: every raw pointer that crosses the ABI is null-checked and
//! given a lifetime here, so the entry points themselves hold no pointer arithmetic.
//!
//! Safety contract for all functions here (stated once, relied on by every caller): a non-null
//! pointer passed by the C caller points to memory valid for the length the caller also passed,
//! properly aligned, and not mutated by anyone else for the duration of the call.

use std::ffi::{c_char, CStr, CString};

use crate::error::{Error, ErrorKind, Result};
use crate::limits::MAX_STRING_BYTES;

fn null(name: &str) -> Error {
    Error::new(ErrorKind::NullPointer, format!("{name} is null"))
}

/// No buffer can hold more than `isize::MAX` bytes, so a larger claimed length is an error rather
/// than a slice that breaks `from_raw_parts`'s contract (a debug build would abort on it).
fn ensure_addressable<T>(len: usize, name: &str) -> Result<()> {
    let max = isize::MAX as usize / std::mem::size_of::<T>().max(1);
    if len > max {
        return Err(Error::length_mismatch(format!(
            "{name}: a length of {len} elements is larger than any buffer can be"
        )));
    }
    Ok(())
}

/// A read-only buffer of `len` elements.
pub(crate) unsafe fn slice_in<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if ptr.is_null() {
        return Err(null(name));
    }
    ensure_addressable::<T>(len, name)?;
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// An optional read-only buffer: null means "not given" (only where a function documents that).
pub(crate) unsafe fn opt_slice_in<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<Option<&'a [T]>> {
    if ptr.is_null() {
        return Ok(None);
    }
    slice_in(ptr, len, name).map(Some)
}

/// A writable buffer of `len` elements.
pub(crate) unsafe fn slice_out<'a, T>(ptr: *mut T, len: usize, name: &str) -> Result<&'a mut [T]> {
    if ptr.is_null() {
        return Err(null(name));
    }
    ensure_addressable::<T>(len, name)?;
    Ok(std::slice::from_raw_parts_mut(ptr, len))
}

/// Fails when two buffers overlap in memory; output buffers must not alias inputs unless a
/// function documents an in-place (inout) parameter instead.
pub(crate) fn ensure_disjoint<A, B>(a: &[A], a_name: &str, b: &[B], b_name: &str) -> Result<()> {
    let a0 = a.as_ptr() as usize;
    let a1 = a0 + std::mem::size_of_val(a);
    let b0 = b.as_ptr() as usize;
    let b1 = b0 + std::mem::size_of_val(b);
    if a0 < b1 && b0 < a1 {
        return Err(Error::invalid_argument(format!("{a_name} and {b_name} overlap in memory")));
    }
    Ok(())
}

/// A NUL-terminated UTF-8 string of at most [`MAX_STRING_BYTES`] bytes.
pub(crate) unsafe fn str_in<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null(name));
    }
    let bytes = CStr::from_ptr(ptr).to_bytes();
    if bytes.len() > MAX_STRING_BYTES {
        return Err(Error::invalid_argument(format!(
            "{name} is {} bytes long, above the limit of {MAX_STRING_BYTES}",
            bytes.len()
        )));
    }
    std::str::from_utf8(bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidUtf8, format!("{name} is not valid UTF-8: {e}")))
}

/// An optional NUL-terminated UTF-8 string: null means "not given".
pub(crate) unsafe fn opt_str_in<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    str_in(ptr, name).map(Some)
}

/// Writes `value` through an out-parameter.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(null(name));
    }
    ptr.write(value);
    Ok(())
}

/// Checks an out-parameter before any work is done, so a call fails early and cleanly.
pub(crate) fn ensure_out<T>(ptr: *mut T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(null(name));
    }
    Ok(())
}

/// Hands a string to the caller, who frees it with `ace_string_free`.
pub(crate) unsafe fn string_out(ptr: *mut *mut c_char, value: String, name: &str) -> Result<()> {
    ensure_out(ptr, name)?;
    let owned = CString::new(value)
        .map_err(|_| Error::invalid_argument(format!("{name}: result contains a NUL byte")))?;
    ptr.write(owned.into_raw());
    Ok(())
}

/// Moves an object to the heap and hands it to the caller as an opaque handle.
pub(crate) unsafe fn handle_out<T>(ptr: *mut *mut T, value: T, name: &str) -> Result<()> {
    ensure_out(ptr, name)?;
    ptr.write(Box::into_raw(Box::new(value)));
    Ok(())
}

/// Borrows the object behind a handle.
pub(crate) unsafe fn handle_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    ptr.as_ref().ok_or_else(|| null(name))
}

/// Mutably borrows the object behind a handle.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    ptr.as_mut().ok_or_else(|| null(name))
}

/// Frees a handle made by [`handle_out`]. Null is a no-op, like `free(NULL)`.
pub(crate) unsafe fn handle_free<T>(ptr: *mut T) {
    if !ptr.is_null() {
        drop(Box::from_raw(ptr));
    }
}

/// Fails unless a buffer's length equals what its shape says.
pub(crate) fn ensure_len(actual: usize, expected: usize, what: &str) -> Result<()> {
    if actual != expected {
        return Err(Error::length_mismatch(format!(
            "{what} has {actual} elements but its shape needs {expected}"
        )));
    }
    Ok(())
}
