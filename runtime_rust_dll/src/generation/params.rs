//! Track-id parameters: the values that decide an item's audio, and nothing else.
//!
//! The id hashes what the graphs and the solver actually receive — the DiT prompts (which carry
//! caption, lyrics, language and metadata, with the duration as the whole seconds the prompt
//! shows), the latent length, the seed and noise mode, the schedule as the model sees it, the
//! guidance actually applied and the LM codes — plus the package's manifest hash. So values a
//! model kind ignores, a shift snapped to the same schedule, or `12` vs `12.0` cannot give one
//! song two ids, and every host names a song the same way. Batch size and output format are not
//! part of it: item i of a batch is named like the single run of its seed.

use serde_json::{json, Value};

use super::DitRun;

/// Version of this parameter set; bump it when what goes in changes.
pub const TRACK_ID_SCHEME: u32 = 2;

pub fn track_params(generation: &DitRun, item: usize) -> Value {
    let request = generation.request();
    let (caption, lyrics) = generation.dit_prompts();
    let guidance = match request.guidance {
        Some(g) if generation.guided => json!({
            "type": g.kind.name(),
            "scale": g.scale,
            "interval": [g.interval_start, g.interval_end],
        }),
        _ => Value::Null,
    };
    json!({
        "scheme": TRACK_ID_SCHEME,
        "model_manifest_sha256": generation.package().manifest_sha256(),
        "dit_caption": caption,
        "dit_lyrics": lyrics,
        "frames": generation.frames(),
        "seed": generation.seeds()[item],
        "noise_mode": request.noise_mode,
        "infer_method": request.infer_method.name(),
        "schedule": generation.schedule().iter().map(|&t| t as f64).collect::<Vec<_>>(),
        "guidance": guidance,
        "audio_codes": request.audio_codes,
    })
}
