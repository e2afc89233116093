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
