//! C ABI of the tokenizer (`ace_tokenizer_*`).

use std::ffi::c_char;
use std::sync::Arc;

use super::guard::guard;
use super::ptr;
use super::AceStatus;
use crate::error::Error;
use crate::tokenizer::Tokenizer;

/// An opaque loaded tokenizer. Immutable: may be used from several threads at once.
pub struct AceTokenizer {
    pub(crate) inner: Arc<Tokenizer>,
}

/// Ids slice that may be null when empty.
unsafe fn ids_in<'a>(ids: *const u32, n: usize, name: &str) -> crate::Result<&'a [u32]> {
    if n == 0 {
        return Ok(&[]);
    }
    ptr::slice_in(ids, n, name)
}

/// Loads a Hugging Face `tokenizer.json` from `path` into a new tokenizer written to `*out`;
/// free it with `ace_tokenizer_free`.
///
/// Errors: `ACE_STATUS_IO` when the file cannot be read, `ACE_STATUS_TOKENIZER` when it is not a
/// valid tokenizer.json (both messages name the path); null pointers; non-UTF-8 path.
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` a valid `AceTokenizer *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_create_from_file(path: *const c_char, out: *mut *mut AceTokenizer) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let path = ptr::str_in(path, "path")?;
        let tok = Tokenizer::from_file(path)?;
        ptr::handle_out(out, AceTokenizer { inner: Arc::new(tok) }, "out")
    })
}

/// Creates a tokenizer from the text of a `tokenizer.json` (`json`, NUL-terminated UTF-8).
/// Errors: `ACE_STATUS_TOKENIZER` when it is not a valid tokenizer.json.
///
/// # Safety
/// `json` must be a NUL-terminated string; `out` a valid `AceTokenizer *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_create_from_json(json: *const c_char, out: *mut *mut AceTokenizer) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let json = ptr::str_in(json, "json")?;
        let tok = Tokenizer::from_bytes(json.as_bytes())?;
        ptr::handle_out(out, AceTokenizer { inner: Arc::new(tok) }, "out")
    })
}

/// Frees a tokenizer. Null is a no-op. FSMs created from it stay valid (they share it).
///
/// # Safety
/// `tok` must be null or a tokenizer from `ace_tokenizer_create_*` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_free(tok: *mut AceTokenizer) {
    ptr::handle_free(tok)
}

/// Writes the number of token ids (base vocabulary + added tokens) to `*out`.
///
/// # Safety
/// `tok` must be a live tokenizer; `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_vocab_size(tok: *const AceTokenizer, out: *mut usize) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        ptr::write_out(out, tok.inner.vocab_size(), "out")
    })
}

/// Encodes `text` into `ids[0..cap]` and writes the number of ids to `*out_len`.
/// `add_special_tokens` runs the tokenizer's post-processor (e.g. an appended EOS); added tokens
/// written in the text are always recognised. With `ids == NULL` and `cap == 0` this only reports
/// the needed length (status OK). When `cap` is too small, `*out_len` receives the needed length
/// and the status is `ACE_STATUS_LENGTH_MISMATCH` (nothing is written to `ids`).
///
/// # Safety
/// `tok` live; `text` NUL-terminated; `ids` valid for `cap` elements (or NULL with cap 0);
/// `out_len` valid.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_encode(
    tok: *const AceTokenizer,
    text: *const c_char,
    add_special_tokens: bool,
    ids: *mut u32,
    cap: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        let text = ptr::str_in(text, "text")?;
        ptr::ensure_out(out_len, "out_len")?;
        let encoded = tok.inner.encode(text, add_special_tokens)?;
        ptr::write_out(out_len, encoded.len(), "out_len")?;
        if ids.is_null() && cap == 0 {
            return Ok(());
        }
        if cap < encoded.len() {
            return Err(Error::length_mismatch(format!(
                "ids buffer has room for {cap} ids but the text encodes to {} (needed length written to out_len)",
                encoded.len()
            )));
        }
        ptr::slice_out(ids, encoded.len(), "ids")?.copy_from_slice(&encoded);
        Ok(())
    })
}

