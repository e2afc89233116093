// The P/Invoke table of the core library: one entry per `ace_*` function of
// include/acestep_runtime.h, in header order. Comments give the C type where the C# type does not
// say it (`/* const char* */ byte[]` is a NUL-terminated UTF-8 string, see Utf8.Encode).
// tests/Tests.cs parses the header and fails when a function is missing here or has another
// parameter count, so a new `ace_*` function is a visible gap, not a silent one.
//
// Mapping: size_t -> UIntPtr, bool -> I1, out-parameters of objects -> SafeHandle subclasses (the
// marshaller owns the reference counting), buffers -> typed pointers (callers pin arrays with
// `fixed`; the safe layer in Core.cs has the array overloads).
using System;
using System.Runtime.InteropServices;

namespace AceStep.Runtime
{
    public static unsafe partial class NativeMethods
    {
        /// <summary>Library name as DllImport sees it: libacestep_runtime.so / .dylib, acestep_runtime.dll.</summary>
        public const string LibName = "acestep_runtime";

        /// <summary>ACE_ABI_VERSION of the header this table was written against.</summary>
        public const uint AbiVersion = 1;

        [DllImport(LibName, EntryPoint = "ace_abi_version", CallingConvention = CallingConvention.Cdecl)]
        public static extern uint ace_abi_version();

