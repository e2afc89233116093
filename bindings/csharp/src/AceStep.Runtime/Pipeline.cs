// text2music on an inference engine (ONNX Runtime by default), driven by the core: the host opens
// the package and one session per component (lazily, reused across generations), then loops — ask
// the core for the next graph run, run it, keep the outputs the core says to keep (they never cross
// into the core), submit the rest, drop released keys. Everything else is the core's, identical in
// every host. The Python host's Pipeline (bindings/python/acestep_runtime/pipeline.py) is the same loop.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Threading;
using AceStep.Runtime.Inference;

namespace AceStep.Runtime
{
    /// <summary>Progress: stage "load", "encode", "diffusion" or "decode"; calls of the stage done; its total.</summary>
    public delegate void ProgressCallback(string stage, int done, int total);

    /// <summary>Sessions of one model package on one inference backend, reused across generations.
    /// One generation at a time per Pipeline.</summary>
    public sealed class Pipeline : IDisposable
    {
        readonly Dictionary<string, IInferenceSession> sessions = new Dictionary<string, IInferenceSession>();
        readonly bool ownsPackage, ownsBackend;
        bool disposed;

        public ModelPackage Package { get; private set; }
        public IInferenceBackend Backend { get; private set; }

        /// <summary>A pipeline over an open package and a backend; with <paramref name="owns"/> it
        /// disposes both.</summary>
        public Pipeline(ModelPackage package, IInferenceBackend backend, bool owns = false)
        {
            if (package == null) throw new ArgumentNullException("package");
            if (backend == null) throw new ArgumentNullException("backend");
            Package = package;
            Backend = backend;
            ownsPackage = ownsBackend = owns;
        }

        /// <summary>Opens the package at <paramref name="path"/> (checked by the core; <paramref name="verify"/>
        /// also checks every sha256) on ONNX Runtime (<paramref name="ortLibrary"/> or ACESTEP_ORT_LIB)
        /// with <paramref name="device"/> "auto", "cpu" or "cuda"; <paramref name="fastStart"/> opens the
        /// sessions without pre-packing their weights, <paramref name="fusedOps"/> false runs the VAE's
        /// Snake activations unfused (see <see cref="OrtBackend"/>).</summary>
        public static Pipeline Open(string path, string device = "auto", int? threads = null, string ortLibrary = null, bool verify = false,
                                    bool fastStart = false, bool fusedOps = true)
        {
            ModelPackage package = ModelPackage.Open(path, verify);
            try
            {
                return new Pipeline(package, new OrtBackend(ortLibrary, device, threads, fastStart, fusedOps), owns: true);
            }
            catch
            {
                package.Dispose();
                throw;
            }
        }

        /// <summary>"ai.acestep" when the sessions run the core's fused kernels, else null (sidecar runtime.fused_ops).</summary>
        string FusedOpsDomain()
        {
            var ort = Backend as OrtBackend;
            return ort != null && ort.FusedOps ? OrtBackend.FusedOpsDomain : null;
        }

        /// <summary>The session of <paramref name="component"/>, created on first use.</summary>
        public IInferenceSession Session(string component)
        {
            if (disposed) throw new ObjectDisposedException("Pipeline");
            IInferenceSession s;
            if (!sessions.TryGetValue(component, out s))
            {
                s = Backend.Open(component, Package.ComponentPath(component));
                sessions.Add(component, s);
            }
            return s;
        }

        /// <summary>What Generate(request) would do, without running a graph (`ace_generation_info_json`).</summary>
        public string Plan(string requestJson)
        {
            using (var gen = new Generation(Package, requestJson))
                return gen.InfoJson;
        }

