// UTF-8 in both directions: the core takes NUL-terminated UTF-8 and returns strings it owns.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace AceStep.Runtime
{
    public static class Utf8
    {
        static readonly UTF8Encoding Strict = new UTF8Encoding(false, true);

        /// <summary>NUL-terminated UTF-8 bytes of <paramref name="text"/> (null stays null, i.e. NULL).</summary>
        public static byte[] Encode(string text)
        {
            if (text == null)
                return null;
            if (text.IndexOf('\0') >= 0)
                throw new ArgumentException("string contains a NUL character, which C cannot represent");
            int n = Strict.GetByteCount(text); // throws on lone surrogates
            var bytes = new byte[n + 1];
            Strict.GetBytes(text, 0, text.Length, bytes, 0);
            return bytes;
        }

        /// <summary>Decodes a NUL-terminated UTF-8 string the library returned and frees it
        /// (`ace_string_free`). IntPtr.Zero gives null.</summary>
        public static string TakeString(IntPtr ptr)
        {
            if (ptr == IntPtr.Zero)
                return null;
            try
            {
                return PtrToString(ptr);
            }
            finally
            {
                NativeMethods.ace_string_free(ptr);
            }
        }

        /// <summary>Decodes a NUL-terminated UTF-8 string without taking ownership.</summary>
        public static string PtrToString(IntPtr ptr)
        {
            if (ptr == IntPtr.Zero)
                return null;
            int len = 0;
            while (Marshal.ReadByte(ptr, len) != 0)
                len++;
            var bytes = new byte[len];
            Marshal.Copy(ptr, bytes, 0, len);
            return Strict.GetString(bytes);
        }
    }
}
