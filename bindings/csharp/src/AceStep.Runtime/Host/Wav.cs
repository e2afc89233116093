// WAV files (16/24-bit PCM, 32-bit float) with the bytes the Python host writes through libsndfile,
// written atomically: a temporary file in the target directory, flushed to disk, then renamed over
// the target, so a reader never sees half a file and a crash leaves none.
using System;
using System.IO;
using System.Text;

namespace AceStep.Runtime.Host
{
    public static class Wav
    {
        /// <summary>The bytes of a WAVE_FORMAT_IEEE_FLOAT file holding `channels` planar channels of
        /// `samples` values each, taken from audio[offset ..] ([channels, samples] row-major).</summary>
        public static byte[] EncodeFloat32(float[] audio, int offset, int channels, int samples, int sampleRate)
        {
            if (audio == null) throw new ArgumentNullException("audio");
            if (channels < 1 || samples < 1 || offset < 0 || (long)offset + (long)channels * samples > audio.Length)
                throw new ArgumentException("audio has " + audio.Length + " values; offset " + offset + " + " + channels + "x" + samples + " does not fit");
            long dataBytes = (long)channels * samples * 4;
            if (dataBytes > uint.MaxValue - 128)
                throw new ArgumentException("audio too long for a WAV file");
            // The layout the Python host writes (libsndfile, PEAK chunk off): "fmt " (16 bytes, format 3),
            // "fact" (frames), a "PAD " chunk of zeros where libsndfile reserved the PEAK chunk
            // (8 + 8·channels bytes), "data". Same audio → same bytes in both hosts.
            int pad = 8 + 8 * channels;
            long riffSize = 4 + (8 + 16) + (8 + 4) + (8 + pad) + (8 + dataBytes);
            var ms = new MemoryStream((int)(riffSize + 8));
            var w = new BinaryWriter(ms, Encoding.ASCII);
            w.Write(Encoding.ASCII.GetBytes("RIFF"));
            w.Write((uint)riffSize);
            w.Write(Encoding.ASCII.GetBytes("WAVE"));
            w.Write(Encoding.ASCII.GetBytes("fmt "));
            w.Write(16u);
            w.Write((ushort)3);                    // WAVE_FORMAT_IEEE_FLOAT
            w.Write((ushort)channels);
            w.Write((uint)sampleRate);
            w.Write((uint)(sampleRate * channels * 4));
            w.Write((ushort)(channels * 4));
            w.Write((ushort)32);
            w.Write(Encoding.ASCII.GetBytes("fact"));
            w.Write(4u);
            w.Write((uint)samples);
            w.Write(Encoding.ASCII.GetBytes("PAD "));
            w.Write((uint)pad);
            w.Write(new byte[pad]);
            w.Write(Encoding.ASCII.GetBytes("data"));
            w.Write((uint)dataBytes);
            for (int i = 0; i < samples; i++)
                for (int c = 0; c < channels; c++)
                    w.Write(audio[offset + c * samples + i]);
            w.Flush();
            return ms.ToArray();
        }

        /// <summary>The output formats: "wav16", "wav24" (PCM) and "wav32f" (IEEE float).</summary>
        public static readonly string[] Formats = { "wav16", "wav24", "wav32f" };

        /// <summary>The bytes of a WAV file of <paramref name="format"/> (see Formats) holding
        /// `channels` planar channels of `samples` values from audio[offset ..].</summary>
        public static byte[] Encode(string format, float[] audio, int offset, int channels, int samples, int sampleRate)
        {
            switch (format)
            {
                case "wav16": return EncodePcm(audio, offset, channels, samples, sampleRate, 16);
                case "wav24": return EncodePcm(audio, offset, channels, samples, sampleRate, 24);
                case "wav32f": return EncodeFloat32(audio, offset, channels, samples, sampleRate);
                default:
                    throw new ArgumentException("unknown output format '" + format + "'; choose one of: " + string.Join(", ", Formats));
            }
        }

