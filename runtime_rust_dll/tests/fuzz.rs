//! Bounded mutation fuzzing of every text/JSON entry point of the C ABI (targets in
//! `common/fuzz_targets.rs`), seeded from the corpus in `runtime_rust_dll/fuzz/corpus/<target>/`.
//!
//! Each iteration takes a corpus entry, applies a few random mutations (byte flips, insertions and
//! deletions, JSON tokens, splices with another entry) and calls the target. A panic caught at the
//! boundary (status 99) fails the test and the input is written to `target/fuzz-findings/`; an
//! abort or crash fails the test binary itself. The run is reproducible from its seed.
//!
//! `ACE_FUZZ_SECONDS` (default 2) bounds the time per target, `ACE_FUZZ_SEED` picks the seed and
//! `ACE_FUZZ_TARGETS` (comma-separated) restricts the run to some targets;
//! `scripts/fuzz.sh` runs long, optimised sessions (and libFuzzer where it builds).

mod common;
#[path = "common/fuzz_targets.rs"]
mod fuzz_targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// xorshift64*: small, fast, and enough to drive mutations reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that matter to JSON and to the parsers behind it.
const DICTIONARY: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"true", b"false", b"-0", b"1e999", b"-1",
    b"18446744073709551615", b"18446744073709551616", b"9223372036854775808", b"0.5", b"NaN", b"\\u0000",
    b"\\ud800", b"\xff", b"\xc3\xa9", b"\"steps\"", b"\"model\"", b"\"seeds\"", b"\"shift\"", b"<think>",
    b"</think>", b"<|audio_code_", b"|>", b"\n", b"bpm: ", b"duration: ", b"caption: ", b"\"type\"",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0u8, 0x7f, 0x80, 0xff, b'"', b'\\', b'9', b'{'][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let chunk = input[a..b].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            5 | 6 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            _ if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    input.truncate(1 << 16);
}

fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("runtime_rust_dll/fuzz/corpus").join(target)
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn fuzz_every_text_entry_point() {
    let seconds: f64 = std::env::var("ACE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let seed: u64 = std::env::var("ACE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_ace5);
    let findings = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-findings");
    let mut failures = Vec::new();
    let mut total = 0u64;
    let only: Option<Vec<String>> =
        std::env::var("ACE_FUZZ_TARGETS").ok().map(|s| s.split(',').map(str::to_string).collect());
    for &(name, target) in fuzz_targets::TARGETS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let corpus = load_corpus(&corpus_dir(name));
        assert!(!corpus.is_empty(), "corpus for {name} is empty");
        let mut rng = Rng(seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let (mut execs, mut ok) = (0u64, 0u64);
        // The corpus itself first, then mutations until the deadline.
        let mut queue: Vec<Vec<u8>> = corpus.clone();
        while !queue.is_empty() || Instant::now() < deadline {
            let input = queue.pop().unwrap_or_else(|| {
                let mut m = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut m, &corpus);
                m
            });
            let status = std::panic::catch_unwind(|| target(&input));
            execs += 1;
            match status {
                Ok(OK) => ok += 1,
                Ok(PANIC) | Err(_) => {
                    let msg = if matches!(status, Ok(PANIC)) { last_error() } else { "assertion in the target".into() };
                    std::fs::create_dir_all(&findings).unwrap();
                    let path = findings.join(format!("{name}-{execs}"));
                    std::fs::write(&path, &input).unwrap();
                    failures.push(format!("{name}: {msg} (input saved to {})", path.display()));
                    if failures.len() > 20 {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
        println!("fuzz {name:>18}: {execs:>8} executions, {ok:>6} accepted");
        total += execs;
    }
    println!("fuzz total: {total} executions, {} failures", failures.len());
    assert!(failures.is_empty(), "fuzzing found:\n{}", failures.join("\n"));
}
