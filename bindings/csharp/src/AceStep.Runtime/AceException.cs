// Status codes and the exception every failed `ace_*` call turns into.
using System;
using System.Collections.Generic;

namespace AceStep.Runtime
{
    /// <summary>Result code of every `ace_*` function (`AceStatus` in the header).</summary>
    public enum AceStatus : int
    {
        Ok = 0,
        InvalidArgument = 1,
        NullPointer = 2,
        LengthMismatch = 3,
        InvalidJson = 4,
        InvalidUtf8 = 5,
        InvalidState = 6,
        Io = 7,
        Tokenizer = 8,
        /// <summary>A bug inside the library was caught at the boundary; free the object involved.</summary>
        Panic = 99,
    }

    /// <summary>A call into the core failed: the status, the core's short name for it and its message.</summary>
    public class AceException : Exception
    {
        public AceStatus Status { get; }
        /// <summary>The core's name of the status, e.g. "invalid_json".</summary>
        public string StatusName { get; }
        /// <summary>The core's message alone (Message adds the status name).</summary>
        public string CoreMessage { get; }

        public AceException(AceStatus status, string statusName, string message)
            : base(message + " [" + statusName + "]")
        {
            Status = status;
            StatusName = statusName;
            CoreMessage = message;
        }

        /// <summary>Throws the calling thread's last core error when <paramref name="status"/> is not Ok.</summary>
        public static void Check(AceStatus status)
        {
            if (status != AceStatus.Ok)
                throw FromLastError(status);
        }

        /// <summary>Reads this thread's last error (`ace_last_error_json`). Call it right after the
        /// failing call, on the same thread: the next call into the core replaces it.</summary>
        public static AceException FromLastError(AceStatus status)
        {
            IntPtr raw;
            if (NativeMethods.ace_last_error_json(out raw) == AceStatus.Ok)
            {
                string text = Utf8.TakeString(raw);
                try
                {
                    var obj = Json.Parse(text) as Dictionary<string, object>;
                    if (obj != null && obj.ContainsKey("message"))
                    {
                        string name = obj.ContainsKey("name") ? obj["name"] as string : null;
                        return new AceException(status, name ?? status.ToString(), obj["message"] as string ?? "");
                    }
                }
                catch (FormatException)
                {
                    // fall through to the plain message
                }
            }
            string message = "";
            if (NativeMethods.ace_last_error(out raw) == AceStatus.Ok)
                message = Utf8.TakeString(raw);
            return new AceException(status, status.ToString(), message);
        }
    }

    /// <summary>The core library could not be loaded; the message lists every place that was tried.</summary>
    public class AceLibraryNotFoundException : DllNotFoundException
    {
        public AceLibraryNotFoundException(string message, Exception inner) : base(message, inner) { }
    }
}
