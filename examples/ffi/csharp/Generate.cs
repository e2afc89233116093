// text2music with a turbo model package, written against the per-step C ABI of the core:
//   prompts, tokenizer, noise, context + scheduler steps, VAE tile plan and peak guard come from
//   acestep_runtime (ace_*); the networks run on ONNX Runtime; the loop is here.
// It does what the Python host's Pipeline.generate does on the turbo path, step for step, so the
// same package, request and seed give the same audio.
//
//   mono Generate.exe --model PKG --request REQUEST.json --out DIR [--threads N] [--device cpu]
//                     [--ort-lib /path/to/libonnxruntime.so] [--timeout SECONDS] [--dump DIR]
// Writes DIR/seed<SEED>.wav (32-bit float, 48 kHz stereo) per batch item, atomically. Ctrl+C or the
// timeout cancels between two graph runs, and then nothing is written.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Threading;
using AceStep.Runtime;
using AceStep.Runtime.Host;
using AceStep.Runtime.Inference;

static class Generate
{
    const int Channels = 64;          // latent channels
    const int TimbreFrames = 750;     // reference-audio frames of the condition encoder
    const int SampleRate = 48000;

    static int Main(string[] args)
    {
        var opts = ParseArgs(args);
        if (opts == null)
        {
            Console.Error.WriteLine("usage: Generate.exe --model PKG --request FILE --out DIR [--threads N] [--device auto|cpu|cuda] [--ort-lib PATH] [--timeout SECONDS] [--dump DIR]");
            return 2;
        }
        var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (sender, e) => { e.Cancel = true; cancel.Cancel(); };
        string timeout;
        if (opts.TryGetValue("timeout", out timeout))
            cancel.CancelAfter(TimeSpan.FromSeconds(double.Parse(timeout, CultureInfo.InvariantCulture)));
        try
        {
            Run(opts, cancel.Token);
            return 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled: nothing was written");
            return 130;
        }
        catch (Exception e) when (e is AceException || e is OrtException || e is PackageException || e is ArgumentException
                                  || e is IOException || e is FormatException || e is NotSupportedException || e is DllNotFoundException
                                  || e is InvalidOperationException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 1;
        }
    }

