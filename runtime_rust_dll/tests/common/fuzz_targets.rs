//! Fuzz targets: every entry point of the C ABI that parses text or JSON, called with arbitrary
//! bytes. A target returns the status of its main call; the only failure is a panic caught at the
//! boundary (status 99) or anything that kills the process. Shared by the bounded mutation fuzzer
//! of `cargo test` (`tests/fuzz.rs`) and the coverage-guided libFuzzer harness (`fuzz/`).

use std::ffi::{c_char, CString};
use std::ptr::null_mut;
use std::sync::OnceLock;

use crate::common::*;

pub type Target = fn(&[u8]) -> Status;

/// (name, target); each name is also its corpus directory under `runtime_rust_dll/fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("context", context),
    ("apg", apg),
    ("noise", noise),
    ("noise_stream", noise_stream),
    ("sampler", sampler),
    ("fsm", fsm),
    ("prompts", prompts),
    ("parse_lm_output", parse_lm_output),
    ("format_cot", format_cot),
    ("track_id", track_id),
    ("tokenizer_json", tokenizer_json),
    ("tokenizer_text", tokenizer_text),
    ("finalize_metadata", finalize_metadata),
    ("request", request),
    ("generation", generation),
];

/// The bytes as a C string: a C caller cannot pass an interior NUL, so the text ends there.
fn c_text(data: &[u8]) -> CString {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    CString::new(&data[..end]).expect("no NUL before end")
}

fn string_call(f: unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> Status, data: &[u8]) -> Status {
    let text = c_text(data);
    let mut out = null_mut();
    let s = unsafe { f(text.as_ptr(), &mut out) };
    if s == OK {
        unsafe { ace_string_free(out) };
    }
    s
}

struct Shared(*mut AceTokenizer);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// One tiny tokenizer for the whole run (tokenizers are immutable and thread-safe).
fn tok() -> *mut AceTokenizer {
    static TOK: OnceLock<Shared> = OnceLock::new();
    TOK.get_or_init(|| Shared(tiny_tokenizer())).0
}

fn context(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut ctx = null_mut();
    let s = unsafe { ace_create_context(text.as_ptr(), &mut ctx) };
    if s != OK {
        return s;
    }
    // A context that was accepted must work for every step.
    unsafe {
        let mut out = null_mut();
        check(ace_context_info(ctx, &mut out));
        ace_string_free(out);
        let mut steps = 0usize;
        check(ace_context_num_steps(ctx, &mut steps));
        let shape = [1usize, 2, 2];
        let x = [0.5f32, -0.5, 0.25, 1.0];
        let v = [0.1f32, 0.2, -0.3, 0.4];
        let mut o = [0.0f32; 4];
        check(ace_context_initial_latents(ctx, x.as_ptr(), v.as_ptr(), shape.as_ptr(), 3, o.as_mut_ptr(), 4));
        for i in 0..steps.min(64) {
            let mut json = null_mut();
            check(ace_prepare_step_inputs(ctx, i, &mut json));
            ace_string_free(json);
            check(ace_scheduler_step(ctx, i, x.as_ptr(), v.as_ptr(), shape.as_ptr(), 3, o.as_mut_ptr(), 4));
        }
        ace_free_context(ctx);
    }
    s
}

/// Follow-up calls on an accepted object may fail for good reasons, but never by panicking.
fn check(s: Status) {
    assert_ne!(s, PANIC, "panic in a follow-up call: {}", last_error());
}

fn apg(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut apg = null_mut();
    let s = unsafe { ace_apg_create(text.as_ptr(), &mut apg) };
    if s == OK {
        let c = [1.0f32, 2.0, 3.0, 4.0];
        let u = [0.5f32, 0.5, 0.5, 0.5];
        let mut o = [0.0f32; 4];
        unsafe {
            check(ace_apg_apply(apg, c.as_ptr(), u.as_ptr(), o.as_mut_ptr(), 4, 1, 2, 2, 3.0));
            check(ace_apg_apply(apg, c.as_ptr(), u.as_ptr(), o.as_mut_ptr(), 4, 1, 2, 2, 3.0));
            ace_apg_free(apg);
        }
    }
    s
}

