// Finding the core library before the first P/Invoke. DllImport("acestep_runtime") on its own finds
// the library next to the application's assemblies or on the OS search path; AceLibrary adds an
// explicit path (argument or ACESTEP_RUNTIME_LIB), and when nothing works the exception lists every
// place it tried instead of the runtime's bare DllNotFoundException.
using System;
using System.Collections.Generic;
using System.IO;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AceStep.Runtime
{
    public static class AceLibrary
    {
        /// <summary>Environment variable holding the full path of the core library.</summary>
        public const string EnvVar = "ACESTEP_RUNTIME_LIB";

        static readonly object Gate = new object();
        static volatile bool loaded;
        static IntPtr preloaded;

        /// <summary>Path the library was loaded from, or null when the OS search found it.</summary>
        public static string LoadedFrom { get; private set; }

        /// <summary>Makes sure the core library is loaded and speaks ABI v1. Cheap after the first call.
        /// <paramref name="path"/> (or ACESTEP_RUNTIME_LIB) names the library file; otherwise the
        /// directory of this assembly, then the OS search path are used.</summary>
        public static void Load(string path = null)
        {
            if (loaded)
                return;
            lock (Gate)
            {
                if (loaded)
                    return;
                var tried = new List<string>();
                string explicitPath = path ?? Environment.GetEnvironmentVariable(EnvVar);
                string found = null;
                if (!string.IsNullOrEmpty(explicitPath))
                {
                    string full = Path.GetFullPath(explicitPath);
                    if (!File.Exists(full))
                        throw NotFound((path != null ? "the path given" : EnvVar) + " = " + full + " does not exist", tried, null);
                    found = full;
                }
                else
                {
                    string here = Path.GetDirectoryName(typeof(AceLibrary).Assembly.Location);
                    string candidate = Path.Combine(here ?? ".", NativeLoader.FileName(NativeMethods.LibName));
                    tried.Add(candidate + (File.Exists(candidate) ? "" : " (missing)"));
                    if (File.Exists(candidate))
                        found = candidate;
                }
                if (found != null)
                    Preload(found, tried);
                else
                    tried.Add("the OS search path (" + NativeLoader.SearchPathVariable + "=" +
                              (Environment.GetEnvironmentVariable(NativeLoader.SearchPathVariable) ?? "") + ")");

                uint abi;
                try
                {
                    abi = ReadAbiVersion();
                }
                catch (DllNotFoundException e)
                {
                    throw NotFound("cannot load the core library " + NativeLoader.FileName(NativeMethods.LibName), tried, e);
                }
                catch (EntryPointNotFoundException e)
                {
                    throw NotFound("the library found has no ace_abi_version: it is not acestep_runtime", tried, e);
                }
                if (abi != NativeMethods.AbiVersion)
                    throw new InvalidOperationException(
                        "core library " + (found ?? NativeMethods.LibName) + " implements ABI v" + abi +
                        " but this binding was written for ABI v" + NativeMethods.AbiVersion);
                LoadedFrom = found;
                loaded = true;
            }
        }

        // Its own method: mono binds a P/Invoke when it compiles the caller, which must happen after
        // Preload has told it where the library is.
        [MethodImpl(MethodImplOptions.NoInlining)]
        static uint ReadAbiVersion() { return NativeMethods.ace_abi_version(); }

        static AceLibraryNotFoundException NotFound(string what, List<string> tried, Exception inner)
        {
            string msg = what + ". Tried: " + (tried.Count == 0 ? "nothing else" : string.Join("; ", tried)) +
                         ". Build it with scripts/build_core.sh and put it next to the application, or set " +
                         EnvVar + " to its full path" + (inner != null ? " (" + inner.Message + ")" : "");
            return new AceLibraryNotFoundException(msg, inner);
        }

        // Makes DllImport(LibName) resolve to `path`, by the mechanism the running runtime offers.
        static void Preload(string path, List<string> tried)
        {
            string error;
            preloaded = NativeLoader.TryLoad(path, out error);
            if (preloaded == IntPtr.Zero)
                throw NotFound("cannot load " + path + ": " + error, tried, null);
            tried.Add(path);
            if (NativeLoader.Platform == NativePlatform.Windows)
                return; // LoadLibrary by full path: DllImport finds the loaded module by name.
            if (Type.GetType("Mono.Runtime") != null)
            {
                // Mono: a global dll map entry "acestep_runtime" → path.
                try { MonoDllMap.Insert(NativeMethods.LibName, path); return; }
                catch (EntryPointNotFoundException) { }
                catch (DllNotFoundException) { }
            }
            // .NET Core 3+: NativeLibrary.SetDllImportResolver (looked up by reflection: this
            // assembly also builds against .NET Framework and mono, which lack it).
            Type nativeLibrary = Type.GetType("System.Runtime.InteropServices.NativeLibrary");
            Type resolverType = Type.GetType("System.Runtime.InteropServices.DllImportResolver");
            if (nativeLibrary != null && resolverType != null)
            {
                MethodInfo set = nativeLibrary.GetMethod("SetDllImportResolver");
                MethodInfo resolve = typeof(AceLibrary).GetMethod("Resolve", BindingFlags.NonPublic | BindingFlags.Static);
                try
                {
                    set.Invoke(null, new object[] { typeof(AceLibrary).Assembly, Delegate.CreateDelegate(resolverType, resolve) });
                }
                catch (TargetInvocationException)
                {
                    // a resolver was already set for this assembly by the application: keep it
                }
            }
        }

        static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
        {
            return name == NativeMethods.LibName ? preloaded : IntPtr.Zero;
        }

        static class MonoDllMap
        {
            // Mono's embedding API, exported by the mono executable itself.
            [DllImport("__Internal")]
            static extern void mono_dllmap_insert(IntPtr assembly, string dll, string func, string tdll, string tfunc);

            [MethodImpl(MethodImplOptions.NoInlining)]
            public static void Insert(string name, string path) { mono_dllmap_insert(IntPtr.Zero, name, null, path, null); }
        }
    }
}
