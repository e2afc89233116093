//! [`Generation`]: the run of one request, by the package's model family. ACE-Step 1.5: the LM
//! phases (when the request and package call for them), then the DiT run built from what the LM
//! wrote; ACE-Step v1: [`V1Run`]. Hosts see one stream of calls either way.

use std::sync::Arc;

use serde_json::{json, Value};

use super::lm::{package_has_lm, LmRun};
use super::v1::V1Run;
use super::{resolve_seeds, Buffer, Call, DitRun, Submitted};
use crate::error::{Error, Result};
use crate::package::{Family, Package};
use crate::request::{self, Normalized};

/// One generation; see the module documentation.
pub enum Generation {
    V15(V15Generation),
    V1(Box<V1Run>),
}

/// Forwards a method to the family's run.
macro_rules! by_family {
    ($self:ident, $g:ident => $e:expr) => {
        match $self {
            Generation::V15($g) => $e,
            Generation::V1($g) => $e,
        }
    };
}

impl Generation {
    /// Normalises the request with the schema of the package's model family and sets up its run
    /// (see [`V15Generation::new`] and [`V1Run::new`]).
    pub fn new(package: Arc<Package>, request_json: &str) -> Result<Self> {
        match package.family() {
            Family::V15 => Ok(Self::V15(V15Generation::new(package, request_json)?)),
            Family::V1 => Ok(Self::V1(Box::new(V1Run::new(package, request_json)?))),
        }
    }

    /// The graphs this run needs, in the order of first use.
    pub fn components(&self) -> Vec<&'static str> {
        by_family!(self, g => g.components())
    }

    pub fn batch(&self) -> usize {
        by_family!(self, g => g.batch())
    }

    pub fn is_finished(&self) -> bool {
        by_family!(self, g => g.is_finished())
    }

    /// The next graph run, or `None` once the audio is ready.
    pub fn next(&mut self) -> Result<Option<Call>> {
        by_family!(self, g => g.next())
    }

    /// The bytes of a core-owned input buffer of the pending call.
    pub fn buffer(&self, buffer: Buffer) -> &[u8] {
        by_family!(self, g => g.buffer(buffer))
    }

    /// Takes the outputs of the pending call (a rejected submission changes nothing).
    pub fn submit(&mut self, outputs: &[Submitted]) -> Result<()> {
        by_family!(self, g => g.submit(outputs))
    }

    /// Audio [B, channels, samples] at the package's output rate (peak-guarded), once finished.
    pub fn audio(&self) -> Result<(&[f32], [usize; 3])> {
        by_family!(self, g => g.audio())
    }

    /// The final latents (1.5: [B, T, 64]; v1: [B, 8·16, T]), once finished.
    pub fn latents(&self) -> Result<(&[f32], [usize; 3])> {
        by_family!(self, g => g.latents())
    }

    /// The plan: everything decided before the first graph run.
    pub fn info_json(&self) -> Result<Value> {
        by_family!(self, g => g.info_json())
    }

    /// The sidecar of item `item`, with the host's own fields under `"host"`.
    pub fn sidecar_json(&self, item: usize, host: Value) -> Result<Value> {
        by_family!(self, g => g.sidecar_json(item, host))
    }
}

/// An ACE-Step 1.5 generation: the LM phases, then the DiT run.
pub struct V15Generation {
    package: Arc<Package>,
    /// The normalised request as given (seeds resolved), for the plan before the DiT exists.
    request: request::Request,
    notes: Vec<String>,
    seeds: Vec<u64>,
    lm: Option<Box<LmRun>>,
    dit: Option<DitRun>,
    /// Host keys to release with the next call (the LM's KV cache once the LM is done).
    release: Vec<&'static str>,
}

