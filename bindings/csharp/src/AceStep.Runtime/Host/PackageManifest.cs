// A model package directory read through its manifest.json (docs/io_contract.md), as the Python
// host's package.py reads it: every file is found through the manifest, nothing by guessing names.
// The per-step example (examples/ffi/csharp/Generate.cs) reads the package with it; the driver-based
// host reads packages through the core instead (AceStep.Runtime.ModelPackage, ace_package_*).
using System;
using System.Collections.Generic;
using System.IO;
using System.Security.Cryptography;

namespace AceStep.Runtime.Host
{
    public class PackageException : Exception
    {
        public PackageException(string message) : base(message) { }
    }

    public sealed class PackageManifest
    {
        public const int SupportedFormatVersion = 1;

        public string Root { get; private set; }
        public Dictionary<string, object> Manifest { get; private set; }
        public string ManifestSha256 { get; private set; }

        PackageManifest() { }

        public static PackageManifest Open(string root)
        {
            if (!Directory.Exists(root))
                throw new PackageException("model package not found: " + root + " is not a directory");
            string manifestPath = Path.Combine(root, "manifest.json");
            if (!File.Exists(manifestPath))
                throw new PackageException(root + " is not a model package: manifest.json is missing");
            byte[] raw = File.ReadAllBytes(manifestPath);
            Dictionary<string, object> manifest;
            try
            {
                manifest = Json.ParseObject(new System.Text.UTF8Encoding(false, true).GetString(raw));
            }
            catch (FormatException e)
            {
                throw new PackageException(manifestPath + " is not valid JSON: " + e.Message);
            }
            object version;
            manifest.TryGetValue("format_version", out version);
            if (!(version is long) || (long)version != SupportedFormatVersion)
                throw new PackageException(manifestPath + ": format_version " + (version ?? "null") +
                    " is not supported (this host reads version " + SupportedFormatVersion + ")");
            string sha;
            using (var h = SHA256.Create())
                sha = BitConverter.ToString(h.ComputeHash(raw)).Replace("-", "").ToLowerInvariant();
            return new PackageManifest { Root = root, Manifest = manifest, ManifestSha256 = sha };
        }

        static Dictionary<string, object> Obj(Dictionary<string, object> d, string key)
        {
            object v;
            return d != null && d.TryGetValue(key, out v) ? v as Dictionary<string, object> : null;
        }

        public Dictionary<string, object> Config { get { return Obj(Manifest, "config") ?? new Dictionary<string, object>(); } }

        public string Variant
        {
            get { object v; return Manifest.TryGetValue("model_variant", out v) && v is string ? (string)v : "unknown"; }
        }

        public string ComponentPath(string name)
        {
            var comp = Obj(Obj(Manifest, "components"), name);
            if (comp == null)
            {
                var comps = Obj(Manifest, "components");
                var names = comps == null ? new List<string>() : new List<string>(comps.Keys);
                names.Sort(StringComparer.Ordinal);
                throw new PackageException("model package " + Root + " has no component '" + name + "' (it has: " + string.Join(", ", names) + ")");
            }
            return Path.Combine(Root, (string)comp["file"]);
        }

        /// <summary>A float32 array listed under "files" (e.g. silence_latent), with its shape.</summary>
        public float[] Array(string name, out long[] shape)
        {
            var entry = Obj(Obj(Manifest, "files"), name);
            if (entry == null)
                throw new PackageException("model package " + Root + " lists no file '" + name + "'");
            float[] data = Npy.ReadFloat32(Path.Combine(Root, (string)entry["file"]), out shape);
            object expected;
            if (entry.TryGetValue("shape", out expected) && expected is List<object>)
            {
                var want = (List<object>)expected;
                bool same = want.Count == shape.Length;
                for (int i = 0; same && i < shape.Length; i++)
                    same = Convert.ToInt64(want[i]) == shape[i];
                if (!same)
                    throw new PackageException(entry["file"] + ": shape [" + string.Join(", ", shape) + "] differs from the manifest's");
            }
            return data;
        }

        public string TokenizerPath(string which)
        {
            var tok = Obj(Obj(Manifest, "tokenizers"), which);
            if (tok == null || !(tok.ContainsKey("dir")))
                throw new PackageException("model package " + Root + " has no '" + which + "' tokenizer");
            return Path.Combine(Root, (string)tok["dir"], "tokenizer.json");
        }

        /// <summary>"turbo", "base" or "sft", decided as the Python host decides it.</summary>
        public string ModelKind()
        {
            var acestep = Obj(Config, "acestep");
            object turbo;
            if (acestep != null && acestep.TryGetValue("is_turbo", out turbo) && turbo is bool && (bool)turbo)
                return "turbo";
            string v = Variant.ToLowerInvariant();
            return v.Contains("sft") ? "sft" : (v.Contains("turbo") ? "turbo" : "base");
        }

        /// <summary>An integer from config.section.key, or the default.</summary>
        public int ConfigInt(string section, string key, int fallback)
        {
            var s = Obj(Config, section);
            object v;
            return s != null && s.TryGetValue(key, out v) && v is long ? (int)(long)v : fallback;
        }
    }

    /// <summary>Reads little-endian float32 C-order .npy files (format 1.0–3.0).</summary>
    public static class Npy
    {
        public static float[] ReadFloat32(string path, out long[] shape)
        {
            byte[] bytes = File.ReadAllBytes(path);
            if (bytes.Length < 10 || bytes[0] != 0x93 || bytes[1] != (byte)'N' || bytes[2] != (byte)'U')
                throw new PackageException(path + " is not a .npy file");
            int major = bytes[6];
            int headerLen, headerStart;
            if (major == 1) { headerLen = bytes[8] | bytes[9] << 8; headerStart = 10; }
            else { headerLen = BitConverter.ToInt32(bytes, 8); headerStart = 12; }
            string header = System.Text.Encoding.ASCII.GetString(bytes, headerStart, headerLen);
            if (!header.Contains("'descr': '<f4'"))
                throw new PackageException(path + ": only little-endian float32 arrays are read, header " + header.Trim());
            if (header.Contains("'fortran_order': True"))
                throw new PackageException(path + ": Fortran-order arrays are not read");
            int open = header.IndexOf('(', header.IndexOf("'shape'")), close = header.IndexOf(')', open);
            var dims = new List<long>();
            foreach (string part in header.Substring(open + 1, close - open - 1).Split(','))
                if (part.Trim().Length > 0)
                    dims.Add(long.Parse(part.Trim(), System.Globalization.CultureInfo.InvariantCulture));
            shape = dims.ToArray();
            long n = 1;
            foreach (long d in shape) n *= d;
            int dataStart = headerStart + headerLen;
            if (bytes.Length - dataStart != n * 4)
                throw new PackageException(path + ": " + (bytes.Length - dataStart) + " data bytes for shape [" + string.Join(", ", shape) + "]");
            if (!BitConverter.IsLittleEndian)
                throw new PlatformNotSupportedException("big-endian hosts are not supported");
            var data = new float[n];
            Buffer.BlockCopy(bytes, dataStart, data, 0, (int)(n * 4));
            return data;
        }
    }
}
