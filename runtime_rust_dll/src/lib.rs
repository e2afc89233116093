//! `acestep_runtime`: the ORT-free core of acestep-runtime.
//!
//! Everything in ACE-Step 1.5 inference that is not a neural network and must behave identically
//! in every host lives here as safe Rust: seeded torch-compatible noise, timestep schedules, solver
//! steps, guidance, LM sampling and constrained decoding, metadata and prompts, tokenization, frame
//! and tiling math. The [`ffi`] module exposes it as the `ace_*` C ABI; hosts (Python, C#) own the
//! ONNX Runtime sessions and call in here between model runs.

pub mod context;
pub mod error;
pub mod ffi;
pub mod cot_yaml;
pub mod frames;
pub mod generation;
pub mod fsm;
pub mod guidance;
pub mod json;
pub mod limits;
pub mod lyrics_v1;
pub mod metadata;
pub mod noise;
pub mod package;
pub mod peak_guard;
pub mod prompt;
pub mod request;
pub mod request_v1;
pub mod resample;
pub mod sampling;
pub mod schedule;
pub mod shape;
pub mod snake;
pub mod solver;
pub mod tiling;
pub mod tokenizer;
pub mod v1_diffusion;
pub mod track_id;

pub use error::{Error, ErrorKind, Result};
