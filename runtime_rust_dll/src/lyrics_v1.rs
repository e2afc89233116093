//! The ACE-Step v1 lyric tokenizer (spec `ace_step_v1.md` §4; official `lyric_tokenizer.py`
//! `VoiceBpeTokenizer` and `pipeline_ace_step.py::tokenize_lyrics`).
//!
//! Sequence: `[START]` (261); per line of the lyrics (split on "\n", stripped): an empty line adds
//! `[SPACE]` (2); any other line adds `encode(line, lang)` then 2, where a line that starts with a
//! `[...]` tag is always encoded as English. `encode` cleans the text for its language, prefixes
//! `[lang]`, replaces every space by `[SPACE]` and runs the BPE file (HF `tokenizers` JSON, the
//! official `vocab.json`). Empty lyrics give ids `[0]` with mask `[0]`.
//!
//! Departures from the official code, on purpose or not yet ported:
//! - the language is the request's, not detected per line (the official LangSegment/langid pass is
//!   a statistical model; it tagged "La la la, we sing tonight" as Spanish, spec §4);
//! - cleaners are ported for English (quotes, lowercase, numbers as num2words writes them —
//!   cardinals, ordinals, decimals, $/£/€ amounts —, abbreviations, symbols, whitespace) and Hindi
//!   (basic cleaners); other languages need num2words tables, pypinyin, cutlet or a Korean
//!   romaniser and are an error that names the language.

use std::sync::OnceLock;

use regex::{Captures, Regex};
use tokenizers::Tokenizer;

use crate::error::{Error, ErrorKind, Result};

pub const START_ID: u32 = 261;
pub const SPACE_ID: u32 = 2;
pub const STOP_ID: u32 = 0;