fn noise(data: &[u8]) -> Status {
    let text = c_text(data);
    let shape = [17usize];
    let mut out = [0.0f32; 17];
    let mut seed = 0i64;
    unsafe { ace_noise_fill(text.as_ptr(), 7, shape.as_ptr(), 1, out.as_mut_ptr(), 17, &mut seed) }
}

/// The stream's options parse as `ace_noise_fill`'s; a valid stream then draws twice (a vectorised
/// and a scalar-path size) and is freed.
fn noise_stream(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut stream = null_mut();
    let mut seed = 0i64;
    let s = unsafe { ace_noise_stream_create(text.as_ptr(), 7, &mut seed, &mut stream) };
    if s == OK {
        let mut out = [0.0f32; 17];
        for len in [17usize, 5] {
            let f = unsafe { ace_noise_stream_fill(stream, out.as_mut_ptr(), len) };
            if f == PANIC {
                unsafe { ace_noise_stream_free(stream) };
                return f;
            }
        }
        unsafe { ace_noise_stream_free(stream) };
    }
    s
}

fn sampler(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut sampler = null_mut();
    let s = unsafe { ace_sampler_create(text.as_ptr(), &mut sampler) };
    if s == OK {
        // Sample once when the vocabulary is small enough to hand in a row.
        let row: Vec<f32> = (0..4096).map(|i| (i % 7) as f32 * 0.1).collect();
        for vocab in [1usize, 2, 277, 4096] {
            let mut t = 0u32;
            let r = unsafe { ace_sampler_sample(sampler, row.as_ptr(), row.as_ptr(), vocab, 3, &mut t) };
            check(r);
        }
        unsafe { ace_sampler_free(sampler) };
    }
    s
}

fn fsm(data: &[u8]) -> Status {
    let text = c_text(data);
    let tok = tok();
    let mut fsm = null_mut();
    let s = unsafe { ace_fsm_create(tok, text.as_ptr(), &mut fsm) };
    if s == OK {
        // Drive it a little with greedy steps over a fixed row.
        let mut vocab = 0usize;
        unsafe { ace_tokenizer_vocab_size(tok, &mut vocab) };
        let cfg = CString::new(format!("{{\"seed\": 1, \"temperature\": 0, \"cfg_scale\": 1, \"vocab_size\": {vocab}}}")).unwrap();
        let mut sampler = null_mut();
        assert_eq!(unsafe { ace_sampler_create(cfg.as_ptr(), &mut sampler) }, OK);
        let row: Vec<f32> = (0..vocab).map(|i| ((i * 31) % 97) as f32 * 0.01).collect();
        for step in 0..24u64 {
            let mut t = 0u32;
            let r = unsafe { ace_lm_step(sampler, fsm, row.as_ptr(), std::ptr::null(), vocab, step, &mut t) };
            check(r);
            if r != OK {
                break;
            }
        }
        let mut out = null_mut();
        unsafe {
            check(ace_fsm_state_json(fsm, &mut out));
            ace_string_free(out);
            ace_sampler_free(sampler);
            ace_fsm_free(fsm);
        }
    }
    s
}

fn prompts(data: &[u8]) -> Status {
    string_call(ace_build_prompts, data)
}

fn parse_lm_output(data: &[u8]) -> Status {
    string_call(ace_parse_lm_output, data)
}

fn format_cot(data: &[u8]) -> Status {
    string_call(ace_format_cot, data)
}

fn track_id(data: &[u8]) -> Status {
    let a = string_call(ace_track_canonical_json, data);
    let b = string_call(ace_track_id, data);
    assert_eq!(a, b, "track id and canonical JSON disagree on validity");
    b
}

