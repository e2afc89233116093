"""The bad-input matrix over every function of the C header, generated from the header.

``generate_c(header_text)`` parses the prototypes of ``include/acestep_runtime.h``, takes each
function's valid call from ``recipes.RECIPES`` and emits a C program that runs, for every function,
the valid call and one case per (parameter, bad value), each case in a forked child. A child prints
one line ``function<TAB>parameter<TAB>value<TAB>status<TAB>message``; the parent prints a CRASH line
when a child dies by a signal (or TIMEOUT, or VALGRIND when valgrind reports an error). The bad
values follow the parameter's C type (NULL for every pointer; NaN/±Inf/huge for numbers; invalid
UTF-8, truncated JSON, arrays, duplicate keys, deep nesting and over-long text for strings; zero,
too-small and huge lengths), and each case carries what it must return. ``run_matrix`` builds and
runs the program and checks every line; ``python -m tools.abi_matrix`` does that from the shell.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from .recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "include" / "acestep_runtime.h"
TINY_TOKENIZER = ROOT / "fixtures" / "reliability" / "tiny_tokenizer.json"

NULL_POINTER, INVALID_ARGUMENT, INVALID_JSON, INVALID_UTF8, TOKENIZER, PANIC = 2, 1, 4, 5, 8, 99
KNOWN_STATUSES = {0, 1, 2, 3, 4, 5, 6, 7, 8}
# Lengths of caller buffers: a huge value there would be an out-of-contract read, so these get
# only values the fixtures can back (every fixture buffer has BIG elements) and the unaddressable
# ones the library must reject.
BUFFER_LENGTHS = {"len", "n", "count", "cap", "capacity", "out_capacity", "out_len", "vocab", "peaks_len",
                  "num_seeds", "ndim"}
JSON_PARAMS = {"config_json", "request_json", "metadata_json", "params_json", "options_json", "noise_json",
               "host_json"}
# Reading the last error must not change it, so these bypass the guard and set no message.
NO_MESSAGE = {"ace_last_error", "ace_last_error_json"}


@dataclasses.dataclass
class Param:
    ctype: str
    name: str


@dataclasses.dataclass
class Function:
    ret: str
    name: str
    params: list[Param]


@dataclasses.dataclass
class Case:
    function: str
    param: str  # "-" for the valid call
    value: str  # label of the bad value
    call: str  # C expression
    expect: int | None = None  # exact status required
    must_fail: bool = False  # any status but OK (and never PANIC)
    returns_status: bool = True


class MissingRecipe(Exception):
    pass


def parse_header(text: str) -> list[Function]:
    """The prototypes of the header: cbindgen writes each on one line."""
    out = []
    for m in re.finditer(r"^(AceStatus|void|uint32_t) (ace_\w+)\((.*)\);$", text, flags=re.M):
        ret, name, params = m.groups()
        plist = []
        if params.strip() != "void":
            for p in params.split(","):
                p = p.strip()
                pm = re.match(r"^(.*?)(\w+)$", p)
                plist.append(Param(ctype=re.sub(r"\s+", " ", pm.group(1)).strip(), name=pm.group(2)))
        out.append(Function(ret, name, plist))
    return out


def _bad_values(fn: Function, p: Param, valid: str, recipe) -> list[tuple[str, str, dict]]:
    """(label, C expression, expectation) for one parameter."""
    t = p.ctype.replace(" *", "*")
    optional = p.name in recipe.optional
    anyok = p.name in recipe.accepts_any
    null_expect = {} if optional else {"expect": NULL_POINTER}
    fail = {} if anyok else {"must_fail": True}
    vals: list[tuple[str, str, dict]] = []
    if t.endswith("*"):
        vals.append(("NULL", "NULL", null_expect))
    if t == "const char*":
        json_expect = {"expect": TOKENIZER} if (p.name == "json") else (
            {"expect": INVALID_JSON} if p.name in JSON_PARAMS else {})
        vals += [
            ("bad-utf8", "S_BADUTF8", {"expect": INVALID_UTF8}),
            ("over-limit", "S_OVERCAP", {"expect": INVALID_ARGUMENT}),
            ("empty", '""', {}),
            ("truncated-json", "S_TRUNC", json_expect),
            ("array", "S_ARRAY", json_expect),
            ("duplicate-keys", "S_DUP", json_expect),
            ("json-null", '"null"', {}),
            ("deep-nesting", "S_DEEP", {}),
            ("nan-json", "S_NAN", json_expect),
            ("long-text", "S_LONG", {}),
        ]
        if p.name == "path":
            vals += [("dev-zero", '"/dev/zero"', {"must_fail": True}), ("directory", '"/"', {"must_fail": True}),
                     ("missing", '"/nonexistent/x.json"', {"must_fail": True})]
    elif t == "const float*":
        vals += [("nan", "FNAN", fail), ("inf", "FINF", fail), ("huge", "FHUGE", {})]
    elif t == "float*":
        vals += [("nan", "WNAN", {})]
        src = next((q for q in fn.params if q.ctype == "const float *"), None)
        if src is not None:
            vals.append((f"alias-{src.name}", f"(float *){recipe.args[src.name]}", {}))
    elif t == "const double*":
        vals += [("nan", "DNAN", fail)]
    elif t == "const size_t*":
        vals += [("zero-dims", "ZSHAPE", {"must_fail": True}), ("huge-dims", "HSHAPE", {"must_fail": True})]
    elif t == "const uint32_t*":
        vals += [("bad-ids", "BADIDS", fail)]
    elif t == "const uint64_t*":
        vals += [("max-seeds", "MAXSEEDS", fail)]
    elif t == "size_t":
        vals += [("0", "(size_t)0", {}), ("1", "(size_t)1", {}), ("BIG", "(size_t)BIG", {}),
                 ("SIZE_MAX", "SIZE_MAX", fail), ("SIZE_MAX/4+1", "(SIZE_MAX / 4 + 1)", fail)]
        if re.fullmatch(r"\d+", valid):
            vals.append(("valid+1", f"(size_t){int(valid) + 1}", {}))
        if p.name not in BUFFER_LENGTHS:
            vals.append(("2^40", "((size_t)1 << 40)", fail))
    elif t == "uint32_t":
        vals += [("0", "0u", {}), ("1", "1u", {}), ("UINT32_MAX", "UINT32_MAX", {})]
    elif t == "uint64_t":
        vals += [("0", "(uint64_t)0", {}), ("UINT64_MAX", "UINT64_MAX", {})]
    elif t == "int64_t":
        vals += [("INT64_MIN", "INT64_MIN", {}), ("-1", "(int64_t)-1", {}), ("INT64_MAX", "INT64_MAX", {})]
    elif t == "double":
        vals += [("NaN", "NAN", fail), ("+Inf", "INFINITY", fail), ("-Inf", "-INFINITY", fail),
                 ("-1", "-1.0", {}), ("0", "0.0", {}), ("1e308", "1e308", {})]
    elif t == "float":
        vals += [("NaN", "(float)NAN", fail), ("+Inf", "(float)INFINITY", fail), ("-Inf", "-(float)INFINITY", fail),
                 ("-1", "-1.0f", {}), ("3e38", "3e38f", {})]
    elif t == "bool":
        vals += [("flipped", f"!({valid})", {})]
    return vals


def build_cases(functions: list[Function]) -> list[Case]:
    missing = [f for f in functions if f.name not in RECIPES]
    if missing:
        def decl(p: Param) -> str:
            return p.ctype + ("" if p.ctype.endswith("*") else " ") + p.name

        lines = [f"  {f.name}({', '.join(decl(p) for p in f.params) or 'void'})" for f in missing]
        raise MissingRecipe(
            "the bad-input matrix has no recipe for these functions of include/acestep_runtime.h:\n"
            + "\n".join(lines)
            + "\nadd a valid call for each to RECIPES in tools/abi_matrix/recipes.py"
        )
    cases = []
    for f in functions:
        recipe = RECIPES[f.name]
        names = [p.name for p in f.params]
        if set(recipe.args) != set(names):
            raise MissingRecipe(
                f"the recipe for {f.name} names {sorted(recipe.args)} but the header's parameters are "
                f"{names}: update tools/abi_matrix/recipes.py"
            )
        returns = f.ret == "AceStatus"
        valid = [recipe.args[n] for n in names]
        cases.append(Case(f.name, "-", "valid", f"{f.name}({', '.join(valid)})",
                          expect=0 if returns else None, returns_status=returns))
        for i, p in enumerate(f.params):
            for label, expr, expectation in _bad_values(f, p, valid[i], recipe):
                args = valid[:i] + [expr] + valid[i + 1:]
                if not returns:
                    expectation = {}
                cases.append(Case(f.name, p.name, label, f"{f.name}({', '.join(args)})",
                                  returns_status=returns, **expectation))
    return cases


PRELUDE = r"""
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "acestep_runtime.h"

