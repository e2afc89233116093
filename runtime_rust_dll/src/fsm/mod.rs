//! The constrained-decoding state machine of the 5 Hz LM (spec §5.4), one object per sequence.
//!
//! It follows the official `MetadataConstrainedLogitsProcessor` rule by rule (the differential
//! test `bindings/python/tests/test_fsm_differential.py` checks the allowed-token sets step by
//! step), except where `docs/lm_fsm.md` lists an intended divergence. The loop per token is:
//! `mask_logits` (logits after CFG, before temperature) → sample → `accept`.
//!
//! Everything that depends on the tokenizer (fixed-string tokens, value tries, digit, newline,
//! backtick, EOS and audio-code ids) is derived from it at creation; no id is hard-coded.

mod config;
mod genres;
mod mask;
mod trie;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

pub use genres::GenresVocab;

pub use config::{FsmConfig, MetaValue, Phase, UserMetadata};
pub use mask::IdRanges;
pub use trie::ValueTrie;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// FSM states, named as in the official processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    ThinkTag,
    NewlineAfterThink,
    BpmName,
    BpmValue,
    CaptionName,
    CaptionValue,
    DurationName,
    DurationValue,
    GenresName,
    GenresValue,
    KeyscaleName,
    KeyscaleValue,
    LanguageName,
    LanguageValue,
    TimesigName,
    TimesigValue,
    ThinkEndTag,
    CodesGeneration,
    Completed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::ThinkTag => "THINK_TAG",
            State::NewlineAfterThink => "NEWLINE_AFTER_THINK",
            State::BpmName => "BPM_NAME",
            State::BpmValue => "BPM_VALUE",
            State::CaptionName => "CAPTION_NAME",
            State::CaptionValue => "CAPTION_VALUE",
            State::DurationName => "DURATION_NAME",
            State::DurationValue => "DURATION_VALUE",
            State::GenresName => "GENRES_NAME",
            State::GenresValue => "GENRES_VALUE",
            State::KeyscaleName => "KEYSCALE_NAME",
            State::KeyscaleValue => "KEYSCALE_VALUE",
            State::LanguageName => "LANGUAGE_NAME",
            State::LanguageValue => "LANGUAGE_VALUE",
            State::TimesigName => "TIMESIG_NAME",
            State::TimesigValue => "TIMESIG_VALUE",
            State::ThinkEndTag => "THINK_END_TAG",
            State::CodesGeneration => "CODES_GENERATION",
            State::Completed => "COMPLETED",
        }
    }

    /// The exact text a fixed-string state emits.
    fn fixed_text(self) -> Option<&'static str> {
        Some(match self {
            State::ThinkTag => "<think>",
            State::NewlineAfterThink => "\n",
            State::BpmName => "bpm:",
            State::CaptionName => "caption:",
            State::DurationName => "duration:",
            State::GenresName => "genres:",
            State::KeyscaleName => "keyscale:",
            State::LanguageName => "language:",
            State::TimesigName => "timesignature:",
            State::ThinkEndTag => "</think>",
            _ => return None,
        })
    }
}

/// Metadata fields in CoT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Bpm,
    Caption,
    Duration,
    Genres,
    Keyscale,
    Language,
    Timesignature,
}

const FIELD_ORDER: [Field; 7] =
    [Field::Bpm, Field::Caption, Field::Duration, Field::Genres, Field::Keyscale, Field::Language, Field::Timesignature];

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Bpm => "bpm",
            Field::Caption => "caption",
            Field::Duration => "duration",
            Field::Genres => "genres",
            Field::Keyscale => "keyscale",
            Field::Language => "language",
            Field::Timesignature => "timesignature",
        }
    }
    fn name_state(self) -> State {
        match self {
            Field::Bpm => State::BpmName,
            Field::Caption => State::CaptionName,
            Field::Duration => State::DurationName,
            Field::Genres => State::GenresName,
            Field::Keyscale => State::KeyscaleName,
            Field::Language => State::LanguageName,
            Field::Timesignature => State::TimesigName,
        }
    }
}

/// The 51 language codes of the official `VALID_LANGUAGES`.
pub const VALID_LANGUAGES: [&str; 51] = [
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht",
    "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa",
    "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
];
pub const BPM_RANGE: (u32, u32) = (30, 300);
pub const DURATION_MIN: u32 = 10;
pub const TIME_SIGNATURES: [u32; 4] = [2, 3, 4, 6];
/// Caption length after which only the newline is allowed.
pub const CAPTION_MAX_TOKENS: usize = 512;