        /// <summary>Generates the tracks of <paramref name="requestJson"/> (the request schema of
        /// docs/python_api.md). <paramref name="cancel"/> is checked between graph runs: a cancelled
        /// run throws OperationCanceledException, frees the generation and writes nothing.</summary>
        public GenerationResult Generate(string requestJson, ProgressCallback progress = null, CancellationToken cancel = default(CancellationToken))
        {
            if (disposed) throw new ObjectDisposedException("Pipeline");
            var clock = Stopwatch.StartNew();
            var timings = new Dictionary<string, object>();
            using (var gen = new Generation(Package, requestJson))
            {
                // Sessions load in their own stage, so the stage timings time what they say.
                string[] needed = gen.Components;
                OpenSessions(needed, progress, cancel);
                timings["load"] = clock.Elapsed.TotalSeconds;
                double runSeconds = Run(gen, progress, cancel, timings);
                gen.RefreshInfo();

                var result = new GenerationResult();
                int[] shape;
                result.Audio = gen.Audio(out shape);
                result.AudioShape = shape;
                result.Latents = gen.Latents(out shape);
                result.LatentShape = shape;
                timings["total"] = clock.Elapsed.TotalSeconds;
                var providers = new Dictionary<string, object>();
                foreach (string name in needed)
                    providers[name] = Backend.Device;
                var host = new Dictionary<string, object>
                {
                    { "runtime", new Dictionary<string, object>
                        {
                            { "acestep_runtime_core", Ace.Version },
                            { "core_abi", (long)Ace.AbiVersion },
                            { "onnxruntime", Backend.Version },
                            { "fused_ops", FusedOpsDomain() },
                            { "providers", providers },
                            { "host", "csharp" },
                        } },
                    { "timings_s", timings },
                    { "ort_seconds", runSeconds },
                };
                string hostJson = Json.Write(host);
                result.Sidecars = new string[shape[0]];
                for (int b = 0; b < shape[0]; b++)
                    result.Sidecars[b] = gen.Sidecar(b, hostJson);
                result.InfoJson = gen.InfoJson;
                result.TrackIds = gen.TrackIds;
                result.FileNames = gen.FileNames;
                result.Seeds = gen.Seeds;
                result.Frames = (int)Convert.ToInt64(gen.Info["frames"]);
                result.SampleRate = (int)Convert.ToInt64(gen.Info["sample_rate"]);
                result.Timings = new Dictionary<string, double>();
                foreach (var kv in timings) result.Timings[kv.Key] = (double)kv.Value;
                result.RunSeconds = runSeconds;
                return result;
            }
        }

        /// <summary>How many sessions <see cref="Generate"/> opens at once (default 2: on two cores this
        /// nearly halves the start of a package's graphs; ORT allows sessions to be created from several
        /// threads). 1 opens them one by one.</summary>
        public int LoadWorkers
        {
            get { return loadWorkers; }
            set
            {
                if (value < 1) throw new ArgumentOutOfRangeException("value", "LoadWorkers must be >= 1, got " + value);
                loadWorkers = value;
            }
        }
        int loadWorkers = 2;

        // Opens the sessions of `names` not open yet, LoadWorkers at a time, in the core's order. Progress
        // and cancellation stay on the calling thread. A failed open is rethrown as itself (not an
        // AggregateException) once the loads under way have finished; the sessions that did open are kept.
        void OpenSessions(string[] names, ProgressCallback progress, CancellationToken cancel)
        {
            var missing = new List<string>();
            foreach (string name in names)
                if (!sessions.ContainsKey(name) && !missing.Contains(name)) missing.Add(name);
            int done = names.Length - missing.Count;
            if (progress != null) progress("load", done, names.Length);
            var gate = new SemaphoreSlim(loadWorkers);
            var failed = new CancellationTokenSource(); // set by the first failed open
            var pending = new List<System.Threading.Tasks.Task<IInferenceSession>>();
            var pendingNames = new List<string>();
            foreach (string name in missing)
            {
                string component = name;
                string path = Package.ComponentPath(component);
                pending.Add(System.Threading.Tasks.Task.Run(() =>
                {
                    gate.Wait();
                    try
                    {
                        // A cancelled or failed start does not begin the loads still queued.
                        if (cancel.IsCancellationRequested || failed.IsCancellationRequested) return null;
                        return Backend.Open(component, path);
                    }
                    catch
                    {
                        failed.Cancel();
                        throw;
                    }
                    finally
                    {
                        gate.Release();
                    }
                }));
                pendingNames.Add(component);
            }
            Exception first = null;
            while (pending.Count > 0)
            {
                int i = System.Threading.Tasks.Task.WaitAny(pending.ToArray());
                var task = pending[i];
                string name = pendingNames[i];
                pending.RemoveAt(i);
                pendingNames.RemoveAt(i);
                if (task.IsFaulted)
                {
                    if (first == null) first = task.Exception.InnerException;
                    continue;
                }
                if (task.Result == null) continue;
                sessions.Add(name, task.Result);
                done++;
                if (progress != null && first == null && !cancel.IsCancellationRequested) progress("load", done, names.Length);
            }
            if (first != null)
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
            cancel.ThrowIfCancellationRequested();
        }

