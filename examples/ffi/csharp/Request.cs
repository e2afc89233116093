// The request JSON the Python host reads (GenerationRequest: official GenerationParams names, the
// "language"/"seed" aliases, fixture files wrapping it in {"request": {...}}), for the fields a turbo
// text2music run uses. Anything else is an error that names the key.
using System;
using System.Collections.Generic;
using System.IO;
using AceStep.Runtime;

sealed class Request
{
    public string Caption = "";
    public string Lyrics = "";
    public bool Instrumental;
    public string VocalLanguage = "unknown";
    public long? Bpm;
    public string Keyscale;
    public string TimeSignature;
    public double? Duration;
    public List<long> Seeds = new List<long>();
    public int BatchSize = 1;
    public double? Shift;
    public List<object> Timesteps;
    public string InferMethod = "ode";
    public string NoiseMode = "torch_cpu";

    // Keys the Python host accepts that only matter for guided (base/sft) packages.
    static readonly string[] GuidanceKeys = { "inference_steps", "guidance_scale", "guidance_type", "cfg_interval_start", "cfg_interval_end" };

    /// <summary>One seed per item; -1 (random, drawn by the core) where none was given.</summary>
    public long SeedFor(int item) { return item < Seeds.Count ? Seeds[item] : -1; }

    public static Request FromFile(string path)
    {
        Dictionary<string, object> data;
        try
        {
            data = Json.ParseObject(File.ReadAllText(path));
        }
        catch (FileNotFoundException)
        {
            throw new ArgumentException("request file not found: " + path);
        }
        catch (FormatException e)
        {
            throw new ArgumentException("request file " + path + " is not valid JSON: " + e.Message);
        }
        object inner;
        if (data.TryGetValue("request", out inner) && inner is Dictionary<string, object>)
            data = (Dictionary<string, object>)inner;
        return FromDict(data);
    }

    public static Request FromDict(Dictionary<string, object> data)
    {
        var r = new Request();
        foreach (var kv in data)
        {
            object v = kv.Value;
            switch (kv.Key)
            {
                case "caption": r.Caption = Str(kv.Key, v); break;
                case "lyrics": r.Lyrics = Str(kv.Key, v); break;
                case "instrumental": r.Instrumental = Bool(kv.Key, v); break;
                case "language":
                case "vocal_language": r.VocalLanguage = Str(kv.Key, v); break;
                case "bpm": r.Bpm = v == null ? (long?)null : Int(kv.Key, v); break;
                case "keyscale": r.Keyscale = v == null ? null : Str(kv.Key, v); break;
                case "timesignature": r.TimeSignature = v == null ? null : (v is long ? v.ToString() : Str(kv.Key, v)); break;
                case "duration": r.Duration = v == null ? (double?)null : Num(kv.Key, v); break;
                case "seed": r.Seeds = new List<long> { Int(kv.Key, v) }; break;
                case "seeds":
                    r.Seeds = new List<long>();
                    foreach (object s in List(kv.Key, v)) r.Seeds.Add(Int(kv.Key, s));
                    break;
                case "batch_size": r.BatchSize = (int)Int(kv.Key, v); break;
                case "shift": r.Shift = v == null ? (double?)null : Num(kv.Key, v); break;
                case "timesteps": r.Timesteps = v == null ? null : List(kv.Key, v); break;
                case "infer_method": r.InferMethod = Str(kv.Key, v); break;
                case "noise_mode": r.NoiseMode = Str(kv.Key, v); break;
                case "think": break; // the official examples' LM switch; no LM here
                case "audio_codes":
                    if (v != null) throw new NotSupportedException("audio_codes (the cover path) is not part of this turbo example");
                    break;
                default:
                    if (Array.IndexOf(GuidanceKeys, kv.Key) >= 0) break; // turbo ignores guidance, as the Python host does
                    throw new ArgumentException("unknown request key: " + kv.Key);
            }
        }
        if (r.BatchSize < 1 || r.BatchSize > 64)
            throw new ArgumentException("batch_size must be between 1 and 64, got " + r.BatchSize);
        if (r.Seeds.Count > r.BatchSize)
            throw new ArgumentException(r.Seeds.Count + " seeds given for batch_size " + r.BatchSize);
        if (r.InferMethod != "ode" && r.InferMethod != "sde")
            throw new ArgumentException("infer_method must be ode or sde, got " + r.InferMethod);
        return r;
    }

    static string Str(string k, object v) { if (v is string) return (string)v; throw new ArgumentException(k + " must be a string"); }
    static bool Bool(string k, object v) { if (v is bool) return (bool)v; throw new ArgumentException(k + " must be true or false"); }
    static long Int(string k, object v) { if (v is long) return (long)v; throw new ArgumentException(k + " must be an integer"); }
    static double Num(string k, object v)
    {
        if (v is long) return (long)v;
        if (v is double) return (double)v;
        throw new ArgumentException(k + " must be a number");
    }
    static List<object> List(string k, object v) { if (v is List<object>) return (List<object>)v; throw new ArgumentException(k + " must be a list"); }
}
