// The safe layer over NativeMethods: arrays instead of pointers (with offset overloads where a
// caller fills part of a bigger buffer), strings instead of UTF-8 bytes, AceException instead of
// status codes. Every entry point loads the library first (AceLibrary.Load).
using System;
using System.Collections.Generic;

namespace AceStep.Runtime
{
    /// <summary>Library-wide functions: versions, noise, frames, tiling, peak guard, prompts, track ids.</summary>
    public static unsafe class Ace
    {
        public static uint AbiVersion { get { AceLibrary.Load(); return NativeMethods.ace_abi_version(); } }

        public static string Version
        {
            get
            {
                AceLibrary.Load();
                IntPtr s;
                AceException.Check(NativeMethods.ace_version_string(out s));
                return Utf8.TakeString(s);
            }
        }

        /// <summary>Calls a core function that returns an owned string.</summary>
        internal delegate AceStatus StringCall(out IntPtr result);

        internal static string CallString(StringCall call)
        {
            AceLibrary.Load();
            IntPtr raw;
            AceException.Check(call(out raw));
            return Utf8.TakeString(raw);
        }

        static UIntPtr Size(long n)
        {
            if (n < 0)
                throw new ArgumentOutOfRangeException("n", "negative size " + n);
            return (UIntPtr)(ulong)n;
        }

        internal static void CheckRange(Array a, string name, int offset, int count)
        {
            if (a == null)
                throw new ArgumentNullException(name);
            if (offset < 0 || count < 0 || offset > a.Length - count)
                throw new ArgumentOutOfRangeException(name, name + ": offset " + offset + " + count " + count + " exceeds its length " + a.Length);
        }

        internal static UIntPtr[] Shape(long[] shape)
        {
            if (shape == null)
                throw new ArgumentNullException("shape");
            var dims = new UIntPtr[Math.Max(shape.Length, 1)];
            for (int i = 0; i < shape.Length; i++)
                dims[i] = Size(shape[i]);
            return dims;
        }

        // -- noise ---------------------------------------------------------------------------------

        /// <summary>torch-compatible standard normal noise (`ace_noise_fill`) written to
        /// out[offset .. offset + numel). <paramref name="optionsJson"/>: null = torch CPU. Returns the seed used.</summary>
        public static long NoiseFill(string optionsJson, long seed, long[] shape, float[] output, int offset, int count)
        {
            AceLibrary.Load();
            CheckRange(output, "output", offset, count);
            UIntPtr[] dims = Shape(shape);
            long used;
            fixed (UIntPtr* d = dims)
            fixed (float* o = output)
            {
                // count 0 passes a valid pointer: the core then reports the length mismatch.
                AceException.Check(NativeMethods.ace_noise_fill(Utf8.Encode(optionsJson), seed, d, Size(shape.Length),
                    o + offset, Size(count), out used));
            }
            return used;
        }

        public static float[] Randn(long[] shape, long seed, string optionsJson, out long seedUsed)
        {
            long n = 1;
            foreach (long d in shape) n = checked(n * d);
            var output = new float[n];
            seedUsed = NoiseFill(optionsJson, seed, shape, output, 0, output.Length);
            return output;
        }

        // -- frames, tiling, peak guard ------------------------------------------------------------

        public static uint FramesFromDuration(double seconds)
        {
            AceLibrary.Load();
            uint frames;
            AceException.Check(NativeMethods.ace_frames_from_duration(seconds, out frames));
            return frames;
        }

        public static uint DitFrames(uint frames)
        {
            AceLibrary.Load();
            uint outFrames;
            AceException.Check(NativeMethods.ace_frames_dit_length(frames, out outFrames));
            return outFrames;
        }

        public static ulong SamplesFromFrames(uint frames)
        {
            AceLibrary.Load();
            ulong samples;
            AceException.Check(NativeMethods.ace_frames_to_samples(frames, out samples));
            return samples;
        }

        /// <summary>The VAE tile plan for `frames` latent frames (official defaults 512 / 64).</summary>
        public static AceTileWindow[] VaeTilePlan(uint frames, uint chunk = 512, uint overlap = 64)
        {
            AceLibrary.Load();
            UIntPtr count;
            AceException.Check(NativeMethods.ace_vae_tile_count(frames, chunk, overlap, out count));
            var windows = new AceTileWindow[(int)count];
            fixed (AceTileWindow* w = windows)
                AceException.Check(NativeMethods.ace_vae_tile_plan(frames, chunk, overlap, w, count, out count));
            return windows;
        }

