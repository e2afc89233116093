//! 8 threads, each with its own objects (tokenizer, FSM, sampler, context, APG, Heun), run the same
//! kind of workload with per-thread parameters; every result must equal the serial run's, bit for
//! bit, and each thread's last error must stay its own.

mod common;

use std::ffi::CString;
use std::ptr::null_mut;

use common::*;

#[derive(Debug, PartialEq)]
struct Results {
    tokens: Vec<u32>,
    fsm_state: String,
    latents: Vec<u32>,
    noise: Vec<u32>,
    apg: Vec<u32>,
    heun: Vec<u32>,
    error: String,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn workload(k: u64) -> Results {
    unsafe {
        // LM: constrained greedy/seeded decoding with its own tokenizer, FSM and sampler.
        let tok = tiny_tokenizer();
        let mut vocab = 0usize;
        assert_eq!(ace_tokenizer_vocab_size(tok, &mut vocab), OK);
        let mut fsm = null_mut();
        assert_eq!(ace_fsm_create(tok, CString::new("{}").unwrap().as_ptr(), &mut fsm), OK, "{}", last_error());
        let cfg = CString::new(format!("{{\"seed\": {k}, \"temperature\": 0.9, \"vocab_size\": {vocab}}}")).unwrap();
        let mut sampler = null_mut();
        assert_eq!(ace_sampler_create(cfg.as_ptr(), &mut sampler), OK);
        let cond: Vec<f32> = (0..vocab).map(|i| ((i as u64 * 37 + k) % 101) as f32 * 0.05).collect();
        let uncond: Vec<f32> = (0..vocab).map(|i| ((i as u64 * 11 + k) % 53) as f32 * 0.03).collect();
        let mut tokens = Vec::new();
        for step in 0..40u64 {
            let mut t = 0u32;
            if ace_lm_step(sampler, fsm, cond.as_ptr(), uncond.as_ptr(), vocab, step, &mut t) != OK {
                break;
            }
            tokens.push(t);
        }
        let mut state = null_mut();
        assert_eq!(ace_fsm_state_json(fsm, &mut state), OK);
        let fsm_state = take(state);

        // Diffusion: an SDE context run over all steps on [2, 4, 8] latents.
        let mut ctx = null_mut();
        let cfg = CString::new(format!(
            "{{\"model\": \"base\", \"steps\": 12, \"shift\": 3.0, \"method\": \"sde\", \"seeds\": [{k}, {}]}}",
            k + 100
        ))
        .unwrap();
        assert_eq!(ace_create_context(cfg.as_ptr(), &mut ctx), OK, "{}", last_error());
        let shape = [2usize, 4, 8];
        let mut x: Vec<f32> = vec![0.0; 64];
        let mut seed_used = 0i64;
        assert_eq!(
            ace_noise_fill(std::ptr::null(), k as i64, shape.as_ptr(), 3, x.as_mut_ptr(), 64, &mut seed_used),
            OK
        );
        let noise = x.clone();
        let v: Vec<f32> = (0..64).map(|i| ((i as u64 + k) % 9) as f32 * 0.1 - 0.4).collect();
        let mut out = vec![0.0f32; 64];
        let mut steps = 0usize;
        ace_context_num_steps(ctx, &mut steps);
        for i in 0..steps {
            assert_eq!(ace_scheduler_step(ctx, i, x.as_ptr(), v.as_ptr(), shape.as_ptr(), 3, out.as_mut_ptr(), 64), OK);
            std::mem::swap(&mut x, &mut out);
        }

        // APG over several calls (its momentum is per object).
        let mut apg = null_mut();
        assert_eq!(ace_apg_create(CString::new("{}").unwrap().as_ptr(), &mut apg), OK);
        let mut g = vec![0.0f32; 64];
        for _ in 0..5 {
            assert_eq!(ace_apg_apply(apg, x.as_ptr(), v.as_ptr(), g.as_mut_ptr(), 64, 2, 4, 8, 4.0 + k as f64), OK);
        }

        // Heun: two stages per interval over a v1 grid.
        let mut heun = null_mut();
        assert_eq!(ace_heun_create(10.0, &mut heun), OK);
        let mut h = noise.clone();
        let mut pred = vec![0.0f32; 64];
        for (s, sn) in [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25)] {
            assert_eq!(ace_heun_step(heun, h.as_ptr(), v.as_ptr(), 64, s, sn, pred.as_mut_ptr(), null_mut()), OK);
            assert_eq!(ace_heun_step(heun, pred.as_ptr(), v.as_ptr(), 64, s, sn, out.as_mut_ptr(), null_mut()), OK);
            h.copy_from_slice(&out);
        }

        // A thread-specific error; the message must be this thread's.
        let bad = CString::new(format!("{{\"model\": \"turbo\", \"thread_{k}\": 1}}")).unwrap();
        let mut none = null_mut();
        assert_eq!(ace_create_context(bad.as_ptr(), &mut none), INVALID_JSON);
        std::thread::yield_now();
        let error = last_error();

        ace_heun_free(heun);
        ace_apg_free(apg);
        ace_free_context(ctx);
        ace_sampler_free(sampler);
        ace_fsm_free(fsm);
        ace_tokenizer_free(tok);
        Results { tokens, fsm_state, latents: bits(&x), noise: bits(&noise), apg: bits(&g), heun: bits(&h), error }
    }
}

#[test]
fn eight_threads_with_their_own_objects_match_the_serial_run() {
    let serial: Vec<Results> = (0..8).map(workload).collect();
    for (k, r) in serial.iter().enumerate() {
        assert!(r.error.contains(&format!("thread_{k}")), "{}", r.error);
        assert!(!r.tokens.is_empty());
    }
    // Different parameters give different results, so equality below is not vacuous.
    assert_ne!(serial[0].latents, serial[1].latents);
    assert_ne!(serial[0].tokens, serial[1].tokens);
    for round in 0..3 {
        let threads: Vec<_> = (0..8u64).map(|k| std::thread::spawn(move || workload(k))).collect();
        for (k, t) in threads.into_iter().enumerate() {
            let got = t.join().expect("thread panicked");
            assert_eq!(got, serial[k], "round {round}, thread {k} differs from the serial run");
        }
    }
}