/// The 70 keyscale strings: {A..G} × {"", "#", "b", "♯", "♭"} × {major, minor}.
pub fn keyscale_values() -> Vec<String> {
    let mut out = Vec::with_capacity(70);
    for note in ["A", "B", "C", "D", "E", "F", "G"] {
        for acc in ["", "#", "b", "♯", "♭"] {
            for mode in ["major", "minor"] {
                out.push(format!("{note}{acc} {mode}"));
            }
        }
    }
    out
}

/// Python's `str.isspace` set (Unicode White_Space plus the ASCII separators 0x1C..0x1F).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Tokenizer-derived constants, built once per FSM.
struct Vocab {
    size: usize,
    newline: u32,
    eos: u32,
    pad: Option<u32>,
    digits: [Option<u32>; 10],
    think_end: Vec<u32>,
    /// Every `<|audio_code_N|>` token and the backtick (banned in the caption).
    caption_ban: IdRanges,
    /// Every `<|audio_code_N|>` token (banned in the understand phase's free text).
    all_codes: IdRanges,
    /// Valid audio codes (N < valid_audio_codes) plus EOS: the codes-phase whitelist.
    codes_and_eos: IdRanges,
    /// (state, char position) → the token a fixed-string state allows there.
    fixed: HashMap<(State, usize), u32>,
    bpm: ValueTrie,
    duration: ValueTrie,
    timesig: ValueTrie,
    keyscale: ValueTrie,
    language: ValueTrie,
}

fn last_token(tok: &Tokenizer, text: &str) -> Result<Option<u32>> {
    Ok(tok.encode(text, false)?.last().copied())
}

fn required_token(tok: &Tokenizer, text: &str, what: &str) -> Result<u32> {
    tok.token_to_id(text)
        .ok_or_else(|| Error::invalid_argument(format!("FSM config: {what} token '{text}' is not in the tokenizer")))
}

impl Vocab {
    fn build(tok: &Tokenizer, cfg: &FsmConfig) -> Result<Self> {
        let newline = last_token(tok, "\n")?
            .ok_or_else(|| Error::invalid_argument("the tokenizer does not encode \"\\n\""))?;
        let eos = required_token(tok, &cfg.eos_token, "eos_token")?;
        let pad = tok.token_to_id(&cfg.pad_token);
        let mut digits = [None; 10];
        for (d, slot) in digits.iter_mut().enumerate() {
            *slot = last_token(tok, &d.to_string())?;
        }
        let backtick = last_token(tok, "`")?;
        let mut all_codes = Vec::new();
        let mut valid_codes = Vec::new();
        for (id, content) in tok.added_tokens() {
            let n = content.strip_prefix("<|audio_code_").and_then(|r| r.strip_suffix("|>"));
            if let Some(n) = n.filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                all_codes.push(id);
                if n.parse::<u64>().map(|v| v < cfg.valid_audio_codes as u64).unwrap_or(false) {
                    valid_codes.push(id);
                }
            }
        }
        let all_codes_ranges = IdRanges::from_ids(all_codes.clone());
        let mut caption_ban = all_codes;
        caption_ban.extend(backtick);
        valid_codes.push(eos);

        let mut fixed = HashMap::new();
        for state in [
            State::ThinkTag,
            State::NewlineAfterThink,
            State::BpmName,
            State::CaptionName,
            State::DurationName,
            State::GenresName,
            State::KeyscaleName,
            State::LanguageName,
            State::TimesigName,
            State::ThinkEndTag,
        ] {
            let chars: Vec<char> = state.fixed_text().unwrap().chars().collect();
            for pos in 0..chars.len() {
                if let Some(t) = fixed_string_token(tok, &chars[pos..])? {
                    fixed.insert((state, pos), t);
                }
            }
        }

