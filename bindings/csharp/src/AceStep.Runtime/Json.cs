// A small JSON reader/writer for the core's configuration strings and the package manifest (no
// System.Text.Json on mono or .NET Framework). Objects read as Dictionary<string, object>, arrays
// as List<object>, integers as long, other numbers as double.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Numerics;
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
                if (d == 0 && token[0] == '-')
                    d = BitConverter.Int64BitsToDouble(long.MinValue); // -0.0: .NET Framework / mono parse it as +0
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
                sb.Append(FormatDouble(d));
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

        /// <summary>The shortest decimal that reads back as <paramref name="d"/> (the nearest one
        /// among equally short ones), laid out as Python's repr (and json.dumps) writes it: "30.0",
        /// "0.0001", "1e-05", "1.5e+16", "5e-324". Computed exactly with BigInteger: the runtime's own
        /// formatting and parsing are not correctly rounded on every runtime (mono's is not).</summary>
        public static string FormatDouble(double d)
        {
            if (double.IsNaN(d) || double.IsInfinity(d))
                throw new ArgumentException("JSON cannot hold NaN or infinity");
            long bits = BitConverter.DoubleToInt64Bits(d);
            bool negative = bits < 0;
            if ((bits & long.MaxValue) == 0)
                return negative ? "-0.0" : "0.0";
            int biased = (int)((bits >> 52) & 0x7FF);
            long mant = bits & 0xFFFFFFFFFFFFFL;
            int e; // d = ±mant·2^e
            if (biased == 0) e = -1074;
            else { mant |= 1L << 52; e = biased - 1075; }
            // Round-trip interval in units of 2^(e-2): (low, high) around 4·mant; its ends read back
            // as d too when mant is even (round-half-even). Below a power of two the gap is halved.
            BigInteger v4 = new BigInteger(mant) * 4;
            BigInteger high = v4 + 2;
            BigInteger low = (mant == 1L << 52 && biased > 1) ? v4 - 1 : v4 - 2;
            bool closed = (mant & 1) == 0;
            // k: 10^k <= |d| < 10^(k+1)
            int k = (int)Math.Floor(Math.Log10(Math.Abs(d)));
            while (Compare(BigInteger.One, k, mant, e) > 0) k--;         // 10^k > d
            while (Compare(BigInteger.One, k + 1, mant, e) <= 0) k++;    // 10^(k+1) <= d
            for (int p = 1; p <= 17; p++)
            {
                // q = round-half-even(d / 10^(k-p+1)), exactly.
                int a = k - p + 1;
                BigInteger num = new BigInteger(mant) * BigInteger.Pow(2, Math.Max(e, 0)) * BigInteger.Pow(10, Math.Max(-a, 0));
                BigInteger den = BigInteger.Pow(2, Math.Max(-e, 0)) * BigInteger.Pow(10, Math.Max(a, 0));
                BigInteger rem;
                BigInteger q = BigInteger.DivRem(num, den, out rem);
                int c = (rem * 2).CompareTo(den);
                if (c > 0 || (c == 0 && !q.IsEven)) q += 1;
                int exp10 = k;
                if (q == BigInteger.Pow(10, p)) { q = BigInteger.Pow(10, p - 1); exp10 = k + 1; a += 1; }
                // Does q·10^a lie in the round-trip interval (low, high)·2^(e-2)?
                int lo = Compare(q, a, low, e - 2), hi = Compare(q, a, high, e - 2);
                if ((lo > 0 || (lo == 0 && closed)) && (hi < 0 || (hi == 0 && closed)))
                    return Layout(negative, q.ToString(CultureInfo.InvariantCulture).TrimEnd('0'), exp10);
            }
            throw new InvalidOperationException("no 17-digit decimal reads back as " + d.ToString("R", CultureInfo.InvariantCulture));
        }

        // Sign of x·10^a − m·2^b, exactly.
        static int Compare(BigInteger x, int a, BigInteger m, int b)
        {
            BigInteger left = x * BigInteger.Pow(10, Math.Max(a, 0)) * BigInteger.Pow(2, Math.Max(-b, 0));
            BigInteger right = m * BigInteger.Pow(2, Math.Max(b, 0)) * BigInteger.Pow(10, Math.Max(-a, 0));
            return left.CompareTo(right);
        }

        static int Compare(BigInteger x, int a, long m, int b) { return Compare(x, a, new BigInteger(m), b); }

        // Python's repr layout of ±0.digits·10^(exp+1): scientific when exp < -4 or exp >= 16.
        static string Layout(bool negative, string digits, int exp)
        {
            if (digits.Length == 0) digits = "0";
            var sb = new StringBuilder();
            if (negative) sb.Append('-');
            if (exp < -4 || exp >= 16)
            {
                sb.Append(digits[0]);
                if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
                sb.Append('e').Append(exp < 0 ? '-' : '+').Append(Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture));
            }
            else if (exp < 0)
                sb.Append("0.").Append('0', -exp - 1).Append(digits);
            else if (digits.Length <= exp + 1)
                sb.Append(digits).Append('0', exp + 1 - digits.Length).Append(".0");
            else
                sb.Append(digits, 0, exp + 1).Append('.').Append(digits, exp + 1, digits.Length - exp - 1);
            return sb.ToString();
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
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
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
