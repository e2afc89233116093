// 32-bit float WAV files, written atomically: a temporary file in the target directory, flushed to
// disk, then renamed over the target, so a reader never sees half a file and a crash leaves none.
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
