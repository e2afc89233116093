// Naming and writing the tracks of a generation: a WAV file plus a JSON sidecar per item, by the
// Python host's rules (bindings/python/acestep_runtime/outputs.py):
// - `output` ending in '/' (or '\') or naming an existing directory: files `<track id[:16]><suffix>`
//   in it (".wav" wav16, ".24bit.wav" wav24, ".f32.wav" wav32f); a directory ending in '/' is created;
// - otherwise `output` is a file path (".wav" added when missing); a batch gets `_<i>` suffixes;
// - an existing file (audio or sidecar) is never replaced unless overwrite; checked before writing;
// - every item is encoded before the first file is written; audio, then its sidecar, each atomic.
using System;
using System.Collections.Generic;
using System.IO;
using System.Security.Cryptography;
using System.Text;

namespace AceStep.Runtime.Host
{
    /// <summary>The output location or format cannot be used (names the path and the reason).</summary>
    public class OutputException : IOException
    {
        public OutputException(string message) : base(message) { }
    }

    public static class Outputs
    {
        public const string DefaultFormat = "wav16";

        static void CheckFormat(string format)
        {
            if (Array.IndexOf(Wav.Formats, format) < 0)
                throw new ArgumentException("unknown output format '" + format + "'; choose one of: " + string.Join(", ", Wav.Formats));
        }

        static bool IsDirectoryTarget(string output)
        {
            return output.EndsWith("/", StringComparison.Ordinal) || output.EndsWith("\\", StringComparison.Ordinal) || Directory.Exists(output);
        }

        /// <summary>Where each item goes (see the file comment).</summary>
        /// <param name="output">a directory (existing, or ending in '/') or a file path</param>
        /// <param name="fileNames">the core's file names per format (a plan's or a result's <c>FileNames</c>)</param>
        /// <param name="format">wav16, wav24 or wav32f</param>
        public static string[] Paths(string output, Dictionary<string, string[]> fileNames, string format)
        {
            if (output == null) throw new ArgumentNullException("output");
            CheckFormat(format);
            string[] names = fileNames[format];
            var paths = new string[names.Length];
            if (IsDirectoryTarget(output))
            {
                for (int i = 0; i < paths.Length; i++)
                    paths[i] = Path.Combine(output, names[i]);
                return paths;
            }
            string stem = output.EndsWith(".wav", StringComparison.OrdinalIgnoreCase) ? output.Substring(0, output.Length - 4) : output;
            for (int i = 0; i < paths.Length; i++)
                paths[i] = paths.Length == 1 ? stem + ".wav" : stem + "_" + i + ".wav";
            return paths;
        }

        public static string SidecarPath(string audioPath) { return audioPath + ".json"; }

        /// <summary>Writes every item of <paramref name="result"/>; returns the audio paths.</summary>
        public static string[] Save(GenerationResult result, string output, string format, bool overwrite)
        {
            format = format ?? DefaultFormat;
            string[] paths = Paths(output, result.FileNames, format);
            if (output.EndsWith("/", StringComparison.Ordinal) || output.EndsWith("\\", StringComparison.Ordinal))
                Directory.CreateDirectory(output); // an explicit directory is created
            foreach (string path in paths)
            {
                string dir = Path.GetDirectoryName(Path.GetFullPath(path));
                if (!Directory.Exists(dir))
                    throw new OutputException("output directory does not exist: " + dir);
                foreach (string target in new[] { path, SidecarPath(path) })
                    if (File.Exists(target) && !overwrite)
                        throw new OutputException(target + " exists; pass --overwrite (overwrite: true) to replace it");
            }
            int channels = result.AudioShape[1], samples = result.AudioShape[2];
            var encoded = new byte[paths.Length][];
            for (int b = 0; b < paths.Length; b++)
                encoded[b] = Wav.Encode(format, result.Audio, checked(b * channels * samples), channels, samples, result.SampleRate);
            for (int b = 0; b < paths.Length; b++)
            {
                var sidecar = Json.ParseObject(result.Sidecars[b]);
                object hostValue;
                var host = sidecar.TryGetValue("host", out hostValue) && hostValue is Dictionary<string, object>
                    ? (Dictionary<string, object>)hostValue : new Dictionary<string, object>();
                host["file"] = Path.GetFileName(paths[b]);
                host["format"] = format;
                host["audio_sha256"] = Sha256Hex(encoded[b]);
                sidecar["host"] = host;
                byte[] text = new UTF8Encoding(false).GetBytes(Json.Write(sidecar, indent: 2) + "\n");
                Wav.WriteAtomic(paths[b], encoded[b]);
                Wav.WriteAtomic(SidecarPath(paths[b]), text);
            }
            return paths;
        }

        public static string Sha256Hex(byte[] data)
        {
            using (var h = SHA256.Create())
                return BitConverter.ToString(h.ComputeHash(data)).Replace("-", "").ToLowerInvariant();
        }
    }
}
