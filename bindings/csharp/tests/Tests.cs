// The C# test runner: `mono Tests.exe` runs every test and prints "N passed, N failed" (exit code 1
// on any failure). Inputs come from the environment: ACESTEP_HEADER (include/acestep_runtime.h),
// ACESTEP_TEST_PACKAGE (a model package, for the tokenizer and ORT tests) and ACESTEP_ORT_LIB.
// `mono Tests.exe noise SEED MODE D0 D1 ... OUT.f32` writes core noise for the Python parity test.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using AceStep.Runtime;
using AceStep.Runtime.Host;
using AceStep.Runtime.Inference;

static class Tests
{
    static int passed, failed;

    static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "noise")
            return NoiseCommand(args);
        if (args.Length > 0 && args[0] == "load-library")
            return LoadLibraryCommand();
        if (args.Length > 0 && args[0] == "layout")
            return LayoutCommand();
        if (args.Length > 0 && args[0] == "wav")
            return WavCommand(args);
        if (args.Length > 0 && args[0] == "generate")
            return GenerateCommand(args);
        if (args.Length > 0 && args[0] == "json")
        {
            // json IN OUT: read a JSON file and write it back with indent 2 (for the layout test).
            File.WriteAllText(args[2], Json.Write(Json.Parse(File.ReadAllText(args[1])), 2), new System.Text.UTF8Encoding(false));
            return 0;
        }

        Run("NativeMethods covers every ace_* function of the header", HeaderCoverage);
        Run("ABI version and version string", AbiVersion);
        Run("bad JSON -> AceException with the core's status and message", BadJson);
        Run("error JSON and plain last-error text agree", ErrorJsonMatchesText);
        Run("null (invalid) handle -> NullPointer, not a crash", NullHandle);
        Run("wrong lengths -> LengthMismatch / ArgumentException", WrongLengths);
        Run("disposing twice is harmless; use after dispose throws", DisposeTwice);
        Run("UTF-8 round trip through the core (canonical JSON)", Utf8RoundTrip);
        Run("Context: schedule, step plan and a step match the formulas", ContextStep);
        Run("tile plan covers 1920*T samples", TilePlan);
        Run("peak guard scales every item by max(peak, 1)", PeakGuard);
        Run("JSON reader/writer round trip", JsonRoundTrip);
        Run("WAV encoder writes the float layout", WavLayout);
        string pkg = Environment.GetEnvironmentVariable("ACESTEP_TEST_PACKAGE");
        if (!string.IsNullOrEmpty(pkg))
        {
            Run("tokenizer from the package: encode/decode round trip", () => TokenizerRoundTrip(pkg));
            Run("ORT: session names, run, wrong input -> exception naming the graph", () => OrtSessions(pkg));
            Run("ORT: missing graph -> exception naming it", () => OrtMissingGraph(pkg));
            Run("every object type: create, use, release (APG, Heun, sampler, FSM)", () => EveryHandle(pkg));
            // One open package for the driver tests (opening one loads its tokenizers: ~1 s here).
            using (var package = ModelPackage.Open(pkg))
            {
                Run("package: open, info, normalize; missing package -> Io naming it", () => PackageInfo(pkg, package));
                Run("generation misuse -> AceException with the core's status and message", () => GenerationMisuse(package));
                Run("pipeline: cancel between graph runs writes nothing; sessions reused; no silent overwrite", () => PipelineCancelAndSave(package));
                Run("pipeline: sessions open in parallel; a failed open throws itself, the others are kept", () => PipelineParallelOpen(package));
            }
        }
        else
        {
            Console.WriteLine("FAIL  ACESTEP_TEST_PACKAGE is not set: the package tests did not run");
            failed++;
        }
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }

    static void Run(string name, Action test)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            test();
            passed++;
            Console.WriteLine("ok    " + name + " (" + clock.ElapsedMilliseconds + " ms)");
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL  " + name + ": " + e.GetType().Name + ": " + e.Message);
        }
    }

    static void Assert(bool condition, string message) { if (!condition) throw new Exception(message); }

    static T Throws<T>(Action action, string what) where T : Exception
    {
        try { action(); }
        catch (T e) { return e; }
        catch (Exception e) { throw new Exception(what + ": expected " + typeof(T).Name + ", got " + e.GetType().Name + ": " + e.Message); }
        throw new Exception(what + ": expected " + typeof(T).Name + ", nothing was thrown");
    }

    // -- the table against the header ------------------------------------------------------------

    static void HeaderCoverage()
    {
        string header = Environment.GetEnvironmentVariable("ACESTEP_HEADER");
        Assert(!string.IsNullOrEmpty(header) && File.Exists(header), "set ACESTEP_HEADER to include/acestep_runtime.h (got '" + header + "')");
        // A declaration is one line: `<return type> ace_name(<params>);` (cbindgen writes them so).
        var decl = new Regex(@"^\s*[A-Za-z_][\w\s\*]*?\b(ace_\w+)\((.*)\);\s*$");
        var inHeader = new Dictionary<string, int>();
        foreach (string line in File.ReadAllLines(header))
        {
            Match m = decl.Match(line);
            if (!m.Success) continue;
            string ps = m.Groups[2].Value.Trim();
            inHeader[m.Groups[1].Value] = ps == "void" || ps == "" ? 0 : ps.Split(',').Length;
        }
        Assert(inHeader.ContainsKey("ace_abi_version") && inHeader.ContainsKey("ace_noise_fill") && inHeader.Count >= 50,
            "the header parser found only " + inHeader.Count + " functions: it no longer understands the header");
        var inTable = new Dictionary<string, int>();
        foreach (MethodInfo m in typeof(NativeMethods).GetMethods(BindingFlags.Public | BindingFlags.Static))
        {
            var import = m.GetCustomAttributes(typeof(DllImportAttribute), false).Cast<DllImportAttribute>().FirstOrDefault();
            if (import == null) continue;
            Assert(import.Value == NativeMethods.LibName, m.Name + " imports from " + import.Value);
            inTable[import.EntryPoint ?? m.Name] = m.GetParameters().Length;
        }
        var missing = inHeader.Keys.Where(k => !inTable.ContainsKey(k)).OrderBy(k => k).ToList();
        var extra = inTable.Keys.Where(k => !inHeader.ContainsKey(k)).OrderBy(k => k).ToList();
        var arity = inHeader.Keys.Where(k => inTable.ContainsKey(k) && inTable[k] != inHeader[k])
            .Select(k => k + " (header " + inHeader[k] + ", table " + inTable[k] + ")").ToList();
        var problems = new List<string>();
        if (missing.Count > 0) problems.Add(missing.Count + " header function(s) missing from NativeMethods: " + string.Join(", ", missing));
        if (extra.Count > 0) problems.Add("NativeMethods has functions the header lacks: " + string.Join(", ", extra));
        if (arity.Count > 0) problems.Add("parameter counts differ: " + string.Join(", ", arity));
        Assert(problems.Count == 0, string.Join("; ", problems));
    }

    static void AbiVersion()
    {
        Assert(Ace.AbiVersion == 1, "ABI version " + Ace.AbiVersion);
        Assert(Regex.IsMatch(Ace.Version, @"^\d+\.\d+\.\d+"), "version string '" + Ace.Version + "'");
    }

    // -- errors ------------------------------------------------------------------------------------

    static void BadJson()
    {
        var e = Throws<AceException>(() => new Context("{\"model\": \"turbo\",,}"), "malformed JSON");
        Assert(e.Status == AceStatus.InvalidJson, "status " + e.Status);
        Assert(e.StatusName == "invalid_json", "name " + e.StatusName);
        Assert(e.CoreMessage.Length > 0 && e.Message.Contains(e.CoreMessage), "message '" + e.Message + "'");
        // The message is the core's: the same text ace_last_error gives right after the raw call.
        AceContextHandle h;
        AceStatus s = NativeMethods.ace_create_context(Utf8.Encode("{\"model\": \"turbo\",,}"), out h);
        IntPtr raw;
        NativeMethods.ace_last_error(out raw);
        string text = Utf8.TakeString(raw);
        Assert(s == AceStatus.InvalidJson && text == e.CoreMessage, "core says '" + text + "', exception '" + e.CoreMessage + "'");
        Assert(h.IsInvalid, "a handle came back from a failed create");
        // An unknown key is an error that names it.
        var k = Throws<AceException>(() => new Context("{\"model\": \"turbo\", \"shfit\": 3}"), "unknown key");
        Assert(k.Status == AceStatus.InvalidJson && k.CoreMessage.Contains("shfit"), k.Message);
        var v = Throws<AceException>(() => Ace.FramesFromDuration(5.0), "duration below range");
        Assert(v.Status == AceStatus.InvalidArgument && v.CoreMessage.Contains("5"), v.Message);
    }

    static void ErrorJsonMatchesText()
    {
        uint frames;
        AceStatus s = NativeMethods.ace_frames_from_duration(double.NaN, out frames);
        Assert(s == AceStatus.InvalidArgument, "status " + s);
        var e = AceException.FromLastError(s);
        IntPtr raw;
        NativeMethods.ace_last_error(out raw);
        Assert(Utf8.TakeString(raw) == e.CoreMessage, "json and text messages differ");
        // A success clears the last error.
        Assert(Ace.FramesFromDuration(30.0) == 750, "30 s is not 750 frames");
        NativeMethods.ace_last_error(out raw);
        Assert(Utf8.TakeString(raw) == "", "last error not cleared by a success");
    }

    static void NullHandle()
    {
        using (var invalid = new AceContextHandle())
        {
            UIntPtr n;
            AceStatus s = NativeMethods.ace_context_num_steps(invalid, out n);
            Assert(s == AceStatus.NullPointer, "status " + s);
            var e = AceException.FromLastError(s);
            Assert(e.StatusName == "null_pointer" && e.CoreMessage.Length > 0, e.Message);
        }
        AceStatus st = NativeMethods.ace_version_string(out _);
        Assert(st == AceStatus.Ok, "ace_version_string failed");
        unsafe
        {
            long used;
            UIntPtr[] shape = { (UIntPtr)4 };
            fixed (UIntPtr* d = shape)
                st = NativeMethods.ace_noise_fill(null, 1, d, (UIntPtr)1, null, (UIntPtr)4, out used);
        }
        Assert(st == AceStatus.NullPointer, "noise into NULL: " + st);
    }

    static void WrongLengths()
    {
        using (var ctx = new Context("{\"model\": \"turbo\"}"))
        {
            var x = new float[2 * 3 * 4];
            var v = new float[x.Length];
            var o = new float[x.Length];
            var e = Throws<AceException>(() => ctx.Step(0, x, v, new long[] { 2, 3, 5 }, o), "shape product != len");
            Assert(e.Status == AceStatus.LengthMismatch, "status " + e.Status);
            Throws<ArgumentException>(() => ctx.Step(0, x, new float[5], new long[] { 2, 3, 4 }, o), "vt shorter than xt");
            var r = Throws<AceException>(() => ctx.Step(99, x, v, new long[] { 2, 3, 4 }, o), "step out of range");
            Assert(r.Status == AceStatus.InvalidArgument, "status " + r.Status);
        }
        var n = Throws<AceException>(() => Ace.NoiseFill(null, 1, new long[] { 2, 3 }, new float[10], 0, 10), "6 values into 10");
        Assert(n.Status == AceStatus.LengthMismatch, "status " + n.Status);
        Throws<ArgumentOutOfRangeException>(() => Ace.NoiseFill(null, 1, new long[] { 6 }, new float[10], 8, 6), "offset past the end");
        var z = Throws<AceException>(() => Ace.NoiseFill(null, 1, new long[] { 0, 3 }, new float[3], 0, 0), "zero dimension");
        Assert(z.Status == AceStatus.LengthMismatch, "status " + z.Status);
    }

    static void DisposeTwice()
    {
        var ctx = new Context("{\"model\": \"turbo\"}");
        Assert(ctx.NumSteps == 8, "turbo steps " + ctx.NumSteps);
        ctx.Dispose();
        ctx.Dispose();
        Throws<ObjectDisposedException>(() => { var _ = ctx.NumSteps; }, "use after dispose");
    }

    static void Utf8RoundTrip()
    {
        // Canonical form = Python json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False).
        string canonical = Ace.CanonicalJson("{\"b\": 1, \"a\": \"h\u00e9llo \u2713 \u65e5\u672c \ud83c\udfb5\"}");
        Assert(canonical == "{\"a\":\"h\u00e9llo \u2713 \u65e5\u672c \ud83c\udfb5\",\"b\":1}", "canonical " + canonical);
        Throws<ArgumentException>(() => Utf8.Encode("a\0b"), "embedded NUL");
        string id = Ace.TrackId("{\"a\": 1}");
        Assert(Regex.IsMatch(id, "^[0-9a-f]{64}$"), "track id " + id);
        // SHA-256 of the canonical text, computed here independently.
        using (var sha = System.Security.Cryptography.SHA256.Create())
        {
            string expect = BitConverter.ToString(sha.ComputeHash(System.Text.Encoding.UTF8.GetBytes("{\"a\":1}"))).Replace("-", "").ToLowerInvariant();
            Assert(id == expect, "track id " + id + " != sha256 " + expect);
        }
    }

    static void ContextStep()
    {
        using (var ctx = new Context("{\"model\": \"turbo\", \"shift\": 3.0}"))
        {
            float[] ts = ctx.Timesteps();
            Assert(ts.Length == 8, "8 turbo steps");
            for (int i = 0; i < 8; i++)
            {
                // s·t/(1+(s−1)t), t = 1 − i/8, s = 3 (spec §4.1), computed in double and rounded once.
                double t = 1.0 - i / 8.0, expect = 3 * t / (1 + 2 * t);
                Assert(ts[i] == (float)expect, "t[" + i + "] = " + ts[i] + ", formula " + (float)expect);
                Assert(ctx.TimestepInput(i) == ts[i], "timestep input " + i);
            }
            var plan = ctx.PrepareStepInputs(0);
            Assert((string)plan["update"] == "ode" && !(bool)plan["is_last"], "step 0 plan " + Json.Write(plan));
            Assert((string)ctx.PrepareStepInputs(7)["update"] == "x0", "last step is x0");
            // ODE step: x − v·(t − t_next) with dt in float32 (as the reference does).
            var x = new float[] { 0.5f, -1.25f, 2f, 0.125f, 3f, -0.75f };
            var v = new float[] { 0.25f, 0.5f, -1f, 1.5f, -0.25f, 2f };
            var o = new float[6];
            ctx.Step(0, x, v, new long[] { 1, 2, 3 }, o);
            float dt = ts[0] - ts[1];
            for (int i = 0; i < 6; i++)
                Assert(o[i] == x[i] - v[i] * dt, "ode step value " + i + ": " + o[i] + " vs " + (x[i] - v[i] * dt));
            ctx.Step(7, x, v, new long[] { 1, 2, 3 }, o);
            for (int i = 0; i < 6; i++)
                Assert(o[i] == x[i] - v[i] * ts[7], "x0 value " + i);
            var inPlace = (float[])x.Clone();
            ctx.StepInPlace(0, inPlace, v, new long[] { 1, 2, 3 });
            ctx.Step(0, x, v, new long[] { 1, 2, 3 }, o);
            Assert(inPlace.SequenceEqual(o), "in-place step differs from the out-of-place one");
        }
    }

    static void TilePlan()
    {
        foreach (uint frames in new uint[] { 128, 512, 513, 1500, 15000 })
        {
            AceTileWindow[] plan = Ace.VaeTilePlan(frames);
            ulong total = 0;
            foreach (var w in plan)
            {
                Assert(w.Start <= w.CoreStart && w.CoreStart < w.CoreEnd && w.CoreEnd <= w.End && w.End <= frames, "window bounds");
                total += (ulong)(w.End - w.Start) * 1920 - w.CropLeft - w.CropRight;
            }
            Assert(total == 1920UL * frames, frames + " frames: " + total + " samples");
            Assert(plan.Length == (frames <= 512 ? 1 : (int)Math.Ceiling(frames / 384.0)), frames + " frames: " + plan.Length + " windows");
        }
    }

    static void PeakGuard()
    {
        // batch 2, channels 2, 3 samples: item 0 peaks at 4, item 1 at 0.5.
        var audio = new float[] { 1f, -4f, 2f, 0.5f, 0f, 1f, 0.25f, -0.5f, 0f, 0.1f, 0.2f, 0.3f };
        var before = (float[])audio.Clone();
        float[] peaks = Ace.PeakGuard(audio, 2, 2, 3);
        Assert(peaks[0] == 4f && peaks[1] == 0.5f, "peaks " + peaks[0] + ", " + peaks[1]);
        for (int i = 0; i < 6; i++) Assert(audio[i] == before[i] / 4f, "item 0 scaled");
        for (int i = 6; i < 12; i++) Assert(audio[i] == before[i], "item 1 unchanged");
    }

    static void JsonRoundTrip()
    {
        string text = "{\"a\": [1, 2.5, -3e-2, true, null, \"x\\n\\u00e9\"], \"b\": {\"c\": \"\"}}";
        var obj = Json.ParseObject(text);
        var a = (List<object>)obj["a"];
        Assert((long)a[0] == 1 && (double)a[1] == 2.5 && (double)a[2] == -0.03 && (bool)a[3] && a[4] == null && (string)a[5] == "x\n\u00e9", "parsed values");
        Assert(Json.Write(obj) == "{\"a\":[1,2.5,-0.03,true,null,\"x\\n\u00e9\"],\"b\":{\"c\":\"\"}}", "written " + Json.Write(obj));
        Assert(Json.Write(0.1f) == "0.10000000149011612" && Json.Write(30.0) == "30.0", "float formatting");
        Throws<FormatException>(() => Json.Parse("{\"a\": }"), "bad JSON");
        Throws<ArgumentException>(() => Json.Write(double.NaN), "NaN");
    }

    static void WavLayout()
    {
        var audio = new float[] { 0.5f, -0.5f, 0.25f, 1f, 0f, -1f }; // [2 channels, 3 samples]
        byte[] wav = Wav.EncodeFloat32(audio, 0, 2, 3, 48000);
        Assert(wav.Length == 12 + 24 + 12 + (8 + 24) + 8 + 24, "length " + wav.Length);
        Assert(System.Text.Encoding.ASCII.GetString(wav, 0, 4) == "RIFF" && BitConverter.ToUInt32(wav, 4) == wav.Length - 8, "RIFF size");
        Assert(BitConverter.ToUInt16(wav, 20) == 3 && BitConverter.ToUInt16(wav, 22) == 2 && BitConverter.ToUInt32(wav, 24) == 48000, "fmt");
        int data = wav.Length - 24;
        var expectInterleaved = new float[] { 0.5f, 1f, -0.5f, 0f, 0.25f, -1f };
        for (int i = 0; i < 6; i++) Assert(BitConverter.ToSingle(wav, data + 4 * i) == expectInterleaved[i], "interleaving at " + i);
        string dir = Path.Combine(Path.GetTempPath(), "acestep_wav_" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "a.wav");
            Wav.WriteAtomic(path, wav);
            Wav.WriteAtomic(path, wav); // replaces
            Assert(File.ReadAllBytes(path).SequenceEqual(wav), "file bytes");
            Assert(Directory.GetFiles(dir).Length == 1, "temporary files left behind");
            Throws<DirectoryNotFoundException>(() => Wav.WriteAtomic(Path.Combine(dir, "no", "a.wav"), wav), "missing directory");
        }
        finally { Directory.Delete(dir, true); }
    }

    // -- with a package --------------------------------------------------------------------------

    static void TokenizerRoundTrip(string pkg)
    {
        using (var tok = Tokenizer.FromFile(PackageManifest.Open(pkg).TokenizerPath("text")))
        {
            string text = "caf\u00e9 \u2014 \u65e5\u672c\u8a9e lyrics";
            uint[] ids = tok.Encode(text, false);
            Assert(ids.Length > 0, "no ids");
            Assert(tok.Decode(ids, false) == text, "decode gives '" + tok.Decode(ids, false) + "'");
            Assert(tok.VocabSize > 1000, "vocab " + tok.VocabSize);
        }
        var e = Throws<AceException>(() => Tokenizer.FromFile("/nonexistent/tokenizer.json"), "missing tokenizer file");
        Assert(e.Status == AceStatus.Io && e.CoreMessage.Contains("/nonexistent/tokenizer.json"), e.Message);
    }

    static unsafe void EveryHandle(string pkg)
    {
        // APG, first call: running = d = cond − uncond; with norm_threshold 0 (no clip) and a d
        // orthogonal to cond per (b, c), out = cond + (g − 1)·d.
        AceApgHandle apg;
        AceException.Check(NativeMethods.ace_apg_create(Utf8.Encode("{\"norm_threshold\": 0}"), out apg));
        using (apg)
        {
            float[] cond = { 1f, 0f }, uncond = { 1f, -2f }, o = new float[2]; // d = (0, 2) ⟂ cond
            fixed (float* c = cond) fixed (float* u = uncond) fixed (float* r = o)
                AceException.Check(NativeMethods.ace_apg_apply(apg, c, u, r, (UIntPtr)2, 1, 2, 1, 3.0));
            Assert(o[0] == 1f && o[1] == 4f, "apg out " + o[0] + ", " + o[1]);
            ulong calls;
            AceException.Check(NativeMethods.ace_apg_calls(apg, out calls));
            Assert(calls == 1, "apg calls " + calls);
        }
        AceHeunHandle heun;
        AceException.Check(NativeMethods.ace_heun_create(10.0, out heun));
        using (heun)
        {
            int stage;
            AceException.Check(NativeMethods.ace_heun_next_stage(heun, out stage));
            Assert(stage == 1, "heun stage " + stage);
        }
        // Greedy sampling (temperature 0) is the argmax.
        AceSamplerHandle sampler;
        AceException.Check(NativeMethods.ace_sampler_create(Utf8.Encode("{\"seed\": 1, \"temperature\": 0, \"cfg_scale\": 1, \"vocab_size\": 5}"), out sampler));
        using (sampler)
        {
            float[] logits = { 0.1f, 2f, -1f, 1.9f, 0f };
            uint token;
            fixed (float* l = logits)
                AceException.Check(NativeMethods.ace_sampler_sample(sampler, l, null, (UIntPtr)5, 0, out token));
            Assert(token == 1, "argmax token " + token);
            fixed (float* l = logits)
                Assert(NativeMethods.ace_sampler_sample(sampler, l, null, (UIntPtr)4, 0, out token) == AceStatus.LengthMismatch, "vocab 4 accepted");
        }
        using (var lm = Tokenizer.FromFile(PackageManifest.Open(pkg).TokenizerPath("lm")))
        {
            AceFsmHandle fsm;
            AceException.Check(NativeMethods.ace_fsm_create(lm.Handle, Utf8.Encode("{}"), out fsm));
            using (fsm)
            {
                IntPtr state;
                AceException.Check(NativeMethods.ace_fsm_state_json(fsm, out state));
                var obj = Json.ParseObject(Utf8.TakeString(state));
                Assert(obj.ContainsKey("state") && (bool)obj["completed"] == false, "fsm state " + Json.Write(obj));
            }
            Throws<ObjectDisposedException>(() => NativeMethods.ace_fsm_accept(fsm, 0), "FSM use after dispose");
        }
    }

    static void OrtSessions(string pkg)
    {
        var package = PackageManifest.Open(pkg);
        using (var ort = new OrtBackend(null, "cpu", 1))
        using (var s = ort.Open("lyric_embedding", package.ComponentPath("lyric_embedding")))
        {
            Assert(s.InputNames.SequenceEqual(new[] { "input_ids" }), "inputs " + string.Join(",", s.InputNames));
            Assert(s.OutputNames.Length == 1, "outputs " + string.Join(",", s.OutputNames));
            Tensor[] outputs = s.Run(new Dictionary<string, Tensor> { { "input_ids", Tensor.Int64(new long[] { 1, 2, 3 }, 1, 3) } });
            Assert(outputs[0].Type == TensorType.Float32 && outputs[0].Shape.Length == 3 && outputs[0].Shape[1] == 3, "output shape " + outputs[0].ShapeText);
            // Same input, same output (no state between runs).
            Tensor[] again = s.Run(new Dictionary<string, Tensor> { { "input_ids", Tensor.Int64(new long[] { 1, 2, 3 }, 1, 3) } });
            Assert(outputs[0].Floats.SequenceEqual(again[0].Floats), "two runs differ");
            var wrongName = Throws<ArgumentException>(() => s.Run(new Dictionary<string, Tensor> { { "ids", Tensor.Int64(new long[] { 1 }, 1, 1) } }), "wrong feed name");
            Assert(wrongName.Message.Contains("lyric_embedding") && wrongName.Message.Contains("input_ids"), wrongName.Message);
            var wrongType = Throws<OrtException>(() => s.Run(new Dictionary<string, Tensor> { { "input_ids", Tensor.Float(new float[] { 1 }, 1, 1) } }), "float ids");
            Assert(wrongType.Message.StartsWith("lyric_embedding") && wrongType.ErrorCode != 0, wrongType.Message);
            var wrongRank = Throws<OrtException>(() => s.Run(new Dictionary<string, Tensor> { { "input_ids", Tensor.Int64(new long[] { 1, 2 }, 2) } }), "rank 1 ids");
            Assert(wrongRank.Message.StartsWith("lyric_embedding"), wrongRank.Message);
            s.Dispose();
            s.Dispose();
            Throws<ObjectDisposedException>(() => s.Run(new Dictionary<string, Tensor>()), "run after dispose");
        }
    }

    static void OrtMissingGraph(string pkg)
    {
        using (var ort = new OrtBackend(null, "cpu", 1))
        {
            var e = Throws<FileNotFoundException>(() => ort.Open("vae_decoder", Path.Combine(pkg, "no_such.onnx")), "missing file");
            Assert(e.Message.Contains("vae_decoder") && e.Message.Contains("no_such.onnx"), e.Message);
            string bad = Path.GetTempFileName();
            try
            {
                File.WriteAllText(bad, "not an onnx graph");
                var o = Throws<OrtException>(() => ort.Open("dit_decoder", bad), "garbage graph");
                Assert(o.Message.Contains("dit_decoder") && o.Message.Contains(bad), o.Message);
            }
            finally { File.Delete(bad); }
        }
        var d = Throws<DllNotFoundException>(() => new OrtBackend("/nonexistent/libonnxruntime.so"), "missing ORT library");
        Assert(d.Message.Contains("/nonexistent/libonnxruntime.so"), d.Message);
    }

    // -- the generation driver ---------------------------------------------------------------------

    static void PackageInfo(string pkg, ModelPackage package)
    {
        {
            Assert(package.Kind == "turbo", "kind " + package.Kind);
            string dit = package.ComponentPath("dit_decoder");
            Assert(File.Exists(dit) && dit.EndsWith(".onnx"), "dit_decoder path " + dit);
            var missing = Throws<ArgumentException>(() => package.ComponentPath("no_such_graph"), "unknown component");
            Assert(missing.Message.Contains("no_such_graph") && missing.Message.Contains("dit_decoder"), missing.Message);
            var normalized = Json.ParseObject(package.NormalizeRequest("{\"caption\": \"x\", \"duration\": 10}"));
            var request = (Dictionary<string, object>)normalized["request"];
            Assert((string)request["caption"] == "x" && Convert.ToDouble(request["duration"]) == 10.0, "normalized " + Json.Write(normalized));
            var bad = Throws<AceException>(() => package.NormalizeRequest("{\"caption\": \"x\", \"durration\": 10}"), "unknown request key");
            Assert(bad.Status == AceStatus.InvalidArgument && bad.CoreMessage.StartsWith("request.durration"), bad.Message);
        }
        string nowhere = Path.Combine(Path.GetTempPath(), "acestep_no_package_" + Guid.NewGuid().ToString("N"));
        var io = Throws<AceException>(() => ModelPackage.Open(nowhere), "missing package");
        Assert(io.Status == AceStatus.Io && io.CoreMessage.Contains(nowhere), io.Message);
        var p = ModelPackage.Open(pkg);
        p.Dispose();
        p.Dispose();
        Throws<ObjectDisposedException>(() => new Generation(p, "{}"), "generation on a disposed package");
    }

    static void GenerationMisuse(ModelPackage package)
    {
        {
            var e = Throws<AceException>(() => new Generation(package, "{\"caption\": \"x\", \"duration\": 5, \"seed\": 1}"), "5 s");
            Assert(e.Status == AceStatus.InvalidArgument && e.CoreMessage.Contains("duration"), e.Message);
            var j = Throws<AceException>(() => new Generation(package, "{\"caption\": "), "truncated JSON");
            Assert(j.Status == AceStatus.InvalidJson, j.Message);

            var gen = new Generation(package, "{\"caption\": \"x\", \"duration\": 10, \"seed\": 1}");
            int[] shape;
            var early = Throws<AceException>(() => gen.Audio(out shape), "audio before the end");
            Assert(early.Status == AceStatus.InvalidState, early.Message);
            Assert(Throws<AceException>(() => gen.Sidecar(0, null), "sidecar before the end").Status == AceStatus.InvalidState, "sidecar status");
            // Run graphs only until the first call that wants an output back, then feed it wrong ones.
            var kept = new Dictionary<string, Tensor>();
            using (var ort = new OrtBackend(null, "cpu", 1))
            {
                var sessions = new Dictionary<string, IInferenceSession>();
                GraphCall call;
                while (true)
                {
                    call = gen.Next();
                    Assert(call != null, "the run ended without a call that submits");
                    Assert(gen.Next().Component == call.Component, "Next twice gives the same call");
                    if (call.Outputs.Any(o => o.KeepAs == null))
                        break;
                    IInferenceSession s;
                    if (!sessions.TryGetValue(call.Component, out s))
                        sessions[call.Component] = s = ort.Open(call.Component, package.ComponentPath(call.Component));
                    var feeds = call.Inputs.ToDictionary(i => i.Name, i => i.HostKey != null ? kept[i.HostKey] : i.Value);
                    Tensor[] values = s.Run(feeds);
                    foreach (var o in call.Outputs)
                        kept[o.KeepAs] = values[Array.IndexOf(s.OutputNames, o.Name)];
                    gen.Submit(new List<KeyValuePair<string, Tensor>>());
                }
                foreach (var s in sessions.Values) s.Dispose();
                string wanted = call.Outputs.First(o => o.KeepAs == null).Name;
                var none = Throws<AceException>(() => gen.Submit(new List<KeyValuePair<string, Tensor>>()), "nothing submitted");
                Assert(none.Status == AceStatus.InvalidArgument && none.CoreMessage.Contains(call.Component) && none.CoreMessage.Contains(wanted), none.Message);
                var wrongName = Throws<AceException>(() => gen.Submit(new[] { new KeyValuePair<string, Tensor>("bogus", Tensor.Float(new float[1], 1)) }), "unknown output");
                Assert(wrongName.Status == AceStatus.InvalidArgument && wrongName.CoreMessage.Contains("bogus"), wrongName.Message);
                var wrongShape = Throws<AceException>(() => gen.Submit(new[] { new KeyValuePair<string, Tensor>(wanted, Tensor.Float(new float[3], 1, 3)) }), "wrong shape");
                Assert(wrongShape.Status == AceStatus.InvalidArgument && wrongShape.CoreMessage.Contains(wanted), wrongShape.Message);
                var wrongType = Throws<AceException>(() => gen.Submit(new[] { new KeyValuePair<string, Tensor>(wanted, Tensor.Int64(new long[3], 1, 3)) }), "wrong dtype");
                Assert(wrongType.Status == AceStatus.InvalidArgument, wrongType.Message);
                // Nothing changed: the same call is still pending.
                Assert(gen.Next().Component == call.Component, "a failed submit moved the generation on");
            }
            // Freeing mid-run is cancelling; twice is harmless; afterwards every use throws.
            gen.Dispose();
            gen.Dispose();
            Throws<ObjectDisposedException>(() => gen.Next(), "next after dispose");
        }
    }

    static void PipelineCancelAndSave(ModelPackage package)
    {
        string dir = Path.Combine(Path.GetTempPath(), "acestep_pipe_" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            using (var backend = new OrtBackend(null, "cpu", 1))
            using (var pipe = new Pipeline(package, backend))
            {
                const string request = "{\"thinking\": false, \"caption\": \"x\", \"duration\": 10, \"seed\": 5}"; // the DiT path (the tiny package has an LM)
                var cts = new System.Threading.CancellationTokenSource();
                var seen = new List<string>();
                ProgressCallback cancelInDiffusion = (stage, done, total) =>
                {
                    seen.Add(stage + " " + done + "/" + total);
                    if (stage == "diffusion" && done == 2) cts.Cancel();
                };
                Throws<OperationCanceledException>(() => pipe.Generate(request, cancelInDiffusion, cts.Token), "cancelled run");
                Assert(seen.Last() == "diffusion 2/8", "ran past the cancel: " + seen.Last());
                Assert(Directory.GetFileSystemEntries(dir).Length == 0, "a cancelled run wrote files");
                IInferenceSession dit = pipe.Session("dit_decoder");

                var progress = new List<string>();
                GenerationResult result = pipe.Generate(request, (stage, done, total) => progress.Add(stage + " " + done + "/" + total));
                Assert(ReferenceEquals(dit, pipe.Session("dit_decoder")), "the session was not reused");
                // encode: text encoder, lyric embedding, condition encoder, cross-attention K/V (once per generation)
                Assert(progress.Contains("encode 4/4") && progress.Contains("diffusion 8/8") && progress.Last() == "decode 1/1", "progress " + string.Join(", ", progress));
                Assert(result.AudioShape.SequenceEqual(new[] { 1, 2, 1920 * 250 }) && result.Frames == 250, "audio shape " + string.Join("x", result.AudioShape));
                string[] paths = result.Save(dir + "/", "wav24");
                Assert(paths.Length == 1 && Path.GetFileName(paths[0]) == result.TrackIds[0].Substring(0, 16) + ".24bit.wav", "path " + paths[0]);
                var sidecar = Json.ParseObject(File.ReadAllText(paths[0] + ".json"));
                var host = (Dictionary<string, object>)sidecar["host"];
                Assert((string)host["audio_sha256"] == Outputs.Sha256Hex(File.ReadAllBytes(paths[0])) && (string)host["format"] == "wav24", "host fields " + Json.Write(host));
                Assert((string)sidecar["track_id"] == result.TrackIds[0], "sidecar track id");
                byte[] before = File.ReadAllBytes(paths[0]);
                var exists = Throws<OutputException>(() => result.Save(dir + "/", "wav24"), "overwrite without asking");
                Assert(exists.Message.Contains(paths[0]), exists.Message);
                result.Save(dir + "/", "wav24", overwrite: true);
                Assert(File.ReadAllBytes(paths[0]).SequenceEqual(before), "overwrite changed the bytes");
                Assert(Directory.GetFiles(dir).Length == 2, "temporary files left: " + string.Join(", ", Directory.GetFiles(dir)));
                Throws<ArgumentException>(() => result.Save(dir + "/", "flac"), "unknown format");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    // Opens sessions through OrtBackend, except the components named in `failing`, which throw an
    // OrtException as a damaged graph would; counts the opens and the most at once.
    sealed class ProbeBackend : IInferenceBackend
    {
        readonly OrtBackend inner = new OrtBackend(null, "cpu", 1);
        readonly string[] failing;
        int active;
        public int Opens, MostAtOnce;
        public ProbeBackend(params string[] failing) { this.failing = failing; }
        public string Device { get { return inner.Device; } }
        public string Version { get { return inner.Version; } }
        public IInferenceSession Open(string name, string modelPath)
        {
            int now = System.Threading.Interlocked.Increment(ref active);
            lock (this) { MostAtOnce = Math.Max(MostAtOnce, now); Opens++; }
            try
            {
                System.Threading.Thread.Sleep(100); // long enough for two opens to overlap
                if (failing.Contains(name)) throw new OrtException(1, name + ": cannot load " + modelPath + " into ONNX Runtime");
                return inner.Open(name, modelPath);
            }
            finally { System.Threading.Interlocked.Decrement(ref active); }
        }
        public void Dispose() { inner.Dispose(); }
    }

    static void PipelineParallelOpen(ModelPackage package)
    {
        const string request = "{\"thinking\": false, \"caption\": \"x\", \"duration\": 10, \"seed\": 5}";
        using (var backend = new ProbeBackend("vae_decoder"))
        using (var pipe = new Pipeline(package, backend))
        {
            var progress = new List<string>();
            var e = Throws<OrtException>(() => pipe.Generate(request, (stage, done, total) => progress.Add(stage + " " + done)), "failed open");
            Assert(e.Message.StartsWith("vae_decoder: cannot load"), e.Message);
            Assert(backend.MostAtOnce == 2, "opened " + backend.MostAtOnce + " at once, expected 2");
            Assert(!progress.Any(p => !p.StartsWith("load")), "ran a graph after a failed open: " + string.Join(", ", progress));
            int opens = backend.Opens;
            pipe.Session("dit_decoder");
            Assert(backend.Opens == opens, "the session opened before the failure was not kept");
        }
        using (var backend = new ProbeBackend())
        using (var pipe = new Pipeline(package, backend) { LoadWorkers = 1 })
        {
            var progress = new List<string>();
            pipe.Generate(request, (stage, done, total) => progress.Add(stage + " " + done + "/" + total));
            Assert(backend.MostAtOnce == 1, "LoadWorkers = 1 opened " + backend.MostAtOnce + " at once");
            int n = backend.Opens;
            Assert(progress.Take(n + 1).SequenceEqual(Enumerable.Range(0, n + 1).Select(i => "load " + i + "/" + n)), "load progress " + string.Join(", ", progress));
            pipe.Generate(request);
            Assert(backend.Opens == n, "the second generation opened sessions again");
        }
    }

    // -- commands for the Python-driven tests -------------------------------------------------------

    // Sizes and field offsets of the ABI structs as this binding lays them out (pytest compares
    // them with a C compiler's view of include/acestep_runtime.h).
    static int LayoutCommand()
    {
        foreach (Type t in new[] { typeof(AceTensor), typeof(AceGraphOutput), typeof(AceGraphCall), typeof(AceTileWindow) })
        {
            var parts = t.GetFields().Select(f => f.Name + "=" + Marshal.OffsetOf(t, f.Name));
            Console.WriteLine(t.Name + " " + Marshal.SizeOf(t) + " " + string.Join(" ", parts));
        }
        return 0;
    }

    // wav FORMAT CHANNELS IN.f32 OUT.wav: [channels, samples] float32 -> WAV bytes.
    static int WavCommand(string[] args)
    {
        byte[] raw = File.ReadAllBytes(args[3]);
        var audio = new float[raw.Length / 4];
        Buffer.BlockCopy(raw, 0, audio, 0, raw.Length);
        int channels = int.Parse(args[2]);
        File.WriteAllBytes(args[4], Wav.Encode(args[1], audio, 0, channels, audio.Length / channels, 48000));
        return 0;
    }

    // generate FORMAT OUTDIR PKG REQUEST.json [PKG REQUEST.json ...]: Pipeline.Generate in one process
    // (1 thread, CPU; one pipeline per package, sessions reused as a long-lived host would), item i
    // into OUTDIR/i/: raw latents.f32 and audio.f32, then Save into OUTDIR/i/tracks/ (paths on stdout,
    // one line "i PATH" each).
    static int GenerateCommand(string[] args)
    {
        string format = args[1], outRoot = args[2];
        var pipelines = new Dictionary<string, Pipeline>();
        Func<float[], byte[]> bytes = a => { var b = new byte[a.Length * 4]; Buffer.BlockCopy(a, 0, b, 0, b.Length); return b; };
        try
        {
            for (int i = 0; 3 + 2 * i + 1 < args.Length; i++)
            {
                string package = args[3 + 2 * i], request = args[4 + 2 * i];
                Pipeline pipe;
                if (!pipelines.TryGetValue(package, out pipe))
                    pipelines[package] = pipe = Pipeline.Open(package, "cpu", 1);
                GenerationResult r = pipe.Generate(File.ReadAllText(request, System.Text.Encoding.UTF8));
                string dir = Path.Combine(outRoot, i.ToString(System.Globalization.CultureInfo.InvariantCulture));
                Directory.CreateDirectory(dir);
                File.WriteAllBytes(Path.Combine(dir, "latents.f32"), bytes(r.Latents));
                File.WriteAllBytes(Path.Combine(dir, "audio.f32"), bytes(r.Audio));
                foreach (string path in r.Save(Path.Combine(dir, "tracks") + "/", format))
                    Console.WriteLine(i + " " + path);
                Console.Error.WriteLine(string.Format(System.Globalization.CultureInfo.InvariantCulture, "{0}: total {1:F3} s, inference {2:F3} s",
                    i, r.Timings["total"], r.RunSeconds));
            }
        }
        finally
        {
            foreach (Pipeline pipe in pipelines.Values) pipe.Dispose();
        }
        return 0;
    }

    static int NoiseCommand(string[] args)
    {
        long seed = long.Parse(args[1]);
        string mode = args[2];
        var shape = args.Skip(3).Take(args.Length - 4).Select(long.Parse).ToArray();
        long used;
        float[] values = Ace.Randn(shape, seed, "{\"mode\": \"" + mode + "\"}", out used);
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        File.WriteAllBytes(args[args.Length - 1], bytes);
        Console.WriteLine(used);
        return 0;
    }

    // Loads the core and prints where it came from; with a bad ACESTEP_RUNTIME_LIB the message lists the places tried.
    static int LoadLibraryCommand()
    {
        try
        {
            AceLibrary.Load();
            Console.WriteLine("loaded from " + (AceLibrary.LoadedFrom ?? "the OS search path") + ", ABI " + Ace.AbiVersion);
            return 0;
        }
        catch (AceLibraryNotFoundException e)
        {
            Console.WriteLine("AceLibraryNotFoundException: " + e.Message);
            return 3;
        }
    }
}