#define BIG 4096
#define NLAT 64
static float XA[BIG], XB[BIG], XC[BIG], XM[BIG], XO[BIG], FNAN[BIG], FINF[BIG], FHUGE[BIG], WNAN[BIG];
static float LOGA[BIG], LOGB[BIG], LOGM[BIG];
static double TS[BIG], DNAN[BIG];
static size_t SHAPE3[BIG], SHAPE1[BIG], ZSHAPE[BIG], HSHAPE[BIG];
static uint32_t IDS[BIG], IDSOUT[BIG], BADIDS[BIG];
static uint64_t SEEDS[BIG], MAXSEEDS[BIG];
static uint8_t U8BUF[BIG];
static AceTileWindow WINDOWS[BIG];
static char *OUT_STR; static size_t OUT_SZ; static uint32_t OUT_U32, OUT_U32B; static uint64_t OUT_U64;
static int64_t OUT_I64; static float OUT_F32; static double OUT_F64; static bool OUT_BOOL; static int OUT_INT;
static AceContext *OUT_CTX; static AceApg *OUT_APG; static AceHeun *OUT_HEUN; static AceFsm *OUT_FSM;
static AceSampler *OUT_SAMPLER; static AceTokenizer *OUT_TOK;
static AceContext *CTX; static AceApg *APG; static AceHeun *HEUN; static AceFsm *FSM; static AceSampler *SAMPLER;
static AceNoiseStream *NSTREAM, *OUT_NSTREAM;
static AceTokenizer *TOK; static size_t VOCAB; static uint32_t THINK_ID;
static const char *TOK_PATH; static char *TOK_JSON; static char SAMPLER_CFG[128];
static char *S_OVERCAP, *S_DEEP, *S_LONG;
static const char *PKG_DIR; static AcePackage *PKG, *OUT_PKG;
static AceGeneration *GEN, *GEN_PENDING, *GEN_DONE, *OUT_GEN; static const AceGraphCall *OUT_CALL;
static const float *OUT_CF32; static size_t SHAPE_OUT[3];
static const char S_BADUTF8[] = "{\"a\": \"\xff\xfe\"}";
static const char S_TRUNC[] = "{\"model\": ";
static const char S_ARRAY[] = "[\"turbo\", 8, 1.0]";
static const char S_DUP[] = "{\"seed\": 1, \"seed\": 2}";
static const char S_NAN[] = "{\"x\": NaN}";

