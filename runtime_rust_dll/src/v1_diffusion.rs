//! The ACE-Step v1 diffusion loop as a state machine (spec `ace_step_v1.md` §6–§7; official
//! `text2music_diffusion_process`): initial noise, the σ grid, which decodes each model call needs
//! (conditional, unconditional, text-only) at which timestep, guidance, and the solver step. The
//! driver's v1 family asks the host for the decodes this object lists and hands the velocities
//! back; this module never runs a graph.
//!
//! Latents are `[B, 8, 16, T]`, float32. Per call `i` (the official loop index; Heun makes 2N − 1):
//! 1. [`V1Diffusion::decodes`] lists the decodes, all on [`V1Diffusion::latents`] at
//!    [`V1Diffusion::timestep`] (= 1000·σ in float32): the conditional one always; on guided calls
//!    also the unconditional one (with the ERG q-scale when `use_erg_diffusion`) and, for the
//!    double-condition guidance, the text-only one;
//! 2. [`V1Diffusion::submit`] takes the velocities, combines them (APG per (b, c) over (16, T) with
//!    its momentum advanced on guided calls only, CFG, CFG-Zero* with `i <= zero_steps`, or the
//!    double-condition formula) and runs the scheduler step (Euler-ω, Heun-ω, PingPong with noise
//!    from item 0's generator, continuing the initial noise's stream).

use crate::error::{Error, Result};
use crate::guidance::{self, Apg, ApgConfig, Shape};
use crate::noise::{self, NoiseMode, NoiseStream};
use crate::schedule;
use crate::solver::{self, HeunSolver};

/// v1 latent channels and height.
pub const CHANNELS: usize = 8;
pub const HEIGHT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Euler,
    Heun,
    PingPong,
}

impl Scheduler {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "euler" => Ok(Self::Euler),
            "heun" => Ok(Self::Heun),
            "pingpong" => Ok(Self::PingPong),
            other => Err(Error::invalid_argument(format!(
                "scheduler_type must be euler, heun or pingpong, got {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgType {
    Apg,
    Cfg,
    CfgStar,
}

impl CfgType {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "apg" => Ok(Self::Apg),
            "cfg" => Ok(Self::Cfg),
            "cfg_star" => Ok(Self::CfgStar),
            other => Err(Error::invalid_argument(format!("cfg_type must be apg, cfg or cfg_star, got {other:?}"))),
        }
    }
}

/// The loop's settings (the v1 request's, spec §8).
#[derive(Debug, Clone, PartialEq)]
pub struct V1LoopConfig {
    pub steps: u32,
    pub scheduler: Scheduler,
    pub cfg_type: CfgType,
    pub omega_scale: f64,
    pub guidance_scale: f64,
    pub guidance_interval: f64,
    pub guidance_interval_decay: f64,
    pub min_guidance_scale: f64,
    pub guidance_scale_text: f64,
    pub guidance_scale_lyric: f64,
    pub zero_steps: u32,
    pub use_zero_init: bool,
    pub use_erg_diffusion: bool,
    pub shift: f64,
}

impl V1LoopConfig {
    /// From a normalised v1 request.
    pub fn from_request(r: &crate::request_v1::V1Request) -> Result<Self> {
        Ok(Self {
            steps: r.inference_steps,
            scheduler: Scheduler::parse(&r.scheduler_type)?,
            cfg_type: CfgType::parse(&r.cfg_type)?,
            omega_scale: r.omega_scale,
            guidance_scale: r.guidance_scale,
            guidance_interval: r.guidance_interval,
            guidance_interval_decay: r.guidance_interval_decay,
            min_guidance_scale: r.min_guidance_scale,
            guidance_scale_text: r.guidance_scale_text,
            guidance_scale_lyric: r.guidance_scale_lyric,
            zero_steps: r.zero_steps,
            use_zero_init: r.use_zero_init,
            use_erg_diffusion: r.use_erg_diffusion,
            shift: 3.0,
        })
    }
}

/// The condition a decode runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Conditional,
    /// The null condition; with `erg` the DiT runs with its ERG cross-attention q-scale.
    Unconditional { erg: bool },
    /// Text only, lyric ids 0 (double-condition guidance).
    TextOnly,
}

