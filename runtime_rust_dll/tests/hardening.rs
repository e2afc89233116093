//! Regressions of issue 12 through the C ABI: each input here used to abort the process, report
//! success on overflow, panic, or be read as something it does not say.

mod common;

use std::ffi::{c_char, c_int, CString};
use std::ptr::null_mut;

use common::*;

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn huge_step_counts_fail_before_allocating() {
    let mut out = [0.0f32; 8];
    let mut n = 0usize;
    for steps in [1_000_000_000_000usize, usize::MAX, 1001] {
        let s = unsafe { ace_schedule_base(steps, 1.0, out.as_mut_ptr(), 8, &mut n) };
        assert_eq!(s, INVALID_ARGUMENT, "steps {steps}: {}", last_error());
        assert!(last_error().contains("limit of 1000"), "{}", last_error());
        let s = unsafe { ace_schedule_v1_sigmas(steps, 3.0, 1.0, 0.0, out.as_mut_ptr(), 8, &mut n) };
        assert_eq!(s, INVALID_ARGUMENT, "v1 steps {steps}: {}", last_error());
    }
    // Within the cap, a capacity that is too small is LENGTH_MISMATCH and nothing is written.
    let s = unsafe { ace_schedule_base(1000, 1.0, out.as_mut_ptr(), 8, &mut n) };
    assert_eq!(s, LENGTH_MISMATCH, "{}", last_error());
    assert_eq!(out, [0.0; 8]);
    for cfg in [
        r#"{"model": "base", "steps": 1000000000000}"#,
        r#"{"model": "base", "steps": 18446744073709551615}"#,
        r#"{"model": "sft", "steps": 18446744073709551615, "cover_noise_strength": 0.5}"#,
    ] {
        let mut ctx = null_mut();
        let s = unsafe { ace_create_context(cs(cfg).as_ptr(), &mut ctx) };
        assert_eq!(s, INVALID_ARGUMENT, "{cfg}: {}", last_error());
        assert!(ctx.is_null());
    }
}

