//! Track ids: every host names an output identically from its generation parameters.
//!
//! `track_id = lowercase hex SHA-256 of the UTF-8 bytes of canonical_json(params)`, where the
//! canonical form is exactly what Python's standard library writes with
//! `json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`:
//! - objects: keys sorted by Unicode code point (recursively), `{"a":1,"b":2}`, no whitespace;
//!   a key repeated within one object is an error (Python's `json.loads` would keep the last value;
//!   an ambiguous request must not get an id);
//! - arrays: `[1,2]`, order kept;
//! - strings: raw UTF-8; only `"` `\` and U+0000–U+001F are escaped, as `\"` `\\` `\b` `\f` `\n`
//!   `\r` `\t` or `\u00XX` (lowercase hex);
//! - `true`, `false`, `null`;
//! - integers (JSON numbers written without `.`/`e`) in decimal, `-0` as `0` (Python reads an int);
//!   they must fit in i64 or u64 (larger ones are an error, not a silently different id);
//! - other numbers are float64 written like Python's `repr(float)`: the shortest digits that read
//!   back to the same double; plain notation when the decimal exponent `e` (as in `d.ddd×10^e`)
//!   satisfies `-4 <= e < 16`, with `.0` appended to integral values (`100.0`, `0.0001`, `-0.0`);
//!   otherwise `d[.ddd]e±XX` with at least two exponent digits (`1e+16`, `1.5e-07`).
//!   NaN and infinities are not valid JSON and are rejected.
//!
//! The top level must be an object.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The canonical JSON text of a parameter object (see the module documentation).
pub fn canonical_json(params_json: &str) -> Result<String> {
    let text = normalize_integer_literals(params_json)?;
    let value: Value = crate::json::parse_value(&text, "track id parameters")?;
    if !value.is_object() {
        return Err(Error::invalid_json(format!(
            "track id parameters must be a JSON object, got {}",
            crate::json::kind(&value)
        )));
    }
    let mut out = String::with_capacity(params_json.len());
    write_value(&value, &mut out)?;
    Ok(out)
}

/// Python reads a JSON integer literal as an exact int: `-0` is `0`, and integers of any size stay
/// integers. serde_json (without arbitrary precision) reads `-0` and integers beyond 64 bits as
/// floats, which would print differently. So, outside strings: `-0` becomes `0`, and an integer
/// literal outside the i64/u64 range is an error rather than a silently different id.
fn normalize_integer_literals(text: &str) -> Result<std::borrow::Cow<'_, str>> {
    let bytes = text.as_bytes();
    let mut negative_zero_at = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1, // skip the escaped byte
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') {
                i += 1;
            }
            let token = &text[start..i];
            if !token.contains(['.', 'e', 'E']) {
                if token == "-0" {
                    negative_zero_at.push(start);
                } else if token.parse::<i64>().is_err() && token.parse::<u64>().is_err() && token != "-" {
                    return Err(Error::invalid_json(format!(
                        "track id parameters: integer {token} is outside the 64-bit range"
                    )));
                }
            }
        } else {
            i += 1;
        }
    }
    if negative_zero_at.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for at in negative_zero_at {
        out.push_str(&text[last..at]);
        last = at + 1; // drop the '-'
    }
    out.push_str(&text[last..]);
    Ok(std::borrow::Cow::Owned(out))
}

/// `sha256(canonical_json(params))` as 64 lowercase hex digits.
pub fn track_id(params_json: &str) -> Result<String> {
    let canonical = canonical_json(params_json)?;
    let digest = Sha256::digest(canonical.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}


fn write_value(v: &Value, out: &mut String) -> Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out)?,
    }
    Ok(())
}

fn write_object(map: &Map<String, Value>, out: &mut String) -> Result<()> {
    // serde_json's default Map is a BTreeMap: iteration is in byte order of the UTF-8 keys, which
    // is Unicode code point order, i.e. Python's sort order for str keys. Sort anyway so this does
    // not depend on serde_json's features.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        write_value(v, out)?;
    }
    out.push('}');
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(n: &Number, out: &mut String) -> Result<()> {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else {
        let x = n.as_f64().ok_or_else(|| Error::invalid_json(format!("number {n} is not representable")))?;
        out.push_str(&python_float_repr(x)?);
    }
    Ok(())
}

/// Python's `repr(float)` for a finite double.
pub fn python_float_repr(x: f64) -> Result<String> {
    if !x.is_finite() {
        return Err(Error::invalid_json(format!("number {x} is not finite")));
    }
    // Rust's `{:e}` prints shortest round-trip digits ("-1.5e-7", "1e16", "0e0"). When two
    // shortest candidates are equally close to the exact value it takes the upper one, where
    // Python (David Gay's dtoa) takes the even one: repr(1857851371893559.25) is
    // '1857851371893559.2'. Fixed-precision formatting rounds the exact value half-to-even; use
    // its digits when they still read back to `x` (at a power of two the lower neighbour may not:
    // repr(2**-24) is '5.960464477539063e-08').
    let shortest = format!("{x:e}");
    let ndigits = shortest.split_once('e').map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let nearest = format!("{:.*e}", ndigits - 1, x);
    let sci = if nearest.parse::<f64>().ok() == Some(x) { nearest } else { shortest };
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0".to_string(),
        d => d.to_string(),
    };
    let ndigits = digits.len() as i32;
    // Python's decpt: value = 0.d1d2... × 10^decpt.
    let decpt = exp + 1;
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        s.push_str(&digits[..1]);
        if ndigits > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push_str(&format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()));
    } else if decpt <= 0 {
        s.push_str("0.");
        s.push_str(&"0".repeat((-decpt) as usize));
        s.push_str(&digits);
    } else if decpt >= ndigits {
        s.push_str(&digits);
        s.push_str(&"0".repeat((decpt - ndigits) as usize));
        s.push_str(".0");
    } else {
        s.push_str(&digits[..decpt as usize]);
        s.push('.');
        s.push_str(&digits[decpt as usize..]);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python_rules() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5e300, "-2.5e+300"),
            (5e-324, "5e-324"),
            (3.14159, "3.14159"),
            (12.375, "12.375"),
            (1857851371893559.25, "1857851371893559.2"),
            (1857851371893559.75, "1857851371893559.8"),
            (5.9604644775390625e-08, "5.960464477539063e-08"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x).unwrap(), want, "{x}");
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let a = canonical_json(r#"{ "b": [1, 2.0, "x\n"], "a": {"z": null, "y": true} }"#).unwrap();
        assert_eq!(a, r#"{"a":{"y":true,"z":null},"b":[1,2.0,"x\n"]}"#);
        let b = canonical_json(r#"{"a": {"y": true, "z": null}, "b": [1, 2.0, "x\n"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(track_id("{}").unwrap(), "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        assert!(track_id("[1]").unwrap_err().message.contains("an array"));
        assert!(track_id("{").is_err());
        assert!(track_id(r#"{"a": NaN}"#).is_err());
        assert!(track_id(r#"{"a": 18446744073709551616}"#).unwrap_err().message.contains("64-bit"));
        assert_eq!(canonical_json(r#"{"a": -0, "b": "-0", "c": [-0, -0.0, 1e-0]}"#).unwrap(), r#"{"a":0,"b":"-0","c":[0,-0.0,1.0]}"#);
    }
}
