//! The CoT block of LM phase 2 (spec §5.3): `<think>\n{yaml}\n</think>`, where `{yaml}` must be
//! byte-identical to PyYAML's `yaml.dump(d, allow_unicode=True, sort_keys=True).strip()` for the
//! flat mapping the official `_format_metadata_as_cot` builds (string keys; str and int values).
//!
//! This is a re-implementation, from PyYAML's documented emitter behaviour, of exactly the part of
//! the emitter that such a mapping reaches: a top-level block mapping with plain keys, each value a
//! scalar at indent 2 with best width 80. For each string value it decides, like PyYAML's
//! `analyze_scalar` + `choose_scalar_style`, between plain, single-quoted and double-quoted, and
//! then writes it with the same line-folding rules (a fold replaces a single space once the column
//! passes 80; columns count Unicode code points).

use std::collections::BTreeMap;

/// One value of the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YamlValue {
    Int(i64),
    Str(String),
}

const BEST_WIDTH: usize = 80;
/// Indent of a value of a top-level block mapping (PyYAML's best_indent 2).
const VALUE_INDENT: usize = 2;

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank_or_end(c: Option<char>) -> bool {
    matches!(c, None | Some('\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}'))
}

/// Printable without escaping when `allow_unicode` is on (PyYAML's test in `analyze_scalar`).
fn is_printable_unicode(c: char) -> bool {
    c == '\u{85}'
        || ('\u{A0}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || ('\u{10000}'..'\u{10FFFF}').contains(&c)
}

/// What the scalar analysis allows.
#[derive(Debug, Clone, Copy)]
struct Analysis {
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn analyze(chars: &[char]) -> Analysis {
    if chars.is_empty() {
        return Analysis { allow_block_plain: true, allow_single_quoted: true };
    }
    let n = chars.len();
    let mut block_indicators = false;
    let mut line_breaks = false;
    let mut special = false;
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) = (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let starts_with = |p: &str| chars.iter().take(3).copied().eq(p.chars());
    if starts_with("---") || starts_with("...") {
        block_indicators = true;
    }
    let mut preceded_by_ws = true;
    let mut followed_by_ws = is_blank_or_end(chars.get(1).copied());
    let (mut prev_space, mut prev_break) = (false, false);
    for (i, &c) in chars.iter().enumerate() {
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                block_indicators = true;
            }
            if (c == '?' || c == ':') && followed_by_ws {
                block_indicators = true;
            }
            if c == '-' && followed_by_ws {
                block_indicators = true;
            }
        } else {
            if c == ':' && followed_by_ws {
                block_indicators = true;
            }
            if c == '#' && preceded_by_ws {
                block_indicators = true;
            }
        }
        if is_break(c) {
            line_breaks = true;
        }
        let printable_ascii = c == '\n' || (' '..='~').contains(&c);
        let printable_unicode = is_printable_unicode(c) && c != '\u{FEFF}';
        if !printable_ascii && !printable_unicode {
            special = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == n - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if i == n - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_by_ws = is_blank_or_end(Some(c));
        followed_by_ws = is_blank_or_end(chars.get(i + 2).copied());
    }
    let mut plain = true;
    let mut single = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        plain = false;
    }
    if break_space {
        plain = false;
        single = false;
    }
    if space_break || special {
        plain = false;
        single = false;
    }
    if line_breaks || block_indicators {
        plain = false;
    }
    Analysis { allow_block_plain: plain, allow_single_quoted: single }
}

// ---- the implicit resolvers of PyYAML's default Resolver (plain scalars that are not strings) ----