        /// <summary>Output peak guard in place on [batch, channels, samples] audio; returns the peaks
        /// measured before it.</summary>
        public static float[] PeakGuard(float[] audio, uint batch, uint channels, ulong samples)
        {
            AceLibrary.Load();
            if (audio == null)
                throw new ArgumentNullException("audio");
            var peaks = new float[batch];
            fixed (float* a = audio)
            fixed (float* p = peaks)
                AceException.Check(NativeMethods.ace_peak_guard(a, Size(audio.Length), batch, channels, samples, p, Size(peaks.Length)));
            return peaks;
        }

        // -- JSON-in, JSON-out helpers ---------------------------------------------------------------

        /// <summary>`ace_build_prompts`: every prompt string of a request (JSON in, JSON out).</summary>
        public static string BuildPrompts(string requestJson)
        {
            byte[] req = Utf8.Encode(requestJson);
            return CallString((out IntPtr r) => NativeMethods.ace_build_prompts(req, out r));
        }

        public static string TrackId(string paramsJson)
        {
            byte[] p = Utf8.Encode(paramsJson);
            return CallString((out IntPtr r) => NativeMethods.ace_track_id(p, out r));
        }

        public static string CanonicalJson(string paramsJson)
        {
            byte[] p = Utf8.Encode(paramsJson);
            return CallString((out IntPtr r) => NativeMethods.ace_track_canonical_json(p, out r));
        }
    }

    /// <summary>A loaded tokenizer (`AceTokenizer`). Immutable: may be shared between threads.</summary>
    public sealed unsafe class Tokenizer : IDisposable
    {
        public AceTokenizerHandle Handle { get; private set; }

        Tokenizer(AceTokenizerHandle handle) { Handle = handle; }

        public static Tokenizer FromFile(string path)
        {
            AceLibrary.Load();
            AceTokenizerHandle h;
            AceException.Check(NativeMethods.ace_tokenizer_create_from_file(Utf8.Encode(path), out h));
            return new Tokenizer(h);
        }

        public static Tokenizer FromJson(string json)
        {
            AceLibrary.Load();
            AceTokenizerHandle h;
            AceException.Check(NativeMethods.ace_tokenizer_create_from_json(Utf8.Encode(json), out h));
            return new Tokenizer(h);
        }

        public int VocabSize
        {
            get
            {
                UIntPtr n;
                AceException.Check(NativeMethods.ace_tokenizer_vocab_size(Handle, out n));
                return (int)n;
            }
        }

        public uint[] Encode(string text, bool addSpecialTokens)
        {
            if (text == null)
                throw new ArgumentNullException("text");
            byte[] raw = Utf8.Encode(text);
            // Each token covers at least one byte; the post-processor may add a few more.
            var ids = new uint[raw.Length + 8];
            UIntPtr n;
            AceStatus status;
            fixed (uint* p = ids)
                status = NativeMethods.ace_tokenizer_encode(Handle, raw, addSpecialTokens, p, (UIntPtr)ids.Length, out n);
            if (status == AceStatus.LengthMismatch && (ulong)n > (ulong)ids.Length)
            {
                ids = new uint[(int)n];
                fixed (uint* p = ids)
                    status = NativeMethods.ace_tokenizer_encode(Handle, raw, addSpecialTokens, p, (UIntPtr)ids.Length, out n);
            }
            AceException.Check(status);
            Array.Resize(ref ids, (int)n);
            return ids;
        }

        public string Decode(uint[] ids, bool skipSpecialTokens)
        {
            if (ids == null)
                throw new ArgumentNullException("ids");
            IntPtr s;
            fixed (uint* p = ids)
                AceException.Check(NativeMethods.ace_tokenizer_decode(Handle, p, (UIntPtr)ids.Length, skipSpecialTokens, out s));
            return Utf8.TakeString(s);
        }

        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>One generation's schedule and update rule (`AceContext`): the per-step ABI.
    /// Immutable after creation.</summary>
    public sealed unsafe class Context : IDisposable
    {
        public AceContextHandle Handle { get; private set; }