static void die(const char *what) {
    char *msg = NULL;
    ace_last_error(&msg);
    fprintf(stderr, "matrix setup failed: %s: %s\n", what, msg ? msg : "");
    exit(2);
}

static void setup(const char *tok_path) {
    for (int i = 0; i < BIG; i++) {
        XA[i] = 0.01f * (float)(i % 17) - 0.05f;
        XB[i] = 0.02f * (float)(i % 13) - 0.1f;
        XC[i] = 0.03f * (float)(i % 11) - 0.15f;
        XM[i] = XA[i];
        FNAN[i] = NAN; WNAN[i] = NAN; FINF[i] = INFINITY; FHUGE[i] = (i % 2) ? 3.4e38f : -3.4e38f;
        LOGA[i] = 0.001f * (float)(i % 101); LOGB[i] = 0.002f * (float)(i % 53); LOGM[i] = LOGA[i];
        TS[i] = 0.9 - 0.2 * (i % 4); DNAN[i] = NAN;
        SHAPE3[i] = 1; SHAPE1[i] = 1; ZSHAPE[i] = 0; HSHAPE[i] = SIZE_MAX;
        IDS[i] = 72 + (uint32_t)(i % 20); BADIDS[i] = UINT32_MAX;
        SEEDS[i] = 1 + (uint64_t)i; MAXSEEDS[i] = UINT64_MAX;
    }
    SHAPE3[1] = 8; SHAPE3[2] = 8; SHAPE1[0] = NLAT;
    TOK_PATH = tok_path;
    FILE *f = fopen(tok_path, "rb");
    if (!f) { perror(tok_path); exit(2); }
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    TOK_JSON = malloc((size_t)n + 1);
    if (fread(TOK_JSON, 1, (size_t)n, f) != (size_t)n) { perror("read"); exit(2); }
    TOK_JSON[n] = 0; fclose(f);
    size_t over = (64u << 20) + 1;
    S_OVERCAP = malloc(over + 1); memset(S_OVERCAP, 'a', over); S_OVERCAP[over] = 0;
    S_DEEP = malloc(100001); memset(S_DEEP, '[', 100000); S_DEEP[100000] = 0;
    S_LONG = malloc(65537); memset(S_LONG, 'b', 65536); S_LONG[65536] = 0;
    if (ace_tokenizer_create_from_json(TOK_JSON, &TOK)) die("tokenizer");
    if (ace_tokenizer_vocab_size(TOK, &VOCAB)) die("vocab");
    if (ace_tokenizer_token_to_id(TOK, "<think>", &THINK_ID)) die("think id");
    snprintf(SAMPLER_CFG, sizeof SAMPLER_CFG, "{\"seed\": 1, \"vocab_size\": %zu}", VOCAB);
    if (ace_sampler_create(SAMPLER_CFG, &SAMPLER)) die("sampler");
    if (ace_fsm_create(TOK, "{}", &FSM)) die("fsm");
    if (ace_create_context("{\"model\": \"turbo\", \"seeds\": [1]}", &CTX)) die("context");
    if (ace_apg_create("{}", &APG)) die("apg");
    if (ace_noise_stream_create(NULL, 3, &OUT_I64, &NSTREAM)) die("noise stream");
    if (ace_heun_create(10.0, &HEUN)) die("heun");
}

