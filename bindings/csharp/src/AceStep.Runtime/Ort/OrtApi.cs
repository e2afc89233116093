// The slice of the ONNX Runtime C API (onnxruntime_c_api.h) this host uses: OrtGetApiBase() gives
// GetApi(version), which returns the OrtApi struct, a table of function pointers in a fixed order
// that only ever grows. Each function used here is read from its slot and turned into a delegate.
//
// Pinned to API version 14 (ONNX Runtime >= 1.14): GetApi(14) returns null on an older library,
// which is reported as such. The slot numbers below are positions in `struct OrtApi` of the header
// (0-based); they never change for a given function.
using System;
using System.Runtime.InteropServices;

namespace AceStep.Runtime.Inference
{
    internal sealed class OrtApi
    {
        public const uint ApiVersion = 14;

        // Slots in struct OrtApi (onnxruntime_c_api.h, "struct OrtApi { ... }", in declaration order).
        enum Slot
        {
            GetErrorCode = 1,
            GetErrorMessage = 2,
            CreateEnv = 3,
            CreateSession = 7,
            Run = 9,
            CreateSessionOptions = 10,
            CreateRunOptions = 39,
            SetSessionGraphOptimizationLevel = 23,
            SetIntraOpNumThreads = 24,
            SetInterOpNumThreads = 25,
            SessionGetInputCount = 30,
            SessionGetOutputCount = 31,
            SessionGetInputName = 36,
            SessionGetOutputName = 37,
            CreateTensorWithDataAsOrtValue = 49,
            GetTensorMutableData = 51,
            GetTensorElementType = 60,
            GetDimensionsCount = 61,
            GetDimensions = 62,
            GetTensorTypeAndShape = 65,
            CreateCpuMemoryInfo = 69,
            AllocatorFree = 76,
            GetAllocatorWithDefaultOptions = 78,
            ReleaseEnv = 92,
            ReleaseStatus = 93,
            ReleaseMemoryInfo = 94,
            ReleaseSession = 95,
            ReleaseValue = 96,
            ReleaseRunOptions = 97,
            ReleaseTensorTypeAndShapeInfo = 99,
            ReleaseSessionOptions = 100,
            GetAvailableProviders = 125,
            ReleaseAvailableProviders = 126,
            AddSessionConfigEntry = 130,
            AddRunConfigEntry = 165,
            SessionOptionsAppendExecutionProvider_CUDA_V2 = 204,
            CreateCUDAProviderOptions = 205,
            ReleaseCUDAProviderOptions = 208,
            RegisterCustomOpsLibrary_V2 = 228,
        }

        /// <summary>The first ONNX Runtime whose custom-op API the core's kernels need (API 17).</summary>
        public static readonly Version FusedOpsMinimum = new Version(1, 17);

        [StructLayout(LayoutKind.Sequential)]
        struct OrtApiBase
        {
            public IntPtr GetApi;            // const OrtApi* (*)(uint32_t version)
            public IntPtr GetVersionString;  // const char* (*)(void)
        }

