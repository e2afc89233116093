//! Shared by the integration tests that go through the C ABI (regressions, threads, fuzzing):
//! declarations of the `ace_*` functions they call, and small helpers. The declarations must match
//! `include/acestep_runtime.h`; the bad-input matrix (`tests/reliability/`) covers every function
//! of the header itself.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

// Links the library: the `ace_*` symbols below come from it.
extern crate acestep_runtime;

pub enum AceContext {}
pub enum AceTokenizer {}
pub enum AceSampler {}
pub enum AceFsm {}
pub enum AceHeun {}
pub enum AceApg {}
pub enum AceNoiseStream {}
pub enum AcePackage {}
pub enum AceGeneration {}

pub type Status = i32;
pub const OK: Status = 0;
pub const INVALID_ARGUMENT: Status = 1;
pub const NULL_POINTER: Status = 2;
pub const LENGTH_MISMATCH: Status = 3;
pub const INVALID_JSON: Status = 4;
pub const INVALID_STATE: Status = 6;
pub const TOKENIZER: Status = 8;
pub const PANIC: Status = 99;

extern "C" {
    pub fn ace_package_open(dir: *const c_char, options_json: *const c_char, out: *mut *mut AcePackage) -> Status;
    pub fn ace_package_free(pkg: *mut AcePackage) -> Status;
    pub fn ace_request_normalize(pkg: *const AcePackage, request_json: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_generation_create(pkg: *const AcePackage, request_json: *const c_char, out: *mut *mut AceGeneration) -> Status;
    pub fn ace_generation_free(generation: *mut AceGeneration) -> Status;
    pub fn ace_last_error(out: *mut *mut c_char) -> Status;
    pub fn ace_string_free(s: *mut c_char);
    pub fn ace_schedule_base(steps: usize, shift: f64, out: *mut f32, cap: usize, out_len: *mut usize) -> Status;
    pub fn ace_schedule_v1_sigmas(
        steps: usize, shift: f64, sigma_max: f64, sigma_min: f64, out: *mut f32, cap: usize, out_len: *mut usize,
    ) -> Status;
    pub fn ace_create_context(config_json: *const c_char, out: *mut *mut AceContext) -> Status;
    pub fn ace_free_context(ctx: *mut AceContext);
    pub fn ace_context_num_steps(ctx: *const AceContext, out: *mut usize) -> Status;
    pub fn ace_scheduler_step(
        ctx: *const AceContext, step: usize, xt: *const f32, vt: *const f32, shape: *const usize, ndim: usize,
        out: *mut f32, len: usize,
    ) -> Status;
    pub fn ace_solver_ode_step(xt: *const f32, vt: *const f32, len: usize, t: f64, t_next: f64, out: *mut f32) -> Status;
    pub fn ace_solver_x0(xt: *const f32, vt: *const f32, len: usize, t: f64, out: *mut f32) -> Status;
    pub fn ace_solver_sde_step(
        xt: *const f32, vt: *const f32, eps: *const f32, len: usize, t: f64, t_next: f64, out: *mut f32,
    ) -> Status;
    pub fn ace_solver_euler_omega_step(
        xt: *const f32, vt: *const f32, len: usize, sigma: f64, sigma_next: f64, omega: f64, out: *mut f32,
    ) -> Status;
    pub fn ace_guidance_cfg(cond: *const f32, uncond: *const f32, out: *mut f32, len: usize, g: f64) -> Status;
    pub fn ace_heun_create(omega_scale: f64, out: *mut *mut AceHeun) -> Status;
    pub fn ace_heun_step(
        heun: *mut AceHeun, xt: *const f32, vt: *const f32, len: usize, sigma: f64, sigma_next: f64, out: *mut f32,
        out_stage: *mut c_int,
    ) -> Status;
    pub fn ace_heun_next_stage(heun: *const AceHeun, out_stage: *mut c_int) -> Status;
    pub fn ace_heun_free(heun: *mut AceHeun);
    pub fn ace_apg_create(config_json: *const c_char, out: *mut *mut AceApg) -> Status;
    pub fn ace_apg_free(apg: *mut AceApg);
    pub fn ace_noise_stream_create(
        options_json: *const c_char, seed: i64, out_seed_used: *mut i64, out: *mut *mut AceNoiseStream,
    ) -> Status;
    pub fn ace_noise_stream_fill(stream: *mut AceNoiseStream, out: *mut f32, len: usize) -> Status;
    pub fn ace_noise_stream_free(stream: *mut AceNoiseStream);
    pub fn ace_noise_fill(
        options_json: *const c_char, seed: i64, shape: *const usize, ndim: usize, out: *mut f32, out_len: usize,
        out_seed_used: *mut i64,
    ) -> Status;
    pub fn ace_tokenizer_create_from_json(json: *const c_char, out: *mut *mut AceTokenizer) -> Status;
    pub fn ace_tokenizer_create_from_file(path: *const c_char, out: *mut *mut AceTokenizer) -> Status;
    pub fn ace_tokenizer_free(tok: *mut AceTokenizer);
    pub fn ace_tokenizer_vocab_size(tok: *const AceTokenizer, out: *mut usize) -> Status;
    pub fn ace_tokenizer_encode(
        tok: *const AceTokenizer, text: *const c_char, add_special: bool, ids: *mut u32, cap: usize, out_len: *mut usize,
    ) -> Status;
    pub fn ace_tokenizer_decode(
        tok: *const AceTokenizer, ids: *const u32, n: usize, skip_special: bool, out: *mut *mut c_char,
    ) -> Status;
    pub fn ace_tokenizer_decode_utf8(
        tok: *const AceTokenizer, ids: *const u32, n: usize, skip_special: bool, buf: *mut u8, cap: usize,
        out_len: *mut usize,
    ) -> Status;
    pub fn ace_tokenizer_token_to_id(tok: *const AceTokenizer, token: *const c_char, out_id: *mut u32) -> Status;
    pub fn ace_sampler_create(config_json: *const c_char, out: *mut *mut AceSampler) -> Status;
    pub fn ace_sampler_free(sampler: *mut AceSampler);
    pub fn ace_sampler_sample(
        sampler: *mut AceSampler, cond: *const f32, uncond: *const f32, vocab: usize, step: u64, out: *mut u32,
    ) -> Status;
    pub fn ace_fsm_create(tok: *const AceTokenizer, config_json: *const c_char, out: *mut *mut AceFsm) -> Status;
    pub fn ace_fsm_free(fsm: *mut AceFsm);
    pub fn ace_lm_step(
        sampler: *mut AceSampler, fsm: *mut AceFsm, cond: *const f32, uncond: *const f32, vocab: usize, step: u64,
        out: *mut u32,
    ) -> Status;
    pub fn ace_fsm_state_json(fsm: *const AceFsm, out: *mut *mut c_char) -> Status;
    pub fn ace_build_prompts(request_json: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_parse_lm_output(text: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_format_cot(metadata_json: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_finalize_metadata(tok: *const AceTokenizer, ids: *const u32, len: usize, out: *mut *mut c_char) -> Status;
    pub fn ace_track_id(params_json: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_track_canonical_json(params_json: *const c_char, out: *mut *mut c_char) -> Status;
    pub fn ace_context_info(ctx: *const AceContext, out: *mut *mut c_char) -> Status;
    pub fn ace_prepare_step_inputs(ctx: *const AceContext, step: usize, out: *mut *mut c_char) -> Status;
    pub fn ace_context_initial_latents(
        ctx: *const AceContext, noise: *const f32, src: *const f32, shape: *const usize, ndim: usize, out: *mut f32,
        len: usize,
    ) -> Status;
    pub fn ace_apg_apply(
        apg: *mut AceApg, cond: *const f32, uncond: *const f32, out: *mut f32, len: usize, batch: u32, frames: u32,
        channels: u32, g: f64,
    ) -> Status;
    pub fn ace_fsm_accept(fsm: *mut AceFsm, token: u32) -> Status;
    pub fn ace_tokenizer_id_to_token(tok: *const AceTokenizer, id: u32, out: *mut *mut c_char) -> Status;
}

/// This thread's last error message.
pub fn last_error() -> String {
    let mut p: *mut c_char = std::ptr::null_mut();
    unsafe {
        assert_eq!(ace_last_error(&mut p), OK);
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        ace_string_free(p);
        s
    }
}

/// Copies and frees a string the library returned.
pub fn take(p: *mut c_char) -> String {
    unsafe {
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        ace_string_free(p);
        s
    }
}

/// Calls `f(text, &mut out)` for a string-returning function: (status, output or error message).
pub fn call_str(f: unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> Status, text: &str) -> (Status, String) {
    let c = CString::new(text).expect("test strings have no NUL");
    let mut out: *mut c_char = std::ptr::null_mut();
    let status = unsafe { f(c.as_ptr(), &mut out) };
    if status == OK {
        (status, take(out))
    } else {
        (status, last_error())
    }
}

/// The repository root: the first ancestor of the crate that holds `fixtures/reliability` (the
/// fuzz package sits one level deeper than the core crate).
pub fn repo_root() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|d| d.join("fixtures/reliability").is_dir())
        .unwrap_or_else(|| panic!("no fixtures/reliability above {}", start.display()))
        .to_path_buf()
}

/// The small byte-level BPE tokenizer of the reliability fixtures: the 256 byte tokens in GPT-2
/// order (id 188 is the byte 0x00, as in Qwen3) plus chat, think and 16 audio-code tokens.
pub fn tiny_tokenizer_json() -> String {
    std::fs::read_to_string(repo_root().join("fixtures/reliability/tiny_tokenizer.json")).expect("tiny tokenizer")
}

pub fn tiny_tokenizer() -> *mut AceTokenizer {
    let json = CString::new(tiny_tokenizer_json()).unwrap();
    let mut tok = std::ptr::null_mut();
    assert_eq!(unsafe { ace_tokenizer_create_from_json(json.as_ptr(), &mut tok) }, OK, "{}", last_error());
    tok
}

/// A minimal model package for the request and generation entry points: a manifest with the tiny
/// tokenizer and a silence latent, and no graphs (a generation fails after its request, prompts and
/// tokens were processed, when it checks the components). Written once per process.
pub fn minimal_package_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("acestep-minimal-package-{}", std::process::id()));
    if dir.join("manifest.json").is_file() {
        return dir;
    }
    std::fs::create_dir_all(dir.join("tokenizer/text")).expect("package dir");
    std::fs::write(dir.join("tokenizer/text/tokenizer.json"), tiny_tokenizer_json()).expect("tokenizer");
    // silence_latent.npy: float32 [1, 750, 64] of zeros (.npy v1.0: magic, header length, header).
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 750, 64), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat(b' ').take(pad));
    npy.push(b'\n');
    npy.extend(std::iter::repeat(0u8).take(750 * 64 * 4));
    std::fs::write(dir.join("silence_latent.npy"), npy).expect("npy");
    let manifest = r#"{"format_version": 1, "model_variant": "acestep-v15-turbo", "components": {},
        "files": {"silence_latent": {"file": "silence_latent.npy", "shape": [1, 750, 64]}},
        "tokenizers": {"text": {"dir": "tokenizer/text", "files": []}},
        "config": {"acestep": {"is_turbo": true}}}"#;
    std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
    dir
}
