//! A model package on disk, read through its `manifest.json` (docs/io_contract.md): the contract
//! between the exporter and every host.
//!
//! Opening a package checks the format version, that every listed file is inside the package
//! directory, exists and has the listed size (and, when asked, the listed sha256); it reads the
//! component signatures, the config values the generation needs, the package arrays
//! (`silence_latent`, `null_condition_emb`) and the text tokenizer. Every error names the file.
//! Nothing is found by guessing file names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::context::ModelKind;
use crate::error::{Error, ErrorKind, Result};
use crate::tokenizer::Tokenizer;

pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest `format_version` this core reads.
pub const SUPPORTED_FORMAT_VERSION: u64 = 1;
/// A manifest is a few kB; anything this large is not one.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Element type of a graph input or output, as ONNX Runtime numbers them
/// (`ONNXTensorElementDataType`), so hosts can pass it on unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DType {
    F32 = 1,
    I64 = 7,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I64 => "int64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
        }
    }

    fn parse(text: &str, what: &str) -> Result<Self> {
        match text {
            "float32" => Ok(DType::F32),
            "int64" => Ok(DType::I64),
            other => Err(Error::invalid_json(format!(
                "{what}: dtype {other:?} is not one this core handles (float32, int64)"
            ))),
        }
    }
}

/// One dimension of a signature: a fixed size, a symbolic name, or unknown (`null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// A graph of the package.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    /// Path relative to the package root, as the manifest lists it.
    pub file: String,
    pub path: PathBuf,
    pub bytes: Option<u64>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Component {
    pub fn input(&self, name: &str) -> Result<&TensorSpec> {
        find_spec(&self.inputs, name, &self.name, "input")
    }

    pub fn output(&self, name: &str) -> Result<&TensorSpec> {
        find_spec(&self.outputs, name, &self.name, "output")
    }
}

fn find_spec<'a>(specs: &'a [TensorSpec], name: &str, component: &str, what: &str) -> Result<&'a TensorSpec> {
    specs.iter().find(|s| s.name == name).ok_or_else(|| {
        let have: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        Error::invalid_argument(format!(
            "component {component} has no {what} {name:?} (it has {have:?}); the package was \
             exported by an incompatible exporter version"
        ))
    })
}

/// A float32 array of the package, read into memory (they are a few MB at most).
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The config values the generation reads (manifest `config`, with the exporter's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PackageConfig {
    pub caption_max_length: usize,
    pub lyric_max_length: usize,
    pub sample_rate: u32,
    pub audio_channels: usize,
    pub latent_channels: usize,
    pub hop_length: u32,
}

/// The model family a package holds (manifest `model_family`): it decides the request schema and
/// the generation the driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ACE-Step 1.5 (any manifest that does not name another family).
    V15,
    /// ACE-Step v1 3.5B (`"ace-step-v1"`, docs/io_contract_v1.md).
    V1,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V15 => "ace-step-v1.5",
            Family::V1 => "ace-step-v1",
        }
    }

    fn of(manifest: &Value) -> Self {
        match manifest.get("model_family").and_then(Value::as_str) {
            Some("ace-step-v1") => Family::V1,
            _ => Family::V15,
        }
    }
}

/// How to open a package (`ace_package_open`'s options JSON).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenOptions {
    /// Check every file's sha256 against the manifest (reads the whole package).
    #[serde(default)]
    pub verify_sha256: bool,
}

impl OpenOptions {
    pub fn from_json(text: Option<&str>) -> Result<Self> {
        match text {
            Some(t) if !t.trim().is_empty() => crate::json::parse(t, "package options"),
            _ => Ok(Self::default()),
        }
    }
}

/// An opened, checked model package.
pub struct Package {
    root: PathBuf,
    manifest: Value,
    manifest_sha256: String,
    family: Family,
    kind: ModelKind,
    components: BTreeMap<String, Component>,
    config: PackageConfig,
    silence_latent: Array,
    null_condition_emb: Option<Array>,
    text_tokenizer: Option<Arc<Tokenizer>>,
    /// The LM tokenizer, read on first use (15 MB of JSON; only LM runs need it).
    lm_tokenizer: std::sync::OnceLock<Arc<Tokenizer>>,
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("{}: {what}: {e}", path.display()))
}

fn package_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("{}: {message}", path.display()))
}

