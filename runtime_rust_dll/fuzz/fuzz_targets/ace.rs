//! One libFuzzer binary for every target of `tests/common/fuzz_targets.rs`; `ACE_FUZZ_TARGET`
//! names the target (its corpus is `fuzz/corpus/<target>/`).
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/fuzz_targets.rs"]
mod fuzz_targets;

use std::sync::OnceLock;

fn target() -> fuzz_targets::Target {
    static T: OnceLock<fuzz_targets::Target> = OnceLock::new();
    *T.get_or_init(|| {
        let name = std::env::var("ACE_FUZZ_TARGET").unwrap_or_default();
        fuzz_targets::TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or_else(|| {
            let names: Vec<&str> = fuzz_targets::TARGETS.iter().map(|(n, _)| *n).collect();
            panic!("set ACE_FUZZ_TARGET to one of {names:?}")
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let status = target()(data);
    assert_ne!(status, common::PANIC, "panic caught at the boundary: {}", common::last_error());
});
