// A small JSON reader/writer for the core's configuration strings and the package manifest (no
// System.Text.Json on mono or .NET Framework). Objects read as Dictionary<string, object>, arrays
// as List<object>, integers as long, other numbers as double.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace AceStep.Runtime
{
    public static class Json
    {
        public static object Parse(string text)
        {
            if (text == null)
                throw new ArgumentNullException("text");
            var reader = new Reader(text);
            reader.SkipSpace();
            object value = reader.ReadValue();
            reader.SkipSpace();
            if (reader.Pos != text.Length)
                throw reader.Error("trailing characters");
            return value;
        }

        public static Dictionary<string, object> ParseObject(string text)
        {
            var obj = Parse(text) as Dictionary<string, object>;
            if (obj == null)
                throw new FormatException("JSON: expected an object at the top level");
            return obj;
        }

        sealed class Reader
        {
            readonly string s;
            public int Pos;
            public Reader(string text) { s = text; }

            public FormatException Error(string what)
            {
                return new FormatException("JSON: " + what + " at offset " + Pos);
            }

            public void SkipSpace()
            {
                while (Pos < s.Length && (s[Pos] == ' ' || s[Pos] == '\t' || s[Pos] == '\n' || s[Pos] == '\r'))
                    Pos++;
            }

            public object ReadValue()
            {
                if (Pos >= s.Length)
                    throw Error("unexpected end");
                char c = s[Pos];
                if (c == '{') return ReadObject();
                if (c == '[') return ReadArray();
                if (c == '"') return ReadString();
                if (Match("true")) return true;
                if (Match("false")) return false;
                if (Match("null")) return null;
                return ReadNumber();
            }

            bool Match(string word)
            {
                if (string.CompareOrdinal(s, Pos, word, 0, word.Length) != 0)
                    return false;
                Pos += word.Length;
                return true;
            }

            Dictionary<string, object> ReadObject()
            {
                var obj = new Dictionary<string, object>();
                Pos++;
                SkipSpace();
                if (Pos < s.Length && s[Pos] == '}') { Pos++; return obj; }
                while (true)
                {
                    SkipSpace();
                    if (Pos >= s.Length || s[Pos] != '"')
                        throw Error("expected a key");
                    string key = ReadString();
                    SkipSpace();
                    if (Pos >= s.Length || s[Pos] != ':')
                        throw Error("expected ':'");
                    Pos++;
                    SkipSpace();
                    obj[key] = ReadValue();
                    SkipSpace();
                    if (Pos < s.Length && s[Pos] == ',') { Pos++; continue; }
                    if (Pos < s.Length && s[Pos] == '}') { Pos++; return obj; }
                    throw Error("expected ',' or '}'");
                }
            }

            List<object> ReadArray()
            {
                var list = new List<object>();
                Pos++;
                SkipSpace();
                if (Pos < s.Length && s[Pos] == ']') { Pos++; return list; }
                while (true)
                {
                    SkipSpace();
                    list.Add(ReadValue());
                    SkipSpace();
                    if (Pos < s.Length && s[Pos] == ',') { Pos++; continue; }
                    if (Pos < s.Length && s[Pos] == ']') { Pos++; return list; }
                    throw Error("expected ',' or ']'");
                }
            }

            string ReadString()
            {
                var sb = new StringBuilder();
                Pos++;
                while (true)
                {
                    if (Pos >= s.Length)
                        throw Error("unterminated string");
                    char c = s[Pos++];
                    if (c == '"')
                        return sb.ToString();
                    if (c != '\\') { sb.Append(c); continue; }
                    if (Pos >= s.Length)
                        throw Error("unterminated escape");
                    char e = s[Pos++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            if (Pos + 4 > s.Length)
                                throw Error("short \\u escape");
                            sb.Append((char)int.Parse(s.Substring(Pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                            Pos += 4;
                            break;
                        default: throw Error("bad escape");
                    }
                }
            }

            object ReadNumber()
            {
                int start = Pos;
                bool integral = true;
                while (Pos < s.Length && "+-0123456789.eE".IndexOf(s[Pos]) >= 0)
                {
                    if (s[Pos] == '.' || s[Pos] == 'e' || s[Pos] == 'E')
                        integral = false;
                    Pos++;
                }
                if (start == Pos)
                    throw Error("unexpected character '" + s[Pos] + "'");
                string token = s.Substring(start, Pos - start);
                long l;
                if (integral && long.TryParse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out l))
                    return l;
                double d;
                if (!double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out d))
                    throw Error("bad number '" + token + "'");
                return d;
            }
        }

        /// <summary>Serializes dictionaries, lists/arrays, strings, booleans, null and numbers.
        /// Doubles are written round-trip exact; NaN and infinities are errors (JSON has none).</summary>
        public static string Write(object value)
        {
            return Write(value, 0);
        }

        /// <summary>As Write; <paramref name="indent"/> > 0 puts each member and element on its own
        /// line, indented by that many spaces per level (Python's json.dumps(indent=n) layout).</summary>
        public static string Write(object value, int indent)
        {
            var sb = new StringBuilder();
            WriteValue(sb, value, indent, 0);
            return sb.ToString();
        }

        static void NewLine(StringBuilder sb, int indent, int level)
        {
            if (indent > 0)
                sb.Append('\n').Append(' ', indent * level);
        }

        static void WriteValue(StringBuilder sb, object value, int indent, int level)
        {
            if (value == null) { sb.Append("null"); return; }
            var str = value as string;
            if (str != null) { WriteString(sb, str); return; }
            if (value is bool) { sb.Append((bool)value ? "true" : "false"); return; }
            if (value is double || value is float)
            {
                double d = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsNaN(d) || double.IsInfinity(d))
                    throw new ArgumentException("JSON cannot hold NaN or infinity");
                string text = d.ToString("R", CultureInfo.InvariantCulture);
                if (text.IndexOfAny(new[] { '.', 'E', 'e' }) < 0)
                    text += ".0";
                sb.Append(text);
                return;
            }
            if (value is int || value is long || value is uint || value is ulong || value is short || value is byte)
            {
                sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture));
                return;
            }
            var dict = value as IDictionary;
            if (dict != null)
            {
                sb.Append('{');
                bool first = true;
                foreach (DictionaryEntry entry in dict)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    NewLine(sb, indent, level + 1);
                    WriteString(sb, (string)entry.Key);
                    sb.Append(indent > 0 ? ": " : ":");
                    WriteValue(sb, entry.Value, indent, level + 1);
                }
                if (!first) NewLine(sb, indent, level);
                sb.Append('}');
                return;
            }
            var list = value as IEnumerable;
            if (list != null)
            {
                sb.Append('[');
                bool first = true;
                foreach (object item in list)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    NewLine(sb, indent, level + 1);
                    WriteValue(sb, item, indent, level + 1);
                }
                if (!first) NewLine(sb, indent, level);
                sb.Append(']');
                return;
            }
            throw new ArgumentException("JSON cannot hold a " + value.GetType().Name);
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (c < 0x20)
                            sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else
                            sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }
    }
}