        let numbers = |lo: u32, hi: u32| (lo..=hi).map(|v| v.to_string()).collect::<Vec<_>>();
        let ts: Vec<String> = TIME_SIGNATURES.iter().map(|v| v.to_string()).collect();
        let langs: Vec<String> = VALID_LANGUAGES.iter().map(|s| s.to_string()).collect();
        let starts_with_note = |text: &str| {
            text.trim_start_matches(py_space)
                .chars()
                .next()
                .map(|c| c.to_uppercase().collect::<String>())
                .is_some_and(|u| u.len() == 1 && "ABCDEFG".contains(u.as_str()))
        };
        Ok(Self {
            size: tok.vocab_size(),
            newline,
            eos,
            pad,
            digits,
            think_end: tok.encode("</think>", false)?,
            caption_ban: IdRanges::from_ids(caption_ban),
            all_codes: all_codes_ranges,
            codes_and_eos: IdRanges::from_ids(valid_codes),
            fixed,
            bpm: ValueTrie::build(tok, "bpm", &numbers(BPM_RANGE.0, BPM_RANGE.1), newline, true, None)?,
            duration: ValueTrie::build(tok, "duration", &numbers(DURATION_MIN, cfg.max_duration), newline, true, None)?,
            timesig: ValueTrie::build(tok, "timesignature", &ts, newline, true, None)?,
            keyscale: ValueTrie::build(tok, "keyscale", &keyscale_values(), newline, false, Some(&starts_with_note))?,
            language: ValueTrie::build(tok, "language", &langs, newline, false, None)?,
        })
    }
}

/// The longest prefix of `remaining` that encodes to exactly one token. If none does (not the case
/// for the ASCII field names with a Qwen tokenizer), the first token of the whole remainder.
fn fixed_string_token(tok: &Tokenizer, remaining: &[char]) -> Result<Option<u32>> {
    for end in (1..=remaining.len()).rev() {
        let prefix: String = remaining[..end].iter().collect();
        let ids = tok.encode(&prefix, false)?;
        if ids.len() == 1 {
            return Ok(Some(ids[0]));
        }
    }
    let all: String = remaining.iter().collect();
    Ok(tok.encode(&all, false)?.first().copied())
}

/// Per-sequence constrained-decoding state machine.
pub struct Fsm {
    tok: Arc<Tokenizer>,
    cfg: FsmConfig,
    vocab: Arc<Vocab>,
    /// Tokens of `" {value}\n"` per user-provided field.
    user_tokens: HashMap<Field, Vec<u32>>,
    target_codes: Option<u64>,
    target_digits: Option<Vec<u8>>,
    /// Built on first entry into GENRES_VALUE (it scans the whole vocabulary).
    genres: OnceLock<GenresVocab>,

    state: State,
    position_in_state: usize,
    accumulated_value: String,
    accumulated_ids: Vec<u32>,
    codes_count: u64,
    queue: VecDeque<u32>,
    current_user_field: Option<Field>,
    caption_after_newline: bool,
    caption_token_count: usize,
    caption_ending: bool,
    pending_field_name: String,
    tokens_accepted: u64,
    /// EOS or pad was accepted (in the understand phase COMPLETED is reached before that).
    ended: bool,
}

impl Fsm {
    /// Builds the machine (tries, masks) from a tokenizer and a config; starts in THINK_TAG.
    pub fn new(tok: Arc<Tokenizer>, mut cfg: FsmConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.batched {
            cfg.user_metadata = UserMetadata::default();
            cfg.stop_at_reasoning = false;
            cfg.skip_genres = true;
            cfg.skip_caption = true;
            cfg.skip_language = true;
        }
        // Everything derived from the tokenizer depends only on these settings: share it.
        let key = format!(
            "fsm-vocab/{}/{:?}/{:?}/{}",
            cfg.max_duration, cfg.eos_token, cfg.pad_token, cfg.valid_audio_codes
        );
        let vocab = tok.derived(&key, || Vocab::build(&tok, &cfg))?;
        let mut user_tokens = HashMap::new();
        let m = &cfg.user_metadata;
        for (field, value) in [
            (Field::Bpm, &m.bpm),
            (Field::Caption, &m.caption),
            (Field::Duration, &m.duration),
            (Field::Genres, &m.genres),
            (Field::Keyscale, &m.keyscale),
            (Field::Language, &m.language),
            (Field::Timesignature, &m.timesignature),
        ] {
            if let Some(v) = value {
                let ids = tok.encode(&format!(" {}\n", v.as_text()), false)?;
                if !ids.is_empty() {
                    user_tokens.insert(field, ids);
                }
            }
        }
        let target_codes = cfg.target_duration.map(|d| (d * 5.0) as u64);
        let target_digits = cfg.target_duration.map(|d| (d.trunc() as u64).to_string().bytes().map(|b| b - b'0').collect());
        let mut fsm = Self {
            tok,
            cfg,
            vocab,
            user_tokens,
            target_codes,
            target_digits,
            genres: OnceLock::new(),
            state: State::ThinkTag,
            position_in_state: 0,
            accumulated_value: String::new(),
            accumulated_ids: Vec::new(),
            codes_count: 0,
            queue: VecDeque::new(),
            current_user_field: None,
            caption_after_newline: false,
            caption_token_count: 0,
            caption_ending: false,
            pending_field_name: String::new(),
            tokens_accepted: 0,
            ended: false,
        };
        fsm.reset_with_prompt(&[])?;
        Ok(fsm)
    }