        [UnmanagedFunctionPointer(CallingConvention.Winapi)] delegate IntPtr DGetApiBase();
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] delegate IntPtr DGetApi(uint version);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] delegate IntPtr DGetVersionString();

        // Every OrtStatus* result is IntPtr: null means success.
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate int DGetErrorCode(IntPtr status);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetErrorMessage(IntPtr status);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DCreateEnv(int logLevel, /* const char* */ byte[] logId, out IntPtr env);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DCreateSession(IntPtr env, /* const ORTCHAR_T* */ IntPtr modelPath, IntPtr options, out IntPtr session);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)]
        public delegate IntPtr DRun(IntPtr session, IntPtr runOptions, /* const char* const* */ IntPtr[] inputNames,
            /* const OrtValue* const* */ IntPtr[] inputs, UIntPtr inputCount, /* const char* const* */ IntPtr[] outputNames,
            UIntPtr outputCount, /* OrtValue** */ [In, Out] IntPtr[] outputs);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DCreateSessionOptions(out IntPtr options);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DSetInt(IntPtr target, int value);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetCount(IntPtr session, out UIntPtr count);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetName(IntPtr session, UIntPtr index, IntPtr allocator, out IntPtr name);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)]
        public delegate IntPtr DCreateTensorWithData(IntPtr memoryInfo, IntPtr data, UIntPtr byteLength,
            /* const int64_t* */ long[] shape, UIntPtr shapeLength, int elementType, out IntPtr value);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetPtr(IntPtr obj, out IntPtr result);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetElementType(IntPtr info, out int type);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetDimensionsCount(IntPtr info, out UIntPtr count);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetDimensions(IntPtr info, [Out] long[] dims, UIntPtr count);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DCreateCpuMemoryInfo(int allocatorType, int memType, out IntPtr info);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DAllocatorFree(IntPtr allocator, IntPtr p);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetAllocator(out IntPtr allocator);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate void DRelease(IntPtr obj);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DGetAvailableProviders(out IntPtr names, out int count);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DReleaseAvailableProviders(IntPtr names, int count);
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DAppendCuda(IntPtr options, IntPtr cudaOptions);
        // RegisterCustomOpsLibrary_V2(OrtSessionOptions*, const ORTCHAR_T* library_path).
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DRegisterLibrary(IntPtr options, IntPtr libraryPath);
        // AddSessionConfigEntry(OrtSessionOptions*, key, value) and AddRunConfigEntry(OrtRunOptions*, key, value).
        [UnmanagedFunctionPointer(CallingConvention.Winapi)] public delegate IntPtr DAddConfigEntry(IntPtr options, /* const char* */ byte[] key, /* const char* */ byte[] value);

        public readonly string LibraryPath;
        public readonly string Version;

        public readonly DGetErrorCode GetErrorCode;
        public readonly DGetErrorMessage GetErrorMessage;
        public readonly DCreateEnv CreateEnv;
        public readonly DCreateSession CreateSession;
        public readonly DRun Run;
        public readonly DCreateSessionOptions CreateSessionOptions;
        public readonly DCreateSessionOptions CreateRunOptions; // same shape: OrtStatus* (T** out)
        public readonly DAddConfigEntry AddSessionConfigEntry, AddRunConfigEntry;
        public readonly DSetInt SetSessionGraphOptimizationLevel, SetIntraOpNumThreads, SetInterOpNumThreads;
        public readonly DGetCount SessionGetInputCount, SessionGetOutputCount;
        public readonly DGetName SessionGetInputName, SessionGetOutputName;
        public readonly DCreateTensorWithData CreateTensorWithDataAsOrtValue;
        public readonly DGetPtr GetTensorMutableData, GetTensorTypeAndShape;
        public readonly DCreateSessionOptions CreateCUDAProviderOptions; // same shape: OrtStatus* (T** out)
        public readonly DGetElementType GetTensorElementType;
        public readonly DGetDimensionsCount GetDimensionsCount;
        public readonly DGetDimensions GetDimensions;
        public readonly DCreateCpuMemoryInfo CreateCpuMemoryInfo;
        public readonly DAllocatorFree AllocatorFree;
        public readonly DGetAllocator GetAllocatorWithDefaultOptions;
        public readonly DRelease ReleaseEnv, ReleaseStatus, ReleaseMemoryInfo, ReleaseSession, ReleaseValue,
            ReleaseTensorTypeAndShapeInfo, ReleaseSessionOptions, ReleaseCUDAProviderOptions, ReleaseRunOptions;
        public readonly DGetAvailableProviders GetAvailableProviders;
        public readonly DReleaseAvailableProviders ReleaseAvailableProviders;
        public readonly DAppendCuda SessionOptionsAppendExecutionProvider_CUDA_V2;
        /// <summary>Null before <see cref="FusedOpsMinimum"/>: the slot is read only where the core's
        /// kernels could run, never past the end of an older library's table.</summary>
        public readonly DRegisterLibrary RegisterCustomOpsLibrary_V2;

        readonly IntPtr table;

        OrtApi(string path, IntPtr table, string version)
        {
            LibraryPath = path;
            this.table = table;
            Version = version;
            GetErrorCode = Fn<DGetErrorCode>(Slot.GetErrorCode);
            GetErrorMessage = Fn<DGetErrorMessage>(Slot.GetErrorMessage);
            CreateEnv = Fn<DCreateEnv>(Slot.CreateEnv);
            CreateSession = Fn<DCreateSession>(Slot.CreateSession);
            Run = Fn<DRun>(Slot.Run);
            CreateSessionOptions = Fn<DCreateSessionOptions>(Slot.CreateSessionOptions);
            CreateRunOptions = Fn<DCreateSessionOptions>(Slot.CreateRunOptions);
            AddSessionConfigEntry = Fn<DAddConfigEntry>(Slot.AddSessionConfigEntry);
            AddRunConfigEntry = Fn<DAddConfigEntry>(Slot.AddRunConfigEntry);
            ReleaseRunOptions = Fn<DRelease>(Slot.ReleaseRunOptions);
            SetSessionGraphOptimizationLevel = Fn<DSetInt>(Slot.SetSessionGraphOptimizationLevel);
            SetIntraOpNumThreads = Fn<DSetInt>(Slot.SetIntraOpNumThreads);
            SetInterOpNumThreads = Fn<DSetInt>(Slot.SetInterOpNumThreads);
            SessionGetInputCount = Fn<DGetCount>(Slot.SessionGetInputCount);
            SessionGetOutputCount = Fn<DGetCount>(Slot.SessionGetOutputCount);
            SessionGetInputName = Fn<DGetName>(Slot.SessionGetInputName);
            SessionGetOutputName = Fn<DGetName>(Slot.SessionGetOutputName);
            CreateTensorWithDataAsOrtValue = Fn<DCreateTensorWithData>(Slot.CreateTensorWithDataAsOrtValue);
            GetTensorMutableData = Fn<DGetPtr>(Slot.GetTensorMutableData);
            GetTensorTypeAndShape = Fn<DGetPtr>(Slot.GetTensorTypeAndShape);
            GetTensorElementType = Fn<DGetElementType>(Slot.GetTensorElementType);
            GetDimensionsCount = Fn<DGetDimensionsCount>(Slot.GetDimensionsCount);
            GetDimensions = Fn<DGetDimensions>(Slot.GetDimensions);
            CreateCpuMemoryInfo = Fn<DCreateCpuMemoryInfo>(Slot.CreateCpuMemoryInfo);
            AllocatorFree = Fn<DAllocatorFree>(Slot.AllocatorFree);
            GetAllocatorWithDefaultOptions = Fn<DGetAllocator>(Slot.GetAllocatorWithDefaultOptions);
            ReleaseEnv = Fn<DRelease>(Slot.ReleaseEnv);
            ReleaseStatus = Fn<DRelease>(Slot.ReleaseStatus);
            ReleaseMemoryInfo = Fn<DRelease>(Slot.ReleaseMemoryInfo);
            ReleaseSession = Fn<DRelease>(Slot.ReleaseSession);
            ReleaseValue = Fn<DRelease>(Slot.ReleaseValue);
            ReleaseTensorTypeAndShapeInfo = Fn<DRelease>(Slot.ReleaseTensorTypeAndShapeInfo);
            ReleaseSessionOptions = Fn<DRelease>(Slot.ReleaseSessionOptions);
            GetAvailableProviders = Fn<DGetAvailableProviders>(Slot.GetAvailableProviders);
            ReleaseAvailableProviders = Fn<DReleaseAvailableProviders>(Slot.ReleaseAvailableProviders);
            SessionOptionsAppendExecutionProvider_CUDA_V2 = Fn<DAppendCuda>(Slot.SessionOptionsAppendExecutionProvider_CUDA_V2);
            CreateCUDAProviderOptions = Fn<DCreateSessionOptions>(Slot.CreateCUDAProviderOptions);
            ReleaseCUDAProviderOptions = Fn<DRelease>(Slot.ReleaseCUDAProviderOptions);
            if (AtLeast(version, FusedOpsMinimum))
                RegisterCustomOpsLibrary_V2 = Fn<DRegisterLibrary>(Slot.RegisterCustomOpsLibrary_V2);
        }

        /// <summary>Whether the version string "major.minor[.patch...]" is at least <paramref name="minimum"/>.</summary>
        internal static bool AtLeast(string version, Version minimum)
        {
            string[] parts = (version ?? "").Split('.');
            int major, minor;
            if (parts.Length < 2 || !int.TryParse(parts[0], out major) || !int.TryParse(parts[1], out minor))
                return false;
            return new Version(major, minor) >= minimum;
        }

        T Fn<T>(Slot slot) where T : class
        {
            IntPtr fn = Marshal.ReadIntPtr(table, (int)slot * IntPtr.Size);
            if (fn == IntPtr.Zero)
                throw new InvalidOperationException("ONNX Runtime at " + LibraryPath + " has no function in OrtApi slot " + slot);
            return (T)(object)Marshal.GetDelegateForFunctionPointer(fn, typeof(T));
        }

        /// <summary>Environment variable holding the full path of the ONNX Runtime shared library.</summary>
        public const string EnvVar = "ACESTEP_ORT_LIB";

        /// <summary>Loads ONNX Runtime from <paramref name="path"/> (or ACESTEP_ORT_LIB, or next to
        /// this assembly, or the OS search path) and fetches the API table.</summary>
        public static OrtApi Load(string path)
        {
            var tried = new System.Collections.Generic.List<string>();
            var candidates = new System.Collections.Generic.List<string>();
            string explicitPath = path ?? Environment.GetEnvironmentVariable(EnvVar);
            if (!string.IsNullOrEmpty(explicitPath))
            {
                candidates.Add(System.IO.Path.GetFullPath(explicitPath));
            }
            else
            {
                string here = System.IO.Path.GetDirectoryName(typeof(OrtApi).Assembly.Location) ?? ".";
                candidates.Add(System.IO.Path.Combine(here, NativeLoader.FileName("onnxruntime")));
                candidates.Add(NativeLoader.FileName("onnxruntime")); // OS search path
            }
            IntPtr lib = IntPtr.Zero;
            string loaded = null;
            foreach (string candidate in candidates)
            {
                string error;
                lib = NativeLoader.TryLoad(candidate, out error);
                if (lib != IntPtr.Zero) { loaded = candidate; break; }
                tried.Add(candidate + " (" + (error ?? "not found") + ")");
            }
            if (lib == IntPtr.Zero)
                throw new DllNotFoundException("cannot load ONNX Runtime. Tried: " + string.Join("; ", tried) +
                    ". Set " + EnvVar + " to the library's full path (the onnxruntime Python wheel ships it in onnxruntime/capi/)");
            IntPtr getApiBase = NativeLoader.Symbol(lib, "OrtGetApiBase");
            if (getApiBase == IntPtr.Zero)
                throw new EntryPointNotFoundException(loaded + " exports no OrtGetApiBase: it is not ONNX Runtime");
            var baseFn = (DGetApiBase)Marshal.GetDelegateForFunctionPointer(getApiBase, typeof(DGetApiBase));
            var apiBase = (OrtApiBase)Marshal.PtrToStructure(baseFn(), typeof(OrtApiBase));
            var versionFn = (DGetVersionString)Marshal.GetDelegateForFunctionPointer(apiBase.GetVersionString, typeof(DGetVersionString));
            string version = Utf8.PtrToString(versionFn());
            var getApi = (DGetApi)Marshal.GetDelegateForFunctionPointer(apiBase.GetApi, typeof(DGetApi));
            IntPtr table = getApi(ApiVersion);
            if (table == IntPtr.Zero)
                throw new NotSupportedException("ONNX Runtime " + version + " at " + loaded + " does not provide C API version " +
                    ApiVersion + " (ONNX Runtime 1.14 or newer is needed)");
            return new OrtApi(loaded, table, version);
        }

        /// <summary>Throws OrtException for a non-null OrtStatus* (and releases it).</summary>
        public void Check(IntPtr status, string what)
        {
            if (status == IntPtr.Zero)
                return;
            int code = GetErrorCode(status);
            string message = Utf8.PtrToString(GetErrorMessage(status));
            ReleaseStatus(status);
            throw new OrtException(code, what + ": " + message);
        }
    }
}