/// Decodes `ids[0..n]` to text written to `*out` (free with `ace_string_free`).
/// `skip_special_tokens` drops tokens flagged special. Errors: an id out of range
/// (`ACE_STATUS_INVALID_ARGUMENT`). `ids` may be NULL when `n == 0`.
///
/// A C string cannot hold U+0000 (the text of the byte token 0x00, id 188 in Qwen3), so each one
/// is written as U+FFFD here; `ace_tokenizer_decode_utf8` gives the exact text with its length.
///
/// # Safety
/// `tok` live; `ids` valid for `n` elements; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_decode(
    tok: *const AceTokenizer,
    ids: *const u32,
    n: usize,
    skip_special_tokens: bool,
    out: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        let ids = ids_in(ids, n, "ids")?;
        ptr::ensure_out(out, "out")?;
        let text = tok.inner.decode(ids, skip_special_tokens)?;
        let text = if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text };
        ptr::string_out(out, text, "out")
    })
}

/// Decodes `ids[0..n]` like `ace_tokenizer_decode`, but writes the exact UTF-8 bytes (U+0000
/// included, no terminating NUL) to `buf[0..cap]` and their number to `*out_len`. With `buf == NULL`
/// and `cap == 0` this only reports the needed length (status OK). When `cap` is too small,
/// `*out_len` receives the needed length and the status is `ACE_STATUS_LENGTH_MISMATCH` (nothing
/// is written to `buf`). `ids` may be NULL when `n == 0`.
///
/// # Safety
/// `tok` live; `ids` valid for `n` elements; `buf` valid for `cap` bytes (or NULL with cap 0);
/// `out_len` valid.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_decode_utf8(
    tok: *const AceTokenizer,
    ids: *const u32,
    n: usize,
    skip_special_tokens: bool,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        let ids = ids_in(ids, n, "ids")?;
        ptr::ensure_out(out_len, "out_len")?;
        let text = tok.inner.decode(ids, skip_special_tokens)?;
        ptr::write_out(out_len, text.len(), "out_len")?;
        if buf.is_null() && cap == 0 {
            return Ok(());
        }
        if cap < text.len() {
            return Err(Error::length_mismatch(format!(
                "buf has room for {cap} bytes but the text has {} (needed length written to out_len)",
                text.len()
            )));
        }
        ptr::slice_out(buf, text.len(), "buf")?.copy_from_slice(text.as_bytes());
        Ok(())
    })
}

/// Writes the id of the vocabulary entry or added token `token` to `*out_id`.
/// Errors: `ACE_STATUS_INVALID_ARGUMENT` when the tokenizer has no such token.
///
/// # Safety
/// `tok` live; `token` NUL-terminated; `out_id` valid.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_token_to_id(
    tok: *const AceTokenizer,
    token: *const c_char,
    out_id: *mut u32,
) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        let token = ptr::str_in(token, "token")?;
        ptr::ensure_out(out_id, "out_id")?;
        let id = tok
            .inner
            .token_to_id(token)
            .ok_or_else(|| Error::invalid_argument(format!("token {token:?} is not in the vocabulary")))?;
        ptr::write_out(out_id, id, "out_id")
    })
}

/// Writes the token text of `id` (byte-level form for BPE tokens, e.g. "Ċ" for "\n") to `*out`
/// (free with `ace_string_free`). Errors: id out of range (`ACE_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
/// `tok` live; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_tokenizer_id_to_token(tok: *const AceTokenizer, id: u32, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        let tok = ptr::handle_ref(tok, "tok")?;
        ptr::ensure_out(out, "out")?;
        let text = tok.inner.id_to_token(id)?;
        ptr::string_out(out, text, "out")
    })
}