        /// <summary>A 16- or 24-bit PCM WAV file (canonical 44-byte header, WAVE_FORMAT_PCM).
        /// Samples convert as libsndfile converts floats with clipping on (what the Python host's
        /// soundfile writes): v = lrintf(x·2³¹) clipped to int32, then its top `bits` bits (an
        /// arithmetic shift, so it rounds toward −∞). Non-finite values are an error.</summary>
        public static byte[] EncodePcm(float[] audio, int offset, int channels, int samples, int sampleRate, int bits)
        {
            if (audio == null) throw new ArgumentNullException("audio");
            if (bits != 16 && bits != 24) throw new ArgumentException("PCM WAV is written with 16 or 24 bits, not " + bits);
            if (channels < 1 || samples < 1 || offset < 0 || (long)offset + (long)channels * samples > audio.Length)
                throw new ArgumentException("audio has " + audio.Length + " values; offset " + offset + " + " + channels + "x" + samples + " does not fit");
            int width = bits / 8;
            long dataBytes = (long)channels * samples * width;
            if (dataBytes > uint.MaxValue - 64)
                throw new ArgumentException("audio too long for a WAV file");
            var bytes = new byte[44 + dataBytes];
            var ms = new MemoryStream(bytes);
            var w = new BinaryWriter(ms, Encoding.ASCII);
            w.Write(Encoding.ASCII.GetBytes("RIFF"));
            w.Write((uint)(36 + dataBytes));
            w.Write(Encoding.ASCII.GetBytes("WAVE"));
            w.Write(Encoding.ASCII.GetBytes("fmt "));
            w.Write(16u);
            w.Write((ushort)1);                    // WAVE_FORMAT_PCM
            w.Write((ushort)channels);
            w.Write((uint)sampleRate);
            w.Write((uint)(sampleRate * channels * width));
            w.Write((ushort)(channels * width));
            w.Write((ushort)bits);
            w.Write(Encoding.ASCII.GetBytes("data"));
            w.Write((uint)dataBytes);
            w.Flush();
            long pos = 44;
            for (int i = 0; i < samples; i++)
            {
                for (int c = 0; c < channels; c++)
                {
                    float x = audio[offset + c * samples + i];
                    if (float.IsNaN(x) || float.IsInfinity(x))
                        throw new ArgumentException("audio contains NaN or Inf (channel " + c + ", sample " + i + ")");
                    int v = ToInt32Clipped(x);
                    // Little-endian top bytes of v: bits 16..31 (16-bit) or 8..31 (24-bit).
                    for (int k = 4 - width; k < 4; k++)
                        bytes[pos++] = (byte)(v >> (8 * k));
                }
            }
            return bytes;
        }

        static int ToInt32Clipped(float x)
        {
            float scaled = x * 2147483648f; // exact: a power of two
            if (scaled >= 2147483647.0) return int.MaxValue;
            if (scaled <= -2147483648.0) return int.MinValue;
            return (int)Math.Round((double)scaled, MidpointRounding.ToEven); // lrintf, default rounding mode
        }

        /// <summary>Writes `data` to `path` atomically (temp file beside it, flush to disk, rename).</summary>
        public static void WriteAtomic(string path, byte[] data)
        {
            string full = Path.GetFullPath(path);
            string dir = Path.GetDirectoryName(full);
            if (!Directory.Exists(dir))
                throw new DirectoryNotFoundException("output directory does not exist: " + dir);
            string tmp = Path.Combine(dir, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N").Substring(0, 8) + ".partial");
            try
            {
                using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
                {
                    f.Write(data, 0, data.Length);
                    f.Flush(true); // to the disk, not only to the OS
                }
                if (File.Exists(full))
                    File.Replace(tmp, full, null);
                else
                    File.Move(tmp, full);
            }
            catch
            {
                try { File.Delete(tmp); } catch (IOException) { }
                throw;
            }
        }
    }
}