impl V15Generation {
    /// Normalises the request for `package` and sets up its run: the LM phases when `thinking`
    /// (default: the package has an LM) or simple mode (`description`) ask for them, else the DiT
    /// run at once (see [`DitRun::new`]).
    pub fn new(package: Arc<Package>, request_json: &str) -> Result<Self> {
        let normalized = request::normalize(request_json, package.kind())?;
        let has_lm = package_has_lm(&package);
        let r = &normalized.request;
        let thinking = r.thinking.unwrap_or(has_lm && r.audio_codes.is_none());
        let uses_lm = thinking || r.description.is_some();
        if !uses_lm {
            let thinking_off = r.thinking == Some(false);
            let mut normalized = normalized;
            if !normalized.lm_keys_given.is_empty() {
                let why = if thinking_off {
                    "\"thinking\" is false"
                } else if !has_lm {
                    "the model package has no 5 Hz LM"
                } else {
                    "the request gives audio_codes"
                };
                let keys = normalized.lm_keys_given.join(", ");
                normalized.notes.push(format!("{keys}: ignored: the 5 Hz LM does not run ({why})"));
            }
            // Explicit in the resolved request, so it reproduces on a package with an LM too.
            normalized.request.thinking = Some(false);
            let dit = DitRun::new(Arc::clone(&package), normalized)?;
            let (request, seeds) = (dit.request().clone(), dit.seeds().to_vec());
            return Ok(Self { package, request, notes: Vec::new(), seeds, lm: None, dit: Some(dit), release: Vec::new() });
        }
        let field = if r.description.is_some() { "request.description" } else { "request.thinking" };
        if !has_lm {
            let what = if r.description.is_some() { "simple mode" } else { "thinking" };
            let missing: Vec<&str> = ["lm_prefill", "lm_decode"].into_iter().filter(|c| !package.has(c)).collect();
            let missing = if missing.is_empty() { "the LM tokenizer or config.lm".to_string() } else { missing.join(", ") };
            return Err(Error::invalid_argument(format!(
                "{field}: {what} needs the 5 Hz LM, but model package {} has no LM ({missing} missing); \
                 use a package exported with an acestep-5Hz-lm checkpoint, or leave {field} out",
                package.root().display()
            )));
        }
        if r.batch_size != 1 {
            return Err(Error::invalid_argument(format!(
                "request.batch_size: an LM run takes one item at a time here (got {}); run the items as \
                 separate requests, or turn the LM off with \"thinking\": false",
                r.batch_size
            )));
        }
        let Normalized { mut request, mut notes, .. } = normalized;
        let seeds = resolve_seeds(&request.seeds, 1, &mut notes);
        request.seeds = seeds.iter().map(|&s| s as i64).collect();
        let lm = LmRun::new(Arc::clone(&package), request.clone(), thinking, seeds[0])
            .map_err(|e| if e.message.starts_with("request.") { e } else { Error::new(e.kind, format!("{field}: {}", e.message)) })?;
        Ok(Self { package, request, notes, seeds, lm: Some(Box::new(lm)), dit: None, release: Vec::new() })
    }

    fn lm_running(&self) -> bool {
        self.lm.as_ref().is_some_and(|lm| !lm.is_done())
    }

    /// Builds the DiT run from the LM's result once the LM has finished.
    fn start_dit(&mut self) -> Result<()> {
        let lm = self.lm.as_ref().expect("an LM run");
        let mut notes = self.notes.clone();
        notes.extend(lm.notes().iter().cloned());
        let dit = DitRun::new(Arc::clone(&self.package), Normalized { request: lm.dit_request(), notes, lm_keys_given: Vec::new() })?;
        self.release = lm.cache_keys();
        self.dit = Some(dit);
        Ok(())
    }

    fn dit(&self) -> Result<&DitRun> {
        self.dit.as_ref().ok_or_else(|| Error::invalid_state("the LM phases have not finished yet"))
    }

    /// The graphs this run needs, in the order of first use.
    pub fn components(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if let Some(lm) = &self.lm {
            names.extend(["lm_prefill", "lm_decode"]);
            if lm.thinking() {
                names.push("audio_detokenizer");
            }
        }
        match &self.dit {
            Some(dit) => {
                for c in dit.components() {
                    if !names.contains(&c) {
                        names.push(c);
                    }
                }
            }
            None => names.extend(["text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder"]),
        }
        names
    }