    static Dictionary<string, string> ParseArgs(string[] args)
    {
        var o = new Dictionary<string, string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--") || i + 1 >= args.Length)
                return null;
            o[args[i].Substring(2)] = args[++i];
        }
        return o.ContainsKey("model") && o.ContainsKey("request") && o.ContainsKey("out") ? o : null;
    }

    static void Run(Dictionary<string, string> opts, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        Request req = Request.FromFile(opts["request"]);
        PackageManifest pkg = PackageManifest.Open(opts["model"]);
        string kind = pkg.ModelKind();
        if (kind != "turbo")
            throw new NotSupportedException("this example runs turbo packages only (the package is " + kind + "); guided base/sft runs come with the generation driver");
        int? threads = opts.ContainsKey("threads") ? int.Parse(opts["threads"], CultureInfo.InvariantCulture) : (int?)null;
        string device = opts.ContainsKey("device") ? opts["device"] : "auto";
        string ortLib;
        opts.TryGetValue("ort-lib", out ortLib);

        using (var ort = new OrtBackend(ortLib, device, threads))
        using (var tokenizer = Tokenizer.FromFile(pkg.TokenizerPath("text")))
        using (var text = ort.Open("text_encoder", pkg.ComponentPath("text_encoder")))
        using (var lyric = ort.Open("lyric_embedding", pkg.ComponentPath("lyric_embedding")))
        using (var cond = ort.Open("condition_encoder", pkg.ComponentPath("condition_encoder")))
        using (var crossKv = ort.Open("dit_cross_kv", pkg.ComponentPath("dit_cross_kv")))
        using (var dit = ort.Open("dit_decoder", pkg.ComponentPath("dit_decoder")))
        using (var vae = ort.Open("vae_decoder", pkg.ComponentPath("vae_decoder")))
        {
            Console.Error.WriteLine("core " + Ace.Version + ", ONNX Runtime " + ort.OrtVersion + " (" + ort.Device + ")");
            long[] silenceShape;
            float[] silence = pkg.Array("silence_latent", out silenceShape); // [1, 15000, 64]
            int batch = req.BatchSize;

            // 1. Frames: the duration decides T; the DiT runs at max(128, T).
            uint frames = Ace.DitFrames(Ace.FramesFromDuration(req.Duration ?? 30.0));
            int T = (int)frames;

            // 2. Prompts (core) and tokens (core), truncated like HF `truncation=True`.
            var promptRequest = new Dictionary<string, object>
            {
                { "caption", req.Caption }, { "lyrics", req.Lyrics }, { "instrumental", req.Instrumental },
                { "language", req.VocalLanguage }, { "has_codes", false },
            };
            if (req.Bpm.HasValue) promptRequest["bpm"] = req.Bpm.Value;
            if (req.Keyscale != null) promptRequest["keyscale"] = req.Keyscale;
            if (req.TimeSignature != null) promptRequest["timesignature"] = req.TimeSignature;
            if (req.Duration.HasValue) promptRequest["duration"] = req.Duration.Value;
            var prompts = Json.ParseObject(Ace.BuildPrompts(Json.Write(promptRequest)));
            long[] captionIds = Tokenize(tokenizer, (string)prompts["dit_caption"], pkg.ConfigInt("text_encoder", "caption_max_length", 256));
            long[] lyricIds = Tokenize(tokenizer, (string)prompts["dit_lyrics"], pkg.ConfigInt("text_encoder", "lyric_max_length", 2048));

            // 3. Encoders: one request → B identical rows, masks all ones.
            long[] captionBatch = Repeat(captionIds, batch), lyricBatch = Repeat(lyricIds, batch);
            long[] captionMask = Ones(captionBatch.Length), lyricMask = Ones(lyricBatch.Length);
            Tensor textHidden = text.Run(new Dictionary<string, Tensor> {
                { "input_ids", Tensor.Int64(captionBatch, batch, captionIds.Length) },
                { "attention_mask", Tensor.Int64(captionMask, batch, captionIds.Length) } })[0];
            Tensor lyricHidden = lyric.Run(new Dictionary<string, Tensor> {
                { "input_ids", Tensor.Int64(lyricBatch, batch, lyricIds.Length) } })[0];
            var order = new long[batch];
            for (int b = 0; b < batch; b++) order[b] = b;
            Tensor[] encoded = cond.Run(new Dictionary<string, Tensor> {
                { "text_hidden_states", textHidden },
                { "text_attention_mask", Tensor.Int64(captionMask, batch, captionIds.Length) },
                { "lyric_hidden_states", lyricHidden },
                { "lyric_attention_mask", Tensor.Int64(lyricMask, batch, lyricIds.Length) },
                { "refer_audio_packed", Tensor.Float(RepeatFrames(silence, TimbreFrames, batch), batch, TimbreFrames, Channels) },
                { "refer_audio_order_mask", Tensor.Int64(order, batch) },
                { "src_latents", Tensor.Float(RepeatFrames(silence, T, batch), batch, T, Channels) },
                { "chunk_masks", Tensor.Float(Fill(batch * T * Channels, 1f), batch, T, Channels) } });
            Tensor enc = encoded[0], context = encoded[2]; // outputs: encoder states, their mask, context latents
            // Every DiT layer's cross-attention K/V of the encoder states: computed once, read by every step.
            Tensor kv = crossKv.Run(new Dictionary<string, Tensor> { { "encoder_hidden_states", enc } })[0];

            // 4. Noise (core, torch-compatible): one generator per item, [1, T, 64] each.
            long[] shape = { batch, T, Channels };
            int itemLen = T * Channels;
            var x = new float[batch * itemLen];
            var seedsUsed = new List<long>();
            string noiseOptions = Json.Write(new Dictionary<string, object> { { "mode", req.NoiseMode } });
            for (int b = 0; b < batch; b++)
                seedsUsed.Add(Ace.NoiseFill(noiseOptions, req.SeedFor(b), new long[] { 1, T, Channels }, x, b * itemLen, itemLen));

            // 5. The DiT loop over the per-step ABI: the context says what each step is, the core applies it.
            var config = new Dictionary<string, object> {
                { "model", kind }, { "method", req.InferMethod }, { "seeds", seedsUsed },
                { "noise", new Dictionary<string, object> { { "mode", req.NoiseMode } } } };
            if (req.Shift.HasValue) config["shift"] = req.Shift.Value;
            if (req.Timesteps != null) config["timesteps"] = req.Timesteps;
            var next = new float[x.Length];
            using (var ctx = new Context(Json.Write(config)))
            {
                int steps = ctx.NumSteps;
                var t = new float[batch];
                for (int i = 0; i < steps; i++)
                {
                    cancel.ThrowIfCancellationRequested();
                    var plan = ctx.PrepareStepInputs(i);
                    float tInput = ctx.TimestepInput(i);
                    if ((float)Convert.ToDouble(plan["timestep_input"], CultureInfo.InvariantCulture) != tInput)
                        throw new InvalidOperationException("step " + i + ": ace_prepare_step_inputs and ace_context_timestep_input disagree");
                    for (int b = 0; b < batch; b++) t[b] = tInput;
                    Tensor v = dit.Run(new Dictionary<string, Tensor> {
                        { "hidden_states", Tensor.Float(x, shape) },
                        { "timestep", Tensor.Float(t, batch) }, { "timestep_r", Tensor.Float(t, batch) },
                        { "context_latents", context }, { "cross_kv", kv } })[0];
                    ctx.Step(i, x, v.Floats, shape, next);
                    var swap = x; x = next; next = swap;
                    Console.Error.WriteLine("diffusion " + (i + 1) + "/" + steps + " (" + plan["update"] + ", t=" + tInput.ToString("R", CultureInfo.InvariantCulture) + ")");
                }
            }

            // 6. Tiled VAE decode (core's plan) of [B, 64, T] latents, then the peak guard (core).
            ulong samples = Ace.SamplesFromFrames(frames);
            var audio = new float[(long)batch * 2 * (long)samples];
            var z = Transpose(x, batch, T, Channels); // [B, T, 64] → [B, 64, T]
            long written = 0;
            foreach (AceTileWindow w in Ace.VaeTilePlan(frames))
            {
                cancel.ThrowIfCancellationRequested();
                int width = (int)(w.End - w.Start);
                var window = new float[batch * Channels * width];
                for (int b = 0; b < batch; b++)
                    for (int c = 0; c < Channels; c++)
                        Array.Copy(z, ((long)b * Channels + c) * T + w.Start, window, ((long)b * Channels + c) * width, width);
                Tensor piece = vae.Run(new Dictionary<string, Tensor> { { "latents", Tensor.Float(window, batch, Channels, width) } })[0];
                long n = piece.Shape[2], keep = n - (long)w.CropLeft - (long)w.CropRight;
                for (int b = 0; b < batch; b++)
                    for (int ch = 0; ch < 2; ch++)
                        Array.Copy(piece.Floats, ((long)b * 2 + ch) * n + (long)w.CropLeft,
                                   audio, ((long)b * 2 + ch) * (long)samples + written, keep);
                written += keep;
            }
            if (written != (long)samples)
                throw new InvalidOperationException("tile plan covered " + written + " samples, expected " + samples);
            float[] peaks = Ace.PeakGuard(audio, (uint)batch, 2, samples);

            cancel.ThrowIfCancellationRequested();
            // 7. Files: one float WAV per item, written atomically.
            Directory.CreateDirectory(opts["out"]);
            for (int b = 0; b < batch; b++)
            {
                string path = Path.Combine(opts["out"], "seed" + seedsUsed[b] + ".wav");
                Wav.WriteAtomic(path, Wav.EncodeFloat32(audio, (int)((long)b * 2 * (long)samples), 2, (int)samples, SampleRate));
                Console.WriteLine(path + " (peak before guard " + peaks[b].ToString("R", CultureInfo.InvariantCulture) + ")");
            }
            string dump;
            if (opts.TryGetValue("dump", out dump))
            {
                Directory.CreateDirectory(dump);
                WriteFloats(Path.Combine(dump, "latents.f32"), x);
                WriteFloats(Path.Combine(dump, "audio.f32"), audio);
            }
            Console.Error.WriteLine("done in " + clock.Elapsed.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) +
                " s (ONNX Runtime runs " + ort.RunTime.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s)");
        }
    }

    static long[] Tokenize(Tokenizer tok, string text, int maxLength)
    {
        uint[] ids = tok.Encode(text, true);
        if (ids.Length > maxLength)
        {
            // HF truncation: cut the content so the post-processor's appended tokens still fit.
            uint[] content = tok.Encode(text, false);
            int tail = ids.Length - content.Length;
            for (int i = 0; i < content.Length; i++)
                if (ids[i] != content[i])
                    throw new PackageException("text tokenizer post-processor does not append to the end; cannot truncate");
            var cut = new uint[maxLength];
            Array.Copy(content, cut, maxLength - tail);
            Array.Copy(ids, content.Length, cut, maxLength - tail, tail);
            ids = cut;
        }
        return Array.ConvertAll(ids, v => (long)v);
    }

    static long[] Repeat(long[] row, int times)
    {
        var r = new long[row.Length * times];
        for (int i = 0; i < times; i++) Array.Copy(row, 0, r, i * row.Length, row.Length);
        return r;
    }

    static long[] Ones(int n) { var r = new long[n]; for (int i = 0; i < n; i++) r[i] = 1; return r; }

    static float[] Fill(int n, float value) { var r = new float[n]; for (int i = 0; i < n; i++) r[i] = value; return r; }

    // The first `frames` frames of silence_latent[0], repeated for each batch item: [B, frames, 64].
    static float[] RepeatFrames(float[] silence, int frames, int batch)
    {
        if ((long)frames * Channels > silence.Length)
            throw new ArgumentException(frames + " latent frames exceed the silence latent's " + silence.Length / Channels);
        var r = new float[(long)batch * frames * Channels];
        for (int b = 0; b < batch; b++) Array.Copy(silence, 0, r, (long)b * frames * Channels, (long)frames * Channels);
        return r;
    }

    static float[] Transpose(float[] x, int batch, int frames, int channels)
    {
        var z = new float[x.Length];
        for (int b = 0; b < batch; b++)
            for (int f = 0; f < frames; f++)
                for (int c = 0; c < channels; c++)
                    z[((long)b * channels + c) * frames + f] = x[((long)b * frames + f) * channels + c];
        return z;
    }

    static void WriteFloats(string path, float[] data)
    {
        var bytes = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
        Wav.WriteAtomic(path, bytes);
    }
}