fn all_digits_or_underscore(s: &str, radix_ok: impl Fn(char) -> bool) -> bool {
    s.chars().all(|c| c == '_' || radix_ok(c))
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

/// `[1-9][0-9_]*(:[0-5]?[0-9])+` (sexagesimal) with `head` the part before the first ':'.
fn sexagesimal_tail(parts: &[&str]) -> bool {
    parts.len() >= 2
        && parts[1..].iter().all(|p| {
            let b = p.as_bytes();
            match b.len() {
                1 => b[0].is_ascii_digit(),
                2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
                _ => false,
            }
        })
}

fn looks_like_int(s: &str) -> bool {
    let body = strip_sign(s);
    if let Some(rest) = body.strip_prefix("0b") {
        return !rest.is_empty() && all_digits_or_underscore(rest, |c| c == '0' || c == '1');
    }
    if let Some(rest) = body.strip_prefix("0x") {
        return !rest.is_empty() && all_digits_or_underscore(rest, |c| c.is_ascii_hexdigit());
    }
    if body == "0" {
        return true;
    }
    if let Some(rest) = body.strip_prefix('0') {
        return !rest.is_empty() && all_digits_or_underscore(rest, |c| ('0'..='7').contains(&c));
    }
    let parts: Vec<&str> = body.split(':').collect();
    let head = parts[0];
    let head_ok = head.starts_with(|c: char| ('1'..='9').contains(&c))
        && all_digits_or_underscore(head, |c| c.is_ascii_digit());
    head_ok && (parts.len() == 1 || sexagesimal_tail(&parts))
}

/// `[eE][-+][0-9]+` (PyYAML requires the exponent sign).
fn exponent_ok(e: &str) -> bool {
    let Some(rest) = e.strip_prefix(['e', 'E']) else { return false };
    let Some(digits) = rest.strip_prefix(['-', '+']) else { return false };
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// `[0-9_]*` then an optional exponent.
fn fraction_then_exponent(s: &str) -> bool {
    let cut = s.find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(s.len());
    let rest = &s[cut..];
    rest.is_empty() || exponent_ok(rest)
}

fn looks_like_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let body = strip_sign(s);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // \.[0-9][0-9_]*(exp)?  (unsigned only)
    if let Some(rest) = s.strip_prefix('.') {
        if rest.starts_with(|c: char| c.is_ascii_digit()) && fraction_then_exponent(rest) {
            return true;
        }
    }
    // [-+]?[0-9][0-9_]*\.[0-9_]*(exp)?
    if body.starts_with(|c: char| c.is_ascii_digit()) {
        if let Some(dot) = body.find('.') {
            let (int_part, frac) = (&body[..dot], &body[dot + 1..]);
            if all_digits_or_underscore(int_part, |c| c.is_ascii_digit()) && fraction_then_exponent(frac) {
                return true;
            }
            // [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
            let parts: Vec<&str> = int_part.split(':').collect();
            if all_digits_or_underscore(parts[0], |c| c.is_ascii_digit())
                && sexagesimal_tail(&parts)
                && all_digits_or_underscore(frac, |c| c.is_ascii_digit())
            {
                return true;
            }
        }
    }
    false
}

fn looks_like_bool(s: &str) -> bool {
    matches!(
        s,
        "yes" | "Yes" | "YES" | "no" | "No" | "NO" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
            | "on" | "On" | "ON" | "off" | "Off" | "OFF"
    )
}

fn looks_like_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn digits(s: &str, n: std::ops::RangeInclusive<usize>) -> Option<&str> {
    let len = s.bytes().take_while(|b| b.is_ascii_digit()).count().min(*n.end());
    n.contains(&len).then(|| &s[len..])
}

fn looks_like_timestamp(s: &str) -> bool {
    // YYYY-MM-DD
    let date_only = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if date_only {
        return true;
    }
    // YYYY-M?M-D?D ([Tt]|[ \t]+) H?H:MM:SS(.f*)? ([ \t]*(Z|[-+]H?H(:MM)?))?
    let parse = || -> Option<()> {
        let r = digits(s, 4..=4)?.strip_prefix('-')?;
        let r = digits(r, 1..=2)?.strip_prefix('-')?;
        let r = digits(r, 1..=2)?;
        let r = if let Some(r) = r.strip_prefix(['T', 't']) {
            r
        } else {
            let t = r.trim_start_matches([' ', '\t']);
            if t.len() == r.len() {
                return None;
            }
            t
        };
        let r = digits(r, 1..=2)?.strip_prefix(':')?;
        let r = digits(r, 2..=2)?.strip_prefix(':')?;
        let mut r = digits(r, 2..=2)?;
        if let Some(f) = r.strip_prefix('.') {
            r = f.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        if r.is_empty() {
            return Some(());
        }
        let r = r.trim_start_matches([' ', '\t']);
        if r == "Z" {
            return Some(());
        }
        let r = r.strip_prefix(['-', '+'])?;
        let r = digits(r, 1..=2)?;
        if r.is_empty() {
            return Some(());
        }
        let r = r.strip_prefix(':')?;
        let r = digits(r, 2..=2)?;
        r.is_empty().then_some(())
    };
    parse().is_some()
}

/// Whether PyYAML's resolver reads this plain scalar as something other than a string, which
/// makes the emitter quote it (`implicit[0]` false).
pub fn resolves_to_non_string(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return looks_like_null(s) };
    match first {
        'y' | 'Y' | 'n' | 'N' | 't' | 'T' | 'f' | 'F' | 'o' | 'O' if looks_like_bool(s) => true,
        '~' | 'n' | 'N' if looks_like_null(s) => true,
        '-' | '+' | '0'..='9' | '.' if looks_like_float(s) => true,
        '-' | '+' | '0'..='9' if looks_like_int(s) => true,
        '0'..='9' if looks_like_timestamp(s) => true,
        '<' => s == "<<",
        '=' => s == "=",
        _ => false,
    }
}

/// The writer state PyYAML's emitter keeps for one value: the column and the two flags
/// `whitespace` (last thing written was whitespace) and `indention` (only indentation so far).
struct Writer {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
}

impl Writer {
    fn write(&mut self, s: &str) {
        self.column += s.chars().count();
        self.out.push_str(s);
    }
    fn write_chars(&mut self, s: &[char]) {
        self.column += s.len();
        self.out.extend(s);
    }
    fn line_break(&mut self, br: char) {
        self.out.push(br);
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
    }
    fn indent(&mut self) {
        let indent = VALUE_INDENT;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.line_break('\n');
        }
        if self.column < indent {
            self.whitespace = true;
            self.out.extend(std::iter::repeat_n(' ', indent - self.column));
            self.column = indent;
        }
    }
    fn indicator(&mut self, ind: &str, need_whitespace: bool, whitespace: bool) {
        if self.whitespace || !need_whitespace {
            self.write(ind);
        } else {
            self.write(" ");
            self.write(ind);
        }
        self.whitespace = whitespace;
        self.indention = false;
    }
    /// The breaks `text[start..end]`: one extra newline when the run starts with '\n', then each.
    fn breaks(&mut self, run: &[char]) {
        if run[0] == '\n' {
            self.line_break('\n');
        }
        for &br in run {
            self.line_break(br);
        }
        self.indent();
    }

    fn plain(&mut self, t: &[char]) {
        if t.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
        }
        self.whitespace = false;
        self.indention = false;
        let (mut spaces, mut brks) = (false, false);
        let mut start = 0;
        for end in 0..=t.len() {
            let ch = t.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH {
                        self.indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write_chars(&t[start..end]);
                    }
                    start = end;
                }
            } else if brks {
                if !ch.is_some_and(is_break) {
                    self.breaks(&t[start..end]);
                    self.whitespace = false;
                    self.indention = false;
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c)) {
                self.write_chars(&t[start..end]);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                brks = is_break(c);
            }
        }
    }

    fn single_quoted(&mut self, t: &[char]) {
        self.indicator("'", true, false);
        let (mut spaces, mut brks) = (false, false);
        let mut start = 0;
        for end in 0..=t.len() {
            let ch = t.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && start != 0 && end != t.len() {
                        self.indent();
                    } else {
                        self.write_chars(&t[start..end]);
                    }
                    start = end;
                }
            } else if brks {
                if !ch.is_some_and(is_break) {
                    self.breaks(&t[start..end]);
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c) || c == '\'') && start < end {
                self.write_chars(&t[start..end]);
                start = end;
            }
            if ch == Some('\'') {
                self.write("''");
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                brks = is_break(c);
            }
        }
        self.indicator("'", false, false);
    }

    fn double_quoted(&mut self, t: &[char]) {
        self.indicator("\"", true, false);
        let mut start = 0;
        for end in 0..=t.len() {
            let ch = t.get(end).copied();
            let needs_escape = |c: char| {
                matches!(c, '"' | '\\' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{FEFF}')
                    || !((' '..='~').contains(&c)
                        || ('\u{A0}'..='\u{D7FF}').contains(&c)
                        || ('\u{E000}'..='\u{FFFD}').contains(&c))
            };
            if ch.is_none_or(needs_escape) {
                if start < end {
                    self.write_chars(&t[start..end]);
                    start = end;
                }
                if let Some(c) = ch {
                    let esc = match c {
                        '\0' => "\\0".to_string(),
                        '\u{07}' => "\\a".to_string(),
                        '\u{08}' => "\\b".to_string(),
                        '\t' => "\\t".to_string(),
                        '\n' => "\\n".to_string(),
                        '\u{0B}' => "\\v".to_string(),
                        '\u{0C}' => "\\f".to_string(),
                        '\r' => "\\r".to_string(),
                        '\u{1B}' => "\\e".to_string(),
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\u{85}' => "\\N".to_string(),
                        '\u{A0}' => "\\_".to_string(),
                        '\u{2028}' => "\\L".to_string(),
                        '\u{2029}' => "\\P".to_string(),
                        c if (c as u32) <= 0xFF => format!("\\x{:02X}", c as u32),
                        c if (c as u32) <= 0xFFFF => format!("\\u{:04X}", c as u32),
                        c => format!("\\U{:08X}", c as u32),
                    };
                    self.write(&esc);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < t.len()
                && (ch == Some(' ') || start >= end)
                && self.column as isize + (end as isize - start as isize) > BEST_WIDTH as isize
            {
                let head: String = if start < end { t[start..end].iter().collect() } else { String::new() };
                if start < end {
                    start = end;
                }
                self.write(&head);
                self.write("\\");
                self.indent();
                self.whitespace = false;
                self.indention = false;
                if t[start] == ' ' {
                    self.write("\\");
                }
            }
        }
        self.indicator("\"", false, false);
    }
}

/// Formats one string value as PyYAML would after `key:` in a top-level block mapping. `column`
/// is the column right after the ':' indicator.
fn emit_str(value: &str, column: usize, out: &mut String) {
    let chars: Vec<char> = value.chars().collect();
    let a = analyze(&chars);
    let mut w = Writer { out: String::new(), column, whitespace: false, indention: false };
    if !resolves_to_non_string(value) && a.allow_block_plain {
        w.plain(&chars);
    } else if a.allow_single_quoted {
        w.single_quoted(&chars);
    } else {
        w.double_quoted(&chars);
    }
    out.push_str(&w.out);
}

/// `yaml.dump(map, allow_unicode=True, sort_keys=True).strip()` for a flat mapping whose keys are
/// plain lower-case identifiers (ours: bpm, caption, duration, keyscale, language, timesignature).
pub fn dump_mapping(map: &BTreeMap<String, YamlValue>) -> String {
    let mut out = String::new();
    for (key, value) in map {
        debug_assert!(key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        out.push_str(key);
        out.push(':');
        match value {
            YamlValue::Int(v) => {
                out.push(' ');
                out.push_str(&v.to_string());
            }
            YamlValue::Str(s) => emit_str(s, key.chars().count() + 1, &mut out),
        }
        out.push('\n');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump1(v: &str) -> String {
        let mut m = BTreeMap::new();
        m.insert("caption".to_string(), YamlValue::Str(v.to_string()));
        dump_mapping(&m)
    }

    #[test]
    fn quoting_follows_the_resolver() {
        // Expected strings are what PyYAML 6 prints for {"caption": v}.
        assert_eq!(dump1("yes"), "caption: 'yes'");
        assert_eq!(dump1("1.5"), "caption: '1.5'");
        assert_eq!(dump1("0x1F"), "caption: '0x1F'");
        assert_eq!(dump1("2001-12-14"), "caption: '2001-12-14'");
        assert_eq!(dump1(""), "caption: ''");
        assert_eq!(dump1("a: b"), "caption: 'a: b'");
        assert_eq!(dump1("it's"), "caption: it's");
        assert_eq!(dump1(" x"), "caption: ' x'");
        assert_eq!(dump1("tab\there"), "caption: \"tab\\there\"");
        assert_eq!(dump1("1e5"), "caption: 1e5");
    }
}
