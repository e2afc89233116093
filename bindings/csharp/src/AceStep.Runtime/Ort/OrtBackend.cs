// IInferenceBackend over the ONNX Runtime C API (OrtApi.cs): one OrtEnv, session and run options as
// the Python host sets them (graph optimisation "all"; `threads` intra-op threads and 1 inter-op
// thread when given; no weight pre-packing with `fastStart`; the CPU arena shrunk after every run;
// the core library's fused kernels registered on CPU sessions), the CUDA execution provider when
// asked for or, with device "auto", when present.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;

namespace AceStep.Runtime.Inference
{
    /// <summary>An ORT object owned by C# (OrtEnv, OrtSession, OrtSessionOptions, OrtMemoryInfo).</summary>
    internal sealed class OrtHandle : SafeHandle
    {
        readonly OrtApi.DRelease release;

        public OrtHandle(IntPtr value, OrtApi.DRelease release) : base(IntPtr.Zero, true)
        {
            this.release = release;
            SetHandle(value);
        }

        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        protected override bool ReleaseHandle() { release(handle); return true; }
    }

    public sealed class OrtBackend : IInferenceBackend
    {
        const int LoggingLevelWarning = 2;
        const int GraphOptimizationAll = 99;
        const int OrtDeviceAllocator = 0, OrtMemTypeDefault = 0;
        public static readonly string[] Devices = { "auto", "cpu", "cuda" };

        internal readonly OrtApi Api;
        readonly OrtHandle env;
        internal readonly OrtHandle CpuMemory;
        // Every run ends by giving the CPU arena's free space back to the system: otherwise each session
        // keeps the peak of its largest run (a long song's DiT activations stay held through the decode).
        internal readonly OrtHandle RunOptions;
        readonly int? threads;
        readonly bool useCuda, fastStart;
        volatile bool fusedOps;
        static readonly object FirstFusedSession = new object();
        static volatile bool fusedOpsDomainKnown;

        /// <summary>The custom-op domain of the core library's kernels ("ai.acestep"), registered on CPU sessions.</summary>
        public const string FusedOpsDomain = "ai.acestep";

        /// <summary>Whether sessions opened from here on run the core's fused kernels (the VAE's Snake as
        /// one pass); false with fusedOps: false, on CUDA, or when ONNX Runtime refused them (see
        /// <see cref="FusedOpsUnavailable"/>); then the graphs run their plain function bodies.</summary>
        public bool FusedOps { get { return fusedOps; } }

        /// <summary>Why the fused kernels were asked for but are not used, else null.</summary>
        public string FusedOpsUnavailable { get; private set; }

        /// <summary>ONNX Runtime's version string, e.g. "1.32.0".</summary>
        public string OrtVersion { get { return Api.Version; } }
        public string Version { get { return Api.Version; } }
        public string LibraryPath { get { return Api.LibraryPath; } }
        public string Device { get { return useCuda ? "CUDAExecutionProvider" : "CPUExecutionProvider"; } }
        public string[] AvailableProviders { get; private set; }

        /// <summary>Wall time spent inside OrtApi::Run by this backend's sessions, so a caller can
        /// separate ONNX Runtime time from its own overhead.</summary>
        public TimeSpan RunTime { get { return TimeSpan.FromTicks(System.Threading.Interlocked.Read(ref runTicks)); } }
        long runTicks;

        internal void AddRunTime(long ticks) { System.Threading.Interlocked.Add(ref runTicks, ticks); }

