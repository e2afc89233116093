// text2music from the command line on the core's generation driver (AceStep.Runtime.Pipeline):
// the core decides every step, ONNX Runtime runs the graphs, this program parses flags, shows
// progress, cancels on Ctrl+C and writes the files.
//
//   mono AceStepGenerate.exe --model PKG (--request FILE | --caption TEXT) [--lyrics TEXT] [--duration S]
//        [--seed N[,N...]] [--batch-size N] [--out DIR/|FILE.wav] [--format wav16|wav24|wav32f] [--overwrite]
//        [--instrumental] [--language L] [--bpm N] [--keyscale K] [--timesignature T] [--shift X]
//        [--method ode|sde] [--steps N] [--guidance-scale X] [--vae-chunk FRAMES] [--device auto|cpu|cuda] [--threads N]
//        [--ort-lib PATH] [--fast-start] [--verify] [--timeout S] [--quiet]
//
// Flags given with --request override the file's values. Exit codes: 0 written, 1 error (one line
// naming the problem), 2 usage, 130 cancelled (nothing written).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Threading;
using AceStep.Runtime;
using AceStep.Runtime.Host;
using AceStep.Runtime.Inference;

static class AceStepGenerate
{
    const string Usage =
        "usage: AceStepGenerate.exe --model PKG (--request FILE | --caption TEXT) [--lyrics TEXT] [--duration S] [--seed N[,N...]]\n" +
        "       [--batch-size N] [--out DIR/|FILE.wav] [--format wav16|wav24|wav32f] [--overwrite] [--instrumental]\n" +
        "       [--language L] [--bpm N] [--keyscale K] [--timesignature T] [--shift X] [--method ode|sde] [--steps N]\n" +
        "       [--guidance-scale X] [--vae-chunk FRAMES] [--think|--no-think] [--simple IDEA] [--device auto|cpu|cuda] [--threads N] [--ort-lib PATH]\n" +
        "       [--fast-start] [--verify] [--timeout S] [--quiet]";

    static readonly HashSet<string> Switches = new HashSet<string> { "overwrite", "instrumental", "verify", "quiet", "think", "no-think", "fast-start" };
    static readonly HashSet<string> Valued = new HashSet<string>
    {
        "model", "request", "caption", "lyrics", "duration", "seed", "batch-size", "out", "format", "language", "bpm",
        "keyscale", "timesignature", "shift", "method", "steps", "guidance-scale", "device", "threads", "ort-lib", "timeout",
        "simple", "vae-chunk",
    };

