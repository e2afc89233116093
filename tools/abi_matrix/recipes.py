"""Valid-argument recipes for the bad-input matrix: one entry per function of the C header.

Each recipe maps every parameter to a C expression that makes a valid call (the baseline, which
must return ACE_STATUS_OK); the matrix then replaces one argument at a time with bad values chosen
from the parameter's C type. The names used here (XA, CTX, TOK, ...) are the fixtures set up by
``PRELUDE`` in ``generate.py``: float buffers of BIG elements, the latents shape [1, 8, 8] (64
values), a turbo context, the tiny tokenizer of fixtures/reliability, an FSM and a sampler for it.

A function added to the header without a recipe here makes the generator fail with a message that
names it: add its recipe (and list pointers that may be NULL under ``optional``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipe:
    args: dict[str, str]
    # Pointer parameters the function documents as nullable (NULL → any status but a panic).
    optional: set[str] = field(default_factory=set)
    # Parameters for which a NaN / ±Inf / huge value is a valid input (no failure expected).
    accepts_any: set[str] = field(default_factory=set)


def R(optional=(), accepts_any=(), **args) -> Recipe:
    return Recipe(args=args, optional=set(optional), accepts_any=set(accepts_any))


XT = dict(xt="XA", vt="XB")
# A generation request on the demo package (fixtures/generated/demo-package, see generate.PRELUDE).
REQUEST = '"{\\"caption\\": \\"x\\", \\"duration\\": 10, \\"seed\\": 1}"'
STR = "&OUT_STR"

RECIPES: dict[str, Recipe] = {
    "ace_abi_version": R(),
    "ace_version_string": R(out=STR),
    "ace_last_error": R(out=STR),
    "ace_last_error_json": R(out=STR),
    "ace_string_free": R(s="NULL"),
    "ace_create_context": R(config_json='"{\\"model\\": \\"turbo\\", \\"seeds\\": [1]}"', out="&OUT_CTX"),
    "ace_free_context": R(ctx="CTX"),
    "ace_context_num_steps": R(ctx="CTX", out="&OUT_SZ"),
    "ace_context_timesteps": R(ctx="CTX", out="XO", len="8"),
    "ace_context_info": R(ctx="CTX", out_json=STR),
    "ace_context_timestep_input": R(ctx="CTX", step_index="0", out="&OUT_F32"),
    "ace_prepare_step_inputs": R(ctx="CTX", step_index="0", out_json=STR),
    "ace_context_initial_latents": R(
        ctx="CTX", noise="XA", src="XB", shape="SHAPE3", ndim="3", out="XO", len="NLAT", optional={"src"},
        accepts_any={"src"},  # unused (and not read) unless the context has cover noise
    ),
    "ace_scheduler_step": R(ctx="CTX", step_index="0", **XT, shape="SHAPE3", ndim="3", out_xt="XO", len="NLAT"),
    "ace_scheduler_step_inplace": R(ctx="CTX", step_index="0", xt="XM", vt="XB", shape="SHAPE3", ndim="3", len="NLAT"),
    "ace_scheduler_step_with_noise": R(
        ctx="CTX", step_index="0", **XT, eps="XC", shape="SHAPE3", ndim="3", out_xt="XO", len="NLAT"
    ),
    "ace_frames_from_duration": R(duration_s="30.0", out_frames="&OUT_U32"),
    "ace_frames_dit_length": R(frames="750", out_frames="&OUT_U32"),
    "ace_frames_to_samples": R(frames="750", out_samples="&OUT_U64"),
    "ace_guidance_cfg": R(cond="XA", uncond="XB", out="XO", len="NLAT", guidance_scale="2.0"),
    "ace_guidance_cfg_zero_star": R(
        cond="XA", uncond="XB", out="XO", len="NLAT", batch="1", guidance_scale="2.0", step="3",
        zero_steps="1", use_zero_init="true",
    ),
    "ace_guidance_cfg_interval_active": R(t="0.5f", cfg_interval_start="0.0f", cfg_interval_end="1.0f", out="&OUT_BOOL"),
    "ace_guidance_v1_interval": R(num_steps="10", guidance_interval="0.5", start_step="&OUT_U32", end_step="&OUT_U32B"),
    "ace_guidance_v1_step_active": R(step="3", num_steps="10", guidance_interval="0.5", out="&OUT_BOOL"),
    "ace_apg_create": R(config_json='"{}"', out="&OUT_APG"),
    "ace_apg_apply": R(
        apg="APG", cond="XA", uncond="XB", out="XO", len="NLAT", batch="1", frames="8", channels="8",
        guidance_scale="2.0",
    ),
    "ace_apg_reset": R(apg="APG"),
    "ace_apg_calls": R(apg="APG", out="&OUT_U64"),
    "ace_apg_free": R(apg="APG"),
    "ace_noise_fill": R(
        options_json='"{\\"mode\\": \\"torch_cpu\\"}"', seed="42", shape="SHAPE1", ndim="1", out="XO",
        out_len="NLAT", out_seed_used="&OUT_I64", optional={"options_json"}, accepts_any={"seed"},
    ),
    "ace_noise_stream_create": R(
        options_json='"{\\"mode\\": \\"torch_cpu\\"}"', seed="42", out_seed_used="&OUT_I64", out="&OUT_NSTREAM",
        optional={"options_json"}, accepts_any={"seed"},
    ),
    "ace_noise_stream_fill": R(stream="NSTREAM", out="XO", len="NLAT"),
    "ace_noise_stream_free": R(stream="NSTREAM"),
    "ace_guidance_double_condition": R(
        cond="XA", text_only="XC", uncond="XB", out="XO", len="NLAT", guidance_scale_text="5.0",
        guidance_scale_lyric="2.5",
    ),
    "ace_guidance_v1_call": R(
        call="5", num_steps="10", guidance_interval="0.5", guidance_scale="15.0", min_guidance_scale="3.0",
        guidance_interval_decay="0.0", out_active="&OUT_BOOL", out_scale="&OUT_F64",
    ),
    # 64 values = 2 channels × 32 frames at 44.1 kHz → 2 × 35 at 48 kHz
    "ace_resample_frames": R(frames="32", in_rate="44100", out_rate="48000", out_frames="&OUT_U64"),
    "ace_resample": R(
        input="XA", input_len="NLAT", channels="2", in_rate="44100", out_rate="48000", out="XO", out_len="70",
    ),
    "ace_peak_guard": R(
        audio="XM", len="NLAT", batch="1", channels="2", samples="32", peaks_out="XO", peaks_len="1",
        optional={"peaks_out"},
    ),
    "ace_schedule_turbo_shift": R(shift="3.0", out="&OUT_F64", accepts_any={"shift"}),
    "ace_schedule_turbo": R(shift="3.0", out="XO", out_capacity="8", out_len="&OUT_SZ", accepts_any={"out_capacity"}),
    "ace_schedule_custom": R(
        timesteps="TS", count="4", fallback_shift="3.0", out="XO", out_capacity="20", out_len="&OUT_SZ",
        accepts_any={"count", "out_capacity"},
    ),
    "ace_schedule_base": R(steps="8", shift="1.0", out="XO", out_capacity="8", out_len="&OUT_SZ", accepts_any={"out_capacity"}),
    "ace_schedule_v1_sigmas": R(
        steps="8", shift="3.0", sigma_max="1.0", sigma_min="0.0", out="XO", out_capacity="9", out_len="&OUT_SZ",
        accepts_any={"out_capacity"},
    ),
    "ace_schedule_v1_default_sigma_min": R(shift="3.0", out="&OUT_F64"),
    "ace_bf16_round": R(values="XA", out="XO", len="NLAT", accepts_any={"values"}),
    "ace_solver_ode_step": R(**XT, len="NLAT", t="1.0", t_next="0.5", out="XO"),
    "ace_solver_x0": R(**XT, len="NLAT", t="0.5", out="XO"),
    "ace_solver_sde_step": R(**XT, eps="XC", len="NLAT", t="1.0", t_next="0.5", out="XO"),
    "ace_solver_sde_step_seeded": R(
        **XT, len="NLAT", seeds="SEEDS", num_seeds="1", noise_json="NULL", t="1.0", t_next="0.5", out="XO",
        optional={"noise_json"}, accepts_any={"seeds"},
    ),
    "ace_solver_pingpong_step_seeded": R(
        **XT, len="NLAT", seeds="SEEDS", num_seeds="1", noise_json="NULL", sigma="1.0", sigma_next="0.5", out="XO",
        optional={"noise_json"}, accepts_any={"seeds"},
    ),
    "ace_solver_omega": R(omega_scale="10.0", out="&OUT_F64"),
    "ace_solver_euler_omega_step": R(**XT, len="NLAT", sigma="1.0", sigma_next="0.5", omega_scale="10.0", out="XO"),
    "ace_solver_pingpong_step": R(**XT, eps="XC", len="NLAT", sigma="1.0", sigma_next="0.5", out="XO"),
    "ace_heun_create": R(omega_scale="10.0", out="&OUT_HEUN"),
    "ace_heun_free": R(heun="HEUN"),
    "ace_heun_step": R(
        heun="HEUN", **XT, len="NLAT", sigma="1.0", sigma_next="0.5", out="XO", out_stage="&OUT_INT",
        optional={"out_stage"},
    ),
    "ace_heun_reset": R(heun="HEUN"),
    "ace_heun_next_stage": R(heun="HEUN", out_stage="&OUT_INT"),
    "ace_fsm_create": R(tok="TOK", config_json='"{}"', out="&OUT_FSM"),
    "ace_fsm_free": R(fsm="FSM"),
    "ace_fsm_reset_with_prompt": R(fsm="FSM", prompt_ids="IDS", n="4"),
    "ace_fsm_mask_logits": R(fsm="FSM", logits="LOGM", vocab="VOCAB", accepts_any={"logits"}),
    "ace_apply_lm_constraints": R(fsm="FSM", logits="LOGA", vocab="VOCAB", out_masked_logits="XO", accepts_any={"logits"}),
    "ace_fsm_accept": R(fsm="FSM", token="THINK_ID"),
    "ace_fsm_state_json": R(fsm="FSM", out=STR),
    "ace_parse_lm_output": R(text='"<think>\\nbpm: 120\\n</think>"', out_json=STR, accepts_any={"text"}),
    "ace_format_cot": R(metadata_json='"{\\"bpm\\": 120}"', out=STR),
    "ace_finalize_metadata": R(tok="TOK", token_ids="IDS", len="4", out_json=STR),
    "ace_build_prompts": R(request_json='"{\\"caption\\": \\"x\\"}"', out_json=STR),
    "ace_sampler_create": R(config_json="SAMPLER_CFG", out="&OUT_SAMPLER"),
    "ace_sampler_free": R(sampler="SAMPLER"),
    "ace_sampler_sample": R(sampler="SAMPLER", cond="LOGA", uncond="LOGB", vocab="VOCAB", step="0", out_token="&OUT_U32",
                            optional={"uncond"}, accepts_any={"step"}),
    "ace_sampler_sample_logits": R(sampler="SAMPLER", logits="LOGA", vocab="VOCAB", step="0", out_token="&OUT_U32",
                                   accepts_any={"step"}),
    "ace_sampler_cfg": R(sampler="SAMPLER", cond="LOGA", uncond="LOGB", vocab="VOCAB", out_logits="XO",
                         optional={"uncond"}),
    "ace_lm_step": R(sampler="SAMPLER", fsm="FSM", cond="LOGA", uncond="LOGB", vocab="VOCAB", step="0",
                     out_token="&OUT_U32", optional={"uncond"}, accepts_any={"step"}),
    "ace_vae_tile_count": R(frames="1000", chunk="512", overlap="64", out_count="&OUT_SZ"),
    "ace_vae_tile_plan": R(frames="1000", chunk="512", overlap="64", windows="WINDOWS", capacity="16",
                           out_count="&OUT_SZ", accepts_any={"capacity"}),
    "ace_tokenizer_create_from_file": R(path="TOK_PATH", out="&OUT_TOK"),
    "ace_tokenizer_create_from_json": R(json="TOK_JSON", out="&OUT_TOK"),
    "ace_tokenizer_free": R(tok="TOK"),
    "ace_tokenizer_vocab_size": R(tok="TOK", out="&OUT_SZ"),
    "ace_tokenizer_encode": R(tok="TOK", text='"hello <|im_end|>"', add_special_tokens="false", ids="IDSOUT",
                              cap="BIG", out_len="&OUT_SZ", accepts_any={"text", "cap"}),
    "ace_tokenizer_decode": R(tok="TOK", ids="IDS", n="4", skip_special_tokens="false", out=STR),
    "ace_tokenizer_decode_utf8": R(tok="TOK", ids="IDS", n="4", skip_special_tokens="false", buf="U8BUF",
                                   cap="BIG", out_len="&OUT_SZ", accepts_any={"cap"}),
    "ace_tokenizer_token_to_id": R(tok="TOK", token='"<|im_end|>"', out_id="&OUT_U32"),
    "ace_tokenizer_id_to_token": R(tok="TOK", id="72", out=STR),
    "ace_package_open": R(dir="PKG_DIR", options_json="NULL", out="&OUT_PKG", optional={"options_json"}),
    "ace_package_free": R(pkg="PKG", optional={"pkg"}),  # NULL is a no-op
    "ace_package_info_json": R(pkg="PKG", out=STR),
    "ace_request_normalize": R(pkg="PKG", request_json=REQUEST, out=STR),
    "ace_generation_create": R(pkg="PKG", request_json=REQUEST, out="&OUT_GEN"),
    "ace_generation_free": R(generation="GEN", optional={"generation"}),  # NULL is a no-op
    "ace_generation_info_json": R(generation="GEN", out=STR),
    "ace_generation_next": R(generation="GEN", out_call="&OUT_CALL"),
    # GEN_PENDING waits for the text encoder's outputs, which the host keeps: nothing to submit.
    "ace_generation_submit": R(generation="GEN_PENDING", outputs="NULL", num_outputs="0", optional={"outputs"}),
    "ace_generation_result_audio": R(generation="GEN_DONE", out_data="&OUT_CF32", out_shape="SHAPE_OUT"),
    "ace_generation_result_latents": R(generation="GEN_DONE", out_data="&OUT_CF32", out_shape="SHAPE_OUT"),
    "ace_generation_sidecar_json": R(generation="GEN_DONE", item="0", host_json="NULL", out=STR,
                                     optional={"host_json"}),
    "ace_track_id": R(params_json='"{\\"seed\\": 1}"', out=STR),
    "ace_track_canonical_json": R(params_json='"{\\"seed\\": 1}"', out=STR),
}