        /// <param name="ortLibrary">Path of libonnxruntime (null: ACESTEP_ORT_LIB, then the usual search).</param>
        /// <param name="device">"auto" (CUDA when this ORT has it, else CPU), "cpu" or "cuda".</param>
        /// <param name="threads">Intra-op threads (null: ORT's default).</param>
        /// <param name="fastStart">Leave the weights memory-mapped from the package instead of copying them
        /// into ORT's pre-packed GEMM layout ("session.disable_prepacking"): a session opens in about a
        /// second whatever its size, and GEMMs pack their weights on every run (docs/performance.md,
        /// "Session start"). The Python host's --fast-start.</param>
        /// <param name="fusedOps">Register the core library's ONNX Runtime kernels (custom-op domain
        /// "ai.acestep": the VAE's Snake activations in one pass instead of five) on CPU sessions; the song
        /// is the unfused graphs' within ~1e-6. Off, or on CUDA, the graphs run their function bodies.</param>
        public OrtBackend(string ortLibrary = null, string device = "auto", int? threads = null, bool fastStart = false,
                          bool fusedOps = true)
        {
            if (Array.IndexOf(Devices, device) < 0)
                throw new ArgumentException("unknown device '" + device + "'; choose one of: " + string.Join(", ", Devices));
            if (threads.HasValue && threads.Value < 1)
                throw new ArgumentOutOfRangeException("threads", "threads must be >= 1, got " + threads.Value);
            Api = OrtApi.Load(ortLibrary);
            this.threads = threads;
            this.fastStart = fastStart;
            IntPtr p;
            Api.Check(Api.CreateEnv(LoggingLevelWarning, Utf8.Encode("acestep_runtime"), out p), "CreateEnv");
            env = new OrtHandle(p, Api.ReleaseEnv);
            Api.Check(Api.CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, out p), "CreateCpuMemoryInfo");
            CpuMemory = new OrtHandle(p, Api.ReleaseMemoryInfo);
            Api.Check(Api.CreateRunOptions(out p), "CreateRunOptions");
            RunOptions = new OrtHandle(p, Api.ReleaseRunOptions);
            Api.Check(Api.AddRunConfigEntry(p, Utf8.Encode("memory.enable_memory_arena_shrinkage"), Utf8.Encode("cpu:0")),
                "AddRunConfigEntry memory.enable_memory_arena_shrinkage");
            AvailableProviders = ReadProviders();
            bool hasCuda = Array.IndexOf(AvailableProviders, "CUDAExecutionProvider") >= 0;
            if (device == "cuda" && !hasCuda)
                throw new NotSupportedException("device 'cuda' requested, but ONNX Runtime at " + Api.LibraryPath +
                    " has no CUDAExecutionProvider (available: " + string.Join(", ", AvailableProviders) + ")");
            useCuda = device != "cpu" && hasCuda;
            // The kernels are CPU code: a CUDA session runs the function bodies on the GPU instead.
            this.fusedOps = fusedOps && !useCuda;
            if (this.fusedOps && Api.RegisterCustomOpsLibrary_V2 == null)
                DisableFusedOps("ONNX Runtime " + Api.Version + " is older than " + OrtApi.FusedOpsMinimum);
        }

        void DisableFusedOps(string why)
        {
            fusedOps = false;
            FusedOpsUnavailable = "the core's fused ONNX Runtime kernels (" + FusedOpsDomain + ") are not used: " + why +
                "; the graphs run unfused";
        }

        /// <summary>Registers the core library (it exports ONNX Runtime's RegisterCustomOps) on the options.</summary>
        void RegisterFusedOps(IntPtr options, string name)
        {
            // The library this process loaded, or its file name, which the OS search resolves to the same one.
            string library = AceLibrary.LoadedFrom ?? NativeLoader.FileName(NativeMethods.LibName);
            IntPtr path = OrtPath(library);
            try
            {
                Api.Check(Api.RegisterCustomOpsLibrary_V2(options, path), name + ": RegisterCustomOpsLibrary_V2 " + library);
            }
            catch (OrtException e)
            {
                DisableFusedOps(e.Message);
            }
            finally
            {
                Marshal.FreeHGlobal(path);
            }
        }

        // ORTCHAR_T is wchar_t on Windows, char (UTF-8) elsewhere.
        static IntPtr OrtPath(string path)
        {
            return NativeLoader.Platform == NativePlatform.Windows ? Marshal.StringToHGlobalUni(path) : AllocUtf8(path);
        }

        string[] ReadProviders()
        {
            IntPtr names;
            int count;
            Api.Check(Api.GetAvailableProviders(out names, out count), "GetAvailableProviders");
            var result = new string[count];
            for (int i = 0; i < count; i++)
                result[i] = Utf8.PtrToString(Marshal.ReadIntPtr(names, i * IntPtr.Size));
            Api.Check(Api.ReleaseAvailableProviders(names, count), "ReleaseAvailableProviders");
            return result;
        }

