// Loading a shared library by path and looking up symbols, on Linux, macOS and Windows. Used to find
// the core library before its first P/Invoke (AceLibrary) and to load ONNX Runtime (Ort/OrtApi.cs).
using System;
using System.IO;
using System.Runtime.InteropServices;

namespace AceStep.Runtime
{
    public enum NativePlatform { Linux, MacOS, Windows }

    public static class NativeLoader
    {
        public static readonly NativePlatform Platform = Detect();

        static NativePlatform Detect()
        {
            if (Path.DirectorySeparatorChar == '\\')
                return NativePlatform.Windows;
            // Mono and .NET Framework report macOS as Unix; its system library is the tell.
            return File.Exists("/usr/lib/libSystem.dylib") || Directory.Exists("/System/Library/Frameworks")
                ? NativePlatform.MacOS
                : NativePlatform.Linux;
        }

        /// <summary>File name of a library on this platform: foo → libfoo.so / libfoo.dylib / foo.dll.</summary>
        public static string FileName(string name)
        {
            switch (Platform)
            {
                case NativePlatform.Windows: return name + ".dll";
                case NativePlatform.MacOS: return "lib" + name + ".dylib";
                default: return "lib" + name + ".so";
            }
        }

        /// <summary>The variable the OS loader searches (LD_LIBRARY_PATH, DYLD_LIBRARY_PATH, PATH).</summary>
        public static string SearchPathVariable
        {
            get
            {
                switch (Platform)
                {
                    case NativePlatform.Windows: return "PATH";
                    case NativePlatform.MacOS: return "DYLD_LIBRARY_PATH";
                    default: return "LD_LIBRARY_PATH";
                }
            }
        }

        /// <summary>Loads a library by path (or by bare name through the OS search path); returns
        /// the handle, or IntPtr.Zero with the loader's message in <paramref name="error"/>.</summary>
        public static IntPtr TryLoad(string path, out string error)
        {
            error = null;
            IntPtr h;
            switch (Platform)
            {
                case NativePlatform.Windows:
                    h = Win32.LoadLibraryW(path);
                    if (h == IntPtr.Zero)
                        error = "LoadLibrary failed with Win32 error " + Marshal.GetLastWin32Error();
                    return h;
                case NativePlatform.MacOS:
                    h = Mac.dlopen(path, MacRtldNow | MacRtldGlobal);
                    if (h == IntPtr.Zero)
                        error = Utf8.PtrToString(Mac.dlerror());
                    return h;
                default:
                    h = LinuxDl.Open(path, RtldNow | RtldGlobal, out error);
                    return h;
            }
        }

        /// <summary>Address of an exported symbol, or IntPtr.Zero.</summary>
        public static IntPtr Symbol(IntPtr library, string name)
        {
            switch (Platform)
            {
                case NativePlatform.Windows: return Win32.GetProcAddress(library, name);
                case NativePlatform.MacOS: return Mac.dlsym(library, name);
                default: return LinuxDl.Symbol(library, name);
            }
        }

        const int RtldNow = 2, RtldGlobal = 0x100;       // glibc values
        const int MacRtldNow = 2, MacRtldGlobal = 8;     // macOS <dlfcn.h>

        static class Win32
        {
            [DllImport("kernel32", SetLastError = true, CharSet = CharSet.Unicode)]
            public static extern IntPtr LoadLibraryW(string path);

            [DllImport("kernel32", CharSet = CharSet.Ansi, ExactSpelling = true)]
            public static extern IntPtr GetProcAddress(IntPtr module, string name);
        }

        static class Mac
        {
            [DllImport("/usr/lib/libSystem.dylib")]
            public static extern IntPtr dlopen(string path, int flags);

            [DllImport("/usr/lib/libSystem.dylib")]
            public static extern IntPtr dlsym(IntPtr handle, string name);

            [DllImport("/usr/lib/libSystem.dylib")]
            public static extern IntPtr dlerror();
        }

        // glibc ≥ 2.34 has dlopen in libc; older ones only in libdl.so.2 (which newer glibc still
        // ships as a stub). Try libdl.so.2 first, then libc.so.6 (musl, minimal images).
        static class LinuxDl
        {
            static int flavour; // 0 unknown, 1 libdl.so.2, 2 libc.so.6

            public static IntPtr Open(string path, int flags, out string error)
            {
                error = null;
                IntPtr h;
                if (flavour != 2)
                {
                    try
                    {
                        h = Dl.dlopen(path, flags);
                        flavour = 1;
                        if (h == IntPtr.Zero) error = Utf8.PtrToString(Dl.dlerror());
                        return h;
                    }
                    catch (DllNotFoundException) { flavour = 2; }
                }
                h = Libc.dlopen(path, flags);
                if (h == IntPtr.Zero) error = Utf8.PtrToString(Libc.dlerror());
                return h;
            }

            public static IntPtr Symbol(IntPtr library, string name)
            {
                return flavour == 2 ? Libc.dlsym(library, name) : Dl.dlsym(library, name);
            }

            static class Dl
            {
                [DllImport("libdl.so.2")] public static extern IntPtr dlopen(string path, int flags);
                [DllImport("libdl.so.2")] public static extern IntPtr dlsym(IntPtr handle, string name);
                [DllImport("libdl.so.2")] public static extern IntPtr dlerror();
            }

            static class Libc
            {
                [DllImport("libc.so.6")] public static extern IntPtr dlopen(string path, int flags);
                [DllImport("libc.so.6")] public static extern IntPtr dlsym(IntPtr handle, string name);
                [DllImport("libc.so.6")] public static extern IntPtr dlerror();
            }
        }
    }
}
