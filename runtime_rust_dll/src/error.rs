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

/// Parses a JSON object into `T`, mapping serde's message into an `InvalidJson` error that names
/// what was being parsed. Use `#[serde(deny_unknown_fields)]` on `T` so unknown keys are rejected.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::invalid_json(format!("{what}: {e}")))
}

/// Parses a JSON document that must be an object into `T`. serde would also fill a struct from a
/// JSON array (by position) and let a duplicated key silently win; both are refused here.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let value = parse_object_value(text, what)?;
    serde_json::from_value(serde_json::Value::Object(value)).map_err(|e| Error::invalid_json(format!("{what}: {e}")))
}

/// The JSON object of `text`, refusing non-objects and duplicated keys (at any depth).
pub fn parse_object_value(text: &str, what: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let value: UniqueKeys = serde_json::from_str(text).map_err(|e| Error::invalid_json(format!("{what}: {e}")))?;
    match value.0 {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(Error::invalid_json(format!("{what}: expected a JSON object, got {}", json_kind(&other)))),
    }
}

/// "an array", "a string", ... for messages.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A JSON value whose objects have no duplicated keys (serde_json keeps the last one silently).
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<UniqueKeys, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| UniqueKeys(serde_json::Value::Number(n)))
                    .ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_unit<E>(self) -> std::result::Result<UniqueKeys, E> {
                Ok(UniqueKeys(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<UniqueKeys, A::Error> {
                let mut items = Vec::new();
                while let Some(UniqueKeys(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(UniqueKeys(serde_json::Value::Array(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<UniqueKeys, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let UniqueKeys(v) = map.next_value()?;
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate key \"{key}\"")));
                    }
                    out.insert(key, v);
                }
                Ok(UniqueKeys(serde_json::Value::Object(out)))
            }
        }
        d.deserialize_any(Visitor)
    }
}