        public IInferenceSession Open(string name, string modelPath)
        {
            if (!System.IO.File.Exists(modelPath))
                throw new System.IO.FileNotFoundException(name + ": graph file not found: " + modelPath, modelPath);
            IntPtr p;
            Api.Check(Api.CreateSessionOptions(out p), name + ": CreateSessionOptions");
            using (var options = new OrtHandle(p, Api.ReleaseSessionOptions))
            {
                IntPtr o = options.DangerousGetHandle();
                Api.Check(Api.SetSessionGraphOptimizationLevel(o, GraphOptimizationAll), name + ": SetSessionGraphOptimizationLevel");
                if (threads.HasValue)
                {
                    Api.Check(Api.SetIntraOpNumThreads(o, threads.Value), name + ": SetIntraOpNumThreads");
                    Api.Check(Api.SetInterOpNumThreads(o, 1), name + ": SetInterOpNumThreads");
                }
                if (fastStart)
                    Api.Check(Api.AddSessionConfigEntry(o, Utf8.Encode("session.disable_prepacking"), Utf8.Encode("1")),
                        name + ": AddSessionConfigEntry session.disable_prepacking");
                if (fusedOps)
                    RegisterFusedOps(o, name);
                if (useCuda)
                {
                    IntPtr cuda;
                    Api.Check(Api.CreateCUDAProviderOptions(out cuda), name + ": CreateCUDAProviderOptions");
                    try
                    {
                        Api.Check(Api.SessionOptionsAppendExecutionProvider_CUDA_V2(o, cuda), name + ": append CUDA provider");
                    }
                    finally
                    {
                        Api.ReleaseCUDAProviderOptions(cuda);
                    }
                }
                IntPtr path = OrtPath(modelPath);
                try
                {
                    if (fusedOps && !fusedOpsDomainKnown)
                    {
                        // ONNX Runtime adds a custom domain to a process-wide table when the first session
                        // using it is created, with a check-then-add that two sessions created at once can
                        // race ("the domain is already exist"): that first session is created alone.
                        lock (FirstFusedSession)
                        {
                            CreateSession(name, modelPath, path, o, out p);
                            fusedOpsDomainKnown = true;
                        }
                    }
                    else
                    {
                        CreateSession(name, modelPath, path, o, out p);
                    }
                }
                finally
                {
                    Marshal.FreeHGlobal(path);
                }
            }
            return new OrtSession(this, name, new OrtHandle(p, Api.ReleaseSession));
        }

        void CreateSession(string name, string modelPath, IntPtr path, IntPtr options, out IntPtr session)
        {
            Api.Check(Api.CreateSession(env.DangerousGetHandle(), path, options, out session), name + ": cannot load " + modelPath + " into ONNX Runtime");
        }

        internal static IntPtr AllocUtf8(string s)
        {
            byte[] bytes = Utf8.Encode(s);
            IntPtr p = Marshal.AllocHGlobal(bytes.Length);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            return p;
        }

