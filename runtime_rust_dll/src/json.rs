//! Strict JSON, in one place, for every JSON text the core reads (configs, requests, metadata,
//! track-id parameters):
//! - a key that appears twice in one object is an error (serde_json would keep the last one
//!   silently, so `{"steps": 8, "steps": 1000}` would mean something other than it reads);
//! - a struct is read only from a JSON object: serde's derived structs also accept an array and
//!   fill the fields by position (`["cap", "lyr", true, 120]` as a request), which no caller means;
//! - errors name the key path of the value that failed (`key "noise.sm_count": ...`).
//!
//! The text is parsed once into a [`Value`] (serde_json's recursion limit bounds the depth), then
//! typed values are read from that tree by [`from_value`], whose deserializer refuses arrays where
//! a struct is expected at any depth.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Parses JSON text into a [`Value`], rejecting duplicate keys at any depth. `what` names the
/// argument in the error (an `InvalidJson` error).
pub fn parse_value(text: &str, what: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = UniqueKeys
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Error::invalid_json(format!("{what}: {e}")))?;
    Ok(value)
}

/// Parses JSON text that must be an object (see [`parse_value`]).
pub fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>> {
    match parse_value(text, what)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::invalid_json(format!(
            "{what}: expected a JSON object, got {}",
            kind(&other)
        ))),
    }
}

/// Parses JSON text into `T`: the top level must be an object, keys unique, structs objects.
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let map = parse_object(text, what)?;
    from_value(&Value::Object(map), what)
}

/// Reads `T` from a parsed value; arrays are refused where `T` has a struct.
pub fn from_value<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T> {
    T::deserialize(ValueDe(value)).map_err(|e| Error::invalid_json(format!("{what}: {e}")))
}

/// The JSON type of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a [`Value`] like serde_json's own `Deserialize`, but fails on a repeated key.
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueKeys)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let value = map.next_value_seed(UniqueKeys)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A deserialisation error with the key path of the value it concerns.
#[derive(Debug)]
struct PathError {
    path: Vec<String>,
    message: String,
}

impl PathError {
    fn at(mut self, segment: String) -> Self {
        self.path.insert(0, segment);
        self
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "key \"{}\": {}", self.path.join("."), self.message)
        }
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError { path: Vec::new(), message: msg.to_string() }
    }
}

/// A deserializer over a parsed [`Value`] that refuses an array where a struct is expected.
struct ValueDe<'a>(&'a Value);

impl<'a> ValueDe<'a> {
    fn unexpected(&self) -> de::Unexpected<'a> {
        match self.0 {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => de::Unexpected::Unsigned(u),
                (_, Some(i), _) => de::Unexpected::Signed(i),
                (_, _, Some(x)) => de::Unexpected::Float(x),
                _ => de::Unexpected::Other("number"),
            },
            Value::String(s) => de::Unexpected::Str(s),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Object(_) => de::Unexpected::Map,
        }
    }
}

impl<'de, 'a> de::Deserializer<'de> for ValueDe<'a> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, PathError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(Seq { items: items.iter(), index: 0 }),
            Value::Object(map) => visitor.visit_map(Obj { entries: map.iter(), pending: None }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, PathError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> std::result::Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, PathError> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Obj { entries: map.iter(), pending: None }),
            _ => Err(de::Error::invalid_type(self.unexpected(), &"a JSON object")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, PathError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => {
                let (k, v) = map.iter().next().expect("one entry");
                visitor.visit_enum(Variant { name: k, value: v })
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &"a string or a one-key object")),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de, 'a> SeqAccess<'de> for Seq<'a> {
    type Error = PathError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> std::result::Result<Option<T::Value>, PathError> {
        let Some(item) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(ValueDe(item)).map(Some).map_err(|e| e.at(format!("[{index}]")))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Obj<'a> {
    entries: serde_json::map::Iter<'a>,
    pending: Option<(&'a String, &'a Value)>,
}

impl<'de, 'a> MapAccess<'de> for Obj<'a> {
    type Error = PathError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, PathError> {
        let Some((k, v)) = self.entries.next() else { return Ok(None) };
        self.pending = Some((k, v));
        seed.deserialize(k.as_str().into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> std::result::Result<V::Value, PathError> {
        let (k, v) = self.pending.take().ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(ValueDe(v)).map_err(|e| e.at(k.clone()))
    }
}

struct Variant<'a> {
    name: &'a String,
    value: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = PathError;
    type Variant = ValueDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> std::result::Result<(V::Value, ValueDe<'a>), PathError> {
        let tag = seed.deserialize(self.name.as_str().into_deserializer())?;
        Ok((tag, ValueDe(self.value)))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for ValueDe<'a> {
    type Error = PathError;
    fn unit_variant(self) -> std::result::Result<(), PathError> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &"null")),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> std::result::Result<T::Value, PathError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> std::result::Result<V::Value, PathError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, PathError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<f64>,
        #[serde(default)]
        extra: Option<Value>,
    }

    #[test]
    fn reads_objects_like_serde_json() {
        let text = r#"{"name": "x", "inner": {"a": 3}, "list": [1, 2.5], "extra": {"k": [null, true]}}"#;
        let got: Outer = parse(text, "t").unwrap();
        let want: Outer = serde_json::from_str(text).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn arrays_are_not_structs_at_any_depth() {
        let top = parse::<Outer>(r#"["x", null]"#, "cfg").unwrap_err();
        assert!(top.message.contains("expected a JSON object, got an array"), "{}", top.message);
        // serde_json itself takes the positional form; the strict reader must not.
        assert!(serde_json::from_str::<Outer>(r#"{"name": "x", "inner": [3]}"#).is_ok());
        let nested = parse::<Outer>(r#"{"name": "x", "inner": [3]}"#, "cfg").unwrap_err();
        assert!(nested.message.contains("key \"inner\""), "{}", nested.message);
    }

    #[test]
    fn duplicate_keys_are_errors_at_any_depth() {
        for text in [r#"{"name": "x", "name": "y"}"#, r#"{"name": "x", "extra": {"k": 1, "k": 2}}"#] {
            let err = parse::<Outer>(text, "cfg").unwrap_err();
            assert!(err.message.contains("duplicate key"), "{}", err.message);
        }
        assert!(parse_value(r#"[{"a": 1}, {"a": 2}]"#, "v").is_ok());
    }

    #[test]
    fn errors_name_the_key_path() {
        let err = parse::<Outer>(r#"{"name": "x", "inner": {"a": "three"}}"#, "cfg").unwrap_err();
        assert!(err.message.starts_with("cfg: key \"inner.a\": invalid type"), "{}", err.message);
        let err = parse::<Outer>(r#"{"name": "x", "list": [1, "2"]}"#, "cfg").unwrap_err();
        assert!(err.message.contains("key \"list.[1]\""), "{}", err.message);
        let err = parse::<Outer>(r#"{"name": "x", "bogus": 1}"#, "cfg").unwrap_err();
        assert!(err.message.contains("bogus"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse_value(&deep, "v").unwrap_err().message.contains("recursion limit"));
    }
}