/// One model call of the plan: the σ interval it belongs to and its Heun stage.
#[derive(Debug, Clone, Copy)]
struct PlannedCall {
    sigma: f32,
    sigma_next: f32,
    /// σ the model is evaluated at (σ_next for Heun's second stage).
    at: f32,
}

pub struct V1Diffusion {
    config: V1LoopConfig,
    shape: [usize; 4],
    plan: Vec<PlannedCall>,
    call: usize,
    x: Vec<f32>,
    stream: NoiseStream,
    apg: Apg,
    heun: HeunSolver,
}

impl V1Diffusion {
    /// Draws the initial noise — item b from a generator seeded with `seeds[b]`, `[1, 8, 16, T]`
    /// each (official `randn_tensor` with one generator per item) — and plans the calls.
    pub fn new(config: V1LoopConfig, frames: usize, seeds: &[u64], mode: NoiseMode) -> Result<Self> {
        if seeds.is_empty() || seeds.len() > crate::limits::MAX_BATCH {
            return Err(Error::invalid_argument(format!(
                "give 1..={} seeds (one per batch item), got {}",
                crate::limits::MAX_BATCH,
                seeds.len()
            )));
        }
        if frames == 0 || frames > crate::frames::MAX_FRAMES as usize {
            return Err(Error::invalid_argument(format!("frames {frames} is outside [1, {}]", crate::frames::MAX_FRAMES)));
        }
        guidance::v1_guidance_interval(config.steps, config.guidance_interval)?;
        let sigmas = schedule::to_f32(&schedule::v1_sigmas(
            config.steps as usize,
            config.shift,
            1.0,
            schedule::v1_default_sigma_min(config.shift)?,
        )?);
        let n = config.steps as usize;
        let mut plan = Vec::with_capacity(2 * n);
        for k in 0..n {
            let (s, sn) = (sigmas[k], sigmas[k + 1]);
            plan.push(PlannedCall { sigma: s, sigma_next: sn, at: s });
            if config.scheduler == Scheduler::Heun && sn != 0.0 {
                plan.push(PlannedCall { sigma: s, sigma_next: sn, at: sn });
            }
        }
        let item = CHANNELS * HEIGHT * frames;
        let mut x = vec![0.0f32; item * seeds.len()];
        let mut stream = NoiseStream::new(mode, seeds[0])?;
        stream.fill(&mut x[..item])?;
        for (chunk, &seed) in x.chunks_mut(item).zip(seeds).skip(1) {
            noise::fill_normal(&mode, seed, chunk)?;
        }
        let heun = HeunSolver::new(config.omega_scale)?;
        Ok(Self {
            shape: [seeds.len(), CHANNELS, HEIGHT, frames],
            plan,
            call: 0,
            x,
            stream,
            apg: Apg::new(ApgConfig::default())?,
            heun,
            config,
        })
    }

    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Model calls in all: N (Euler, PingPong) or 2N − 1 (Heun).
    pub fn num_calls(&self) -> usize {
        self.plan.len()
    }

    /// Index of the next call (== `num_calls()` when finished).
    pub fn call_index(&self) -> usize {
        self.call
    }

    pub fn is_finished(&self) -> bool {
        self.call >= self.plan.len()
    }

    /// The latents the next call's decodes run on (after the loop: the final latents).
    pub fn latents(&self) -> &[f32] {
        &self.x
    }

    /// The next call's model timestep, 1000·σ in float32 (the DiT's `timestep` input).
    pub fn timestep(&self) -> Result<f32> {
        Ok(self.current()?.at * 1000.0f32)
    }

