//! Text ↔ token ids with a Hugging Face `tokenizer.json` (the Qwen3 tokenizers of the LM and the
//! text encoder), over the `tokenizers` crate so every host tokenizes identically.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, ErrorKind, Result};

/// A loaded tokenizer. Immutable after creation; safe to share between threads.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    /// Decoded text of every id, built on first use (the genres rule needs it).
    decoded: OnceLock<Vec<String>>,
    /// Tables other modules derive from this tokenizer (e.g. the FSM's tries), built once per key.
    derived: Mutex<Vec<(String, Arc<dyn Any + Send + Sync>)>>,
}

/// How many derived tables (e.g. FSM vocabularies for distinct settings) a tokenizer keeps cached.
pub(crate) const MAX_DERIVED: usize = 8;

fn tok_err(message: String) -> Error {
    Error::new(ErrorKind::Tokenizer, message)
}

/// Runs a call into the `tokenizers` crate, which panics on some documents it accepted (unwraps
/// in its deserialisers and models): such a panic is the tokenizer rejecting its input, reported as
/// a `Tokenizer` error, not a bug of this library. (At the C ABI the guard's hook keeps the panic
/// from being printed.)
fn tokenizers_call<T>(what: &str, f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(tok_err(format!("{what}: {e}"))),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(tok_err(format!("{what}: the tokenizers library failed on this input ({msg})")))
        }
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`](crate::limits::MAX_FILE_BYTES): a path to a device
/// or a huge file must fail, not exhaust memory (`/dev/zero` never ends).
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = crate::limits::MAX_FILE_BYTES;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(bytes)
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. Errors name the path (missing file → `Io`, bad content → `Tokenizer`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_capped(path).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot read tokenizer file '{}': {e}", path.display()))
        })?;
        Self::from_bytes(&bytes).map_err(|e| tok_err(format!("tokenizer file '{}': {}", path.display(), e.message)))
    }

    /// Parses the contents of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        // `tokenizers` panics on some malformed documents (e.g. an unterminated object inside
        // "decoder"); a plain JSON syntax check first turns those into an error with a position.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| tok_err(format!("not a valid tokenizer.json: {e}")))?;
        let inner = tokenizers_call("not a valid tokenizer.json", || tokenizers::Tokenizer::from_bytes(bytes))?;
        let vocab_size = inner.get_vocab_size(true);
        if vocab_size == 0 {
            return Err(tok_err("tokenizer.json has an empty vocabulary".into()));
        }
        Ok(Self { inner, vocab_size, decoded: OnceLock::new(), derived: Mutex::new(Vec::new()) })
    }

    /// Number of token ids (base vocabulary plus added tokens); valid ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids of `text`. `add_special_tokens` runs the post-processor (e.g. the text encoder's
    /// appended `<|endoftext|>`); added tokens written in the text are always recognised.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = tokenizers_call("encoding failed", || self.inner.encode_fast(text, add_special_tokens))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special_tokens` drops tokens flagged special. Ids out of range are errors.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        tokenizers_call("decoding failed", || self.inner.decode(ids, skip_special_tokens))
    }

    /// Decoded text of one token (partial UTF-8 sequences become U+FFFD, as in Python).
    pub fn decode_one(&self, id: u32) -> Result<String> {
        self.decode(&[id], false)
    }

    /// Decoded text of every token id (index = id), computed once per tokenizer.
    pub fn all_decoded(&self) -> &[String] {
        self.decoded.get_or_init(|| {
            (0..self.vocab_size as u32).map(|id| self.inner.decode(&[id], false).unwrap_or_default()).collect()
        })
    }

    /// Returns the value cached under `key`, building it with `build` on first use. Lets objects
    /// created per sequence (FSMs) share tokenizer-derived tables. The cache keeps the
    /// [`MAX_DERIVED`] most recently used keys: keys come from caller configs (an FSM's
    /// max_duration, tokens), so an unbounded cache would grow with every distinct config for as
    /// long as the tokenizer lives. Objects holding an evicted value keep their own reference.
    pub fn derived<T: Any + Send + Sync>(&self, key: &str, build: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut cache = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| k == key) {
            if let Ok(v) = cache[i].1.clone().downcast::<T>() {
                let hit = cache.remove(i);
                cache.push(hit); // most recently used last
                return Ok(v);
            }
        }
        let value = Arc::new(build()?);
        cache.retain(|(k, _)| k != key);
        if cache.len() >= MAX_DERIVED {
            cache.remove(0);
        }
        cache.push((key.to_string(), value.clone()));
        Ok(value)
    }

    /// Id of a vocabulary entry or added token given its token text (byte-level form for BPE tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token text of `id` (byte-level form for BPE tokens), or an error when out of range.
    pub fn id_to_token(&self, id: u32) -> Result<String> {
        self.check_id(id)?;
        self.inner
            .id_to_token(id)
            .ok_or_else(|| Error::invalid_argument(format!("token id {id} has no entry in the vocabulary")))
    }

    /// The added tokens (id, content), sorted by id.
    pub fn added_tokens(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> =
            self.inner.get_added_tokens_decoder().into_iter().map(|(id, t)| (id, t.content)).collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    pub fn check_id(&self, id: u32) -> Result<()> {
        if (id as usize) >= self.vocab_size {
            return Err(Error::invalid_argument(format!(
                "token id {id} is out of range (vocabulary size {})",
                self.vocab_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::{Arc, OnceLock};

    /// The generated LM tokenizer (Qwen3 + audio codes). Built by `python -m tools.make_qwen_tokenizer`
    /// (the Python tests cache it under fixtures/generated/); tests that need it are skipped with a
    /// message when it is absent.
    pub(crate) fn lm_tokenizer() -> Option<Arc<Tokenizer>> {
        static TOK: OnceLock<Option<Arc<Tokenizer>>> = OnceLock::new();
        TOK.get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let path = root.join("fixtures/generated/qwen3_lm_tokenizer/tokenizer.json");
            if !path.exists() {
                let status = std::process::Command::new("python3")
                    .args(["-m", "tools.make_qwen_tokenizer", "--audio-codes", "--out"])
                    .arg(path.parent().unwrap())
                    .current_dir(&root)
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!("skipping: cannot build {}", path.display());
                    return None;
                }
            }
            Some(Arc::new(Tokenizer::from_file(&path).expect("generated tokenizer loads")))
        })
        .clone()
    }

    #[test]
    fn known_ids_and_round_trip() {
        let Some(tok) = lm_tokenizer() else { return };
        assert_eq!(tok.vocab_size(), 217204);
        assert_eq!(tok.encode("\n", false).unwrap(), vec![198]);
        assert_eq!(tok.encode("keyscale: G major", false).unwrap(), vec![10563, 2246, 25, 479, 3598]);
        assert_eq!(tok.token_to_id("</think>"), Some(151668));
        assert_eq!(tok.token_to_id("<|audio_code_0|>"), Some(151669));
        let text = "<think>\nbpm: 120\ncaption: Ünïcödé 日本語 🎵\n</think><|audio_code_7|>";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(tok.id_to_token(198).unwrap(), "Ċ");
    }

    #[test]
    fn the_derived_cache_is_bounded_and_shares_values() {
        let json = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reliability/tiny_tokenizer.json"))
            .unwrap();
        let tok = Tokenizer::from_bytes(&json).unwrap();
        let first = tok.derived("k0", || Ok(0usize)).unwrap();
        assert!(Arc::ptr_eq(&first, &tok.derived("k0", || Ok(99usize)).unwrap()), "a hit reuses the value");
        for i in 1..100usize {
            tok.derived(&format!("k{i}"), || Ok(i)).unwrap();
        }
        assert_eq!(tok.derived.lock().unwrap().len(), MAX_DERIVED);
        // The oldest key was evicted (rebuilt on use), the newest kept; the evicted value lives on.
        assert_eq!(*tok.derived("k0", || Ok(1000usize)).unwrap(), 1000);
        assert_eq!(*tok.derived("k99", || Ok(0usize)).unwrap(), 99);
        assert_eq!(*first, 0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let err = Tokenizer::from_file("/nonexistent/dir/tokenizer.json").err().unwrap();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.contains("/nonexistent/dir/tokenizer.json"));
        let err = Tokenizer::from_bytes(b"{\"version\": 1").err().unwrap();
        assert_eq!(err.kind, ErrorKind::Tokenizer);
        let Some(tok) = lm_tokenizer() else { return };
        assert!(tok.decode(&[217204], false).is_err());
        assert!(tok.id_to_token(u32::MAX).is_err());
        assert!(tok.token_to_id("<|no such token|>").is_none());
    }
}
