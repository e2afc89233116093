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
