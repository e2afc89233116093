// The core's generation driver in managed form: ModelPackage (ace_package_*) and Generation
// (ace_generation_*). The core decides everything (prompts, tokens, noise, schedule, guidance,
// solver steps, VAE tiling, peak guard, track ids); a host asks Next() for a graph run, runs it,
// keeps the outputs the call says to keep and hands the rest back with Submit(). Pipeline.cs is
// that loop over ONNX Runtime.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using AceStep.Runtime.Inference;

namespace AceStep.Runtime
{
    /// <summary>An opened, checked model package (`AcePackage`). Immutable: may be shared between
    /// threads and generations.</summary>
    public sealed class ModelPackage : IDisposable
    {
        public AcePackageHandle Handle { get; private set; }
        /// <summary>The directory as given to Open.</summary>
        public string Path { get; private set; }
        /// <summary>`ace_package_info_json`: components (file, path, bytes, signatures), kind, variant, ...</summary>
        public string InfoJson { get; private set; }
        public Dictionary<string, object> Info { get; private set; }

        ModelPackage(AcePackageHandle handle, string path)
        {
            Handle = handle;
            Path = path;
            InfoJson = Ace.CallString((out IntPtr r) => NativeMethods.ace_package_info_json(Handle, out r));
            Info = Json.ParseObject(InfoJson);
        }

        /// <summary>Opens the package in <paramref name="dir"/>; the core checks the manifest and
        /// every file's presence and size (and sha256 with <paramref name="verify"/>).</summary>
        public static ModelPackage Open(string dir, bool verify = false)
        {
            if (dir == null)
                throw new ArgumentNullException("dir");
            AceLibrary.Load();
            AcePackageHandle h;
            AceException.Check(NativeMethods.ace_package_open(Utf8.Encode(dir), verify ? Utf8.Encode("{\"verify_sha256\": true}") : null, out h));
            try
            {
                return new ModelPackage(h, dir);
            }
            catch
            {
                h.Dispose();
                throw;
            }
        }

        /// <summary>"turbo", "base" or "sft".</summary>
        public string Kind { get { return Info.ContainsKey("model_kind") ? Info["model_kind"] as string : null; } }

        /// <summary>The file of a component, as the core resolved it (ArgumentException names the
        /// components the package has).</summary>
        public string ComponentPath(string component)
        {
            var components = Info["components"] as Dictionary<string, object>;
            object entry;
            if (components == null || !components.TryGetValue(component, out entry))
                throw new ArgumentException("model package " + Path + " has no component '" + component + "' (it has: " +
                    (components == null ? "" : string.Join(", ", components.Keys)) + ")");
            return (string)((Dictionary<string, object>)entry)["path"];
        }

        /// <summary>`ace_request_normalize`: `{"request": {...}, "notes": [...]}` for this package's model kind.</summary>
        public string NormalizeRequest(string requestJson)
        {
            byte[] req = Utf8.Encode(requestJson);
            return Ace.CallString((out IntPtr r) => NativeMethods.ace_request_normalize(Handle, req, out r));
        }

        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>An input of a graph call: the core's values (Value, a managed copy) or, when
    /// HostKey is set, the value the host kept under that key.</summary>
    public sealed class CallInput
    {
        public string Name { get; internal set; }
        public Tensor Value { get; internal set; }
        public string HostKey { get; internal set; }
    }

    /// <summary>An output a call wants: KeepAs null means submit it, else keep it under KeepAs.</summary>
    public sealed class CallOutput
    {
        public string Name { get; internal set; }
        public string KeepAs { get; internal set; }
    }

    /// <summary>A managed copy of one `AceGraphCall`: valid after the next Submit too.</summary>
    public sealed class GraphCall
    {
        public string Component { get; internal set; }
        public CallInput[] Inputs { get; internal set; }
        public CallOutput[] Outputs { get; internal set; }
        /// <summary>Host-kept keys no later call needs: drop them after this run.</summary>
        public string[] Release { get; internal set; }
        /// <summary>"encode", "diffusion" or "decode".</summary>
        public string Stage { get; internal set; }
        /// <summary>Calls of this stage done before this one.</summary>
        public int StageDone { get; internal set; }
        public int StageTotal { get; internal set; }
    }

