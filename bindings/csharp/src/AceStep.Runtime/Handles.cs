// One SafeHandle per opaque core object: the runtime frees each exactly once (also on finalization),
// and a disposed handle passed to NativeMethods throws ObjectDisposedException instead of crashing.
using System;
using System.Runtime.InteropServices;

namespace AceStep.Runtime
{
    public abstract class AceHandle : SafeHandle
    {
        protected AceHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
    }

    /// <summary>`AceContext*` (immutable after creation: may be shared between threads).</summary>
    public sealed class AceContextHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_free_context(handle); return true; }
    }

    /// <summary>`AceApg*` (one thread at a time).</summary>
    public sealed class AceApgHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_apg_free(handle); return true; }
    }

    /// <summary>`AceFsm*` (one thread at a time).</summary>
    public sealed class AceFsmHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_fsm_free(handle); return true; }
    }

    /// <summary>`AceHeun*` (one thread at a time).</summary>
    public sealed class AceHeunHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_heun_free(handle); return true; }
    }

    /// <summary>`AceNoiseStream*` (one thread at a time).</summary>
    public sealed class AceNoiseStreamHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_noise_stream_free(handle); return true; }
    }

    /// <summary>`AceSampler*` (one thread at a time).</summary>
    public sealed class AceSamplerHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_sampler_free(handle); return true; }
    }

    /// <summary>`AceTokenizer*` (immutable: may be shared between threads).</summary>
    public sealed class AceTokenizerHandle : AceHandle
    {
        protected override bool ReleaseHandle() { NativeMethods.ace_tokenizer_free(handle); return true; }
    }

    /// <summary>`AcePackage*` (immutable: may be shared between threads; generations keep it alive).</summary>
    public sealed class AcePackageHandle : AceHandle
    {
        protected override bool ReleaseHandle() { return NativeMethods.ace_package_free(handle) == AceStatus.Ok; }
    }

    /// <summary>`AceGeneration*` (one thread at a time). Freeing it before the end cancels the run.</summary>
    public sealed class AceGenerationHandle : AceHandle
    {
        protected override bool ReleaseHandle() { return NativeMethods.ace_generation_free(handle) == AceStatus.Ok; }
    }

    /// <summary>Element types of `AceTensor.dtype` (ONNX Runtime's numbers).</summary>
    public static class AceDType
    {
        public const int Float32 = 1; // ACE_DTYPE_FLOAT32
        public const int Int64 = 7;   // ACE_DTYPE_INT64
    }

    /// <summary>`AceTensor`: a named tensor crossing the boundary (a call input or a submitted
    /// output). Blittable: read it through a pointer, never copy the data it points to past the
    /// call's lifetime.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AceTensor
    {
        public IntPtr Name;      // const char*
        public int DType;        // AceDType
        public IntPtr Shape;     // const int64_t*, Rank values (-1: unknown, host-held input)
        public UIntPtr Rank;
        public IntPtr Data;      // const void*, ByteLen bytes; NULL when HostKey is set
        public UIntPtr ByteLen;
        public IntPtr HostKey;   // const char*: feed the value kept under this key
    }

    /// <summary>`AceGraphOutput`: an output a call wants; KeepAs NULL means submit it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AceGraphOutput
    {
        public IntPtr Name;      // const char*
        public IntPtr KeepAs;    // const char*
    }

    /// <summary>`AceGraphCall`: the next graph run, owned by the generation (valid until the next
    /// next/submit/free on it).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AceGraphCall
    {
        public IntPtr Component;   // const char*
        public IntPtr Inputs;      // const AceTensor*
        public UIntPtr NumInputs;
        public IntPtr Outputs;     // const AceGraphOutput*
        public UIntPtr NumOutputs;
        public IntPtr Release;     // const char* const*
        public UIntPtr NumRelease;
        public IntPtr Stage;       // const char*
        public uint StageDone;
        public uint StageTotal;
    }

    /// <summary>`AceTileWindow` (see ace_vae_tile_plan): decode latent frames [Start, End), drop
    /// CropLeft samples at the front and CropRight at the back.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AceTileWindow
    {
        public uint Start;
        public uint End;
        public uint CoreStart;
        public uint CoreEnd;
        public ulong CropLeft;
        public ulong CropRight;
    }
}