    fn current(&self) -> Result<PlannedCall> {
        self.plan.get(self.call).copied().ok_or_else(|| Error::invalid_state("the v1 diffusion loop is finished"))
    }

    fn guidance(&self) -> Result<guidance::V1CallGuidance> {
        self.guidance_at(self.call)
    }

    fn guidance_at(&self, call: usize) -> Result<guidance::V1CallGuidance> {
        let c = &self.config;
        guidance::v1_call_guidance(
            call as u32,
            c.steps,
            c.guidance_interval,
            c.guidance_scale,
            c.min_guidance_scale,
            c.guidance_interval_decay,
        )
    }

    fn double_condition(&self) -> bool {
        guidance::v1_double_condition_active(self.config.guidance_scale_text, self.config.guidance_scale_lyric)
    }

    /// The decodes the next call needs, in the order [`V1Diffusion::submit`] expects them.
    pub fn decodes(&self) -> Result<Vec<Condition>> {
        self.current()?;
        self.decodes_at(self.call)
    }

    /// The decodes of every model call, in order (what [`V1Diffusion::decodes`] will list call by
    /// call): a driver plans its encodes and progress from it.
    pub fn plan(&self) -> Result<Vec<Vec<Condition>>> {
        (0..self.plan.len()).map(|call| self.decodes_at(call)).collect()
    }

    fn decodes_at(&self, call: usize) -> Result<Vec<Condition>> {
        if !self.guidance_at(call)?.active {
            return Ok(vec![Condition::Conditional]);
        }
        let mut list = vec![Condition::Conditional];
        if self.double_condition() {
            list.push(Condition::TextOnly);
        }
        list.push(Condition::Unconditional { erg: self.config.use_erg_diffusion });
        Ok(list)
    }

    /// Takes the velocities of [`V1Diffusion::decodes`] (same order, each the latents' length),
    /// guides and steps. On error nothing changes.
    pub fn submit(&mut self, velocities: &[&[f32]]) -> Result<()> {
        let wanted = self.decodes()?;
        if velocities.len() != wanted.len() {
            return Err(Error::length_mismatch(format!(
                "call {} needs {} velocities ({wanted:?}), got {}",
                self.call,
                wanted.len(),
                velocities.len()
            )));
        }
        for (i, v) in velocities.iter().enumerate() {
            if v.len() != self.x.len() {
                return Err(Error::length_mismatch(format!(
                    "velocity {i} has {} values but the latents have {}",
                    v.len(),
                    self.x.len()
                )));
            }
        }
        // APG advances its momentum before the step runs; keep the old state for a failed step.
        let apg_before = self.apg.clone();
        let result = self.guide_and_step(velocities);
        if result.is_err() {
            self.apg = apg_before;
        }
        result
    }