/// Languages the official tokenizer knows (its `[lang]` tags, spec §4).
pub const LANGUAGES: [&str; 17] =
    ["en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "cs", "nl", "ar", "zh", "ja", "hu", "ko", "hi"];
/// Languages whose cleaners this module implements.
pub const CLEANED_LANGUAGES: [&str; 2] = ["en", "hi"];

/// The v1 lyric tokenizer: the BPE file plus the official sequence rules.
pub struct V1LyricTokenizer {
    bpe: Tokenizer,
}

impl V1LyricTokenizer {
    /// Loads the lyric BPE from its JSON text (the package's `tokenizer/lyric/tokenizer.json`).
    pub fn from_json(text: &str) -> Result<Self> {
        let bpe: Tokenizer = text
            .parse()
            .map_err(|e| Error::new(ErrorKind::Tokenizer, format!("lyric tokenizer: {e}")))?;
        for (id, token) in [(START_ID, "[START]"), (SPACE_ID, "[SPACE]"), (STOP_ID, "[STOP]")] {
            if bpe.token_to_id(token) != Some(id) {
                return Err(Error::new(
                    ErrorKind::Tokenizer,
                    format!("lyric tokenizer: {token} must have id {id} (the official vocabulary's)"),
                ));
            }
        }
        Ok(Self { bpe })
    }

    /// Token ids and mask for a song's lyrics in `language` (see the module documentation).
    pub fn encode_lyrics(&self, lyrics: &str, language: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if lyrics.is_empty() {
            return Ok((vec![STOP_ID], vec![0]));
        }
        let lang = normalize_language(language)?;
        let mut ids = vec![START_ID];
        for line in lyrics.split('\n') {
            let line = line.trim();
            if line.is_empty() {
                ids.push(SPACE_ID);
                continue;
            }
            let line_lang = if starts_with_tag(line) { "en" } else { lang };
            ids.extend(self.encode_line(line, line_lang)?);
            ids.push(SPACE_ID);
        }
        let mask = vec![1; ids.len()];
        Ok((ids, mask))
    }

    /// The official `VoiceBpeTokenizer.encode(line, lang)`.
    pub fn encode_line(&self, line: &str, lang: &str) -> Result<Vec<u32>> {
        let text = clean(line, lang)?;
        let tag = if lang == "zh" { "zh-cn" } else { lang };
        let text = format!("[{tag}]{text}").replace(' ', "[SPACE]");
        let encoding = self
            .bpe
            .encode(text.as_str(), false)
            .map_err(|e| Error::new(ErrorKind::Tokenizer, format!("lyric tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// A request's language code to the tokenizer's: region dropped (`zh-cn` → `zh`), lowercase.
fn normalize_language(language: &str) -> Result<&'static str> {
    let base = language.split('-').next().unwrap_or("").to_ascii_lowercase();
    LANGUAGES.iter().copied().find(|l| *l == base).ok_or_else(|| {
        Error::invalid_argument(format!(
            "lyric language {language:?} is not one of the v1 tokenizer's: {}",
            LANGUAGES.join(", ")
        ))
    })
}

/// The official `structure_pattern.match(line)`: the line starts with `[` and has a `]` later.
fn starts_with_tag(line: &str) -> bool {
    line.starts_with('[') && line[1..].contains(']')
}

/// The official `preprocess_text` for the ported languages.
pub fn clean(text: &str, lang: &str) -> Result<String> {
    match lang {
        "en" => Ok(clean_en(text)),
        "hi" => Ok(collapse_whitespace(&text.to_lowercase())),
        other => Err(Error::invalid_argument(format!(
            "lyric language {other:?}: its text cleaners (numbers, transliteration) are not ported yet; \
             supported: {}",
            CLEANED_LANGUAGES.join(", ")
        ))),
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid built-in pattern"))
}

fn collapse_whitespace(text: &str) -> String {
    static WS: OnceLock<Regex> = OnceLock::new();
    re(&WS, r"\s+").replace_all(text, " ").into_owned()
}

/// `multilingual_cleaners(text, "en")`.
pub fn clean_en(text: &str) -> String {
    let text = text.replace('"', "").to_lowercase();
    let text = expand_numbers_en(&text);
    let text = expand_abbreviations_en(&text);
    let text = expand_symbols_en(&text);
    collapse_whitespace(&text)
}

const ABBREVIATIONS_EN: [(&str, &str); 18] = [
    ("mrs", "misess"),
    ("mr", "mister"),
    ("dr", "doctor"),
    ("st", "saint"),
    ("co", "company"),
    ("jr", "junior"),
    ("maj", "major"),
    ("gen", "general"),
    ("drs", "doctors"),
    ("rev", "reverend"),
    ("lt", "lieutenant"),
    ("hon", "honorable"),
    ("sgt", "sergeant"),
    ("capt", "captain"),
    ("esq", "esquire"),
    ("ltd", "limited"),
    ("col", "colonel"),
    ("ft", "fort"),
];

fn expand_abbreviations_en(text: &str) -> String {
    static RES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        ABBREVIATIONS_EN
            .iter()
            .map(|(a, full)| (Regex::new(&format!(r"(?i)\b{a}\.")).expect("valid"), *full))
            .collect()
    });
    let mut text = text.to_string();
    for (r, full) in res {
        text = r.replace_all(&text, *full).into_owned();
    }
    text
}

fn expand_symbols_en(text: &str) -> String {
    let mut text = text.to_string();
    for (sym, word) in [
        ("&", " and "),
        ("@", " at "),
        ("%", " percent "),
        ("#", " hash "),
        ("$", " dollar "),
        ("£", " pound "),
        ("°", " degree "),
    ] {
        text = text.replace(sym, word).replace("  ", " ");
    }
    text.trim().to_string()
}

/// `expand_numbers_multilingual(text, "en")`: commas out of grouped numbers, then currency
/// amounts (£, $, €), decimals, ordinals and cardinals, each as num2words writes them.
fn expand_numbers_en(text: &str) -> String {
    static COMMA: OnceLock<Regex> = OnceLock::new();
    static GBP: OnceLock<Regex> = OnceLock::new();
    static USD: OnceLock<Regex> = OnceLock::new();
    static EUR: OnceLock<Regex> = OnceLock::new();
    static DECIMAL: OnceLock<Regex> = OnceLock::new();
    static ORDINAL: OnceLock<Regex> = OnceLock::new();
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    let text = re(&COMMA, r"\b\d{1,3}(,\d{3})*(\.\d+)?\b").replace_all(text, |c: &Captures| c[0].replace(',', ""));
    let text = re(&GBP, r"((£[0-9.,]*[0-9]+)|([0-9.,]*[0-9]+£))")
        .replace_all(&text, |c: &Captures| currency(&c[0], Currency::Gbp));
    let text = re(&USD, r"((\$[0-9.,]*[0-9]+)|([0-9.,]*[0-9]+\$))")
        .replace_all(&text, |c: &Captures| currency(&c[0], Currency::Usd));
    let text = re(&EUR, r"(([0-9.,]*[0-9]+€)|(€[0-9.,]*[0-9]+))")
        .replace_all(&text, |c: &Captures| currency(&c[0], Currency::Eur));
    let text = re(&DECIMAL, r"([0-9]+[.,][0-9]+)").replace_all(&text, |c: &Captures| decimal_words(&c[1]));
    let text = re(&ORDINAL, r"([0-9]+)(st|nd|rd|th)").replace_all(&text, |c: &Captures| match c[1].parse::<u128>() {
        Ok(n) => ordinal_words(n),
        Err(_) => c[0].to_string(),
    });
    re(&NUMBER, r"[0-9]+")
        .replace_all(&text, |c: &Captures| match c[0].parse::<u128>() {
            Ok(n) => cardinal_words(n),
            Err(_) => c[0].to_string(),
        })
        .into_owned()
}

const ONES: [&str; 20] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
];
const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const SCALES: [&str; 12] = [
    "", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion", "septillion",
    "octillion", "nonillion", "decillion",
];

fn below_hundred(n: u32) -> String {
    if n < 20 {
        ONES[n as usize].to_string()
    } else if n.is_multiple_of(10) {
        TENS[(n / 10) as usize].to_string()
    } else {
        format!("{}-{}", TENS[(n / 10) as usize], ONES[(n % 10) as usize])
    }
}

fn below_thousand(n: u32) -> String {
    match (n / 100, n % 100) {
        (0, r) => below_hundred(r),
        (h, 0) => format!("{} hundred", ONES[h as usize]),
        (h, r) => format!("{} hundred and {}", ONES[h as usize], below_hundred(r)),
    }
}

/// English cardinal as num2words writes it: "one thousand, two hundred and thirty-four",
/// "two thousand and twenty-four" (a last group under 100 joins with "and").
pub fn cardinal_words(n: u128) -> String {
    if n == 0 {
        return "zero".into();
    }
    let mut groups = Vec::new();
    let mut rest = n;
    while rest > 0 {
        groups.push((rest % 1000) as u32);
        rest /= 1000;
    }
    if groups.len() > SCALES.len() {
        return n.to_string(); // beyond num2words' table too
    }
    let parts: Vec<(usize, u32)> =
        groups.iter().enumerate().rev().filter(|(_, g)| **g > 0).map(|(i, g)| (i, *g)).collect();
    let mut out = String::new();
    for (k, &(scale, g)) in parts.iter().enumerate() {
        if k > 0 {
            out.push_str(if scale == 0 && g < 100 { " and " } else { ", " });
        }
        out.push_str(&below_thousand(g));
        if scale > 0 {
            out.push(' ');
            out.push_str(SCALES[scale]);
        }
    }
    out
}

/// English ordinal as num2words writes it ("twenty-first", "one hundredth").
pub fn ordinal_words(n: u128) -> String {
    let words = cardinal_words(n);
    let split = words.rfind([' ', '-']).map(|i| i + 1).unwrap_or(0);
    let (head, last) = words.split_at(split);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// `num2words(float(amount))` for a matched `12.50` / `12,5`: the integer part in words, then
/// "point" and each digit of the shortest float representation's fraction.
fn decimal_words(amount: &str) -> String {
    let amount = amount.replace(',', ".");
    let Ok(value) = amount.parse::<f64>() else { return amount };
    // Python's float repr: shortest round-trip digits, as Rust's `{}` for f64.
    let repr = format!("{value}");
    let (int_part, frac) = repr.split_once('.').unwrap_or((&repr, ""));
    let int_words = int_part.parse::<u128>().map(cardinal_words).unwrap_or_else(|_| int_part.to_string());
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        return int_words;
    }
    let digits: Vec<&str> = frac.bytes().map(|b| ONES[(b - b'0') as usize]).collect();
    format!("{int_words} point {}", digits.join(" "))
}

#[derive(Clone, Copy)]
enum Currency {
    Usd,
    Gbp,
    Eur,
}

/// `_expand_currency` for English: num2words' "five dollars, fifty cents", with the ", zero cents"
/// part dropped for whole amounts.
fn currency(matched: &str, currency: Currency) -> String {
    let cleaned: String = matched.replace(',', ".").chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
    let Ok(amount) = cleaned.parse::<f64>() else { return matched.to_string() };
    let ((unit1, units), (sub1, subs)) = match currency {
        Currency::Usd => (("dollar", "dollars"), ("cent", "cents")),
        Currency::Gbp => (("pound sterling", "pounds sterling"), ("penny", "pence")),
        Currency::Eur => (("euro", "euro"), ("cent", "cents")),
    };
    let whole = amount.trunc();
    let cents = ((amount - whole) * 100.0).round() as u128;
    let whole = whole as u128;
    let main = format!("{} {}", cardinal_words(whole), if whole == 1 { unit1 } else { units });
    if amount.fract() == 0.0 {
        return main;
    }
    format!("{main}, {} {}", cardinal_words(cents), if cents == 1 { sub1 } else { subs })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs printed by num2words 0.5 (the library the official cleaners call), en.
    #[test]
    fn numbers_read_as_num2words_writes_them() {
        for (n, want) in [
            (0u128, "zero"),
            (13, "thirteen"),
            (21, "twenty-one"),
            (101, "one hundred and one"),
            (999, "nine hundred and ninety-nine"),
            (1001, "one thousand and one"),
            (1100, "one thousand, one hundred"),
            (1234, "one thousand, two hundred and thirty-four"),
            (2024, "two thousand and twenty-four"),
            (1_000_001, "one million and one"),
            (1_000_100, "one million, one hundred"),
            (1_001_000, "one million, one thousand"),
            (2_000_000_000, "two billion"),
            (
                123_456_789,
                "one hundred and twenty-three million, four hundred and fifty-six thousand, seven hundred and eighty-nine",
            ),
        ] {
            assert_eq!(cardinal_words(n), want);
        }
        for (n, want) in [(1u128, "first"), (3, "third"), (12, "twelfth"), (21, "twenty-first"), (100, "one hundredth"), (111, "one hundred and eleventh")] {
            assert_eq!(ordinal_words(n), want);
        }
        for (s, want) in [("1.5", "one point five"), ("0.25", "zero point two five"), ("10.0", "ten"), ("2.05", "two point zero five")] {
            assert_eq!(decimal_words(s), want);
        }
        assert_eq!(currency("$5", Currency::Usd), "five dollars");
        assert_eq!(currency("$1", Currency::Usd), "one dollar");
        assert_eq!(currency("$5.50", Currency::Usd), "five dollars, fifty cents");
        assert_eq!(currency("£3", Currency::Gbp), "three pounds sterling");
        assert_eq!(currency("2€", Currency::Eur), "two euro");
    }

    #[test]
    fn english_cleaner() {
        assert_eq!(clean_en("\"Hello\" Mr. Smith,  it's 3 AM"), "hello mister smith, it's three am");
        assert_eq!(clean_en("We're #1 & 21st of 1,000 @ 50%"), "we're hash one and twenty-first of one thousand at fifty percent");
        assert_eq!(clean_en("pay $5 now"), "pay five dollars now");
        assert_eq!(clean_en("pi is 3.14"), "pi is three point one four");
    }

    /// A tiny BPE in the official format: ids as in spec §4 for the specials used here.
    fn tiny() -> V1LyricTokenizer {
        let mut vocab = serde_json::Map::new();
        for (tok, id) in [("[STOP]", 0), ("[UNK]", 1), ("[SPACE]", 2), ("[en]", 259), ("[START]", 261), ("[hi]", 6680)] {
            vocab.insert(tok.into(), id.into());
        }
        let letters = "abcdefghijklmnopqrstuvwxyz'-,[]";
        for (i, ch) in letters.chars().enumerate() {
            vocab.insert(ch.to_string(), (10 + i).into());
        }
        vocab.insert("la".into(), 100.into());
        // as in the official file: 6681 base ids, the structure tags added after them (6681...)
        let used: std::collections::HashSet<u64> = vocab.values().filter_map(|v| v.as_u64()).collect();
        for id in (0..6681u64).filter(|i| !used.contains(i)) {
            vocab.insert(format!("<unused{id}>"), id.into());
        }
        let structure = ["[start]", "[intro]", "[verse]"];
        let specials = [("[STOP]", 0), ("[UNK]", 1), ("[SPACE]", 2), ("[en]", 259), ("[START]", 261), ("[hi]", 6680)];
        let added: Vec<serde_json::Value> = specials
            .iter()
            .copied()
            .chain(structure.iter().enumerate().map(|(i, t)| (*t, 6681 + i as i32)))
            .map(|(t, id)| serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "[UNK]", "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": [["l", "a"]]}
        });
        V1LyricTokenizer::from_json(&json.to_string()).unwrap()
    }

    #[test]
    fn sequence_rules() {
        let t = tiny();
        // [START], then per line: [en] tokens [SPACE]; an empty line is one [SPACE]
        let (ids, mask) = t.encode_lyrics("[Verse]\nLa la\n\n", "en").unwrap();
        let la = 100;
        let verse = 6683;
        assert_eq!(ids, vec![261, 259, verse, 2, 259, la, 2, la, 2, 2, 2]);
        assert_eq!(mask, vec![1; ids.len()]);
        // structure lines are English whatever the request's language
        let (hi, _) = t.encode_lyrics("[verse]\nla", "hi").unwrap();
        assert_eq!(hi, vec![261, 259, verse, 2, 6680, la, 2]);
        assert_eq!(t.encode_lyrics("", "en").unwrap(), (vec![0], vec![0]));
        assert!(t.encode_lyrics("la", "xx").unwrap_err().message.contains("\"xx\""));
        assert!(t.encode_lyrics("la", "fr").unwrap_err().message.contains("not ported"));
        assert!(t.encode_lyrics("[verse]", "fr").is_ok()); // English line, French request
        assert!(V1LyricTokenizer::from_json("{}").is_err());
    }
}

#[cfg(test)]
mod official_file {
    /// Run by hand with the official `vocab.json`: ACE_V1_LYRIC_VOCAB=path cargo test official -- --ignored
    #[test]
    #[ignore]
    fn official_vocab_ids() {
        let path = std::env::var("ACE_V1_LYRIC_VOCAB").expect("ACE_V1_LYRIC_VOCAB");
        let t = super::V1LyricTokenizer::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (ids, _) = t.encode_lyrics("[verse]\nWe sing 2 songs tonight, Mr. Jones!\n\n[chorus]\nLa la la", "en").unwrap();
        println!("IDS {ids:?}");
    }
}