    /// <summary>One generation of one request on one package (`AceGeneration`). One thread at a
    /// time. Disposing it before the end cancels the run.</summary>
    public sealed unsafe class Generation : IDisposable
    {
        public AceGenerationHandle Handle { get; private set; }
        /// <summary>`ace_generation_info_json`: resolved request, seeds, frames, schedule, components, track ids, ...</summary>
        public string InfoJson { get; private set; }
        public Dictionary<string, object> Info { get; private set; }

        public Generation(ModelPackage package, string requestJson)
        {
            if (package == null)
                throw new ArgumentNullException("package");
            AceLibrary.Load();
            AceGenerationHandle h;
            AceException.Check(NativeMethods.ace_generation_create(package.Handle, Utf8.Encode(requestJson), out h));
            Handle = h;
            RefreshInfo();
        }

        /// <summary>Re-reads the plan. Values the run decides on the way (with the 5 Hz LM: frames,
        /// prompts, track ids) are known once it has finished.</summary>
        public void RefreshInfo()
        {
            InfoJson = Ace.CallString((out IntPtr r) => NativeMethods.ace_generation_info_json(Handle, out r));
            Info = Json.ParseObject(InfoJson);
        }

        /// <summary>The components this run needs, in the order it first runs them.</summary>
        public string[] Components { get { return Strings(Info["components"]); } }
        public string[] TrackIds { get { return Strings(Info["track_ids"]); } }
        /// <summary>Each item's file name in an output directory, per format (the core's naming rule).</summary>
        public Dictionary<string, string[]> FileNames { get { return FileNamesOf(Info); } }

        /// <summary>The "file_names" of a generation plan (<c>ace_generation_info_json</c>).</summary>
        public static Dictionary<string, string[]> FileNamesOf(Dictionary<string, object> info)
        {
            var names = new Dictionary<string, string[]>();
            foreach (var entry in (Dictionary<string, object>)info["file_names"])
                names[entry.Key] = Strings(entry.Value);
            return names;
        }
        public long[] Seeds { get { return ((List<object>)Info["seeds"]).ConvertAll(Convert.ToInt64).ToArray(); } }

        static string[] Strings(object list) { return ((List<object>)list).ConvertAll(o => (string)o).ToArray(); }

        /// <summary>The next graph run, or null when the generation has finished.</summary>
        public GraphCall Next()
        {
            AceGraphCall* call;
            AceException.Check(NativeMethods.ace_generation_next(Handle, out call));
            if (call == null)
                return null;
            var result = new GraphCall
            {
                Component = Utf8.PtrToString(call->Component),
                Inputs = new CallInput[(int)call->NumInputs],
                Outputs = new CallOutput[(int)call->NumOutputs],
                Release = new string[(int)call->NumRelease],
                Stage = Utf8.PtrToString(call->Stage),
                StageDone = (int)call->StageDone,
                StageTotal = (int)call->StageTotal,
            };
            var inputs = (AceTensor*)call->Inputs;
            for (int i = 0; i < result.Inputs.Length; i++)
                result.Inputs[i] = ReadInput(result.Component, inputs + i);
            var outputs = (AceGraphOutput*)call->Outputs;
            for (int i = 0; i < result.Outputs.Length; i++)
                result.Outputs[i] = new CallOutput { Name = Utf8.PtrToString(outputs[i].Name), KeepAs = Utf8.PtrToString(outputs[i].KeepAs) };
            var release = (IntPtr*)call->Release;
            for (int i = 0; i < result.Release.Length; i++)
                result.Release[i] = Utf8.PtrToString(release[i]);
            return result;
        }

        static CallInput ReadInput(string component, AceTensor* t)
        {
            var input = new CallInput { Name = Utf8.PtrToString(t->Name) };
            if (t->HostKey != IntPtr.Zero)
            {
                input.HostKey = Utf8.PtrToString(t->HostKey);
                return input;
            }
            var shape = new long[(int)t->Rank];
            long count = 1;
            for (int d = 0; d < shape.Length; d++)
                count = checked(count * (shape[d] = ((long*)t->Shape)[d]));
            int elementSize = t->DType == AceDType.Float32 ? 4 : t->DType == AceDType.Int64 ? 8 : 0;
            if (elementSize == 0 || (ulong)t->ByteLen != (ulong)(count * elementSize))
                throw new InvalidOperationException(component + " input " + input.Name + ": dtype " + t->DType + ", " +
                    (ulong)t->ByteLen + " bytes for shape [" + string.Join(", ", shape) + "] (core and binding disagree on AceTensor)");
            if (t->DType == AceDType.Float32)
            {
                var data = new float[count];
                if (count > 0) Marshal.Copy(t->Data, data, 0, (int)count);
                input.Value = Tensor.Float(data, shape);
            }
            else
            {
                var data = new long[count];
                if (count > 0) Marshal.Copy(t->Data, data, 0, (int)count);
                input.Value = Tensor.Int64(data, shape);
            }
            return input;
        }