#[test]
fn lengths_no_buffer_can_have_are_length_mismatch() {
    let a = [1.0f32; 4];
    let mut o = [0.0f32; 4];
    for len in [usize::MAX, usize::MAX / 4 + 1] {
        let s = unsafe { ace_guidance_cfg(a.as_ptr(), a.as_ptr(), o.as_mut_ptr(), len, 2.0) };
        assert_eq!(s, LENGTH_MISMATCH, "len {len}: {}", last_error());
        let s = unsafe { ace_solver_ode_step(a.as_ptr(), a.as_ptr(), len, 1.0, 0.5, o.as_mut_ptr()) };
        assert_eq!(s, LENGTH_MISMATCH, "len {len}: {}", last_error());
    }
    let mut cfg = null_mut();
    let s = unsafe { ace_sampler_create(cs(r#"{"seed": 1, "vocab_size": 4294967295}"#).as_ptr(), &mut cfg) };
    assert_eq!(s, INVALID_ARGUMENT, "{}", last_error());
}

#[test]
fn overflowing_solver_results_are_errors_like_guidance() {
    // Finite inputs whose result is not finite in float32.
    let x = [3e38f32, 1.0];
    let v = [-3e38f32, 1.0];
    let eps = [0.0f32, 0.0];
    let mut o = [0.0f32; 2];
    let check = |name: &str, s: Status| {
        assert_eq!(s, INVALID_ARGUMENT, "{name}: status {s}, {}", last_error());
        let msg = last_error();
        assert!(msg.contains("out") && msg.contains("overflow"), "{name}: {msg}");
    };
    unsafe {
        check("ode", ace_solver_ode_step(x.as_ptr(), v.as_ptr(), 2, 1.0, 0.0, o.as_mut_ptr()));
        check("x0", ace_solver_x0(x.as_ptr(), v.as_ptr(), 2, 1.0, o.as_mut_ptr()));
        check("sde", ace_solver_sde_step(x.as_ptr(), v.as_ptr(), eps.as_ptr(), 2, 1.0, 0.5, o.as_mut_ptr()));
        check("euler_omega", ace_solver_euler_omega_step(x.as_ptr(), v.as_ptr(), 2, 1.0, 0.0, 0.0, o.as_mut_ptr()));
        let mut ctx = null_mut();
        assert_eq!(ace_create_context(cs(r#"{"model": "turbo"}"#).as_ptr(), &mut ctx), OK);
        let shape = [1usize, 1, 2];
        let big = [3.4e38f32, 1.0]; // step 0 of turbo moves by dt ≈ 0.045·3e38
        check("scheduler_step", ace_scheduler_step(ctx, 0, big.as_ptr(), v.as_ptr(), shape.as_ptr(), 3, o.as_mut_ptr(), 2));
        check("scheduler_step x0", ace_scheduler_step(ctx, 7, x.as_ptr(), v.as_ptr(), shape.as_ptr(), 3, o.as_mut_ptr(), 2));
        ace_free_context(ctx);
        // The same inputs through CFG, which already rejected them.
        assert_eq!(ace_guidance_cfg(x.as_ptr(), v.as_ptr(), o.as_mut_ptr(), 2, 2.0), INVALID_ARGUMENT);
        // And a result that fits stays a success.
        assert_eq!(ace_solver_ode_step(x.as_ptr(), v.as_ptr(), 2, 1.0, 0.875, o.as_mut_ptr()), OK);
        assert_eq!(o[0], 3e38f32 + 3e38f32 * 0.125);
    }
}

#[test]
fn heun_accepts_a_null_out_stage_as_documented() {
    let x = [1.0f32, 2.0];
    let v = [1.0f32, 1.0];
    let mut o = [0.0f32; 2];
    unsafe {
        let mut h = null_mut();
        assert_eq!(ace_heun_create(0.0, &mut h), OK);
        assert_eq!(ace_heun_step(h, x.as_ptr(), v.as_ptr(), 2, 1.0, 0.5, o.as_mut_ptr(), null_mut()), OK, "{}", last_error());
        assert_eq!(o, [0.5, 1.5]);
        let mut stage: c_int = 0;
        assert_eq!(ace_heun_next_stage(h, &mut stage), OK);
        assert_eq!(stage, 2);
        ace_heun_free(h);
    }
}

#[test]
fn json_arrays_are_not_objects_and_keys_are_unique() {
    let tok = tiny_tokenizer();
    unsafe {
        let mut sampler = null_mut();
        assert_eq!(ace_sampler_create(cs("[1]").as_ptr(), &mut sampler), INVALID_JSON, "{}", last_error());
        assert!(sampler.is_null());
        let mut fsm = null_mut();
        assert_eq!(ace_fsm_create(tok, cs(r#"["codes"]"#).as_ptr(), &mut fsm), INVALID_JSON, "{}", last_error());
        assert!(fsm.is_null());
        let mut apg = null_mut();
        assert_eq!(ace_apg_create(cs("[-0.75, 2.5, 0]").as_ptr(), &mut apg), INVALID_JSON);
        let mut seed = 0i64;
        let mut o = [0.0f32; 2];
        let shape = [2usize];
        let s = ace_noise_fill(cs(r#"["torch_cpu"]"#).as_ptr(), 1, shape.as_ptr(), 1, o.as_mut_ptr(), 2, &mut seed);
        assert_eq!(s, INVALID_JSON, "{}", last_error());
        ace_tokenizer_free(tok);
    }
    let (s, msg) = call_str(ace_build_prompts, r#"["cap", "lyr", true, 120]"#);
    assert_eq!(s, INVALID_JSON, "{msg}");
    assert!(msg.contains("expected a JSON object, got an array"), "{msg}");
    // Nested: lm_metadata is an object in the request.
    let (s, msg) = call_str(ace_build_prompts, r#"{"caption": "x", "lm_metadata": [120]}"#);
    assert_eq!(s, INVALID_JSON, "{msg}");
    for (f, text) in [
        (ace_build_prompts as unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> Status,
         r#"{"caption": "a", "caption": "b"}"#),
        (ace_format_cot, r#"{"bpm": 120, "bpm": 90}"#),
        (ace_track_id, r#"{"seed": 1, "seed": 2}"#),
        (ace_track_canonical_json, r#"{"a": {"k": 1, "k": 2}}"#),
    ] {
        let (s, msg) = call_str(f, text);
        assert_eq!(s, INVALID_JSON, "{text}: {msg}");
        assert!(msg.contains("duplicate key"), "{text}: {msg}");
    }
    let mut ctx = null_mut();
    let s = unsafe { ace_create_context(cs(r#"{"model": "base", "steps": 8, "steps": 1000}"#).as_ptr(), &mut ctx) };
    assert_eq!(s, INVALID_JSON, "{}", last_error());
}

#[test]
fn format_cot_reports_key_errors_as_invalid_json() {
    let (s, msg) = call_str(ace_format_cot, r#"{"tempo": 120}"#);
    assert_eq!(s, INVALID_JSON, "{msg}");
    assert!(msg.contains("tempo"), "{msg}");
    let (s, _) = call_str(ace_format_cot, r#"{"bpm": [120]}"#);
    assert_eq!(s, INVALID_JSON);
    let (s, out) = call_str(ace_format_cot, r#"{"bpm": 120}"#);
    assert_eq!(s, OK, "{out}");
    assert_eq!(out, "<think>\nbpm: 120\n</think>");
}

#[test]
fn malformed_tokenizer_json_is_an_error_not_a_panic() {
    for json in ["{\"decoder\":{", "{\"model\": ", "[", "", "{\"added_tokens\": [{\"id\": -1}]}"] {
        let mut tok = null_mut();
        let s = unsafe { ace_tokenizer_create_from_json(cs(json).as_ptr(), &mut tok) };
        assert_eq!(s, TOKENIZER, "{json:?}: {}", last_error());
        assert!(tok.is_null());
    }
}

#[test]
fn tokenizer_files_that_never_end_or_are_not_files_fail_cleanly() {
    for path in ["/dev/zero", "/", "/nonexistent/tokenizer.json"] {
        let mut tok = null_mut();
        let s = unsafe { ace_tokenizer_create_from_file(cs(path).as_ptr(), &mut tok) };
        assert_eq!(s, 7, "{path}: {}", last_error()); // ACE_STATUS_IO
        assert!(last_error().contains(path));
    }
}

#[test]
fn decoding_the_nul_byte_token_works() {
    let tok = tiny_tokenizer();
    unsafe {
        // id 188 is the byte 0x00 (GPT-2 byte order, as in Qwen3).
        let ids = [188u32, 72, 188];
        let mut out = null_mut();
        assert_eq!(ace_tokenizer_decode(tok, ids.as_ptr(), 3, false, &mut out), OK, "{}", last_error());
        let expect_i = char::from_u32(b'!' as u32 + 72).unwrap();
        assert_eq!(take(out), format!("\u{FFFD}{expect_i}\u{FFFD}"));
        let mut n = 0usize;
        assert_eq!(ace_tokenizer_decode_utf8(tok, ids.as_ptr(), 3, false, null_mut(), 0, &mut n), OK);
        assert_eq!(n, 3);
        let mut buf = [0xffu8; 3];
        assert_eq!(ace_tokenizer_decode_utf8(tok, ids.as_ptr(), 3, false, buf.as_mut_ptr(), 2, &mut n), LENGTH_MISMATCH);
        assert_eq!(buf, [0xff; 3], "nothing written when the buffer is short");
        assert_eq!(ace_tokenizer_decode_utf8(tok, ids.as_ptr(), 3, false, buf.as_mut_ptr(), 3, &mut n), OK);
        assert_eq!(&buf, &[0u8, expect_i as u8, 0]);
        // Every id of the vocabulary decodes.
        let mut vocab = 0usize;
        assert_eq!(ace_tokenizer_vocab_size(tok, &mut vocab), OK);
        for id in 0..vocab as u32 {
            let mut out = null_mut();
            assert_eq!(ace_tokenizer_decode(tok, &id, 1, false, &mut out), OK, "id {id}: {}", last_error());
            ace_string_free(out);
        }
        ace_tokenizer_free(tok);
    }
}

#[test]
fn a_panic_inside_a_call_is_a_status_and_prints_nothing() {
    // Run in a child process so its stderr can be read: the child makes the library panic
    // (through the guard, as any entry point would) and must print nothing.
    if std::env::var_os("ACE_PANIC_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "panic_child", "--nocapture", "--test-threads=1"])
        .env("ACE_PANIC_CHILD", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(stdout.contains("PANIC-STATUS 99"), "{stdout}");
    assert!(!stderr.contains("panicked") && !stdout.contains("panicked"), "panic text leaked:\n{stdout}\n{stderr}");
}

#[test]
fn panic_child() {
    if std::env::var_os("ACE_PANIC_CHILD").is_none() {
        return;
    }
    let s = acestep_runtime::ffi::guard::guard_for_tests(|| {
        let v: Vec<u32> = Vec::new();
        let i = std::hint::black_box(3);
        Ok(assert_eq!(v[i], 0))
    });
    println!("PANIC-STATUS {}", s as i32);
    let msg = last_error();
    assert!(msg.contains("panic caught at the ABI boundary at "), "{msg}");
}
