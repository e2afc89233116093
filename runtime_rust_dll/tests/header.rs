//! The checked-in C header must be exactly what cbindgen generates from the current sources.
//! Regenerate with `scripts/gen_header.sh` (which sets ACE_UPDATE_HEADER=1 for this test).

use std::path::PathBuf;

#[test]
fn header_is_fresh() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header_path = crate_dir.join("../include/acestep_runtime.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed")
        .write(&mut generated);

    if std::env::var_os("ACE_UPDATE_HEADER").is_some() {
        std::fs::write(&header_path, &generated).expect("write header");
        return;
    }
    let current = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        current == generated,
        "include/acestep_runtime.h is stale: run scripts/gen_header.sh and commit the result"
    );
}

/// Every name the header declares carries the library's prefix (`ACE_`, `Ace`, `ace_`), so it
/// cannot collide with a host's own names.
#[test]
fn header_names_are_prefixed() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(crate_dir.join("../include/acestep_runtime.h")).expect("header");
    let mut bad = Vec::new();
    for line in header.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let name = match words.as_slice() {
            ["#define", name, ..] => *name,
            ["typedef", "struct", "{"] | ["typedef", "enum", "{"] => continue,
            ["typedef", "struct", name, ..] | ["typedef", "enum", name, ..] => *name,
            ["typedef", .., name] if name.ends_with(';') => name.trim_end_matches(';'),
            ["}", name] if name.ends_with(';') => name.trim_end_matches(';'),
            _ => continue,
        };
        let name = name.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_');
        let ok = name == "ACESTEP_RUNTIME_H" || name.starts_with("ACE_") || name.starts_with("Ace");
        if !ok {
            bad.push(name.to_string());
        }
    }
    for line in header.lines().filter(|l| l.contains('(') && !l.trim_start().starts_with("//")) {
        if let Some(open) = line.find('(') {
            let name = line[..open].split_whitespace().last().unwrap_or("").trim_start_matches('*');
            if !name.is_empty() && !name.starts_with("ace_") && !name.starts_with('(') && line.ends_with(';') {
                bad.push(name.to_string());
            }
        }
    }
    assert!(bad.is_empty(), "unprefixed names in include/acestep_runtime.h: {bad:?}");
}
