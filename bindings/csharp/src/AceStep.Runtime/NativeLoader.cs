// Loading a shared library by path and looking up symbols, on Linux, macOS and Windows. Used to find
// the core library before its first P/Invoke (AceLibrary) and to load ONNX Runtime (Ort/OrtApi.cs).
using System;
using System.IO;
using System.Runtime.CompilerServices;
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
            switch (Platform)
            {
                case NativePlatform.Windows: return Win32.Open(path, out error);
                case NativePlatform.MacOS: return Mac.Open(path, out error);
                default: return LinuxDl.Open(path, RtldNow | RtldGlobal, out error);
            }
        }

        /// <summary>Address of an exported symbol, or IntPtr.Zero.</summary>
        public static IntPtr Symbol(IntPtr library, string name)
        {
            switch (Platform)
            {
                case NativePlatform.Windows: return Win32.Symbol(library, name);
                case NativePlatform.MacOS: return Mac.Symbol(library, name);
                default: return LinuxDl.Symbol(library, name);
            }
        }

        const int RtldNow = 2, RtldGlobal = 0x100;       // glibc values
        const int MacRtldNow = 2, MacRtldGlobal = 8;     // macOS <dlfcn.h>

        // Each platform's P/Invokes are called from methods of their own (NoInlining): mono binds a
        // P/Invoke when it compiles the caller, and should only ever bind the running platform's.
        static class Win32
        {
            [MethodImpl(MethodImplOptions.NoInlining)]
            public static IntPtr Open(string path, out string error)
            {
                IntPtr h = LoadLibraryW(path);
                error = h == IntPtr.Zero ? "LoadLibrary failed with Win32 error " + Marshal.GetLastWin32Error() : null;
                return h;
            }

            [MethodImpl(MethodImplOptions.NoInlining)]
            public static IntPtr Symbol(IntPtr library, string name) { return GetProcAddress(library, name); }

            [DllImport("kernel32", SetLastError = true, CharSet = CharSet.Unicode)]
            static extern IntPtr LoadLibraryW(string path);

            [DllImport("kernel32", CharSet = CharSet.Ansi, ExactSpelling = true)]
            static extern IntPtr GetProcAddress(IntPtr module, string name);
        }

        static class Mac
        {
            [MethodImpl(MethodImplOptions.NoInlining)]
            public static IntPtr Open(string path, out string error)
            {
                IntPtr h = dlopen(path, MacRtldNow | MacRtldGlobal);
                error = h == IntPtr.Zero ? Utf8.PtrToString(dlerror()) : null;
                return h;
            }

            [MethodImpl(MethodImplOptions.NoInlining)]
            public static IntPtr Symbol(IntPtr library, string name) { return dlsym(library, name); }

            [DllImport("/usr/lib/libSystem.dylib")] static extern IntPtr dlopen(string path, int flags);
            [DllImport("/usr/lib/libSystem.dylib")] static extern IntPtr dlsym(IntPtr handle, string name);
            [DllImport("/usr/lib/libSystem.dylib")] static extern IntPtr dlerror();
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
                        h = Dl.Open(path, flags, out error);
                        flavour = 1;
                        return h;
                    }
                    catch (DllNotFoundException) { flavour = 2; }
                }
                return Libc.Open(path, flags, out error);
            }

            public static IntPtr Symbol(IntPtr library, string name)
            {
                return flavour == 2 ? Libc.Symbol(library, name) : Dl.Symbol(library, name);
            }

            static class Dl
            {
                [MethodImpl(MethodImplOptions.NoInlining)]
                public static IntPtr Open(string path, int flags, out string error)
                {
                    IntPtr h = dlopen(path, flags);
                    error = h == IntPtr.Zero ? Utf8.PtrToString(dlerror()) : null;
                    return h;
                }

                [MethodImpl(MethodImplOptions.NoInlining)]
                public static IntPtr Symbol(IntPtr library, string name) { return dlsym(library, name); }

                [DllImport("libdl.so.2")] static extern IntPtr dlopen(string path, int flags);
                [DllImport("libdl.so.2")] static extern IntPtr dlsym(IntPtr handle, string name);
                [DllImport("libdl.so.2")] static extern IntPtr dlerror();
            }

            static class Libc
            {
                [MethodImpl(MethodImplOptions.NoInlining)]
                public static IntPtr Open(string path, int flags, out string error)
                {
                    IntPtr h = dlopen(path, flags);
                    error = h == IntPtr.Zero ? Utf8.PtrToString(dlerror()) : null;
                    return h;
                }

                [MethodImpl(MethodImplOptions.NoInlining)]
                public static IntPtr Symbol(IntPtr library, string name) { return dlsym(library, name); }

                [DllImport("libc.so.6")] static extern IntPtr dlopen(string path, int flags);
                [DllImport("libc.so.6")] static extern IntPtr dlsym(IntPtr handle, string name);
                [DllImport("libc.so.6")] static extern IntPtr dlerror();
            }
        }
    }
}