    fn guide_and_step(&mut self, velocities: &[&[f32]]) -> Result<()> {
        let g = self.guidance()?;
        let p = self.current()?;
        let mut v = vec![0.0f32; self.x.len()];
        if !g.active {
            v.copy_from_slice(velocities[0]);
        } else if self.double_condition() {
            guidance::cfg_double_condition(
                velocities[0],
                velocities[1],
                velocities[2],
                &mut v,
                self.config.guidance_scale_text,
                self.config.guidance_scale_lyric,
            )?;
        } else {
            let (cond, uncond) = (velocities[0], velocities[1]);
            match self.config.cfg_type {
                CfgType::Apg => {
                    let [b, c, h, t] = self.shape;
                    self.apg.apply(cond, uncond, &mut v, Shape::v1_latent(b, c, h, t)?, g.guidance_scale)?
                }
                CfgType::Cfg => guidance::cfg(cond, uncond, &mut v, g.guidance_scale)?,
                CfgType::CfgStar => guidance::cfg_zero_star(
                    cond,
                    uncond,
                    &mut v,
                    self.shape[0],
                    g.guidance_scale,
                    self.call as u32,
                    self.config.zero_steps,
                    self.config.use_zero_init,
                )?,
            }
        }
        let mut out = vec![0.0f32; self.x.len()];
        let (s, sn) = (p.sigma as f64, p.sigma_next as f64);
        match self.config.scheduler {
            Scheduler::Euler => solver::euler_omega_step(&self.x, &v, s, sn, self.config.omega_scale, &mut out)?,
            Scheduler::Heun => {
                self.heun.step(&self.x, &v, s, sn, &mut out)?;
                if p.sigma_next == 0.0 {
                    self.heun.reset();
                }
            }
            Scheduler::PingPong => {
                let mut eps = vec![0.0f32; self.x.len()];
                let mut stream = self.stream.clone();
                stream.fill(&mut eps)?;
                solver::pingpong_step(&self.x, &v, s, sn, &eps, &mut out)?;
                self.stream = stream;
            }
        }
        self.x = out;
        self.call += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scheduler: Scheduler, cfg_type: CfgType) -> V1LoopConfig {
        V1LoopConfig {
            steps: 8,
            scheduler,
            cfg_type,
            omega_scale: 10.0,
            guidance_scale: 15.0,
            guidance_interval: 0.5,
            guidance_interval_decay: 0.0,
            min_guidance_scale: 3.0,
            guidance_scale_text: 0.0,
            guidance_scale_lyric: 0.0,
            zero_steps: 1,
            use_zero_init: true,
            use_erg_diffusion: true,
            shift: 3.0,
        }
    }

    /// A stand-in DiT: a smooth field that differs per condition.
    fn decode(x: &[f32], t: f32, c: Condition) -> Vec<f32> {
        let k = match c {
            Condition::Conditional => 0.8f32,
            Condition::Unconditional { .. } => 0.3,
            Condition::TextOnly => 0.5,
        };
        x.iter().enumerate().map(|(i, &v)| k * v + t * 0.0007 - 0.01 * (i % 7) as f32).collect()
    }

    fn run(mut d: V1Diffusion) -> (Vec<f32>, Vec<Vec<Condition>>) {
        let mut seen = Vec::new();
        while !d.is_finished() {
            let list = d.decodes().unwrap();
            let t = d.timestep().unwrap();
            let vs: Vec<Vec<f32>> = list.iter().map(|&c| decode(d.latents(), t, c)).collect();
            let refs: Vec<&[f32]> = vs.iter().map(|v| v.as_slice()).collect();
            d.submit(&refs).unwrap();
            seen.push(list);
        }
        (d.latents().to_vec(), seen)
    }

    #[test]
    fn calls_and_decodes_follow_the_plan() {
        let seeds = [3u64];
        for (sched, calls) in [(Scheduler::Euler, 8), (Scheduler::PingPong, 8), (Scheduler::Heun, 15)] {
            let d = V1Diffusion::new(config(sched, CfgType::Apg), 5, &seeds, NoiseMode::default()).unwrap();
            assert_eq!(d.num_calls(), calls);
            let planned = d.plan().unwrap();
            let (x, seen) = run(d);
            assert_eq!(planned, seen, "{sched:?}: plan() lists what decodes() asks call by call");
            assert!(x.iter().all(|v| v.is_finite()));
            // guided calls are [int(0.25·8), int(0.75·8)) = [2, 6) of the call index, also for Heun
            for (i, list) in seen.iter().enumerate() {
                assert_eq!(list.len(), if (2..6).contains(&i) { 2 } else { 1 }, "{sched:?} call {i}");
            }
        }
        let mut c = config(Scheduler::Euler, CfgType::Apg);
        c.guidance_scale_text = 5.0;
        c.guidance_scale_lyric = 2.0;
        let (_, seen) = run(V1Diffusion::new(c, 5, &seeds, NoiseMode::default()).unwrap());
        assert_eq!(seen[3], vec![Condition::Conditional, Condition::TextOnly, Condition::Unconditional { erg: true }]);
    }