typedef int (*case_fn)(void);
"""

# The driver's fixtures: a package, a fresh generation, one with a call pending and one driven to the
# end with zero-valued stand-in outputs (the values do not matter to the matrix).
PRELUDE = PRELUDE.replace("""    if (ace_heun_create(10.0, &HEUN)) die("heun");
}""", """    if (ace_heun_create(10.0, &HEUN)) die("heun");
    PKG_DIR = getenv("MATRIX_PACKAGE");
    if (!PKG_DIR) { fprintf(stderr, "MATRIX_PACKAGE (a model package directory) is not set\\n"); exit(2); }
    const char *req = "{\\"caption\\": \\"x\\", \\"duration\\": 10, \\"seed\\": 1}";
    if (ace_package_open(PKG_DIR, NULL, &PKG)) die("package");
    if (ace_generation_create(PKG, req, &GEN)) die("generation");
    if (ace_generation_create(PKG, req, &GEN_PENDING) || ace_generation_next(GEN_PENDING, &OUT_CALL)) die("pending");
    if (ace_generation_create(PKG, req, &GEN_DONE)) die("generation to drive");
    static float zeros[1 << 22];
    const AceGraphCall *call;
    while (!ace_generation_next(GEN_DONE, &call) && call) {
        AceTensor outs[4]; int64_t shapes[4][3]; size_t n = 0;
        for (size_t i = 0; i < call->num_outputs; i++) {
            if (call->outputs[i].keep_as) continue;
            const AceTensor *x = &call->inputs[0];
            int is_audio = strcmp(call->outputs[i].name, "audio") == 0;
            shapes[n][0] = x->shape[0];
            shapes[n][1] = is_audio ? 2 : x->shape[1];
            shapes[n][2] = is_audio ? 1920 * x->shape[2] : x->shape[2];
            size_t count = (size_t)(shapes[n][0] * shapes[n][1] * shapes[n][2]);
            if (count > sizeof zeros / sizeof zeros[0]) die("stand-in output too large");
            outs[n] = (AceTensor){call->outputs[i].name, ACE_DTYPE_FLOAT32, shapes[n], 3, zeros, 4 * count, NULL};
            n++;
        }
        if (ace_generation_submit(GEN_DONE, n ? outs : NULL, n)) die("drive");
    }
    if (call) die("drive: next");
}""")

MAIN = r"""
static void clean(char *s) {
    for (; *s; s++) if (*s == '\t' || *s == '\n' || *s == '\r') *s = ' ';
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s TOKENIZER_JSON [CASE,CASE,...]\n", argv[0]); return 2; }
    setup(argv[1]);
    size_t n = sizeof CASES / sizeof CASES[0];
    /* argv[2], if given: a comma-separated list of the case indices to run (default: all). */
    char *list = argc > 2 ? argv[2] : NULL;
    unsigned timeout = getenv("MATRIX_TIMEOUT") ? (unsigned)atoi(getenv("MATRIX_TIMEOUT")) : 30;
    for (size_t k = 0; list ? *list != 0 : k < n; k++) {
        size_t i = k;
        if (list) {
            char *end;
            i = strtoul(list, &end, 10);
            list = *end == ',' ? end + 1 : end;
            if (i >= n) continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) {
            alarm(timeout);
            int status = CASES[i].run();
            char *msg = NULL;
            if (ace_last_error(&msg) != 0 || !msg) { printf("%s\t%s\t%s\t%d\t<no last error>\n", CASES[i].fn, CASES[i].param, CASES[i].value, status); fflush(stdout); _exit(0); }
            if (strlen(msg) > 400) msg[400] = 0;
            clean(msg);
            printf("%s\t%s\t%s\t%d\t%s\n", CASES[i].fn, CASES[i].param, CASES[i].value, status, msg);
            fflush(stdout);
            _exit(0);
        }
        int ws = 0;
        waitpid(pid, &ws, 0);
        if (WIFSIGNALED(ws)) {
            const char *what = WTERMSIG(ws) == SIGALRM ? "TIMEOUT" : "CRASH";
            printf("%s\t%s\t%s\t%s\tsignal %d\n", CASES[i].fn, CASES[i].param, CASES[i].value, what, WTERMSIG(ws));
        } else if (WEXITSTATUS(ws) != 0) {
            printf("%s\t%s\t%s\tVALGRIND\texit %d\n", CASES[i].fn, CASES[i].param, CASES[i].value, WEXITSTATUS(ws));
        }
    }
    return 0;
}
"""


def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate_c(header_text: str) -> tuple[str, list[Case]]:
    cases = build_cases(parse_header(header_text))
    body = [PRELUDE]
    for i, c in enumerate(cases):
        if c.returns_status:
            body.append(f"static int case_{i}(void) {{ return (int){c.call}; }}")
        else:
            body.append(f"static int case_{i}(void) {{ (void){c.call}; return 0; }}")
    body.append("static const struct { const char *fn, *param, *value; case_fn run; } CASES[] = {")
    for i, c in enumerate(cases):
        body.append(f"    {{{_c_str(c.function)}, {_c_str(c.param)}, {_c_str(c.value)}, case_{i}}},")
    body.append("};")
    body.append(MAIN)
    return "\n".join(body), cases


def build(workdir: Path, lib_dir: Path, header: Path = HEADER) -> tuple[Path, list[Case]]:
    """Writes and compiles the matrix program; returns (binary, cases)."""
    source, cases = generate_c(header.read_text(encoding="utf-8"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "abi_matrix.c").write_text(source, encoding="utf-8")
    binary = workdir / "abi_matrix"
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    cmd = [cc, "-O1", "-g", "-w", "-o", str(binary), str(workdir / "abi_matrix.c"), f"-I{header.parent}",
           f"-L{lib_dir}", "-lacestep_runtime", f"-Wl,-rpath,{lib_dir}", "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return binary, cases


@dataclasses.dataclass
class Outcome:
    case: Case
    status: str  # a number, CRASH, TIMEOUT, VALGRIND or MISSING
    message: str


def matrix_package() -> Path:
    """The model package the driver's cases use: the torch-free demo package (built in seconds)."""
    from tools.demo_package import demo_package_dir

    return demo_package_dir()