impl Package {
    pub fn open(dir: impl AsRef<Path>, options: &OpenOptions) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("model package not found: {} is not a directory", root.display()),
            ));
        }
        let manifest_path = root.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} is not a model package: {MANIFEST_FILE} is missing (export one with \
                     `python -m tools.onnx_export --checkpoints DIR --out PKG`)",
                    root.display()
                ),
            ));
        }
        let raw = read_capped(&manifest_path, MAX_MANIFEST_BYTES)?;
        let manifest: Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::invalid_json(format!("{}: not valid JSON: {e}", manifest_path.display())))?;
        if !manifest.is_object() {
            return Err(Error::invalid_json(format!("{}: expected a JSON object", manifest_path.display())));
        }
        let version = manifest.get("format_version");
        if version.and_then(Value::as_u64) != Some(SUPPORTED_FORMAT_VERSION) {
            return Err(Error::invalid_argument(format!(
                "{}: format_version {} is not supported (this core reads version {SUPPORTED_FORMAT_VERSION})",
                manifest_path.display(),
                version.map_or("(missing)".to_string(), Value::to_string)
            )));
        }
        let manifest_sha256 = hex(&Sha256::digest(&raw));
        let reader = ManifestReader { root: &root, manifest_path: &manifest_path };
        reader.check_files(&manifest, options.verify_sha256)?;
        let components = reader.components(&manifest)?;
        let family = Family::of(&manifest);
        let config = reader.config(&manifest, family)?;
        let kind = model_kind(&manifest);
        let silence_latent = match (reader.array(&manifest, "silence_latent")?, family) {
            (Some(a), _) => a,
            // v1 starts from noise alone and builds its null conditions from the graphs.
            (None, Family::V1) => Array { shape: vec![1, 0, config.latent_channels], data: Vec::new() },
            (None, Family::V15) => {
                return Err(package_error(&manifest_path, "lists no file \"silence_latent\" (needed by every generation)"))
            }
        };
        if silence_latent.shape.len() != 3
            || silence_latent.shape[0] != 1
            || silence_latent.shape[2] != config.latent_channels
        {
            return Err(package_error(
                &manifest_path,
                format!(
                    "silence_latent has shape {:?}, expected [1, frames, {}]",
                    silence_latent.shape, config.latent_channels
                ),
            ));
        }
        let null_condition_emb = reader.array(&manifest, "null_condition_emb")?;
        let text_tokenizer = match manifest.pointer("/tokenizers/text/dir").and_then(Value::as_str) {
            Some(dir) => {
                let path = reader.inside(dir, "tokenizers.text.dir")?.join("tokenizer.json");
                Some(Arc::new(Tokenizer::from_file(&path).map_err(|e| {
                    Error::new(e.kind, format!("{}: {}", path.display(), e.message))
                })?))
            }
            None => None,
        };
        Ok(Self {
            root,
            manifest,
            manifest_sha256,
            family,
            kind,
            components,
            config,
            silence_latent,
            null_condition_emb,
            text_tokenizer,
            lm_tokenizer: std::sync::OnceLock::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn variant(&self) -> &str {
        self.manifest.get("model_variant").and_then(Value::as_str).unwrap_or("unknown")
    }

    pub fn config(&self) -> &PackageConfig {
        &self.config
    }

    pub fn has(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }

    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.components.keys().map(String::as_str).collect();
            Error::invalid_argument(format!(
                "model package {} has no component {name:?} (it has: {})",
                self.root.display(),
                have.join(", ")
            ))
        })
    }

    pub fn silence_latent(&self) -> &Array {
        &self.silence_latent
    }

    pub fn null_condition_emb(&self) -> Result<&Array> {
        self.null_condition_emb.as_ref().ok_or_else(|| {
            Error::invalid_argument(format!(
                "model package {} lists no null_condition_emb, which guided (base/sft) generation needs",
                self.root.display()
            ))
        })
    }

    /// The manifest as read (hosts and the driver look up component-specific config in it).
    pub fn manifest(&self) -> &Value {
        &self.manifest
    }

    /// The 5 Hz LM's tokenizer (`tokenizers.lm`), loaded once and shared by every generation.
    pub fn lm_tokenizer(&self) -> Result<Arc<Tokenizer>> {
        if let Some(tok) = self.lm_tokenizer.get() {
            return Ok(Arc::clone(tok));
        }
        let dir = self.manifest.pointer("/tokenizers/lm/dir").and_then(Value::as_str).ok_or_else(|| {
            Error::invalid_argument(format!("model package {} has no \"lm\" tokenizer", self.root.display()))
        })?;
        let reader = ManifestReader { root: &self.root, manifest_path: &self.root.join(MANIFEST_FILE) };
        let path = reader.inside(dir, "tokenizers.lm.dir")?.join("tokenizer.json");
        let tok = Tokenizer::from_file(&path).map_err(|e| Error::new(e.kind, format!("{}: {}", path.display(), e.message)))?;
        // Two threads may both load it; the first one stored wins.
        Ok(Arc::clone(self.lm_tokenizer.get_or_init(|| Arc::new(tok))))
    }

    pub fn text_tokenizer(&self) -> Result<&Tokenizer> {
        self.text_tokenizer.as_deref().ok_or_else(|| {
            Error::invalid_argument(format!("model package {} has no \"text\" tokenizer", self.root.display()))
        })
    }

    /// Whether the exporter marked the weights as random (tiny test packages).
    pub fn random_weights(&self) -> bool {
        self.manifest.get("random_weights").and_then(Value::as_bool).unwrap_or(false)
    }

    /// What `acestep-runtime info` prints.
    pub fn info_json(&self) -> String {
        let mut total: u64 = 0;
        let mut components = serde_json::Map::new();
        for (name, c) in &self.components {
            let raw = &self.manifest["components"][name];
            total += raw.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            for extra in raw.get("external_data").and_then(Value::as_array).into_iter().flatten() {
                total += extra.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            }
            components.insert(
                name.clone(),
                json!({
                    "file": c.file,
                    "path": c.path.to_string_lossy(),
                    "bytes": c.bytes,
                    "inputs": c.inputs.iter().map(signature).collect::<Vec<_>>(),
                    "outputs": c.outputs.iter().map(signature).collect::<Vec<_>>(),
                }),
            );
        }
        json!({
            "path": self.root.to_string_lossy(),
            "model_family": self.manifest.get("model_family"),
            "model_variant": self.manifest.get("model_variant"),
            "model_kind": match self.family {
                Family::V15 => self.kind.name(),
                Family::V1 => "v1",
            },
            "random_weights": self.random_weights(),
            "precision": self.manifest.get("precision"),
            "profile": profile_summary(&self.manifest),
            "opset": self.manifest.get("opset"),
            "components": components,
            "total_bytes": total,
            "sample_rate": self.config.sample_rate,
            "exporter": self.manifest.get("exporter").cloned().unwrap_or(json!({})),
            "manifest_sha256": self.manifest_sha256,
        })
        .to_string()
    }
}