fn tokenizer_json(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut tok = null_mut();
    let s = unsafe { ace_tokenizer_create_from_json(text.as_ptr(), &mut tok) };
    if s == OK {
        let hello = CString::new("hello <|im_end|> wörld").unwrap();
        let mut ids = [0u32; 256];
        let mut n = 0usize;
        unsafe {
            let r = ace_tokenizer_encode(tok, hello.as_ptr(), true, ids.as_mut_ptr(), 256, &mut n);
            check(r);
            if r == OK {
                let mut out = null_mut();
                check(ace_tokenizer_decode(tok, ids.as_ptr(), n, false, &mut out));
                if !out.is_null() {
                    ace_string_free(out);
                }
            }
            ace_tokenizer_free(tok);
        }
    }
    s
}

fn tokenizer_text(data: &[u8]) -> Status {
    let text = c_text(data);
    let tok = tok();
    let mut n = 0usize;
    let s = unsafe { ace_tokenizer_encode(tok, text.as_ptr(), false, null_mut(), 0, &mut n) };
    if s == OK {
        let mut ids = vec![0u32; n];
        unsafe {
            check(ace_tokenizer_encode(tok, text.as_ptr(), false, ids.as_mut_ptr(), n, &mut n));
            let mut out = null_mut();
            check(ace_tokenizer_decode(tok, ids.as_ptr(), n, false, &mut out));
            if !out.is_null() {
                ace_string_free(out);
            }
            // The exact decode gives back the text's bytes (byte-level BPE is lossless).
            let mut len = 0usize;
            check(ace_tokenizer_decode_utf8(tok, ids.as_ptr(), n, false, null_mut(), 0, &mut len));
            let mut buf = vec![0u8; len];
            check(ace_tokenizer_decode_utf8(tok, ids.as_ptr(), n, false, buf.as_mut_ptr(), len, &mut len));
            assert_eq!(buf, text.as_bytes(), "encode/decode round trip");
        }
    }
    let mut id = 0u32;
    let r = unsafe { ace_tokenizer_token_to_id(tok, text.as_ptr(), &mut id) };
    check(r);
    s
}

fn finalize_metadata(data: &[u8]) -> Status {
    // Two bytes per id, so the fuzzer reaches both valid ids (< 277) and ids out of range.
    let ids: Vec<u32> = data.chunks(2).map(|c| c.iter().fold(0u32, |a, &b| a << 8 | b as u32) % 300).collect();
    let mut out = null_mut();
    let s = unsafe { ace_finalize_metadata(tok(), ids.as_ptr(), ids.len(), &mut out) };
    if s == OK {
        unsafe { ace_string_free(out) };
    }
    s
}

struct SharedPackage(*mut AcePackage);
unsafe impl Send for SharedPackage {}
unsafe impl Sync for SharedPackage {}

/// One minimal package for the whole run (packages are immutable and thread-safe).
fn package() -> *mut AcePackage {
    static PKG: OnceLock<SharedPackage> = OnceLock::new();
    PKG.get_or_init(|| {
        let dir = CString::new(minimal_package_dir().to_string_lossy().as_bytes()).unwrap();
        let mut pkg = null_mut();
        assert_eq!(unsafe { ace_package_open(dir.as_ptr(), std::ptr::null(), &mut pkg) }, OK, "{}", last_error());
        SharedPackage(pkg)
    })
    .0
}

fn request(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut out = null_mut();
    let s = unsafe { ace_request_normalize(package(), text.as_ptr(), &mut out) };
    if s == OK {
        unsafe { ace_string_free(out) };
    }
    s
}

fn generation(data: &[u8]) -> Status {
    let text = c_text(data);
    let mut generation = null_mut();
    let s = unsafe { ace_generation_create(package(), text.as_ptr(), &mut generation) };
    if s == OK {
        unsafe { ace_generation_free(generation) };
    }
    s
}