        [DllImport(LibName, EntryPoint = "ace_version_string", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_version_string(/* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_last_error", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_last_error(/* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_last_error_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_last_error_json(/* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_string_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_string_free(/* char* */ IntPtr s);

        [DllImport(LibName, EntryPoint = "ace_create_context", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_create_context(/* const char* */ byte[] config_json, /* AceContext** */ out AceContextHandle @out);

        [DllImport(LibName, EntryPoint = "ace_free_context", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_free_context(/* AceContext* */ IntPtr ctx);

        [DllImport(LibName, EntryPoint = "ace_context_num_steps", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_context_num_steps(/* const AceContext* */ AceContextHandle ctx, /* size_t* */ out UIntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_context_timesteps", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_context_timesteps(/* const AceContext* */ AceContextHandle ctx, float* @out, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_context_info", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_context_info(/* const AceContext* */ AceContextHandle ctx, /* char** */ out IntPtr out_json);

        [DllImport(LibName, EntryPoint = "ace_context_timestep_input", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_context_timestep_input(/* const AceContext* */ AceContextHandle ctx, UIntPtr step_index, /* float* */ out float @out);

        [DllImport(LibName, EntryPoint = "ace_prepare_step_inputs", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_prepare_step_inputs(/* const AceContext* */ AceContextHandle ctx, UIntPtr step_index, /* char** */ out IntPtr out_json);

        [DllImport(LibName, EntryPoint = "ace_context_initial_latents", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_context_initial_latents(/* const AceContext* */ AceContextHandle ctx, /* const float* */ float* noise, /* const float* */ float* src, /* const size_t* */ UIntPtr* shape, UIntPtr ndim, float* @out, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_scheduler_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_scheduler_step(/* const AceContext* */ AceContextHandle ctx, UIntPtr step_index, /* const float* */ float* xt, /* const float* */ float* vt, /* const size_t* */ UIntPtr* shape, UIntPtr ndim, float* out_xt, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_scheduler_step_inplace", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_scheduler_step_inplace(/* const AceContext* */ AceContextHandle ctx, UIntPtr step_index, float* xt, /* const float* */ float* vt, /* const size_t* */ UIntPtr* shape, UIntPtr ndim, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_scheduler_step_with_noise", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_scheduler_step_with_noise(/* const AceContext* */ AceContextHandle ctx, UIntPtr step_index, /* const float* */ float* xt, /* const float* */ float* vt, /* const float* */ float* eps, /* const size_t* */ UIntPtr* shape, UIntPtr ndim, float* out_xt, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_frames_from_duration", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_frames_from_duration(double duration_s, /* uint32_t* */ out uint out_frames);

        [DllImport(LibName, EntryPoint = "ace_frames_dit_length", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_frames_dit_length(uint frames, /* uint32_t* */ out uint out_frames);

        [DllImport(LibName, EntryPoint = "ace_frames_to_samples", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_frames_to_samples(uint frames, /* uint64_t* */ out ulong out_samples);

        [DllImport(LibName, EntryPoint = "ace_generation_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_create(/* const AcePackage* */ AcePackageHandle pkg, /* const char* */ byte[] request_json, /* AceGeneration** */ out AceGenerationHandle @out);

        [DllImport(LibName, EntryPoint = "ace_generation_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_free(/* AceGeneration* */ IntPtr generation);

        [DllImport(LibName, EntryPoint = "ace_generation_info_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_info_json(/* const AceGeneration* */ AceGenerationHandle generation, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_generation_next", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_next(/* AceGeneration* */ AceGenerationHandle generation, /* const AceGraphCall** */ out AceGraphCall* out_call);

        [DllImport(LibName, EntryPoint = "ace_generation_submit", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_submit(/* AceGeneration* */ AceGenerationHandle generation, /* const AceTensor* */ AceTensor* outputs, UIntPtr num_outputs);

        [DllImport(LibName, EntryPoint = "ace_generation_result_audio", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_result_audio(/* const AceGeneration* */ AceGenerationHandle generation, /* const float** */ out float* out_data, /* size_t[3] */ UIntPtr* out_shape);

        [DllImport(LibName, EntryPoint = "ace_generation_result_latents", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_result_latents(/* const AceGeneration* */ AceGenerationHandle generation, /* const float** */ out float* out_data, /* size_t[3] */ UIntPtr* out_shape);

        [DllImport(LibName, EntryPoint = "ace_generation_sidecar_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_generation_sidecar_json(/* const AceGeneration* */ AceGenerationHandle generation, UIntPtr item, /* const char* */ byte[] host_json, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_package_open", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_package_open(/* const char* */ byte[] dir, /* const char* */ byte[] options_json, /* AcePackage** */ out AcePackageHandle @out);

        [DllImport(LibName, EntryPoint = "ace_package_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_package_free(/* AcePackage* */ IntPtr pkg);

        [DllImport(LibName, EntryPoint = "ace_package_info_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_package_info_json(/* const AcePackage* */ AcePackageHandle pkg, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_request_normalize", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_request_normalize(/* const AcePackage* */ AcePackageHandle pkg, /* const char* */ byte[] request_json, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_guidance_cfg", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_cfg(/* const float* */ float* cond, /* const float* */ float* uncond, float* @out, UIntPtr len, double guidance_scale);

        [DllImport(LibName, EntryPoint = "ace_guidance_cfg_zero_star", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_cfg_zero_star(/* const float* */ float* cond, /* const float* */ float* uncond, float* @out, UIntPtr len, uint batch, double guidance_scale, uint step, uint zero_steps, [MarshalAs(UnmanagedType.I1)] bool use_zero_init);

        [DllImport(LibName, EntryPoint = "ace_guidance_cfg_interval_active", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_cfg_interval_active(float t, float cfg_interval_start, float cfg_interval_end, /* bool* */ [MarshalAs(UnmanagedType.I1)] out bool @out);

        [DllImport(LibName, EntryPoint = "ace_guidance_v1_interval", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_v1_interval(uint num_steps, double guidance_interval, /* uint32_t* */ out uint start_step, /* uint32_t* */ out uint end_step);

        [DllImport(LibName, EntryPoint = "ace_guidance_v1_step_active", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_v1_step_active(uint step, uint num_steps, double guidance_interval, /* bool* */ [MarshalAs(UnmanagedType.I1)] out bool @out);

        [DllImport(LibName, EntryPoint = "ace_apg_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_apg_create(/* const char* */ byte[] config_json, /* AceApg** */ out AceApgHandle @out);

        [DllImport(LibName, EntryPoint = "ace_apg_apply", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_apg_apply(/* AceApg* */ AceApgHandle apg, /* const float* */ float* cond, /* const float* */ float* uncond, float* @out, UIntPtr len, uint batch, uint frames, uint channels, double guidance_scale);

        [DllImport(LibName, EntryPoint = "ace_apg_reset", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_apg_reset(/* AceApg* */ AceApgHandle apg);

        [DllImport(LibName, EntryPoint = "ace_apg_calls", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_apg_calls(/* const AceApg* */ AceApgHandle apg, /* uint64_t* */ out ulong @out);

        [DllImport(LibName, EntryPoint = "ace_apg_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_apg_free(/* AceApg* */ IntPtr apg);

        [DllImport(LibName, EntryPoint = "ace_noise_fill", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_noise_fill(/* const char* */ byte[] options_json, long seed, /* const size_t* */ UIntPtr* shape, UIntPtr ndim, float* @out, UIntPtr out_len, /* int64_t* */ out long out_seed_used);

        [DllImport(LibName, EntryPoint = "ace_noise_stream_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_noise_stream_create(/* const char* */ byte[] options_json, long seed, /* int64_t* */ out long out_seed_used, /* AceNoiseStream** */ out AceNoiseStreamHandle @out);

        [DllImport(LibName, EntryPoint = "ace_noise_stream_fill", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_noise_stream_fill(/* AceNoiseStream* */ AceNoiseStreamHandle stream, float* @out, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_noise_stream_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_noise_stream_free(/* AceNoiseStream* */ IntPtr stream);

        [DllImport(LibName, EntryPoint = "ace_guidance_double_condition", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_double_condition(/* const float* */ float* cond, /* const float* */ float* text_only, /* const float* */ float* uncond, float* @out, UIntPtr len, double guidance_scale_text, double guidance_scale_lyric);

        [DllImport(LibName, EntryPoint = "ace_guidance_v1_call", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_guidance_v1_call(uint call, uint num_steps, double guidance_interval, double guidance_scale, double min_guidance_scale, double guidance_interval_decay, /* bool* */ [MarshalAs(UnmanagedType.I1)] out bool out_active, /* double* */ out double out_scale);

        [DllImport(LibName, EntryPoint = "ace_resample_frames", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_resample_frames(ulong frames, uint in_rate, uint out_rate, /* uint64_t* */ out ulong out_frames);

        [DllImport(LibName, EntryPoint = "ace_resample", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_resample(/* const float* */ float* input, UIntPtr input_len, uint channels, uint in_rate, uint out_rate, float* @out, UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_peak_guard", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_peak_guard(float* audio, UIntPtr len, uint batch, uint channels, ulong samples, float* peaks_out, UIntPtr peaks_len);

        [DllImport(LibName, EntryPoint = "ace_schedule_turbo_shift", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_turbo_shift(double shift, /* double* */ out double @out);

        [DllImport(LibName, EntryPoint = "ace_schedule_turbo", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_turbo(double shift, float* @out, UIntPtr out_capacity, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_schedule_custom", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_custom(/* const double* */ double* timesteps, UIntPtr count, double fallback_shift, float* @out, UIntPtr out_capacity, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_schedule_base", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_base(UIntPtr steps, double shift, float* @out, UIntPtr out_capacity, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_schedule_v1_sigmas", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_v1_sigmas(UIntPtr steps, double shift, double sigma_max, double sigma_min, float* @out, UIntPtr out_capacity, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_schedule_v1_default_sigma_min", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_schedule_v1_default_sigma_min(double shift, /* double* */ out double @out);

        [DllImport(LibName, EntryPoint = "ace_bf16_round", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_bf16_round(/* const float* */ float* values, float* @out, UIntPtr len);

        [DllImport(LibName, EntryPoint = "ace_solver_ode_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_ode_step(/* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, double t, double t_next, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_x0", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_x0(/* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, double t, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_sde_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_sde_step(/* const float* */ float* xt, /* const float* */ float* vt, /* const float* */ float* eps, UIntPtr len, double t, double t_next, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_sde_step_seeded", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_sde_step_seeded(/* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, /* const uint64_t* */ ulong* seeds, UIntPtr num_seeds, /* const char* */ byte[] noise_json, double t, double t_next, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_pingpong_step_seeded", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_pingpong_step_seeded(/* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, /* const uint64_t* */ ulong* seeds, UIntPtr num_seeds, /* const char* */ byte[] noise_json, double sigma, double sigma_next, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_omega", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_omega(double omega_scale, /* double* */ out double @out);

        [DllImport(LibName, EntryPoint = "ace_solver_euler_omega_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_euler_omega_step(/* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, double sigma, double sigma_next, double omega_scale, float* @out);

        [DllImport(LibName, EntryPoint = "ace_solver_pingpong_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_solver_pingpong_step(/* const float* */ float* xt, /* const float* */ float* vt, /* const float* */ float* eps, UIntPtr len, double sigma, double sigma_next, float* @out);

        [DllImport(LibName, EntryPoint = "ace_heun_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_heun_create(double omega_scale, /* AceHeun** */ out AceHeunHandle @out);

        [DllImport(LibName, EntryPoint = "ace_heun_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_heun_free(/* AceHeun* */ IntPtr heun);

        [DllImport(LibName, EntryPoint = "ace_heun_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_heun_step(/* AceHeun* */ AceHeunHandle heun, /* const float* */ float* xt, /* const float* */ float* vt, UIntPtr len, double sigma, double sigma_next, float* @out, int* out_stage);

        [DllImport(LibName, EntryPoint = "ace_heun_reset", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_heun_reset(/* AceHeun* */ AceHeunHandle heun);

        [DllImport(LibName, EntryPoint = "ace_heun_next_stage", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_heun_next_stage(/* const AceHeun* */ AceHeunHandle heun, /* int* */ out int out_stage);

        [DllImport(LibName, EntryPoint = "ace_fsm_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_fsm_create(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const char* */ byte[] config_json, /* AceFsm** */ out AceFsmHandle @out);

        [DllImport(LibName, EntryPoint = "ace_fsm_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_fsm_free(/* AceFsm* */ IntPtr fsm);

        [DllImport(LibName, EntryPoint = "ace_fsm_reset_with_prompt", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_fsm_reset_with_prompt(/* AceFsm* */ AceFsmHandle fsm, /* const uint32_t* */ uint* prompt_ids, UIntPtr n);

        [DllImport(LibName, EntryPoint = "ace_fsm_mask_logits", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_fsm_mask_logits(/* AceFsm* */ AceFsmHandle fsm, float* logits, UIntPtr vocab);

        [DllImport(LibName, EntryPoint = "ace_apply_lm_constraints", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_apply_lm_constraints(/* AceFsm* */ AceFsmHandle fsm, /* const float* */ float* logits, UIntPtr vocab, float* out_masked_logits);

        [DllImport(LibName, EntryPoint = "ace_fsm_accept", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_fsm_accept(/* AceFsm* */ AceFsmHandle fsm, uint token);

        [DllImport(LibName, EntryPoint = "ace_fsm_state_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_fsm_state_json(/* const AceFsm* */ AceFsmHandle fsm, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_parse_lm_output", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_parse_lm_output(/* const char* */ byte[] text, /* char** */ out IntPtr out_json);

        [DllImport(LibName, EntryPoint = "ace_format_cot", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_format_cot(/* const char* */ byte[] metadata_json, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_finalize_metadata", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_finalize_metadata(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const uint32_t* */ uint* token_ids, UIntPtr len, /* char** */ out IntPtr out_json);

        [DllImport(LibName, EntryPoint = "ace_build_prompts", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_build_prompts(/* const char* */ byte[] request_json, /* char** */ out IntPtr out_json);

        [DllImport(LibName, EntryPoint = "ace_sampler_create", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_sampler_create(/* const char* */ byte[] config_json, /* AceSampler** */ out AceSamplerHandle @out);

        [DllImport(LibName, EntryPoint = "ace_sampler_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_sampler_free(/* AceSampler* */ IntPtr sampler);

        [DllImport(LibName, EntryPoint = "ace_sampler_sample", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_sampler_sample(/* AceSampler* */ AceSamplerHandle sampler, /* const float* */ float* cond, /* const float* */ float* uncond, UIntPtr vocab, ulong step, /* uint32_t* */ out uint out_token);

        [DllImport(LibName, EntryPoint = "ace_sampler_sample_logits", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_sampler_sample_logits(/* AceSampler* */ AceSamplerHandle sampler, /* const float* */ float* logits, UIntPtr vocab, ulong step, /* uint32_t* */ out uint out_token);

        [DllImport(LibName, EntryPoint = "ace_sampler_cfg", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_sampler_cfg(/* AceSampler* */ AceSamplerHandle sampler, /* const float* */ float* cond, /* const float* */ float* uncond, UIntPtr vocab, float* out_logits);

        [DllImport(LibName, EntryPoint = "ace_lm_step", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_lm_step(/* AceSampler* */ AceSamplerHandle sampler, /* AceFsm* */ AceFsmHandle fsm, /* const float* */ float* cond, /* const float* */ float* uncond, UIntPtr vocab, ulong step, /* uint32_t* */ out uint out_token);

        [DllImport(LibName, EntryPoint = "ace_vae_tile_count", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_vae_tile_count(uint frames, uint chunk, uint overlap, /* size_t* */ out UIntPtr out_count);

        [DllImport(LibName, EntryPoint = "ace_vae_tile_plan", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_vae_tile_plan(uint frames, uint chunk, uint overlap, AceTileWindow* windows, UIntPtr capacity, /* size_t* */ out UIntPtr out_count);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_create_from_file", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_create_from_file(/* const char* */ byte[] path, /* AceTokenizer** */ out AceTokenizerHandle @out);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_create_from_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_create_from_json(/* const char* */ byte[] json, /* AceTokenizer** */ out AceTokenizerHandle @out);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_free", CallingConvention = CallingConvention.Cdecl)]
        public static extern void ace_tokenizer_free(/* AceTokenizer* */ IntPtr tok);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_vocab_size", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_vocab_size(/* const AceTokenizer* */ AceTokenizerHandle tok, /* size_t* */ out UIntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_encode", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_encode(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const char* */ byte[] text, [MarshalAs(UnmanagedType.I1)] bool add_special_tokens, /* uint32_t* */ uint* ids, UIntPtr cap, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_decode", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_decode(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const uint32_t* */ uint* ids, UIntPtr n, [MarshalAs(UnmanagedType.I1)] bool skip_special_tokens, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_decode_utf8", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_decode_utf8(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const uint32_t* */ uint* ids, UIntPtr n, [MarshalAs(UnmanagedType.I1)] bool skip_special_tokens, /* uint8_t* */ byte* buf, UIntPtr cap, /* size_t* */ out UIntPtr out_len);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_token_to_id", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_token_to_id(/* const AceTokenizer* */ AceTokenizerHandle tok, /* const char* */ byte[] token, /* uint32_t* */ out uint out_id);

        [DllImport(LibName, EntryPoint = "ace_tokenizer_id_to_token", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_tokenizer_id_to_token(/* const AceTokenizer* */ AceTokenizerHandle tok, uint id, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_track_id", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_track_id(/* const char* */ byte[] params_json, /* char** */ out IntPtr @out);

        [DllImport(LibName, EntryPoint = "ace_track_canonical_json", CallingConvention = CallingConvention.Cdecl)]
        public static extern AceStatus ace_track_canonical_json(/* const char* */ byte[] params_json, /* char** */ out IntPtr @out);
    }
}