/// The precision profile in short (tools/onnx_opt writes the full section): name, method, thresholds
/// and the measured worst-case deviation from fp32; null for an exporter fp32 package.
fn profile_summary(manifest: &Value) -> Value {
    match manifest.get("profile") {
        Some(p) if p.is_object() => json!({
            "name": p.get("name"),
            "method": p.get("method"),
            "thresholds": p.get("thresholds"),
            "deviation_from_fp32": p.pointer("/deviation/worst"),
            "deviation_passed": p.pointer("/deviation/passed"),
        }),
        _ => Value::Null,
    }
}

fn signature(spec: &TensorSpec) -> String {
    let dims: Vec<String> = spec
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Named(s) => format!("'{s}'"),
            Dim::Unknown => "None".into(),
        })
        .collect();
    format!("{}:{}[{}]", spec.name, spec.dtype.name(), dims.join(", "))
}

/// "turbo", "base" or "sft": the DiT config's `is_turbo`, else the variant name.
fn model_kind(manifest: &Value) -> ModelKind {
    if manifest.pointer("/config/acestep/is_turbo").and_then(Value::as_bool) == Some(true) {
        return ModelKind::Turbo;
    }
    let variant = manifest.get("model_variant").and_then(Value::as_str).unwrap_or("").to_lowercase();
    if variant.contains("sft") {
        ModelKind::Sft
    } else if variant.contains("turbo") {
        ModelKind::Turbo
    } else {
        ModelKind::Base
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    let len = file.metadata().map_err(|e| io_error(path, "cannot stat", e))?.len();
    if len > cap {
        return Err(package_error(path, format!("{len} bytes is too large (limit {cap})")));
    }
    let mut raw = Vec::with_capacity(len as usize);
    file.take(cap).read_to_end(&mut raw).map_err(|e| io_error(path, "cannot read", e))?;
    Ok(raw)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(hex(&digest.finalize()))
}

/// Reads the parts of a manifest; every error names the manifest or the file.
struct ManifestReader<'a> {
    root: &'a Path,
    manifest_path: &'a Path,
}