def run(binary: Path, cases: list[Case], *, valgrind: bool = False, timeout_s: int = 30,
        only: list[int] | None = None) -> list[Outcome]:
    """Runs the cases (those at the indices `only`, if given) and returns their outcomes."""
    indices = list(range(len(cases))) if only is None else list(only)
    # Under valgrind, one parent process forking more than ~1000 children ends with valgrind's own
    # state corrupted (seen with valgrind 3.19); a fresh process per chunk avoids that.
    chunk = 250 if valgrind else len(indices) or 1
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        cmd = [str(binary), str(TINY_TOKENIZER), ",".join(map(str, part))]
        env = dict(os.environ, MATRIX_TIMEOUT=str(timeout_s), MATRIX_PACKAGE=str(matrix_package()))
        if valgrind:
            cmd = ["valgrind", "-q", "--error-exitcode=97", "--leak-check=no", "--track-origins=no"] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"matrix program failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 5:
                seen[(parts[0], parts[1], parts[2])] = (parts[3], parts[4])
    out = []
    for i in indices:
        c = cases[i]
        status, message = seen.get((c.function, c.param, c.value), ("MISSING", "the case printed nothing"))
        out.append(Outcome(c, status, message))
    return out


def problems(outcomes: list[Outcome]) -> list[str]:
    """Every case that broke a rule, as a readable line."""
    bad = []
    for o in outcomes:
        c = o.case
        where = f"{c.function}({c.param}={c.value})"
        if not o.status.lstrip("-").isdigit():
            bad.append(f"{where}: {o.status} {o.message}")
            continue
        s = int(o.status)
        if not c.returns_status:
            continue
        if s == PANIC:
            bad.append(f"{where}: PANIC {o.message}")
        elif s not in KNOWN_STATUSES:
            bad.append(f"{where}: unknown status {s}")
        elif c.expect is not None and s != c.expect:
            bad.append(f"{where}: expected status {c.expect}, got {s} ({o.message})")
        elif c.must_fail and s == 0:
            bad.append(f"{where}: accepted (status 0); it must fail")
        elif s != 0 and c.function not in NO_MESSAGE and (not o.message.strip() or o.message == "<no last error>"):
            bad.append(f"{where}: status {s} without a message")
    return bad
