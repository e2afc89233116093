// What the generation loop needs from an inference engine, and nothing more: open a graph, read its
// input/output names, run it on tensors in managed memory. OrtBackend (this folder) implements it
// over the ONNX Runtime C API; docs/csharp_host.md shows the few lines that implement it over the
// official Microsoft.ML.OnnxRuntime package instead.
using System;
using System.Collections.Generic;

namespace AceStep.Runtime.Inference
{
    public enum TensorType { Float32 = 1, Int64 = 7 }

    /// <summary>A dense row-major tensor over a managed array (float32 or int64).</summary>
    public sealed class Tensor
    {
        public TensorType Type { get; private set; }
        public long[] Shape { get; private set; }
        public float[] Floats { get; private set; }
        public long[] Int64s { get; private set; }

        Tensor(TensorType type, long[] shape, float[] floats, long[] ints)
        {
            if (shape == null)
                throw new ArgumentNullException("shape");
            long n = 1;
            foreach (long d in shape)
            {
                if (d < 0)
                    throw new ArgumentException("negative dimension in shape [" + string.Join(", ", shape) + "]");
                n = checked(n * d);
            }
            long have = floats != null ? floats.LongLength : ints.LongLength;
            if (have != n)
                throw new ArgumentException("shape [" + string.Join(", ", shape) + "] needs " + n + " values, the array has " + have);
            Type = type;
            Shape = (long[])shape.Clone();
            Floats = floats;
            Int64s = ints;
        }

        public static Tensor Float(float[] data, params long[] shape)
        {
            if (data == null) throw new ArgumentNullException("data");
            return new Tensor(TensorType.Float32, shape, data, null);
        }

        public static Tensor Int64(long[] data, params long[] shape)
        {
            if (data == null) throw new ArgumentNullException("data");
            return new Tensor(TensorType.Int64, shape, null, data);
        }

        public Array Data { get { return Type == TensorType.Float32 ? (Array)Floats : Int64s; } }

        public long ElementCount { get { return Data.LongLength; } }

        public string ShapeText { get { return "[" + string.Join(", ", Shape) + "]"; } }
    }

    /// <summary>One loaded graph. Not thread-safe for Run on all engines: use one thread at a time.</summary>
    public interface IInferenceSession : IDisposable
    {
        /// <summary>What error messages call this graph (the package component name).</summary>
        string Name { get; }
        string[] InputNames { get; }
        string[] OutputNames { get; }
        /// <summary>Runs the graph; <paramref name="feeds"/> must name every input exactly once.
        /// Returns all outputs in graph order.</summary>
        Tensor[] Run(IDictionary<string, Tensor> feeds);
    }

    public interface IInferenceBackend : IDisposable
    {
        /// <summary>Loads the graph at <paramref name="modelPath"/>; <paramref name="name"/> is used in messages.</summary>
        IInferenceSession Open(string name, string modelPath);
        /// <summary>Where graphs run, e.g. "CPUExecutionProvider".</summary>
        string Device { get; }
        /// <summary>The engine's version, e.g. ONNX Runtime's "1.32.0" (recorded in sidecars).</summary>
        string Version { get; }
    }

    /// <summary>ONNX Runtime reported an error (OrtStatus); the message names the graph and the call.</summary>
    public class OrtException : Exception
    {
        /// <summary>OrtErrorCode (1 FAIL, 2 INVALID_ARGUMENT, 3 NO_SUCHFILE, 4 NO_MODEL, ...).</summary>
        public int ErrorCode { get; private set; }

        public OrtException(int errorCode, string message) : base(message) { ErrorCode = errorCode; }
    }
}