    /// Builds from a JSON config (see `FsmConfig`).
    pub fn from_json(tok: Arc<Tokenizer>, config_json: &str) -> Result<Self> {
        Self::new(tok, FsmConfig::from_json(config_json)?)
    }

    /// Starts a new sequence. In the codes phase, a prompt that contains `</think>` starts the
    /// machine directly in CODES_GENERATION (phase 2); otherwise it starts at THINK_TAG.
    pub fn reset_with_prompt(&mut self, prompt_ids: &[u32]) -> Result<()> {
        for (i, &id) in prompt_ids.iter().enumerate() {
            if id as usize >= self.vocab.size {
                return Err(Error::invalid_argument(format!(
                    "prompt_ids[{i}] = {id} is out of range (vocabulary size {})",
                    self.vocab.size
                )));
            }
        }
        self.state = State::ThinkTag;
        self.position_in_state = 0;
        self.accumulated_value.clear();
        self.accumulated_ids.clear();
        self.codes_count = 0;
        self.queue.clear();
        self.current_user_field = None;
        self.caption_after_newline = false;
        self.caption_token_count = 0;
        self.caption_ending = false;
        self.pending_field_name.clear();
        self.tokens_accepted = 0;
        self.ended = false;
        let needle = &self.vocab.think_end;
        if self.cfg.phase == Phase::Codes
            && !needle.is_empty()
            && prompt_ids.windows(needle.len()).any(|w| w == needle.as_slice())
        {
            self.state = State::CodesGeneration;
        }
        Ok(())
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.size
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn is_completed(&self) -> bool {
        self.state == State::Completed
    }
    /// EOS or pad was accepted: the sequence takes no more tokens.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
    pub fn codes_count(&self) -> u64 {
        self.codes_count
    }
    pub fn caption_token_count(&self) -> usize {
        self.caption_token_count
    }
    pub fn eos_token(&self) -> u32 {
        self.vocab.eos
    }
    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Sets every logit the current state disallows to −inf, in place. `logits` must have one
    /// entry per token id; NaN is rejected. Some states look at the logits to decide (the caption
    /// look-ahead after a newline, the greedy language choice), so call this once per step with
    /// the logits the sampler will use.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<()> {
        if logits.len() != self.vocab.size {
            return Err(Error::length_mismatch(format!(
                "logits has {} entries but the tokenizer's vocabulary has {}",
                logits.len(),
                self.vocab.size
            )));
        }
        // Branch-free scan first (vectorizes); locate the NaN only when there is one.
        if logits.iter().fold(false, |acc, v| acc | v.is_nan()) {
            let i = logits.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(Error::invalid_argument(format!("logits[{i}] is NaN")));
        }
        match self.state {
            State::Completed if self.cfg.phase == Phase::Understand => self.vocab.all_codes.ban(logits),
            State::Completed => {}
            State::CodesGeneration => self.mask_codes(logits),
            _ => self.mask_metadata(logits)?,
        }
        Ok(())
    }

    /// Copy-and-mask form of [`Fsm::mask_logits`].
    pub fn apply(&mut self, logits: &[f32], out: &mut [f32]) -> Result<()> {
        if out.len() != logits.len() {
            return Err(Error::length_mismatch(format!(
                "out_masked_logits has {} entries but logits has {}",
                out.len(),
                logits.len()
            )));
        }
        out.copy_from_slice(logits);
        self.mask_logits(out)
    }