        // The loop. Returns the seconds spent inside IInferenceSession.Run.
        double Run(Generation gen, ProgressCallback progress, CancellationToken cancel, Dictionary<string, object> timings)
        {
            var kept = new Dictionary<string, Tensor>(); // values the core asked the host to keep
            var runClock = new Stopwatch();
            var stageClock = Stopwatch.StartNew();
            string stage = null;
            while (true)
            {
                cancel.ThrowIfCancellationRequested();
                GraphCall call = gen.Next();
                if (call == null)
                    break;
                if (call.Stage != stage)
                {
                    if (stage != null) timings[stage] = stageClock.Elapsed.TotalSeconds;
                    stage = call.Stage;
                    stageClock.Restart();
                }
                var feeds = new Dictionary<string, Tensor>();
                foreach (CallInput input in call.Inputs)
                {
                    Tensor value = input.Value;
                    if (input.HostKey != null && !kept.TryGetValue(input.HostKey, out value))
                        throw new InvalidOperationException(call.Component + " input " + input.Name + ": the core asked for the host-kept value '" +
                            input.HostKey + "', which no earlier call kept");
                    feeds[input.Name] = value;
                }
                IInferenceSession session = Session(call.Component);
                runClock.Start();
                Tensor[] values = session.Run(feeds);
                runClock.Stop();
                var submit = new List<KeyValuePair<string, Tensor>>();
                foreach (CallOutput output in call.Outputs)
                {
                    int index = Array.IndexOf(session.OutputNames, output.Name);
                    if (index < 0)
                        throw new InvalidOperationException(call.Component + " has no output '" + output.Name + "' (it has: " +
                            string.Join(", ", session.OutputNames) + ")");
                    if (output.KeepAs != null)
                        kept[output.KeepAs] = values[index];
                    else
                        submit.Add(new KeyValuePair<string, Tensor>(output.Name, values[index]));
                }
                gen.Submit(submit);
                foreach (string key in call.Release)
                    kept.Remove(key);
                if (progress != null)
                    progress(call.Stage, call.StageDone + 1, call.StageTotal);
            }
            if (stage != null) timings[stage] = stageClock.Elapsed.TotalSeconds;
            return runClock.Elapsed.TotalSeconds;
        }

        public void Dispose()
        {
            if (disposed) return;
            disposed = true;
            foreach (IInferenceSession s in sessions.Values) s.Dispose();
            sessions.Clear();
            if (ownsBackend) Backend.Dispose();
            if (ownsPackage) Package.Dispose();
        }
    }

    /// <summary>What Pipeline.Generate returns; Save writes it.</summary>
    public sealed class GenerationResult
    {
        /// <summary>float32 [batch, channels, samples], peak-guarded (AudioShape).</summary>
        public float[] Audio { get; internal set; }
        public int[] AudioShape { get; internal set; }
        /// <summary>float32 [batch, frames, 64] final latents (LatentShape).</summary>
        public float[] Latents { get; internal set; }
        public int[] LatentShape { get; internal set; }
        public long[] Seeds { get; internal set; }
        public string[] TrackIds { get; internal set; }
        /// <summary>Each item's file name in an output directory, per format (from the core).</summary>
        public Dictionary<string, string[]> FileNames { get; internal set; }
        public int Frames { get; internal set; }
        public int SampleRate { get; internal set; }
        /// <summary>Per item: the core's sidecar JSON (host fields under "host").</summary>
        public string[] Sidecars { get; internal set; }
        /// <summary>The generation's plan (`ace_generation_info_json`).</summary>
        public string InfoJson { get; internal set; }
        /// <summary>Seconds per stage ("load", "encode", "diffusion", "decode", "total").</summary>
        public Dictionary<string, double> Timings { get; internal set; }
        /// <summary>Seconds inside the inference engine's Run (total − this = host overhead).</summary>
        public double RunSeconds { get; internal set; }

        public int BatchSize { get { return AudioShape[0]; } }

        /// <summary>Writes every item as a WAV file plus its sidecar `&lt;file&gt;.json` (Outputs.Save);
        /// returns the audio paths.</summary>
        public string[] Save(string output, string format = null, bool overwrite = false)
        {
            return Host.Outputs.Save(this, output, format, overwrite);
        }
    }
}
