//! Seeded, torch-compatible Gaussian noise: the initial latent noise of the diffusion loop and the
//! fresh noise of SDE steps (spec §4.4). The same seed gives the same values as the official
//! build's `torch.randn` on the CPU ([`NoiseMode::TorchCpu`], bit-exact) or as torch's CUDA
//! Philox mapping ([`NoiseMode::TorchCuda`]).

mod cephes_f32;
mod mt19937;
mod philox;
mod torch_cpu;
mod torch_cuda;

use serde::Deserialize;

pub use philox::philox4x32_10;
pub use torch_cpu::CpuKernel;
pub use torch_cuda::{round_bf16, CudaNoiseOptions};

use crate::error::{parse_json, Error, Result};

/// Which torch generator to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`, float32 on the CPU.
    /// Only the low 32 bits of the seed matter (torch's CPU generator ignores the rest).
    TorchCpu(CpuKernel),
    /// The same call on a CUDA device (Philox4x32-10, full 64-bit seed).
    TorchCuda(CudaNoiseOptions),
}

impl Default for NoiseMode {
    /// torch CPU noise as torch computes it on x86-64 machines with AVX2.
    fn default() -> Self {
        NoiseMode::TorchCpu(CpuKernel::Avx2)
    }
}

/// Fills `out` (a contiguous tensor of any shape, row-major) with standard normal noise drawn from
/// a fresh generator seeded with `seed`. An empty `out` is a no-op.
pub fn fill_normal(mode: &NoiseMode, seed: u64, out: &mut [f32]) -> Result<()> {
    match mode {
        NoiseMode::TorchCpu(kernel) => {
            torch_cpu::fill(*kernel, seed, out);
            Ok(())
        }
        NoiseMode::TorchCuda(options) => torch_cuda::fill(options, seed, out),
    }
}

/// Allocates and fills `numel` values; see [`fill_normal`].
pub fn randn(mode: &NoiseMode, seed: u64, numel: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; numel];
    fill_normal(mode, seed, &mut out)?;
    Ok(out)
}

/// A seeded generator that keeps its state between draws, as one `torch.Generator` used for
/// several calls: the first [`NoiseStream::fill`] equals [`fill_normal`] with the same seed, and
/// each later one continues the stream (`randn(..., generator=g)` or `empty(...).normal_(g)`).
/// ACE-Step v1's PingPong sampler draws its per-step noise this way, from the generator of the
/// initial noise (spec §6).
#[derive(Clone)]
pub struct NoiseStream {
    mode: NoiseMode,
    seed: u64,
    state: StreamState,
}

#[derive(Clone)]
enum StreamState {
    /// Boxed: the Mersenne Twister state is 2.5 KB.
    Cpu(Box<torch_cpu::GeneratorState>),
    /// Philox offset of the next draw (torch advances it by 4 per round of a launch).
    Cuda { offset: u64 },
}

