//! Rule-by-rule tests of the FSM against the spec (§5.4), using the generated Qwen3 LM tokenizer.

use super::*;
use crate::error::ErrorKind;
use crate::tokenizer::tests::lm_tokenizer;

fn fsm(cfg: &str) -> Option<(Arc<Tokenizer>, Fsm)> {
    let tok = lm_tokenizer()?;
    let f = Fsm::from_json(tok.clone(), cfg).unwrap();
    Some((tok, f))
}

fn allowed(f: &mut Fsm, logits: &[f32]) -> Vec<u32> {
    let mut l = logits.to_vec();
    f.mask_logits(&mut l).unwrap();
    l.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, _)| i as u32).collect()
}

fn flat(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

/// Follows forced (single-allowed) tokens while they last; returns their decoded text.
fn follow_forced(tok: &Tokenizer, f: &mut Fsm) -> String {
    let mut text = String::new();
    loop {
        let a = allowed(f, &flat(tok.vocab_size()));
        if a.len() != 1 || f.is_completed() {
            return text;
        }
        text.push_str(&tok.decode_one(a[0]).unwrap());
        f.accept(a[0]).unwrap();
        if f.is_completed() {
            return text;
        }
    }
}

/// Follows forced tokens until the machine reaches `state`.
fn follow_until(tok: &Tokenizer, f: &mut Fsm, state: State) -> String {
    let mut text = String::new();
    while f.state() != state {
        let a = allowed(f, &flat(tok.vocab_size()));
        assert_eq!(a.len(), 1, "not forced in {:?} after {text:?}", f.state());
        text.push_str(&tok.decode_one(a[0]).unwrap());
        f.accept(a[0]).unwrap();
    }
    text
}

fn accept_text(tok: &Tokenizer, f: &mut Fsm, text: &str) {
    for t in tok.encode(text, false).unwrap() {
        f.accept(t).unwrap();
    }
}

#[test]
fn fixed_strings_spell_the_header() {
    let Some((tok, mut f)) = fsm(r#"{"skip_caption": true}"#) else { return };
    assert_eq!(f.state(), State::ThinkTag);
    // <think>, \n and "bpm:" are forced token by token; the value's leading space too, because
    // every bpm path starts with the space token (digits are single tokens).
    assert_eq!(follow_until(&tok, &mut f, State::BpmValue), "<think>\nbpm:");
    assert_eq!(follow_forced(&tok, &mut f), " ");
}

#[test]
fn numeric_tries_hold_exactly_the_ranges() {
    let Some((tok, f)) = fsm(r#"{"max_duration": 240}"#) else { return };
    let texts = |trie: &ValueTrie| -> Vec<String> {
        let mut v: Vec<String> = trie.complete_paths().iter().map(|p| tok.decode(p, false).unwrap()).collect();
        v.sort();
        v
    };
    let mut want: Vec<String> = (30..=300).map(|v| format!(" {v}")).collect();
    want.sort();
    assert_eq!(texts(&f.vocab.bpm), want);
    let mut want: Vec<String> = (10..=240).map(|v| format!(" {v}")).collect();
    want.sort();
    assert_eq!(texts(&f.vocab.duration), want);
    assert_eq!(texts(&f.vocab.timesig), vec![" 2", " 3", " 4", " 6"]);
    let langs = texts(&f.vocab.language);
    assert_eq!(langs.len(), 51);
    assert!(langs.contains(&" yue".to_string()) && langs.contains(&" unknown".to_string()));
    let keys = texts(&f.vocab.keyscale);
    let all: Vec<String> = keyscale_values().iter().map(|k| format!(" {k}")).collect();
    assert!(keys.iter().all(|k| all.contains(k)), "{keys:?}");
    assert!(keys.contains(&" G major".to_string()) && keys.contains(&" F♯ minor".to_string()));
}

#[test]
fn bpm_value_walk_and_newline_only_when_complete() {
    let Some((tok, mut f)) = fsm(r#"{"skip_caption": true}"#) else { return };
    follow_until(&tok, &mut f, State::BpmValue);
    let nl = tok.encode("\n", false).unwrap()[0];
    // " 1" then "2" then "0": "1" alone is not a value, so no newline yet after " 1".
    let ids = tok.encode("bpm: 120", false).unwrap();
    let name = tok.encode("bpm:", false).unwrap();
    let path = &ids[name.len()..];
    for (i, &t) in path.iter().enumerate() {
        let a = allowed(&mut f, &flat(tok.vocab_size()));
        assert!(a.contains(&t), "step {i}");
        // " ", " 1", " 12" are not values in 30..=300: no newline yet.
        assert!(!a.contains(&nl), "newline at step {i}");
        f.accept(t).unwrap();
    }
    let a = allowed(&mut f, &flat(tok.vocab_size()));
    assert!(a.contains(&nl), "120 is complete");
    f.accept(nl).unwrap();
    assert_eq!(f.state(), State::DurationName);
}

#[test]
fn user_metadata_is_injected() {
    let Some((tok, mut f)) =
        fsm(r#"{"user_metadata": {"bpm": 97, "keyscale": "E♭ minor"}, "skip_caption": true, "skip_language": true}"#)
    else {
        return;
    };
    assert_eq!(follow_until(&tok, &mut f, State::DurationValue), "<think>\nbpm: 97\nduration:");
    accept_text(&tok, &mut f, " 33\n");
    assert_eq!(follow_until(&tok, &mut f, State::TimesigValue), "keyscale: E♭ minor\ntimesignature:");
}

#[test]
fn caption_bans_and_cap() {
    let Some((tok, mut f)) = fsm("{}") else { return };
    follow_until(&tok, &mut f, State::BpmValue);
    accept_text(&tok, &mut f, " 120\n");
    assert_eq!(follow_until(&tok, &mut f, State::CaptionValue), "caption:");
    assert_eq!(f.state(), State::CaptionValue);
    let backtick = tok.encode("`", false).unwrap()[0];
    let code0 = tok.token_to_id("<|audio_code_0|>").unwrap();
    let code_last = tok.token_to_id("<|audio_code_65534|>").unwrap();
    let a = allowed(&mut f, &flat(tok.vocab_size()));
    assert!(!a.contains(&backtick) && !a.contains(&code0) && !a.contains(&code_last));
    assert!(a.contains(&tok.encode(" A", false).unwrap()[0]));
    for _ in 0..CAPTION_MAX_TOKENS {
        f.accept(tok.encode(" la", false).unwrap()[0]).unwrap();
    }
    assert_eq!(allowed(&mut f, &flat(tok.vocab_size())), vec![tok.encode("\n", false).unwrap()[0]]);
}

#[test]
fn caption_newline_lookahead_jumps_to_named_field() {
    let Some((tok, mut f)) = fsm("{}") else { return };
    follow_until(&tok, &mut f, State::BpmValue);
    accept_text(&tok, &mut f, " 120\n");
    follow_until(&tok, &mut f, State::CaptionValue);
    accept_text(&tok, &mut f, " A calm piece.\n");
    // Indented argmax: the caption continues (codes still banned).
    let indent = tok.encode("  more", false).unwrap()[0];
    let mut l = flat(tok.vocab_size());
    l[indent as usize] = 5.0;
    let code0 = tok.token_to_id("<|audio_code_0|>").unwrap() as usize;
    let a = allowed(&mut f, &l);
    assert!(!a.contains(&(code0 as u32)));
    accept_text(&tok, &mut f, "  more text.\n");
    // Non-indented argmax: free run until ':' then jump to the named field's value.
    let key = tok.encode("keyscale", false).unwrap()[0];
    let mut l = flat(tok.vocab_size());
    l[key as usize] = 5.0;
    assert_eq!(allowed(&mut f, &l).len(), tok.vocab_size(), "free run");
    accept_text(&tok, &mut f, "keyscale:");
    assert_eq!(f.state(), State::KeyscaleValue);
    // Complete keyscale → only newline.
    accept_text(&tok, &mut f, " G major");
    assert_eq!(allowed(&mut f, &flat(tok.vocab_size())), vec![tok.encode("\n", false).unwrap()[0]]);
}

#[test]
fn language_first_token_is_greedy() {
    let Some((tok, mut f)) = fsm(r#"{"skip_caption": true, "user_metadata": {"bpm": 90, "duration": 30, "keyscale": "C major"}}"#) else {
        return;
    };
    assert_eq!(
        follow_until(&tok, &mut f, State::LanguageValue),
        "<think>\nbpm: 90\nduration: 30\nkeyscale: C major\nlanguage:"
    );
    let ja = tok.encode("language: ja", false).unwrap();
    let first = *ja.last().unwrap();
    let mut l = flat(tok.vocab_size());
    l[first as usize] = 3.0;
    l[0] = 100.0; // a non-language token with a higher logit is ignored
    assert_eq!(allowed(&mut f, &l), vec![first]);
}

#[test]
fn stop_at_reasoning_forces_eos_then_completed() {
    let Some((tok, mut f)) = fsm(
        r#"{"stop_at_reasoning": true, "skip_caption": true, "skip_language": true,
            "user_metadata": {"bpm": 90, "duration": 30, "keyscale": "C major", "timesignature": "4"}}"#,
    ) else {
        return;
    };
    let text = follow_forced(&tok, &mut f);
    assert_eq!(text, "<think>\nbpm: 90\nduration: 30\nkeyscale: C major\ntimesignature: 4\n<|im_end|>");
    assert!(f.is_completed());
    let err = f.accept(198).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidState);
}

#[test]
fn codes_phase_target_count_and_valid_range() {
    let Some((tok, mut f)) = fsm(r#"{"phase": "codes", "target_duration": 1.9}"#) else { return };
    let prompt = tok.encode("<|im_start|>assistant\n<think>\nbpm: 1\n</think>\n\n", false).unwrap();
    f.reset_with_prompt(&prompt).unwrap();
    assert_eq!(f.state(), State::CodesGeneration);
    let eos = tok.token_to_id("<|im_end|>").unwrap();
    let c0 = tok.token_to_id("<|audio_code_0|>").unwrap();
    let c_last_valid = tok.token_to_id("<|audio_code_63999|>").unwrap();
    let c_invalid = tok.token_to_id("<|audio_code_64000|>").unwrap();
    for i in 0..9 {
        // int(1.9 * 5) = 9 codes
        let a = allowed(&mut f, &flat(tok.vocab_size()));
        assert_eq!(a.len(), 64000, "step {i}");
        assert!(a.contains(&c0) && a.contains(&c_last_valid) && !a.contains(&c_invalid) && !a.contains(&eos));
        f.accept(c0 + i).unwrap();
    }
    assert_eq!(allowed(&mut f, &flat(tok.vocab_size())), vec![eos]);
    f.accept(eos).unwrap();
    assert!(f.is_completed());
    assert!(f.state_json().contains("\"codes_count\":9"));
    // Without a target, EOS is allowed from the start; a prompt without </think> starts at THINK_TAG.
    let Some((_, mut g)) = fsm(r#"{"phase": "codes"}"#) else { return };
    g.reset_with_prompt(&prompt).unwrap();
    let a = allowed(&mut g, &flat(tok.vocab_size()));
    assert_eq!(a.len(), 64001);
    assert!(a.contains(&eos));
    g.reset_with_prompt(&tok.encode("<think>\n", false).unwrap()).unwrap();
    assert_eq!(g.state(), State::ThinkTag);
}

#[test]
fn batched_mode_skips_caption_language_and_metadata() {
    let Some((tok, mut f)) = fsm(r#"{"batched": true, "stop_at_reasoning": true, "user_metadata": {"bpm": 90}}"#) else {
        return;
    };
    assert_eq!(follow_until(&tok, &mut f, State::BpmValue), "<think>\nbpm:");
    accept_text(&tok, &mut f, " 100\n");
    assert_eq!(follow_until(&tok, &mut f, State::DurationValue), "duration:");
    accept_text(&tok, &mut f, " 100\n");
    assert_eq!(follow_until(&tok, &mut f, State::KeyscaleValue), "keyscale:");
    accept_text(&tok, &mut f, " A minor\n");
    assert_eq!(follow_until(&tok, &mut f, State::TimesigValue), "timesignature:");
    accept_text(&tok, &mut f, " 3\n");
    // stop_at_reasoning is off in batched mode: </think> is generated, then codes.
    assert_eq!(follow_forced(&tok, &mut f), "</think>");
    assert_eq!(f.state(), State::CodesGeneration);
}

#[test]
fn target_duration_forces_duration_digits() {
    let Some((tok, mut f)) = fsm(r#"{"skip_caption": true, "target_duration": 187.6, "user_metadata": {"bpm": 90}}"#) else {
        return;
    };
    assert_eq!(follow_until(&tok, &mut f, State::DurationValue), "<think>\nbpm: 90\nduration:");
    // The digits of int(187.6) are forced one digit token at a time, then the newline. As in the
    // official code no space is forced before them (the value reads "duration:187").
    let d1 = tok.encode("1", false).unwrap()[0];
    assert_eq!(allowed(&mut f, &flat(tok.vocab_size())), vec![d1]);
    assert_eq!(follow_until(&tok, &mut f, State::KeyscaleValue), "187\nkeyscale:");
}

#[test]
fn bad_inputs_are_errors() {
    let Some((tok, mut f)) = fsm("{}") else { return };
    let mut short = vec![0.0f32; 10];
    assert_eq!(f.mask_logits(&mut short).unwrap_err().kind, ErrorKind::LengthMismatch);
    let mut nan = flat(tok.vocab_size());
    nan[7] = f32::NAN;
    assert_eq!(f.mask_logits(&mut nan).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(f.accept(217204).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(f.reset_with_prompt(&[5, 1 << 30]).unwrap_err().kind, ErrorKind::InvalidArgument);
    for cfg in [r#"{"bogus": 1}"#, r#"{"phase": "nope"}"#, "{", r#"{"user_metadata": {"tempo": 1}}"#] {
        assert_eq!(Fsm::from_json(tok.clone(), cfg).err().unwrap().kind, ErrorKind::InvalidJson, "{cfg}");
    }
    for cfg in [r#"{"target_duration": -1}"#, r#"{"max_duration": 5}"#, r#"{"eos_token": "<nope>"}"#] {
        assert_eq!(Fsm::from_json(tok.clone(), cfg).err().unwrap().kind, ErrorKind::InvalidArgument, "{cfg}");
    }
}

#[test]
fn genres_trie_from_config() {
    let Some((tok, mut f)) = fsm(
        r#"{"skip_genres": false, "skip_caption": true, "genres": ["Pop Rock", "jazz"],
            "user_metadata": {"bpm": 90, "duration": 30}}"#,
    ) else {
        return;
    };
    assert_eq!(follow_until(&tok, &mut f, State::GenresValue), "<think>\nbpm: 90\nduration: 30\ngenres:");
    let a = allowed(&mut f, &flat(tok.vocab_size()));
    let texts: Vec<String> = a.iter().map(|&t| tok.decode_one(t).unwrap()).collect();
    // Candidates are tokens whose text (lower-cased, left-stripped) continues a genre.
    assert!(!texts.is_empty());
    for t in &texts {
        let t = t.to_lowercase();
        let t = t.trim();
        assert!(t.is_empty() || "pop rock".starts_with(t) || "jazz".starts_with(t), "{texts:?}");
    }
    accept_text(&tok, &mut f, " jazz\n");
    assert_eq!(follow_until(&tok, &mut f, State::KeyscaleValue), "keyscale:");
}


#[test]
fn understand_phase_frees_the_text_after_think_but_bans_codes() {
    let Some((tok, mut f)) = fsm(
        r#"{"phase": "understand", "skip_caption": true, "skip_language": true,
            "user_metadata": {"bpm": 90, "duration": 30, "keyscale": "C major", "timesignature": "4"}}"#,
    ) else {
        return;
    };
    // The CoT block runs as in phase 1, then `</think>` (no EOS in its place) leads to COMPLETED.
    let text = follow_forced(&tok, &mut f);
    assert_eq!(text, "<think>\nbpm: 90\nduration: 30\nkeyscale: C major\ntimesignature: 4\n</think>");
    assert_eq!(f.state(), State::Completed);
    assert!(!f.is_ended());
    // Free text: everything but the audio codes (the official audio_code_mask).
    let a = allowed(&mut f, &flat(tok.vocab_size()));
    let first_code = tok.token_to_id("<|audio_code_0|>").unwrap();
    let last_code = tok.token_to_id("<|audio_code_65534|>").unwrap();
    assert!(!a.contains(&first_code) && !a.contains(&last_code) && !a.contains(&(first_code + 123)));
    assert_eq!(a.len(), tok.vocab_size() - 65535);
    accept_text(&tok, &mut f, "[Verse]\nla la");
    assert!(!f.is_ended());
    f.accept(f.eos_token()).unwrap();
    assert!(f.is_ended());
    assert_eq!(f.accept(198).unwrap_err().kind, ErrorKind::InvalidState);
}
