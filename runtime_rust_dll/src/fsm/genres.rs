//! The genres field rule of the official processor: a character trie over a genres vocabulary
//! (lower-cased), with candidate tokens found through their first (or first non-space) character.
//! Used only when the genres field is generated, which the default configuration skips.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::tokenizer::Tokenizer;

/// Sorted, de-duplicated, lower-cased genres; a prefix query is a binary search.
pub struct GenresVocab {
    genres: Vec<String>,
    /// Lower-cased first character (and first non-space character) → token ids.
    by_first_char: HashMap<String, Vec<u32>>,
    /// Normalized token text: lower-cased, right-stripped; " " for whitespace-only tokens.
    token_text: Vec<String>,
}

/// Reads a genres file: one genre per line, blank lines and lines starting with '#' ignored.
pub fn read_genres_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read genres file '{}': {e}", path.display())))?;
    Ok(text
        .lines()
        .map(|l| l.trim_matches(super::py_space))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl GenresVocab {
    pub fn new(tok: &Tokenizer, genres: &[String]) -> Self {
        let mut list: Vec<String> = genres.iter().map(|g| g.to_lowercase()).collect();
        list.sort_unstable();
        list.dedup();
        let decoded = tok.all_decoded();
        let mut by_first_char: HashMap<String, Vec<u32>> = HashMap::new();
        let mut token_text = Vec::with_capacity(decoded.len());
        for (id, text) in decoded.iter().enumerate() {
            let lower = text.to_lowercase();
            token_text.push(if text.is_empty() {
                String::new()
            } else if lower.chars().any(|c| !super::py_space(c)) {
                lower.trim_end_matches(super::py_space).to_string()
            } else {
                " ".to_string()
            });
            let Some(first) = text.chars().next() else { continue };
            by_first_char.entry(first.to_lowercase().collect()).or_default().push(id as u32);
            let stripped = text.trim_start_matches(super::py_space);
            if stripped.len() != text.len() {
                if let Some(c) = stripped.chars().next() {
                    by_first_char.entry(c.to_lowercase().collect()).or_default().push(id as u32);
                }
            }
        }
        Self { genres: list, by_first_char, token_text }
    }

    pub fn is_empty(&self) -> bool {
        self.genres.is_empty()
    }

    /// The genres that start with `prefix` (a contiguous run of the sorted list).
    fn range(&self, prefix: &str) -> &[String] {
        let lo = self.genres.partition_point(|g| g.as_str() < prefix);
        let hi = lo + self.genres[lo..].partition_point(|g| g.starts_with(prefix));
        &self.genres[lo..hi]
    }

    /// Allowed next tokens after the accumulated text (official `_get_allowed_genres_tokens`).
    pub fn allowed(&self, accumulated: &str, newline: u32) -> Vec<u32> {
        if self.genres.is_empty() {
            return Vec::new();
        }
        let prefix = super::py_strip(&accumulated.to_lowercase()).to_lowercase();
        let run = self.range(&prefix);
        if run.is_empty() {
            return vec![newline];
        }
        let mut next_chars: BTreeSet<char> = BTreeSet::new();
        let mut complete = false;
        for g in run {
            match g[prefix.len()..].chars().next() {
                Some(c) => {
                    next_chars.insert(c);
                }
                None => complete = true,
            }
        }
        let mut allowed: BTreeSet<u32> = BTreeSet::new();
        if !next_chars.is_empty() {
            let space_or_comma = next_chars.contains(&' ') || next_chars.contains(&',');
            for c in &next_chars {
                let Some(cands) = self.by_first_char.get(&c.to_string()) else { continue };
                for &t in cands {
                    let text = &self.token_text[t as usize];
                    if text.is_empty() || text.chars().all(super::py_space) {
                        if space_or_comma {
                            allowed.insert(t);
                        }
                        continue;
                    }
                    let candidate = format!("{prefix}{text}").to_lowercase();
                    if !self.range(&candidate).is_empty() {
                        allowed.insert(t);
                    }
                }
            }
        }
        if complete {
            allowed.insert(newline);
        }
        allowed.into_iter().collect()
    }
}