    fn mask_codes(&self, logits: &mut [f32]) {
        match self.target_codes {
            Some(target) if self.codes_count >= target => mask::whitelist(logits, &[self.vocab.eos]),
            Some(_) => {
                self.vocab.codes_and_eos.keep_only(logits);
                logits[self.vocab.eos as usize] = f32::NEG_INFINITY;
            }
            None => self.vocab.codes_and_eos.keep_only(logits),
        }
    }

    /// Starts injecting a user-provided value when the state is at the start of its field.
    fn start_injection(&mut self, field: Field, logits: &mut [f32]) -> bool {
        let Some(ids) = self.user_tokens.get(&field) else { return false };
        self.queue = ids.iter().copied().collect();
        self.current_user_field = Some(field);
        mask::whitelist(logits, &[ids[0]]);
        true
    }

    fn mask_metadata(&mut self, logits: &mut [f32]) -> Result<()> {
        if let Some(&next) = self.queue.front() {
            mask::whitelist(logits, &[next]);
            return Ok(());
        }
        let newline = self.vocab.newline;
        if let Some(text) = self.state.fixed_text() {
            let total = text.chars().count();
            let stop_here = self.state == State::ThinkEndTag && self.cfg.stop_at_reasoning;
            match self.vocab.fixed.get(&(self.state, self.position_in_state)) {
                Some(&t) => {
                    if stop_here && total - self.position_in_state <= 10 {
                        mask::whitelist(logits, &[self.vocab.eos]);
                    } else {
                        mask::whitelist(logits, &[t]);
                    }
                }
                // Only reachable if a fixed string cannot be tokenized: leave it, unconstrained.
                None if stop_here => mask::whitelist(logits, &[self.vocab.eos]),
                None => self.transition(),
            }
            return Ok(());
        }
        let fresh = self.accumulated_ids.is_empty();
        match self.state {
            State::BpmValue => {
                if fresh && self.start_injection(Field::Bpm, logits) {
                    return Ok(());
                }
                mask::whitelist(logits, self.vocab.bpm.children(&self.accumulated_ids));
            }
            State::DurationValue => {
                if fresh && self.start_injection(Field::Duration, logits) {
                    return Ok(());
                }
                if let Some(digits) = &self.target_digits {
                    let pos = self.accumulated_value.chars().count();
                    if pos < digits.len() {
                        if let Some(t) = self.vocab.digits[digits[pos] as usize] {
                            mask::whitelist(logits, &[t]);
                        }
                    } else {
                        mask::whitelist(logits, &[newline]);
                    }
                } else {
                    mask::whitelist(logits, self.vocab.duration.children(&self.accumulated_ids));
                }
            }
            State::TimesigValue => {
                if fresh && self.start_injection(Field::Timesignature, logits) {
                    return Ok(());
                }
                if self.vocab.timesig.is_complete(&self.accumulated_ids) {
                    mask::whitelist(logits, &[newline]);
                } else {
                    mask::whitelist(logits, self.vocab.timesig.children(&self.accumulated_ids));
                }
            }
            State::KeyscaleValue => {
                if fresh && self.start_injection(Field::Keyscale, logits) {
                    return Ok(());
                }
                let trie = &self.vocab.keyscale;
                let children = trie.children(&self.accumulated_ids);
                if trie.is_complete(&self.accumulated_ids) || children.is_empty() {
                    mask::whitelist(logits, &[newline]);
                } else {
                    mask::whitelist(logits, children);
                }
            }
            State::LanguageValue => {
                if fresh && self.start_injection(Field::Language, logits) {
                    return Ok(());
                }
                let trie = &self.vocab.language;
                let children = trie.children(&self.accumulated_ids);
                if fresh {
                    // Greedy: the best first token among all languages' first tokens.
                    match children.iter().copied().reduce(|a, b| if logits[b as usize] > logits[a as usize] { b } else { a }) {
                        Some(best) => mask::whitelist(logits, &[best]),
                        None => mask::whitelist(logits, &[newline]),
                    }
                } else if trie.is_complete(&self.accumulated_ids) || children.is_empty() {
                    mask::whitelist(logits, &[newline]);
                } else {
                    mask::whitelist(logits, children);
                }
            }
            State::GenresValue => {
                if self.accumulated_value.is_empty() && self.start_injection(Field::Genres, logits) {
                    return Ok(());
                }
                let genres = self.genres_vocab()?;
                let allowed = genres.allowed(&self.accumulated_value, newline);
                if !allowed.is_empty() {
                    mask::whitelist(logits, &allowed);
                } else if !genres.is_empty() {
                    mask::whitelist(logits, &[newline]);
                } else {
                    // No vocabulary: end when the newline beats every other token (official fallback).
                    let has_content = !py_strip(&self.accumulated_value).is_empty();
                    let nl = logits[newline as usize];
                    let best_other = logits
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != newline as usize)
                        .map(|(_, &v)| v)
                        .fold(f32::NEG_INFINITY, f32::max);
                    if has_content && nl > best_other {
                        mask::whitelist(logits, &[newline]);
                        self.transition();
                    } else if !has_content {
                        logits[newline as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            State::CaptionValue => self.mask_caption(logits)?,
            _ => {}
        }
        Ok(())
    }

    fn genres_vocab(&self) -> Result<&GenresVocab> {
        if let Some(g) = self.genres.get() {
            return Ok(g);
        }
        let mut list = self.cfg.genres.clone();
        if let Some(path) = &self.cfg.genres_file {
            list.extend(genres::read_genres_file(std::path::Path::new(path))?);
        }
        Ok(self.genres.get_or_init(|| GenresVocab::new(&self.tok, &list)))
    }

    fn mask_caption(&mut self, logits: &mut [f32]) -> Result<()> {
        if self.accumulated_value.is_empty() && self.start_injection(Field::Caption, logits) {
            return Ok(());
        }
        if self.caption_after_newline {
            self.caption_after_newline = false;
            // After a newline, the model's top choice decides: an indented token continues the
            // caption (YAML folding); anything else starts the next field, which runs free until ':'.
            let top = mask::argmax(logits) as u32;
            let text = self.tok.decode_one(top)?;
            if text.chars().next().is_some_and(|c| c != ' ' && c != '\t') {
                self.caption_ending = true;
                self.pending_field_name.clear();
                return Ok(());
            }
        }
        if self.caption_ending {
            return Ok(());
        }
        self.vocab.caption_ban.ban(logits);
        if self.caption_token_count >= CAPTION_MAX_TOKENS {
            mask::whitelist(logits, &[self.vocab.newline]);
        }
        Ok(())
    }

    /// Advances the machine with the token that was sampled. Errors: id out of range
    /// (`InvalidArgument`), or the sequence already completed (`InvalidState`).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.tok.check_id(token)?;
        if self.ended || (self.state == State::Completed && self.cfg.phase != Phase::Understand) {
            return Err(Error::invalid_state(format!(
                "accept({token}): the sequence is already complete (EOS was accepted); reset it first"
            )));
        }
        self.tokens_accepted += 1;
        if token == self.vocab.eos || Some(token) == self.vocab.pad {
            self.set_state(State::Completed);
            self.ended = true;
            return Ok(());
        }
        if self.state == State::Completed {
            // Understand phase: free text after `</think>`.
            return Ok(());
        }
        if self.state == State::CodesGeneration {
            self.codes_count += 1;
            return Ok(());
        }
        if self.queue.pop_front().is_some() {
            if self.queue.is_empty() {
                let field = self.current_user_field.take();
                let next = field.map(|f| self.next_field_state(f)).unwrap_or(State::ThinkEndTag);
                self.state = next;
                self.position_in_state = 0;
                self.accumulated_value.clear();
                self.accumulated_ids.clear();
            }
            return Ok(());
        }
        let text = self.tok.decode_one(token)?;
        let newline = self.vocab.newline;
        if let Some(fixed) = self.state.fixed_text() {
            self.position_in_state += text.chars().count();
            if self.position_in_state >= fixed.chars().count() {
                if self.state == State::ThinkEndTag && self.cfg.stop_at_reasoning {
                    self.set_state(State::Completed);
                } else {
                    self.transition();
                }
            }
            return Ok(());
        }
        match self.state {
            State::BpmValue | State::DurationValue | State::TimesigValue => {
                if token == newline {
                    self.transition();
                } else {
                    self.accumulated_ids.push(token);
                    let digits = py_strip(&text);
                    if !digits.is_empty() && digits.chars().all(char::is_numeric) {
                        self.accumulated_value.push_str(digits);
                    }
                }
            }
            State::KeyscaleValue | State::LanguageValue => {
                if token == newline {
                    self.transition();
                } else {
                    self.accumulated_ids.push(token);
                    self.accumulated_value.push_str(&text);
                }
            }
            State::GenresValue => {
                if token == newline {
                    self.transition();
                } else {
                    self.accumulated_value.push_str(&text);
                }
            }
            State::CaptionValue => self.accept_caption(&text),
            _ => {}
        }
        Ok(())
    }

    fn accept_caption(&mut self, text: &str) {
        self.caption_token_count += 1;
        self.accumulated_value.push_str(text);
        self.caption_after_newline = text.contains('\n');
        if !self.caption_ending {
            return;
        }
        self.pending_field_name.push_str(text);
        if !text.contains(':') {
            return;
        }
        let name = py_strip(py_strip(&self.pending_field_name).trim_end_matches(':')).to_lowercase();
        let jump = match name.as_str() {
            "duration" => Some(State::DurationValue),
            "genres" => Some(State::GenresValue),
            "keyscale" => Some(State::KeyscaleValue),
            "language" => Some(State::LanguageValue),
            "timesignature" => Some(State::TimesigValue),
            _ => None,
        };
        self.caption_ending = false;
        self.pending_field_name.clear();
        match jump {
            Some(state) => {
                self.state = state;
                self.position_in_state = 0;
                self.accumulated_value.clear();
                self.accumulated_ids.clear();
            }
            None => self.transition(),
        }
    }

    /// The NAME state of the next field after `field` that is not skipped, else THINK_END_TAG.
    fn next_field_state(&self, field: Field) -> State {
        let i = FIELD_ORDER.iter().position(|&f| f == field).unwrap_or(FIELD_ORDER.len());
        FIELD_ORDER[i + 1..]
            .iter()
            .find(|&&f| !self.skipped(f))
            .map(|f| f.name_state())
            .unwrap_or(State::ThinkEndTag)
    }

    fn skipped(&self, field: Field) -> bool {
        match field {
            Field::Caption => self.cfg.skip_caption,
            Field::Genres => self.cfg.skip_genres,
            Field::Language => self.cfg.skip_language,
            _ => false,
        }
    }

    /// The official transition table. Skipped fields have no entry, so a jump into a skipped
    /// field's VALUE state (possible only through the caption look-ahead) stays there.
    fn next_state(&self, state: State) -> Option<State> {
        use State::*;
        Some(match state {
            ThinkTag => NewlineAfterThink,
            NewlineAfterThink => BpmName,
            ThinkEndTag if self.cfg.phase == Phase::Understand => Completed,
            ThinkEndTag => CodesGeneration,
            CodesGeneration => Completed,
            BpmName => BpmValue,
            BpmValue => self.next_field_state(Field::Bpm),
            CaptionName if !self.cfg.skip_caption => CaptionValue,
            CaptionValue if !self.cfg.skip_caption => self.next_field_state(Field::Caption),
            DurationName => DurationValue,
            DurationValue => self.next_field_state(Field::Duration),
            GenresName if !self.cfg.skip_genres => GenresValue,
            GenresValue if !self.cfg.skip_genres => self.next_field_state(Field::Genres),
            KeyscaleName => KeyscaleValue,
            KeyscaleValue => self.next_field_state(Field::Keyscale),
            LanguageName if !self.cfg.skip_language => LanguageValue,
            LanguageValue if !self.cfg.skip_language => self.next_field_state(Field::Language),
            TimesigName => TimesigValue,
            TimesigValue => ThinkEndTag,
            _ => return None,
        })
    }

    fn transition(&mut self) {
        if let Some(next) = self.next_state(self.state) {
            self.set_state(next);
        }
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
        self.position_in_state = 0;
        self.accumulated_value.clear();
        self.accumulated_ids.clear();
        self.caption_after_newline = false;
        self.caption_token_count = 0;
        self.caption_ending = false;
        self.pending_field_name.clear();
    }

    /// State and counters as JSON (for hosts, logs and tests).
    pub fn state_json(&self) -> String {
        serde_json::json!({
            "state": self.state.name(),
            "position": self.tokens_accepted,
            "position_in_state": self.position_in_state,
            "codes_count": self.codes_count,
            "target_codes": self.target_codes,
            "caption_token_count": self.caption_token_count,
            "caption_ending": self.caption_ending,
            "injecting": self.current_user_field.map(Field::name),
            "pending_injection_tokens": self.queue.len(),
            "accumulated_value": self.accumulated_value,
            "completed": self.state == State::Completed,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests;