impl ManifestReader<'_> {
    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::invalid_json(format!("{}: {message}", self.manifest_path.display()))
    }

    /// A path the manifest lists, resolved inside the package: absolute paths and `..` are refused,
    /// so a package cannot make a host read files outside its directory.
    fn inside(&self, rel: &str, field: &str) -> Result<PathBuf> {
        let path = Path::new(rel);
        let safe = !rel.is_empty()
            && path.components().all(|p| matches!(p, PathPart::Normal(_) | PathPart::CurDir));
        if !safe {
            return Err(self.err(format!("{field} = {rel:?} is not a relative path inside the package")));
        }
        Ok(self.root.join(path))
    }

    fn str_field<'v>(&self, v: &'v Value, key: &str, at: &str) -> Result<&'v str> {
        v.get(key).and_then(Value::as_str).ok_or_else(|| self.err(format!("{at}.{key} is missing or not a string")))
    }

    /// Every (path, sha256, bytes) the manifest promises.
    fn file_entries(&self, manifest: &Value) -> Result<Vec<(String, String, Option<String>, Option<u64>)>> {
        let mut entries = Vec::new();
        let mut push = |v: &Value, at: String| -> Result<()> {
            let file = self.str_field(v, "file", &at)?.to_string();
            let sha = v.get("sha256").and_then(Value::as_str).map(str::to_string);
            let bytes = v.get("bytes").and_then(Value::as_u64);
            entries.push((at, file, sha, bytes));
            Ok(())
        };
        for (name, comp) in manifest.get("components").and_then(Value::as_object).into_iter().flatten() {
            push(comp, format!("components.{name}"))?;
            for (i, extra) in comp.get("external_data").and_then(Value::as_array).into_iter().flatten().enumerate() {
                push(extra, format!("components.{name}.external_data[{i}]"))?;
            }
        }
        for (name, entry) in manifest.get("files").and_then(Value::as_object).into_iter().flatten() {
            push(entry, format!("files.{name}"))?;
        }
        for (name, tok) in manifest.get("tokenizers").and_then(Value::as_object).into_iter().flatten() {
            for (i, entry) in tok.get("files").and_then(Value::as_array).into_iter().flatten().enumerate() {
                push(entry, format!("tokenizers.{name}.files[{i}]"))?;
            }
        }
        Ok(entries)
    }

    fn check_files(&self, manifest: &Value, verify: bool) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for (at, rel, sha, bytes) in self.file_entries(manifest)? {
            if !seen.insert(rel.clone()) {
                continue;
            }
            let path = self.inside(&rel, &format!("{at}.file"))?;
            let meta = std::fs::metadata(&path).map_err(|_| {
                Error::new(
                    ErrorKind::Io,
                    format!("model package {} is incomplete: {rel} is missing", self.root.display()),
                )
            })?;
            if !meta.is_file() {
                return Err(package_error(&path, "is not a regular file"));
            }
            if let Some(expected) = bytes {
                if meta.len() != expected {
                    return Err(package_error(
                        &path,
                        format!(
                            "size {} differs from the manifest's {expected} bytes (corrupted or partially \
                             copied package)",
                            meta.len()
                        ),
                    ));
                }
            }
            if let (true, Some(expected)) = (verify, sha) {
                let actual = sha256_file(&path)?;
                if actual != expected {
                    return Err(package_error(
                        &path,
                        format!("sha256 {actual} does not match the manifest's {expected} (corrupted file)"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn components(&self, manifest: &Value) -> Result<BTreeMap<String, Component>> {
        let mut out = BTreeMap::new();
        let Some(map) = manifest.get("components").and_then(Value::as_object) else {
            return Err(self.err("components is missing or not an object"));
        };
        for (name, raw) in map {
            let at = format!("components.{name}");
            let file = self.str_field(raw, "file", &at)?.to_string();
            let path = self.inside(&file, &format!("{at}.file"))?;
            out.insert(
                name.clone(),
                Component {
                    name: name.clone(),
                    bytes: raw.get("bytes").and_then(Value::as_u64),
                    inputs: self.specs(raw, "inputs", &at)?,
                    outputs: self.specs(raw, "outputs", &at)?,
                    file,
                    path,
                },
            );
        }
        Ok(out)
    }

    fn specs(&self, raw: &Value, key: &str, at: &str) -> Result<Vec<TensorSpec>> {
        let Some(list) = raw.get(key).and_then(Value::as_array) else {
            return Err(self.err(format!("{at}.{key} is missing or not a list")));
        };
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                let here = format!("{at}.{key}[{i}]");
                let name = self.str_field(s, "name", &here)?.to_string();
                let dtype = DType::parse(self.str_field(s, "dtype", &here)?, &format!("{}: {here}", self.manifest_path.display()))?;
                let dims = s.get("shape").and_then(Value::as_array).ok_or_else(|| self.err(format!("{here}.shape is missing")))?;
                let shape = dims
                    .iter()
                    .map(|d| match d {
                        Value::Number(n) => n.as_i64().map(Dim::Fixed).ok_or_else(|| self.err(format!("{here}.shape has {d}"))),
                        Value::String(s) => Ok(Dim::Named(s.clone())),
                        Value::Null => Ok(Dim::Unknown),
                        other => Err(self.err(format!("{here}.shape has {other}"))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(TensorSpec { name, dtype, shape })
            })
            .collect()
    }

    fn config(&self, manifest: &Value, family: Family) -> Result<PackageConfig> {
        let cfg = manifest.get("config").cloned().unwrap_or(json!({}));
        let uint = |pointer: &str, default: u64| -> Result<u64> {
            match cfg.pointer(pointer) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0 && n <= u32::MAX as u64)
                    .ok_or_else(|| self.err(format!("config{} must be a positive integer, got {v}", pointer.replace('/', ".")))),
            }
        };
        if family == Family::V1 {
            // docs/io_contract_v1.md §9: the output rate (after the core's 44.1 → 48 kHz step).
            return Ok(PackageConfig {
                caption_max_length: uint("/text_encoder/max_length", 256)? as usize,
                lyric_max_length: 0,
                sample_rate: uint("/audio/output_sample_rate", 48_000)? as u32,
                audio_channels: uint("/audio/audio_channels", 2)? as usize,
                latent_channels: uint("/transformer/latent_channels", 8)? as usize,
                hop_length: uint("/audio/samples_per_latent", crate::frames::V1_SAMPLES_PER_FRAME as u64)? as u32,
            });
        }
        Ok(PackageConfig {
            caption_max_length: uint("/text_encoder/caption_max_length", 256)? as usize,
            lyric_max_length: uint("/text_encoder/lyric_max_length", 2048)? as usize,
            sample_rate: uint("/vae/sample_rate", 48_000)? as u32,
            audio_channels: uint("/vae/audio_channels", 2)? as usize,
            latent_channels: uint("/vae/latent_channels", 64)? as usize,
            hop_length: uint("/vae/hop_length", crate::frames::SAMPLES_PER_FRAME as u64)? as u32,
        })
    }

    /// A float32 `.npy` listed under `files`; `None` when the manifest does not list it.
    fn array(&self, manifest: &Value, name: &str) -> Result<Option<Array>> {
        let Some(entry) = manifest.pointer(&format!("/files/{name}")) else { return Ok(None) };
        let rel = self.str_field(entry, "file", &format!("files.{name}"))?;
        let path = self.inside(rel, &format!("files.{name}.file"))?;
        let array = read_npy_f32(&path)?;
        if let Some(expected) = entry.get("shape").and_then(Value::as_array) {
            let expected: Vec<Option<u64>> = expected.iter().map(Value::as_u64).collect();
            let actual: Vec<Option<u64>> = array.shape.iter().map(|&d| Some(d as u64)).collect();
            if expected != actual {
                return Err(package_error(
                    &path,
                    format!("shape {:?} differs from the manifest's {}", array.shape, entry["shape"]),
                ));
            }
        }
        Ok(Some(array))
    }
}

/// Reads a C-ordered float32 `.npy` file (with the maintained `npyz` crate).
pub fn read_npy_f32(path: &Path) -> Result<Array> {
    let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| package_error(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(package_error(path, "is Fortran-ordered; expected C order"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let expected = crate::shape::numel(&shape, &path.display().to_string())?;
    let dtype = npy.dtype();
    let data: Vec<f32> = npy
        .into_vec::<f32>()
        .map_err(|e| package_error(path, format!("expected float32 data ({dtype:?}): {e}")))?;
    if data.len() != expected {
        return Err(package_error(path, format!("holds {} values but its shape {shape:?} needs {expected}", data.len())));
    }
    crate::error::ensure_finite(&data, &path.display().to_string())?;
    Ok(Array { shape, data })
}