    pub fn batch(&self) -> usize {
        self.seeds.len().max(self.request.batch_size)
    }

    pub fn is_finished(&self) -> bool {
        self.dit.as_ref().is_some_and(DitRun::is_finished)
    }

    /// The next graph run, or `None` once the audio is ready (see [`DitRun::next`]).
    pub fn next(&mut self) -> Result<Option<Call>> {
        if let Some(lm) = self.lm.as_ref().filter(|lm| !lm.is_done()) {
            return Ok(lm.describe());
        }
        let dit = self.dit.as_mut().ok_or_else(|| Error::invalid_state("the LM phases have not finished yet"))?;
        let mut call = dit.next()?;
        if let Some(call) = call.as_mut() {
            for &key in &self.release {
                if !call.release.contains(&key) {
                    call.release.push(key);
                }
            }
        }
        Ok(call)
    }

    /// The bytes of a core-owned input buffer of the pending call.
    pub fn buffer(&self, buffer: Buffer) -> &[u8] {
        match buffer {
            Buffer::LmIds | Buffer::LmMask | Buffer::LmPositions => self.lm.as_ref().map_or(&[], |lm| lm.buffer(buffer)),
            _ => self.dit.as_ref().map_or(&[], |dit| dit.buffer(buffer)),
        }
    }

    /// Takes the outputs of the pending call (a rejected submission changes nothing).
    pub fn submit(&mut self, outputs: &[Submitted]) -> Result<()> {
        if self.lm_running() {
            let lm = self.lm.as_mut().expect("running");
            let call = lm.describe().expect("running");
            super::check_outputs(&call, outputs)?;
            let logits = *outputs.iter().find(|o| o.name == "logits").expect("checked: the LM call's one submitted output");
            if lm.take_logits(logits)? {
                self.start_dit()?;
            }
            return Ok(());
        }
        let dit = self.dit.as_mut().ok_or_else(|| Error::invalid_state("submit: no call is pending"))?;
        dit.submit(outputs)?;
        self.release.clear();
        Ok(())
    }

    pub fn audio(&self) -> Result<(&[f32], [usize; 3])> {
        self.dit()?.audio()
    }

    pub fn latents(&self) -> Result<(&[f32], [usize; 3])> {
        self.dit()?.latents()
    }

    /// The plan: the DiT run's (see [`DitRun::info_json`]) with the LM's part under `"lm"`.
    /// While the LM runs, the values it decides (frames, prompts, track ids) are `null` / empty.
    pub fn info_json(&self) -> Result<Value> {
        let mut info = match &self.dit {
            Some(dit) => dit.info_json()?,
            None => {
                let mut r = self.request.to_json();
                r["seeds"] = json!(self.seeds);
                json!({
                    "model_kind": self.package.kind().name(),
                    "request": r,
                    "notes": self.notes,
                    "seeds": self.seeds,
                    "batch_size": self.batch(),
                    "frames": null,
                    "sample_rate": self.package.config().sample_rate,
                    "audio_channels": self.package.config().audio_channels,
                    "samples": null,
                    "duration_s": null,
                    "schedule": [],
                    "num_steps": null,
                    "guided": null,
                    "vae_tiles": null,
                    "prompts": null,
                    "tokens": null,
                    "file_names": {},
                    "track_ids": [],
                })
            }
        };
        info["components"] = json!(self.components());
        info["lm"] = self.lm.as_ref().map_or(Value::Null, |lm| lm.summary_json());
        Ok(info)
    }

    /// The sidecar of item `item` (see [`DitRun::sidecar_json`]), with the LM's part under `"lm"`.
    /// Its `request` is the DiT request (the LM's caption, metadata and codes, `thinking` off): it
    /// reproduces the audio on any package; `lm.settings` reproduces the plan.
    pub fn sidecar_json(&self, item: usize, host: Value) -> Result<Value> {
        let mut sidecar = self.dit()?.sidecar_json(item, host)?;
        sidecar["lm"] = self.lm.as_ref().map_or(Value::Null, |lm| lm.summary_json());
        Ok(sidecar)
    }
}