        public Context(string configJson)
        {
            AceLibrary.Load();
            AceContextHandle h;
            AceException.Check(NativeMethods.ace_create_context(Utf8.Encode(configJson), out h));
            Handle = h;
        }

        public int NumSteps
        {
            get
            {
                UIntPtr n;
                AceException.Check(NativeMethods.ace_context_num_steps(Handle, out n));
                return (int)n;
            }
        }

        public float[] Timesteps()
        {
            var t = new float[NumSteps];
            fixed (float* p = t)
                AceException.Check(NativeMethods.ace_context_timesteps(Handle, p, (UIntPtr)t.Length));
            return t;
        }

        public float TimestepInput(int step)
        {
            float t;
            AceException.Check(NativeMethods.ace_context_timestep_input(Handle, (UIntPtr)(uint)step, out t));
            return t;
        }

        public string InfoJson()
        {
            return Ace.CallString((out IntPtr r) => NativeMethods.ace_context_info(Handle, out r));
        }

        /// <summary>`ace_prepare_step_inputs`: what step `step` needs and does, as parsed JSON.</summary>
        public Dictionary<string, object> PrepareStepInputs(int step)
        {
            UIntPtr i = (UIntPtr)(uint)step;
            return Json.ParseObject(Ace.CallString((out IntPtr r) => NativeMethods.ace_prepare_step_inputs(Handle, i, out r)));
        }

        /// <summary>Starting latents: a copy of the noise, or the cover mix when the context has cover noise.</summary>
        public void InitialLatents(float[] noise, float[] src, long[] shape, float[] output)
        {
            SameLength(noise, "noise", output, "output");
            if (src != null) SameLength(noise, "noise", src, "src");
            UIntPtr[] dims = Ace.Shape(shape);
            fixed (float* n = noise)
            fixed (float* s = src)
            fixed (float* o = output)
            fixed (UIntPtr* d = dims)
                AceException.Check(NativeMethods.ace_context_initial_latents(Handle, n, s, d, (UIntPtr)shape.Length, o, (UIntPtr)output.Length));
        }

        /// <summary>`ace_scheduler_step`: out = step `step` applied to xt with velocity vt ([B, T, C]).</summary>
        public void Step(int step, float[] xt, float[] vt, long[] shape, float[] outXt)
        {
            SameLength(xt, "xt", vt, "vt");
            SameLength(xt, "xt", outXt, "outXt");
            if (ReferenceEquals(outXt, xt) || ReferenceEquals(outXt, vt))
                throw new ArgumentException("outXt must be a separate buffer (use StepInPlace)");
            UIntPtr[] dims = Ace.Shape(shape);
            fixed (float* x = xt)
            fixed (float* v = vt)
            fixed (float* o = outXt)
            fixed (UIntPtr* d = dims)
                AceException.Check(NativeMethods.ace_scheduler_step(Handle, (UIntPtr)(uint)step, x, v, d, (UIntPtr)shape.Length, o, (UIntPtr)xt.Length));
        }

        /// <summary>`ace_scheduler_step_inplace`: xt updated in place (unchanged on error).</summary>
        public void StepInPlace(int step, float[] xt, float[] vt, long[] shape)
        {
            SameLength(xt, "xt", vt, "vt");
            if (ReferenceEquals(xt, vt))
                throw new ArgumentException("vt must not be xt");
            UIntPtr[] dims = Ace.Shape(shape);
            fixed (float* x = xt)
            fixed (float* v = vt)
            fixed (UIntPtr* d = dims)
                AceException.Check(NativeMethods.ace_scheduler_step_inplace(Handle, (UIntPtr)(uint)step, x, v, d, (UIntPtr)shape.Length, (UIntPtr)xt.Length));
        }

        // The core checks each length against the shape; the buffers among themselves are checked
        // here, since the core takes one `len` for all of them.
        static void SameLength(float[] a, string an, float[] b, string bn)
        {
            if (a == null) throw new ArgumentNullException(an);
            if (b == null) throw new ArgumentNullException(bn);
            if (a.Length != b.Length)
                throw new ArgumentException(bn + " has " + b.Length + " values but " + an + " has " + a.Length);
        }

        public void Dispose() { Handle.Dispose(); }
    }
}