        /// <summary>Hands back the outputs of the pending call that are not kept (by name, once each).</summary>
        public void Submit(IList<KeyValuePair<string, Tensor>> outputs)
        {
            if (outputs == null)
                throw new ArgumentNullException("outputs");
            int n = outputs.Count;
            var tensors = new AceTensor[Math.Max(n, 1)];
            var pins = new List<GCHandle>();
            var names = new List<IntPtr>();
            try
            {
                for (int i = 0; i < n; i++)
                {
                    Tensor value = outputs[i].Value;
                    if (outputs[i].Key == null)
                        throw new ArgumentNullException("outputs", "output " + i + " has no name");
                    if (value == null)
                        throw new ArgumentNullException("outputs", "output " + outputs[i].Key + " is null");
                    byte[] nameBytes = Utf8.Encode(outputs[i].Key);
                    IntPtr name = Marshal.AllocHGlobal(nameBytes.Length);
                    Marshal.Copy(nameBytes, 0, name, nameBytes.Length);
                    names.Add(name);
                    GCHandle shape = GCHandle.Alloc(value.Shape, GCHandleType.Pinned);
                    pins.Add(shape);
                    GCHandle data = GCHandle.Alloc(value.Data, GCHandleType.Pinned);
                    pins.Add(data);
                    int elementSize = value.Type == TensorType.Float32 ? 4 : 8;
                    tensors[i] = new AceTensor
                    {
                        Name = name,
                        DType = (int)value.Type,
                        Shape = shape.AddrOfPinnedObject(),
                        Rank = (UIntPtr)value.Shape.Length,
                        Data = data.AddrOfPinnedObject(),
                        ByteLen = (UIntPtr)(ulong)(value.ElementCount * elementSize),
                    };
                }
                fixed (AceTensor* p = tensors)
                    AceException.Check(NativeMethods.ace_generation_submit(Handle, p, (UIntPtr)n));
            }
            finally
            {
                foreach (GCHandle pin in pins) pin.Free();
                foreach (IntPtr name in names) Marshal.FreeHGlobal(name);
            }
        }

        delegate AceStatus ResultFn(AceGenerationHandle g, out float* data, UIntPtr* shape);

        float[] Result(ResultFn fn, out int[] shape)
        {
            var dims = new UIntPtr[3];
            float* data;
            fixed (UIntPtr* d = dims)
                AceException.Check(fn(Handle, out data, d));
            shape = new int[] { (int)dims[0], (int)dims[1], (int)dims[2] };
            var values = new float[checked((long)shape[0] * shape[1] * shape[2])];
            if (values.Length > 0) Marshal.Copy((IntPtr)data, values, 0, values.Length);
            return values;
        }

        /// <summary>The finished audio, float32 [batch, channels, samples] (peak-guarded), a copy.</summary>
        public float[] Audio(out int[] shape) { return Result(NativeMethods.ace_generation_result_audio, out shape); }

        /// <summary>The final latents, float32 [batch, frames, 64], a copy.</summary>
        public float[] Latents(out int[] shape) { return Result(NativeMethods.ace_generation_result_latents, out shape); }

        /// <summary>The sidecar JSON of batch item <paramref name="item"/>, with <paramref name="hostJson"/>
        /// (a JSON object, or null) under "host".</summary>
        public string Sidecar(int item, string hostJson)
        {
            if (item < 0)
                throw new ArgumentOutOfRangeException("item", "negative batch item " + item);
            byte[] host = Utf8.Encode(hostJson);
            return Ace.CallString((out IntPtr r) => NativeMethods.ace_generation_sidecar_json(Handle, (UIntPtr)(uint)item, host, out r));
        }

        public void Dispose() { Handle.Dispose(); }
    }
}