    /// The same loop written out directly from the spec with the verified primitives: Euler with
    /// APG on [B·8, 16·T, 1]; the initial noise is torch's randn per item.
    #[test]
    fn euler_apg_loop_equals_the_direct_loop() {
        let seeds = [11u64, 12];
        let frames = 6;
        let d = V1Diffusion::new(config(Scheduler::Euler, CfgType::Apg), frames, &seeds, NoiseMode::default()).unwrap();
        let item = 8 * 16 * frames;
        let mut x = noise::randn(&NoiseMode::default(), 11, item).unwrap();
        x.extend(noise::randn(&NoiseMode::default(), 12, item).unwrap());
        assert_eq!(d.latents(), x.as_slice());
        let (got, _) = run(d);
        let sig = schedule::to_f32(&schedule::v1_sigmas(8, 3.0, 1.0, schedule::v1_default_sigma_min(3.0).unwrap()).unwrap());
        let mut apg = Apg::new(ApgConfig::default()).unwrap();
        let shape = Shape::new(2 * 8, 16 * frames, 1).unwrap();
        for i in 0..8 {
            let t = sig[i] * 1000.0;
            let cond = decode(&x, t, Condition::Conditional);
            let v = if (2..6).contains(&i) {
                let uncond = decode(&x, t, Condition::Unconditional { erg: true });
                let mut v = vec![0.0; x.len()];
                apg.apply(&cond, &uncond, &mut v, shape, 15.0).unwrap();
                v
            } else {
                cond
            };
            let mut out = vec![0.0; x.len()];
            solver::euler_omega_step(&x, &v, sig[i] as f64, sig[i + 1] as f64, 10.0, &mut out).unwrap();
            x = out;
        }
        assert_eq!(got, x);
    }

    #[test]
    fn pingpong_noise_continues_item_zeros_generator() {
        let mut c = config(Scheduler::PingPong, CfgType::Cfg);
        c.guidance_scale = 1.0; // no guidance: one decode per call
        let frames = 3;
        let mut d = V1Diffusion::new(c, frames, &[5], NoiseMode::default()).unwrap();
        let item = 8 * 16 * frames;
        let all = noise::randn(&NoiseMode::default(), 5, item).unwrap();
        assert_eq!(d.latents(), all.as_slice());
        let x0 = d.latents().to_vec();
        let t = d.timestep().unwrap();
        let v = decode(&x0, t, Condition::Conditional);
        d.submit(&[&v]).unwrap();
        let mut stream = NoiseStream::new(NoiseMode::default(), 5).unwrap();
        let mut skip = vec![0.0; item];
        stream.fill(&mut skip).unwrap();
        let mut eps = vec![0.0; item];
        stream.fill(&mut eps).unwrap();
        let sig = schedule::to_f32(&schedule::v1_sigmas(8, 3.0, 1.0, schedule::v1_default_sigma_min(3.0).unwrap()).unwrap());
        let mut want = vec![0.0; item];
        solver::pingpong_step(&x0, &v, sig[0] as f64, sig[1] as f64, &eps, &mut want).unwrap();
        assert_eq!(d.latents(), want.as_slice());
    }

    #[test]
    fn bad_submissions_change_nothing() {
        let mut d = V1Diffusion::new(config(Scheduler::Euler, CfgType::Apg), 4, &[1], NoiseMode::default()).unwrap();
        let x = d.latents().to_vec();
        assert!(d.submit(&[]).unwrap_err().message.contains("needs 1"));
        assert!(d.submit(&[&x[1..]]).is_err());
        let mut bad = x.clone();
        bad[0] = f32::NAN;
        assert!(d.submit(&[&bad]).is_err());
        assert_eq!(d.latents(), x.as_slice());
        assert_eq!(d.call_index(), 0);
        assert!(V1Diffusion::new(config(Scheduler::Euler, CfgType::Apg), 4, &[], NoiseMode::default()).is_err());
    }
}