    static int Main(string[] args)
    {
        Dictionary<string, string> opts;
        string problem = Parse(args, out opts);
        if (problem != null)
        {
            Console.Error.WriteLine(problem);
            Console.Error.WriteLine(Usage);
            return 2;
        }
        var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (sender, e) => { e.Cancel = true; cancel.Cancel(); Console.Error.WriteLine("cancelling after the current step ..."); };
        string timeout;
        if (opts.TryGetValue("timeout", out timeout))
            cancel.CancelAfter(TimeSpan.FromSeconds(double.Parse(timeout, CultureInfo.InvariantCulture)));
        try
        {
            return Run(opts, cancel.Token);
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled: no output written");
            return 130;
        }
        catch (Exception e) when (e is AceException || e is OrtException || e is ArgumentException || e is IOException
                                  || e is FormatException || e is NotSupportedException || e is DllNotFoundException
                                  || e is InvalidOperationException || e is UnauthorizedAccessException)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 1;
        }
    }

    static string Parse(string[] args, out Dictionary<string, string> opts)
    {
        opts = new Dictionary<string, string>();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i].Substring(2) : null;
            if (name != null && Switches.Contains(name))
                opts[name] = "true";
            else if (name != null && Valued.Contains(name) && i + 1 < args.Length)
                opts[name] = args[++i];
            else
                return name != null && Valued.Contains(name) ? "--" + name + " needs a value" : "unknown argument: " + args[i];
        }
        if (!opts.ContainsKey("model")) return "--model is required";
        if (!opts.ContainsKey("request") && !opts.ContainsKey("caption") && !opts.ContainsKey("simple"))
            return "give --request FILE, --caption TEXT or --simple IDEA";
        return null;
    }

    // The request: the --request file's object (a fixture case's or sidecar's "request" unwrapped),
    // with the flags on top. The core checks and normalises it.
    static Dictionary<string, object> BuildRequest(Dictionary<string, string> o)
    {
        var request = new Dictionary<string, object>();
        string file;
        if (o.TryGetValue("request", out file))
        {
            if (!File.Exists(file))
                throw new FileNotFoundException("request file not found: " + file);
            object data = Json.Parse(File.ReadAllText(file, System.Text.Encoding.UTF8));
            var obj = data as Dictionary<string, object>;
            if (obj != null && obj.ContainsKey("request") && obj["request"] is Dictionary<string, object>)
                obj = (Dictionary<string, object>)obj["request"];
            if (obj == null)
                throw new FormatException("request file " + file + " must hold a JSON object");
            request = obj;
        }
        Func<string, double> num = s => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);
        Func<string, long> integer = s => long.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture);
        string v;
        if (o.TryGetValue("caption", out v)) request["caption"] = v;
        if (o.TryGetValue("lyrics", out v)) request["lyrics"] = v;
        if (o.ContainsKey("instrumental")) request["instrumental"] = true;
        if (o.TryGetValue("language", out v)) { request.Remove("language"); request["vocal_language"] = v; }
        if (o.TryGetValue("bpm", out v)) request["bpm"] = integer(v);
        if (o.TryGetValue("keyscale", out v)) request["keyscale"] = v;
        if (o.TryGetValue("timesignature", out v)) request["timesignature"] = v;
        if (o.TryGetValue("duration", out v)) request["duration"] = num(v);
        if (o.TryGetValue("shift", out v)) request["shift"] = num(v);
        if (o.TryGetValue("method", out v)) request["infer_method"] = v;
        if (o.TryGetValue("steps", out v)) request["inference_steps"] = integer(v);
        if (o.TryGetValue("guidance-scale", out v)) request["guidance_scale"] = num(v);
        if (o.TryGetValue("batch-size", out v)) request["batch_size"] = integer(v);
        if (o.TryGetValue("vae-chunk", out v)) request["vae_decode_chunk"] = integer(v);
        // The 5 Hz LM is the core's: these only set request keys (the core runs it by default when the
        // package has one).
        if (o.ContainsKey("think")) { request.Remove("think"); request["thinking"] = true; }
        if (o.ContainsKey("no-think")) { request.Remove("think"); request["thinking"] = false; }
        if (o.TryGetValue("simple", out v)) request["description"] = v;
        if (o.TryGetValue("seed", out v))
        {
            // --seed 1,2 means two items, with or without --request.
            var seeds = new List<object>();
            foreach (string s in v.Split(',')) seeds.Add(integer(s.Trim()));
            request.Remove("seed");
            request["seeds"] = seeds;
            if (!o.ContainsKey("batch-size")) request["batch_size"] = (long)seeds.Count;
        }
        return request;
    }

    static int Run(Dictionary<string, string> o, CancellationToken cancel)
    {
        string requestJson = Json.Write(BuildRequest(o));
        string output = o.ContainsKey("out") ? o["out"] : "out/";
        string format = o.ContainsKey("format") ? o["format"] : Outputs.DefaultFormat;
        int? threads = o.ContainsKey("threads") ? int.Parse(o["threads"], CultureInfo.InvariantCulture) : (int?)null;
        bool overwrite = o.ContainsKey("overwrite"), quiet = o.ContainsKey("quiet");
        string ortLib;
        o.TryGetValue("ort-lib", out ortLib);
        using (var pipe = Pipeline.Open(o["model"], o.ContainsKey("device") ? o["device"] : "auto", threads, ortLib, o.ContainsKey("verify"),
                                           fastStart: o.ContainsKey("fast-start")))
        {
            // Everything that can fail before generating fails here: the request, the format, the targets.
            var plan = Json.ParseObject(pipe.Plan(requestJson));
            var fileNames = AceStep.Runtime.Generation.FileNamesOf(plan);
            // With the 5 Hz LM the names (track ids) are known only after its phases; Save checks then.
            if (fileNames.Count > 0)
                foreach (string path in Outputs.Paths(output, fileNames, format))
                    foreach (string target in new[] { path, Outputs.SidecarPath(path) })
                        if (File.Exists(target) && !overwrite)
                            throw new OutputException(target + " exists; pass --overwrite to replace it");
            foreach (object note in (List<object>)plan["notes"])
                Console.Error.WriteLine("note: " + note);

            ProgressCallback progress = null;
            if (!quiet)
            {
                string last = null;
                progress = (stage, done, total) =>
                {
                    if (stage != last) { if (last != null) Console.Error.WriteLine(); last = stage; }
                    Console.Error.Write("\r{0,9}: {1}/{2}", stage, done, total);
                    if (done == total) { Console.Error.WriteLine(); last = null; }
                };
            }
            GenerationResult result = pipe.Generate(requestJson, progress, cancel);
            var ort = pipe.Backend as OrtBackend;
            if (ort != null && ort.FusedOpsUnavailable != null)
                Console.Error.WriteLine("warning: " + ort.FusedOpsUnavailable);
            cancel.ThrowIfCancellationRequested(); // cancelled after the last graph run: still write nothing
            string[] written = result.Save(output, format, overwrite);
            for (int b = 0; b < written.Length; b++)
                Console.WriteLine("{0}  (seed {1}, {2:F2} s)", written[b], result.Seeds[b], (double)result.AudioShape[2] / result.SampleRate);
            var t = result.Timings;
            Console.Error.WriteLine(string.Format(CultureInfo.InvariantCulture,
                "load {0:F2} s, encode {1:F2} s, diffusion {2:F2} s, decode {3:F2} s, total {4:F2} s (inference {5:F2} s, host {6:F2} s)",
                Get(t, "load"), Get(t, "encode"), Get(t, "diffusion"), Get(t, "decode"), Get(t, "total"),
                result.RunSeconds, Get(t, "total") - result.RunSeconds));
        }
        return 0;
    }

    static double Get(Dictionary<string, double> t, string key) { double v; return t.TryGetValue(key, out v) ? v : 0; }
}