impl NoiseStream {
    pub fn new(mode: NoiseMode, seed: u64) -> Result<Self> {
        let state = match &mode {
            NoiseMode::TorchCpu(_) => StreamState::Cpu(Box::new(torch_cpu::GeneratorState::new(seed))),
            NoiseMode::TorchCuda(options) => {
                options.validate()?;
                StreamState::Cuda { offset: options.offset }
            }
        };
        Ok(Self { mode, seed, state })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Draws the next `out.len()` values. An empty `out` draws nothing and leaves the state as is
    /// (torch launches no kernel for an empty tensor).
    pub fn fill(&mut self, out: &mut [f32]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        match (&self.mode, &mut self.state) {
            (NoiseMode::TorchCpu(kernel), StreamState::Cpu(state)) => {
                state.fill(*kernel, out);
                Ok(())
            }
            (NoiseMode::TorchCuda(options), StreamState::Cuda { offset }) => {
                let at = CudaNoiseOptions { offset: *offset, ..*options };
                torch_cuda::fill(&at, self.seed, out)?;
                *offset = offset
                    .checked_add(torch_cuda::offset_increment(&at, out.len() as u64))
                    .ok_or_else(|| Error::invalid_state("torch_cuda: the Philox offset overflows"))?;
                Ok(())
            }
            _ => unreachable!("the state is built from the mode"),
        }
    }
}

/// Turns a requested seed into the seed to use: a non-negative seed is used as is; a negative one
/// means "random" and draws a fresh seed in 0..=2³²−1 (the official handler's range) from the
/// process's OS-seeded hash keys mixed with the clock. Report the returned seed so the run can be
/// reproduced.
pub fn resolve_seed(seed: i64) -> u64 {
    if seed >= 0 {
        return seed as u64;
    }
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys come from the OS entropy source (once per thread, then incremented), so
    // two calls in one thread still differ; the clock adds variation across processes.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.finish() & 0xffff_ffff
}

/// The JSON options of the C ABI: `{"mode": "torch_cpu", "cpu_kernel": "avx2"|"baseline"}` or
/// `{"mode": "torch_cuda", "sm_count": 132, "max_threads_per_sm": 2048, "bf16": true, "offset": 0}`.
#[derive(Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
enum ModeJson {
    TorchCpu {
        #[serde(default)]
        cpu_kernel: CpuKernelJson,
    },
    TorchCuda(CudaNoiseOptions),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum CpuKernelJson {
    #[default]
    Avx2,
    Baseline,
}

impl NoiseMode {
    /// Parses the options JSON of `ace_noise_fill`; `None` or an empty/whitespace string gives
    /// the default mode. Unknown modes or keys are errors that name them.
    pub fn from_json(text: Option<&str>) -> Result<Self> {
        let text = match text {
            Some(t) if !t.trim().is_empty() => t,
            _ => return Ok(Self::default()),
        };
        let value: serde_json::Value = parse_json(text, "noise options")?;
        match value.get("mode") {
            Some(serde_json::Value::String(_)) => {}
            Some(other) => {
                return Err(Error::invalid_json(format!(
                    "noise options: \"mode\" must be \"torch_cpu\" or \"torch_cuda\", got {other}"
                )))
            }
            None if value.is_object() => {
                // No mode given: torch_cpu, but still reject unknown keys.
                let mut obj = value.as_object().cloned().unwrap_or_default();
                obj.insert("mode".into(), "torch_cpu".into());
                return Self::from_value(serde_json::Value::Object(obj));
            }
            None => return Err(Error::invalid_json("noise options: expected a JSON object")),
        }
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self> {
        let parsed: ModeJson = crate::json::from_value(&value, "noise options")?;
        Ok(match parsed {
            ModeJson::TorchCpu { cpu_kernel } => NoiseMode::TorchCpu(match cpu_kernel {
                CpuKernelJson::Avx2 => CpuKernel::Avx2,
                CpuKernelJson::Baseline => CpuKernel::Baseline,
            }),
            ModeJson::TorchCuda(options) => {
                options.validate()?;
                NoiseMode::TorchCuda(options)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_modes_and_defaults() {
        assert_eq!(NoiseMode::from_json(None).unwrap(), NoiseMode::TorchCpu(CpuKernel::Avx2));
        assert_eq!(NoiseMode::from_json(Some("{}")).unwrap(), NoiseMode::TorchCpu(CpuKernel::Avx2));
        assert_eq!(
            NoiseMode::from_json(Some(r#"{"mode":"torch_cpu","cpu_kernel":"baseline"}"#)).unwrap(),
            NoiseMode::TorchCpu(CpuKernel::Baseline)
        );
        let cuda = NoiseMode::from_json(Some(r#"{"mode":"torch_cuda","sm_count":132,"bf16":true}"#)).unwrap();
        assert_eq!(
            cuda,
            NoiseMode::TorchCuda(CudaNoiseOptions {
                sm_count: Some(132),
                max_threads_per_sm: 2048,
                bf16: true,
                offset: 0
            })
        );
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err = |s: &str| NoiseMode::from_json(Some(s)).unwrap_err().message;
        assert!(err(r#"{"mode":"torch_mps"}"#).contains("torch_mps"));
        assert!(err(r#"{"mode":"torch_cpu","sm_count":3}"#).contains("sm_count"));
        assert!(err(r#"{"mode":"torch_cuda","smcount":3}"#).contains("smcount"));
        assert!(err(r#"{"cpu_kernel":"avx512"}"#).contains("avx512"));
        assert!(err(r#"{"mode":3}"#).contains("mode"));
        assert!(err("[1]").contains("object"));
        assert!(err("{").contains("noise options"));
        assert!(err(r#"{"mode":"torch_cuda","sm_count":0}"#).contains("sm_count"));
    }

    #[test]
    fn negative_seed_draws_a_32_bit_seed() {
        assert_eq!(resolve_seed(42), 42);
        assert_eq!(resolve_seed((1 << 40) + 7), (1 << 40) + 7);
        let a = resolve_seed(-1);
        let b = resolve_seed(-1);
        assert!(a <= u32::MAX as u64 && b <= u32::MAX as u64);
        assert_ne!(a, b, "two random seeds in a row should differ");
    }

    #[test]
    fn empty_output_is_fine() {
        fill_normal(&NoiseMode::default(), 1, &mut []).unwrap();
        fill_normal(&NoiseMode::TorchCuda(CudaNoiseOptions::default()), 1, &mut []).unwrap();
    }
}
