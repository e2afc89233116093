//! Value prefix trees built from the real tokenizer (spec §5.4): for each allowed value the token
//! path is the tokenization of `"<field>: " + value` minus the leading tokens of `"<field>:"`.

use std::collections::HashMap;

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Maps an accumulated token path to the sorted set of allowed next tokens. A complete value path
/// also allows the newline token.
#[derive(Debug, Default, Clone)]
pub struct ValueTrie {
    next: HashMap<Vec<u32>, Vec<u32>>,
    newline: u32,
}

impl ValueTrie {
    /// `keep_first` filters values by their first value token's decoded text (keyscale: must start
    /// with a note letter); values whose tokenization does not start with the field's name tokens
    /// are left out, as are empty paths when `allow_empty` is false.
    pub fn build(
        tok: &Tokenizer,
        field: &str,
        values: &[String],
        newline: u32,
        allow_empty: bool,
        keep_first: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<Self> {
        let name_ids = tok.encode(&format!("{field}:"), false)?;
        let mut next: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
        for value in values {
            let full = tok.encode(&format!("{field}: {value}"), false)?;
            if !full.starts_with(&name_ids) {
                continue;
            }
            let path = &full[name_ids.len()..];
            if path.is_empty() && !allow_empty {
                continue;
            }
            if let (Some(keep), Some(&first)) = (keep_first, path.first()) {
                if !keep(&tok.decode_one(first)?) {
                    continue;
                }
            }
            for i in 0..=path.len() {
                let entry = next.entry(path[..i].to_vec()).or_default();
                let t = if i < path.len() { path[i] } else { newline };
                if !entry.contains(&t) {
                    entry.push(t);
                }
            }
        }
        for v in next.values_mut() {
            v.sort_unstable();
        }
        Ok(Self { next, newline })
    }

    /// Allowed next tokens after `path` (empty if the path left the tree).
    pub fn children(&self, path: &[u32]) -> &[u32] {
        self.next.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when `path` is a complete value (the newline may follow).
    pub fn is_complete(&self, path: &[u32]) -> bool {
        self.children(path).contains(&self.newline)
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Every complete value path (for tests and diagnostics).
    pub fn complete_paths(&self) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> =
            self.next.iter().filter(|(_, v)| v.contains(&self.newline)).map(|(k, _)| k.clone()).collect();
        out.sort();
        out
    }
}