        public void Dispose()
        {
            RunOptions.Dispose();
            CpuMemory.Dispose();
            env.Dispose();
        }
    }

    internal sealed class OrtSession : IInferenceSession
    {
        readonly OrtBackend backend;
        readonly OrtApi api;
        readonly OrtHandle session;
        readonly IntPtr[] inputNamePtrs, outputNamePtrs; // UTF-8 copies for Run, freed in Dispose
        bool disposed;

        public string Name { get; private set; }
        public string[] InputNames { get; private set; }
        public string[] OutputNames { get; private set; }

        public OrtSession(OrtBackend backend, string name, OrtHandle session)
        {
            this.backend = backend;
            api = backend.Api;
            this.session = session;
            Name = name;
            InputNames = ReadNames(true);
            OutputNames = ReadNames(false);
            inputNamePtrs = Array.ConvertAll(InputNames, OrtBackend.AllocUtf8);
            outputNamePtrs = Array.ConvertAll(OutputNames, OrtBackend.AllocUtf8);
        }

        string[] ReadNames(bool inputs)
        {
            IntPtr s = session.DangerousGetHandle();
            UIntPtr count;
            api.Check(inputs ? api.SessionGetInputCount(s, out count) : api.SessionGetOutputCount(s, out count), Name + ": get name count");
            IntPtr allocator;
            api.Check(api.GetAllocatorWithDefaultOptions(out allocator), "GetAllocatorWithDefaultOptions");
            var names = new string[(int)count];
            for (int i = 0; i < names.Length; i++)
            {
                IntPtr raw;
                api.Check(inputs ? api.SessionGetInputName(s, (UIntPtr)i, allocator, out raw)
                                 : api.SessionGetOutputName(s, (UIntPtr)i, allocator, out raw), Name + ": get name");
                names[i] = Utf8.PtrToString(raw);
                api.Check(api.AllocatorFree(allocator, raw), "AllocatorFree");
            }
            return names;
        }

        public Tensor[] Run(IDictionary<string, Tensor> feeds)
        {
            if (disposed)
                throw new ObjectDisposedException(Name);
            if (feeds == null)
                throw new ArgumentNullException("feeds");
            var expected = new HashSet<string>(InputNames);
            if (feeds.Count != expected.Count || !expected.SetEquals(feeds.Keys))
            {
                var given = new List<string>(feeds.Keys);
                given.Sort(StringComparer.Ordinal);
                var want = new List<string>(InputNames);
                want.Sort(StringComparer.Ordinal);
                throw new ArgumentException(Name + ": host feeds [" + string.Join(", ", given) + "] but the graph takes [" +
                    string.Join(", ", want) + "]");
            }
            var pins = new GCHandle[InputNames.Length];
            var values = new IntPtr[InputNames.Length];
            var outputs = new IntPtr[OutputNames.Length];
            try
            {
                for (int i = 0; i < InputNames.Length; i++)
                {
                    Tensor t = feeds[InputNames[i]];
                    if (t == null)
                        throw new ArgumentNullException(Name + ": input " + InputNames[i]);
                    Array data = t.Data;
                    pins[i] = GCHandle.Alloc(data, GCHandleType.Pinned);
                    int elementSize = t.Type == TensorType.Float32 ? 4 : 8;
                    api.Check(api.CreateTensorWithDataAsOrtValue(backend.CpuMemory.DangerousGetHandle(), pins[i].AddrOfPinnedObject(),
                        (UIntPtr)(ulong)(data.LongLength * elementSize), t.Shape, (UIntPtr)t.Shape.Length, (int)t.Type, out values[i]),
                        Name + ": input " + InputNames[i] + " " + t.ShapeText);
                }
                var clock = System.Diagnostics.Stopwatch.StartNew();
                IntPtr status = api.Run(session.DangerousGetHandle(), backend.RunOptions.DangerousGetHandle(), inputNamePtrs, values, (UIntPtr)values.Length,
                    outputNamePtrs, (UIntPtr)outputs.Length, outputs);
                backend.AddRunTime(clock.Elapsed.Ticks);
                api.Check(status, Name + ": Run failed");
                var result = new Tensor[outputs.Length];
                for (int i = 0; i < outputs.Length; i++)
                    result[i] = ReadTensor(outputs[i], OutputNames[i]);
                return result;
            }
            finally
            {
                foreach (IntPtr v in outputs) if (v != IntPtr.Zero) api.ReleaseValue(v);
                foreach (IntPtr v in values) if (v != IntPtr.Zero) api.ReleaseValue(v);
                foreach (GCHandle pin in pins) if (pin.IsAllocated) pin.Free();
            }
        }

        Tensor ReadTensor(IntPtr value, string outputName)
        {
            string what = Name + ": output " + outputName;
            IntPtr info;
            api.Check(api.GetTensorTypeAndShape(value, out info), what);
            int type;
            long[] shape;
            try
            {
                api.Check(api.GetTensorElementType(info, out type), what);
                UIntPtr rank;
                api.Check(api.GetDimensionsCount(info, out rank), what);
                shape = new long[(int)rank];
                api.Check(api.GetDimensions(info, shape, rank), what);
            }
            finally
            {
                api.ReleaseTensorTypeAndShapeInfo(info);
            }
            long n = 1;
            foreach (long d in shape) n = checked(n * d);
            IntPtr data;
            api.Check(api.GetTensorMutableData(value, out data), what);
            if (type == (int)TensorType.Float32)
            {
                var f = new float[n];
                if (n > 0) Marshal.Copy(data, f, 0, (int)n);
                return Tensor.Float(f, shape);
            }
            if (type == (int)TensorType.Int64)
            {
                var l = new long[n];
                if (n > 0) Marshal.Copy(data, l, 0, (int)n);
                return Tensor.Int64(l, shape);
            }
            throw new NotSupportedException(what + " has ONNX element type " + type + "; this host reads float32 and int64 only");
        }

        public void Dispose()
        {
            if (disposed)
                return;
            disposed = true;
            session.Dispose();
            foreach (IntPtr p in inputNamePtrs) Marshal.FreeHGlobal(p);
            foreach (IntPtr p in outputNamePtrs) Marshal.FreeHGlobal(p);
        }
    }
}
