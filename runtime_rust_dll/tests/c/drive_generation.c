/*
 * A C host for the generation driver, with stand-in graphs instead of ONNX Runtime.
 *
 *   drive_generation <tiny-package-dir> <test-packages-dir> [--short]
 *
 * It includes only the public header and libc. The stand-in graphs are simple functions whose
 * effect on the result can be computed here independently: the DiT returns v = K·x, so after an
 * all-ODE turbo run the latents are the first DiT input times prod_i (1 − K·(t_i − t_{i+1}))
 * (t_N = 0); the VAE upsamples latent channels 0 and 1 to audio, so the audio is the final latents
 * repeated 1920 times, divided by the peak guard. A guided (base) run gives the uncond rows
 * v = K_UNCOND·x, so CFG inside the cfg interval makes k per step. It then misuses the driver in every way the
 * header names and checks the status and that the last error names the problem.
 * <test-packages-dir> holds broken copies of the package and one relabelled as a base model, for
 * the guided path (made by make_test_packages.py).
 * Prints "N passed, M failed"; the exit code is 0 only when nothing failed.
 */
#include "acestep_runtime.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- checks ---------- */

static int g_passed, g_failed;

static bool check_at(bool ok, int line, const char *fmt, ...) {
    if (ok) {
        g_passed++;
        return true;
    }
    g_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL (line %d): ", line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return false;
}
#define CHECK(cond, ...) check_at((cond), __LINE__, __VA_ARGS__)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

/* This thread's last error message (a malloc'd copy). */
static char *last_error(void) {
    char *msg = NULL;
    if (ace_last_error(&msg) != ACE_STATUS_OK || !msg)
        return xstrdup("(ace_last_error failed)");
    char *copy = xstrdup(msg);
    ace_string_free(msg);
    return copy;
}

/* The call failed with `want` and the last error contains `needle`. */
static bool expect_error_at(int line, AceStatus got, AceStatus want, const char *needle, const char *what) {
    char *msg = last_error();
    bool ok = got == want && strstr(msg, needle) != NULL;
    check_at(ok, line, "%s: status %d (want %d), message \"%s\" (want it to contain \"%s\")", what, (int)got,
             (int)want, msg, needle);
    free(msg);
    return ok;
}
#define EXPECT_ERROR(got, want, needle, what) expect_error_at(__LINE__, (got), (want), (needle), (what))

static bool expect_ok_at(int line, AceStatus got, const char *what) {
    if (got == ACE_STATUS_OK)
        return check_at(true, line, "%s", what);
    char *msg = last_error();
    check_at(false, line, "%s: status %d: %s", what, (int)got, msg);
    free(msg);
    return false;
}
#define EXPECT_OK(got, what) expect_ok_at(__LINE__, (got), (what))

/* ---------- a small JSON reader (validation, top-level members, numbers, strings) ---------- */

static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_value(const char *p, int depth);

static const char *json_string(const char *p) {
    if (*p != '"')
        return NULL;
    for (p++; *p && *p != '"'; p++) {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
                        return NULL;
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_number(const char *p) {
    const char *start = p;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return p > start ? p : NULL;
}

static const char *json_container(const char *p, int depth, char open, char close) {
    if (*p != open || depth > 64)
        return NULL;
    p = json_ws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (open == '{') {
            p = json_string(p);
            if (!p)
                return NULL;
            p = json_ws(p);
            if (*p != ':')
                return NULL;
            p = json_ws(p + 1);
        }
        p = json_value(p, depth + 1);
        if (!p)
            return NULL;
        p = json_ws(p);
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p = json_ws(p + 1);
    }
}

/* Returns the end of the JSON value at `p`, or NULL when it is not valid JSON. */
static const char *json_value(const char *p, int depth) {
    p = json_ws(p);
    switch (*p) {
    case '{': return json_container(p, depth, '{', '}');
    case '[': return json_container(p, depth, '[', ']');
    case '"': return json_string(p);
    case 't': return strncmp(p, "true", 4) ? NULL : p + 4;
    case 'f': return strncmp(p, "false", 5) ? NULL : p + 5;
    case 'n': return strncmp(p, "null", 4) ? NULL : p + 4;
    default: return json_number(p);
    }
}

static bool json_valid(const char *text) {
    const char *end = json_value(text, 0);
    return end && *json_ws(end) == '\0';
}

/* The value of member `key` of the object at `obj` (top level only), or NULL. */
static const char *json_get(const char *obj, const char *key) {
    const char *p = json_ws(obj);
    if (*p != '{')
        return NULL;
    p = json_ws(p + 1);
    size_t klen = strlen(key);
    while (*p == '"') {
        const char *kend = json_string(p);
        if (!kend)
            return NULL;
        bool match = (size_t)(kend - p - 2) == klen && strncmp(p + 1, key, klen) == 0;
        p = json_ws(kend);
        if (*p != ':')
            return NULL;
        p = json_ws(p + 1);
        if (match)
            return p;
        p = json_value(p, 0);
        if (!p)
            return NULL;
        p = json_ws(p);
        if (*p == ',')
            p = json_ws(p + 1);
    }
    return NULL;
}

static double json_get_number(const char *obj, const char *key) {
    const char *v = json_get(obj, key);
    return v && json_number(v) ? strtod(v, NULL) : NAN;
}

/* Reads up to `cap` numbers of the array member `key`; returns how many (−1 if not an array). */
static int json_get_numbers(const char *obj, const char *key, double *out, int cap) {
    const char *p = json_get(obj, key);
    if (!p || *p != '[')
        return -1;
    int n = 0;
    p = json_ws(p + 1);
    while (*p != ']') {
        const char *end = json_number(p);
        if (!end || n >= cap)
            return -1;
        out[n++] = strtod(p, NULL);
        p = json_ws(end);
        if (*p == ',')
            p = json_ws(p + 1);
    }
    return n;
}

/* Copies the string at `p` (no escapes expected) into `out`; false when it is not a plain string. */
static bool json_plain_string(const char *p, char *out, size_t cap) {
    const char *end = p ? json_string(p) : NULL;
    if (!end || (size_t)(end - p - 2) >= cap || memchr(p + 1, '\\', (size_t)(end - p - 2)))
        return false;
    memcpy(out, p + 1, (size_t)(end - p - 2));
    out[end - p - 2] = '\0';
    return true;
}

/* The last dimension of output `output` of `component` in `ace_package_info_json`, where the
 * signatures read "name:float32['batch', 'text_length', 64]"; −1 when it is not a number. */
static long sig_last_dim(const char *info, const char *component, const char *output) {
    const char *comps = json_get(info, "components");
    const char *comp = comps ? json_get(comps, component) : NULL;
    const char *outs = comp ? json_get(comp, "outputs") : NULL;
    if (!outs)
        return -1;
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s:", output);
    const char *sig = strstr(outs, pattern);
    const char *close = sig ? strchr(sig, ']') : NULL;
    if (!close)
        return -1;
    const char *p = close;
    while (p > sig && p[-1] != ',' && p[-1] != '[')
        p--;
    char *end;
    long v = strtol(p, &end, 10);
    return end == close && v > 0 ? v : -1;
}

/* ---------- host-side values: tensors and the keep/release store ---------- */

typedef struct {
    int32_t dtype;
    int64_t shape[5];
    size_t rank;
    void *data;
    size_t bytes;
} Tensor;

static size_t numel(const int64_t *shape, size_t rank) {
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        n *= (size_t)shape[i];
    return n;
}

static Tensor tensor_f32(size_t rank, int64_t d0, int64_t d1, int64_t d2) {
    Tensor t = {ACE_DTYPE_FLOAT32, {d0, d1, d2, 0, 0}, rank, NULL, 0};
    t.bytes = numel(t.shape, rank) * sizeof(float);
    t.data = calloc(1, t.bytes);
    if (!t.data) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return t;
}

static AceTensor as_ace(const char *name, const Tensor *t) {
    AceTensor a = {name, t->dtype, t->shape, t->rank, t->data, t->bytes, NULL};
    return a;
}

typedef struct {
    char *key;
    Tensor value;
} Kept;

typedef struct {
    Kept items[16];
    size_t n;
    size_t max_n;
} Store;

static Tensor *store_get(Store *s, const char *key) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].key, key) == 0)
            return &s->items[i].value;
    return NULL;
}

static void store_put(Store *s, const char *key, Tensor value) {
    CHECK(store_get(s, key) == NULL, "keep_as \"%s\": the host already holds a value under this key", key);
    if (s->n == sizeof s->items / sizeof s->items[0]) {
        fprintf(stderr, "store full\n");
        exit(2);
    }
    s->items[s->n].key = xstrdup(key);
    s->items[s->n].value = value;
    s->n++;
    if (s->n > s->max_n)
        s->max_n = s->n;
}

static bool store_drop(Store *s, const char *key) {
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].key, key) == 0) {
            free(s->items[i].key);
            free(s->items[i].value.data);
            s->items[i] = s->items[--s->n];
            return true;
        }
    }
    return false;
}

static void store_clear(Store *s) {
    while (s->n)
        store_drop(s, s->items[0].key);
}

/* ---------- the stand-in graphs ---------- */

#define K_VELOCITY 0.25 /* the stand-in DiT returns v = K·x (the cond rows of a guided batch) */
#define K_UNCOND 0.1     /* ... and v = K_UNCOND·x for the uncond rows */
#define VAE_GAIN 0.75f  /* audio = VAE_GAIN · latent channel (0 or 1), upsampled */
#define MAX_STEPS 64

/* What a run needs from the package and what the host records while driving it. */
typedef struct {
    Store store;
    long text_width, lyric_width, enc_width, ctx_width, hint_width; /* from the manifest */
    double schedule[MAX_STEPS];                                       /* from the per-step ABI */
    float timestep_input[MAX_STEPS];
    int num_steps;
    /* guided runs: CFG with this scale on steps whose t is in [cfg_start, cfg_end] */
    bool guided;
    double cfg_scale, cfg_start, cfg_end;
    float *cond_encoder, *cond_context; /* the stand-in condition encoder's outputs (guided runs) */
    float *null_emb;                    /* null_condition_emb, read from the package's .npy */
    int64_t batch, frames, channels;
    float *x_start; /* the first DiT input: the initial noise */
    float *src_latents; /* condition_encoder's src_latents input (item 0), [frames, channels] */
    float *hints;       /* the stand-in detokenizer's output */
    int64_t hint_frames;
    int dit_seen, vae_seen, calls;
    uint32_t last_done[3];
    bool stage_seen[3];
} Run;

static void run_free(Run *r) {
    store_clear(&r->store);
    free(r->x_start);
    free(r->src_latents);
    free(r->hints);
    free(r->cond_encoder);
    free(r->cond_context);
    free(r->null_emb);
    memset(r, 0, sizeof *r);
}

static const AceTensor *call_input(const AceGraphCall *call, const char *name) {
    for (size_t i = 0; i < call->num_inputs; i++)
        if (strcmp(call->inputs[i].name, name) == 0)
            return &call->inputs[i];
    return NULL;
}

/* The data of input `name`: core memory, or the value the host kept under its host_key. Checks
 * that the declared shape and dtype fit what is fed. NULL (and a failed check) otherwise. */
static const void *input_data(Run *r, const AceGraphCall *call, const char *name, int32_t dtype,
                              int64_t *shape_out, size_t rank) {
    const AceTensor *in = call_input(call, name);
    if (!CHECK(in != NULL, "%s: input %s is missing", call->component, name))
        return NULL;
    CHECK(in->dtype == dtype && in->rank == rank, "%s.%s: dtype %d rank %zu", call->component, name,
          (int)in->dtype, in->rank);
    if (in->host_key) {
        CHECK(in->data == NULL, "%s.%s: host input with core data", call->component, name);
        Tensor *kept = store_get(&r->store, in->host_key);
        if (!CHECK(kept != NULL, "%s.%s names host key \"%s\", which the host does not hold (released or never kept)",
                   call->component, name, in->host_key))
            return NULL;
        bool fits = kept->rank == rank && kept->dtype == dtype;
        for (size_t d = 0; fits && d < rank; d++)
            fits = in->shape[d] == -1 || in->shape[d] == kept->shape[d];
        CHECK(fits, "%s.%s: declared shape does not match the kept value", call->component, name);
        memcpy(shape_out, kept->shape, rank * sizeof *shape_out);
        return kept->data;
    }
    size_t elem = dtype == ACE_DTYPE_INT64 ? 8 : 4;
    bool known = true;
    for (size_t d = 0; d < rank; d++)
        known = known && in->shape[d] > 0;
    CHECK(known && in->data != NULL && in->byte_len == numel(in->shape, rank) * elem,
          "%s.%s: core input with unknown shape or byte_len %zu", call->component, name, in->byte_len);
    memcpy(shape_out, in->shape, rank * sizeof *shape_out);
    return in->data;
}

/* The velocity factor k of step i: v = k·x after guidance (CFG u + g·(c − u) inside the interval). */
static double step_k(const Run *r, int i) {
    float t = (float)r->schedule[i];
    if (r->guided && t >= (float)r->cfg_start && t <= (float)r->cfg_end)
        return K_UNCOND + r->cfg_scale * (K_VELOCITY - K_UNCOND);
    return K_VELOCITY;
}

/* Latents after `steps` solver steps, as a multiple of the initial noise: every step (the last,
 * x0 = x − v·t, included, with t_N = 0) multiplies them by 1 − k_i·(t_i − t_{i+1}). */
static double closed_form_scale(const Run *r, int steps) {
    double scale = 1;
    for (int i = 0; i < steps; i++)
        scale *= 1 - step_k(r, i) * (r->schedule[i] - r->schedule[i + 1]);
    return scale;
}

/* Runs the stand-in of `call->component`, writing one output per `call->outputs` entry. */
static bool run_graph(Run *r, const AceGraphCall *call, Tensor *outs) {
    const char *comp = call->component;
    int64_t s2[2], s3[3], t3[3];
    if (strcmp(comp, "audio_detokenizer") == 0) {
        const int64_t *codes = input_data(r, call, "audio_codes", ACE_DTYPE_INT64, s2, 2);
        if (!codes)
            return false;
        int64_t n = s2[1], c = r->hint_width;
        outs[0] = tensor_f32(3, 1, 5 * n, c);
        float *h = outs[0].data;
        for (int64_t f = 0; f < 5 * n; f++)
            for (int64_t ch = 0; ch < c; ch++)
                h[f * c + ch] = (float)(codes[f / 5] % 97) * 0.01f - 0.002f * (float)ch + 0.0001f * (float)(f % 5);
        free(r->hints);
        r->hints = xmalloc(outs[0].bytes);
        memcpy(r->hints, h, outs[0].bytes);
        r->hint_frames = 5 * n;
        return true;
    }
    if (strcmp(comp, "text_encoder") == 0 || strcmp(comp, "lyric_embedding") == 0) {
        const int64_t *ids = input_data(r, call, "input_ids", ACE_DTYPE_INT64, s2, 2);
        if (!ids)
            return false;
        long w = comp[0] == 't' ? r->text_width : r->lyric_width;
        outs[0] = tensor_f32(3, s2[0], s2[1], w);
        float *o = outs[0].data;
        for (size_t i = 0; i < (size_t)(s2[0] * s2[1]); i++)
            for (long d = 0; d < w; d++)
                o[i * (size_t)w + (size_t)d] = (float)(ids[i] % 1000) * 1e-3f + (float)d * 1e-4f;
        return true;
    }
    if (strcmp(comp, "condition_encoder") == 0) {
        const float *text = input_data(r, call, "text_hidden_states", ACE_DTYPE_FLOAT32, s3, 3);
        const float *lyric = input_data(r, call, "lyric_hidden_states", ACE_DTYPE_FLOAT32, t3, 3);
        int64_t sl[3], cm[3], tm[2], lm[2], ra[3], ro[1];
        const float *src = input_data(r, call, "src_latents", ACE_DTYPE_FLOAT32, sl, 3);
        const float *mask = input_data(r, call, "chunk_masks", ACE_DTYPE_FLOAT32, cm, 3);
        const int64_t *tmask = input_data(r, call, "text_attention_mask", ACE_DTYPE_INT64, tm, 2);
        const int64_t *lmask = input_data(r, call, "lyric_attention_mask", ACE_DTYPE_INT64, lm, 2);
        const float *refer = input_data(r, call, "refer_audio_packed", ACE_DTYPE_FLOAT32, ra, 3);
        const int64_t *order = input_data(r, call, "refer_audio_order_mask", ACE_DTYPE_INT64, ro, 1);
        if (!text || !lyric || !src || !mask || !tmask || !lmask || !refer || !order)
            return false;
        int64_t b = s3[0], lc = s3[1], ll = t3[1], t = sl[1], c = sl[2];
        CHECK(t3[0] == b && sl[0] == b && tm[1] == lc && lm[1] == ll && ra[2] == c && ro[0] == ra[0],
              "condition_encoder: inputs disagree on batch or lengths");
        r->batch = b, r->frames = t, r->channels = c;
        bool ones = true;
        for (size_t i = 0; i < numel(cm, 3); i++)
            ones = ones && mask[i] == 1.0f;
        CHECK(ones, "condition_encoder: chunk_masks of a text2music run are all 1");
        free(r->src_latents);
        r->src_latents = xmalloc((size_t)(t * c) * sizeof(float));
        memcpy(r->src_latents, src, (size_t)(t * c) * sizeof(float));
        /* encoder states: one row per text token then per lyric token, each its row's mean plus a ramp */
        int64_t len = lc + ll;
        outs[0] = tensor_f32(3, b, len, r->enc_width);
        outs[1] = tensor_f32(3, b, t, r->ctx_width);
        float *enc = outs[0].data, *ctx = outs[1].data;
        for (int64_t i = 0; i < b; i++)
            for (int64_t row = 0; row < len; row++) {
                const float *in = row < lc ? text + (i * lc + row) * s3[2] : lyric + (i * ll + row - lc) * t3[2];
                long w = row < lc ? (long)s3[2] : (long)t3[2];
                float mean = 0;
                for (long d = 0; d < w; d++)
                    mean += in[d] / (float)w;
                for (long d = 0; d < r->enc_width; d++)
                    enc[(i * len + row) * r->enc_width + d] = mean + 1e-3f * (float)d;
            }
        /* context: [src_latents | chunk_masks] per frame */
        for (int64_t i = 0; i < b * t; i++)
            for (int64_t ch = 0; ch < r->ctx_width; ch++)
                ctx[i * r->ctx_width + ch] = ch < c ? src[i * c + ch] : mask[i * c + (ch - c) % c];
        if (r->guided) {
            r->cond_encoder = xmalloc(outs[0].bytes);
            memcpy(r->cond_encoder, enc, outs[0].bytes);
            r->cond_context = xmalloc(outs[1].bytes);
            memcpy(r->cond_context, ctx, outs[1].bytes);
        }
        return true;
    }
    if (strcmp(comp, "dit_cross_kv") == 0) {
        /* stand-in: the encoder states themselves as a [rows, 1, 1, L, width] "cache" */
        const float *enc = input_data(r, call, "encoder_hidden_states", ACE_DTYPE_FLOAT32, s3, 3);
        if (!enc)
            return false;
        CHECK(r->dit_seen == 0, "dit_cross_kv: called after a DiT step");
        outs[0] = tensor_f32(3, s3[0], s3[1], s3[2]);
        memcpy(outs[0].data, enc, outs[0].bytes);
        int64_t shape5[5] = {s3[0], 1, 1, s3[1], s3[2]};
        memcpy(outs[0].shape, shape5, sizeof shape5);
        outs[0].rank = 5;
        return true;
    }
    if (strcmp(comp, "dit_decoder") == 0) {
        int64_t cl[3], el[3], kv[5], ts[1], tr[1];
        const float *x = input_data(r, call, "hidden_states", ACE_DTYPE_FLOAT32, s3, 3);
        const float *tstep = input_data(r, call, "timestep", ACE_DTYPE_FLOAT32, ts, 1);
        const float *tstep_r = input_data(r, call, "timestep_r", ACE_DTYPE_FLOAT32, tr, 1);
        const float *ctx = input_data(r, call, "context_latents", ACE_DTYPE_FLOAT32, cl, 3);
        /* the host-kept cross K/V of the stand-in above: the encoder states the DiT attends to */
        const float *enc = input_data(r, call, "cross_kv", ACE_DTYPE_FLOAT32, kv, 5);
        el[0] = kv[0], el[1] = kv[3], el[2] = kv[4];
        if (!x || !tstep || !tstep_r || !ctx || !enc)
            return false;
        int i = r->dit_seen;
        int64_t rows = (r->guided ? 2 : 1) * r->batch; /* guided: [cond | uncond] */
        size_t n = numel(s3, 3), half = (size_t)(r->batch * r->frames * r->channels);
        CHECK(s3[0] == rows && s3[1] == r->frames && s3[2] == r->channels && cl[0] == rows && cl[1] == r->frames &&
                  cl[2] == r->ctx_width && el[0] == rows && el[2] == r->enc_width && ts[0] == rows,
              "dit_decoder step %d: input shapes", i);
        bool t_ok = i < r->num_steps;
        for (int64_t b = 0; t_ok && b < ts[0]; b++)
            t_ok = tstep[b] == r->timestep_input[i] && tstep_r[b] == tstep[b];
        CHECK(t_ok, "dit_decoder step %d: timestep differs from ace_context_timestep_input", i);
        if (r->guided && s3[0] == rows) {
            /* the batch is [cond | uncond]: the same latents and context twice, and the encoder
             * states followed by null_condition_emb on every row */
            size_t ctx_half = (size_t)(r->batch * r->frames * r->ctx_width);
            size_t enc_half = (size_t)(r->batch * el[1] * r->enc_width);
            bool same = memcmp(x, x + half, half * sizeof *x) == 0 && r->cond_context && r->cond_encoder &&
                        memcmp(ctx, r->cond_context, ctx_half * sizeof *ctx) == 0 &&
                        memcmp(ctx + ctx_half, r->cond_context, ctx_half * sizeof *ctx) == 0 &&
                        memcmp(enc, r->cond_encoder, enc_half * sizeof *enc) == 0;
            CHECK(same, "dit_decoder step %d: guided batch is not [cond | uncond] of the same latents/condition", i);
            bool null_rows = r->null_emb != NULL;
            for (size_t row = 0; null_rows && row < (size_t)(r->batch * el[1]); row++)
                null_rows = memcmp(enc + enc_half + row * (size_t)r->enc_width, r->null_emb,
                                   (size_t)r->enc_width * sizeof *enc) == 0;
            CHECK(null_rows, "dit_decoder step %d: uncond encoder rows are not null_condition_emb", i);
        }
        if (i == 0) {
            r->x_start = xmalloc(half * sizeof(float));
            memcpy(r->x_start, x, half * sizeof(float));
        } else if (r->x_start) {
            /* the latents so far follow the closed form */
            double scale = closed_form_scale(r, i), worst = 0;
            for (size_t k = 0; k < half; k++) {
                double e = scale * r->x_start[k], d = fabs(x[k] - e) / (1 + fabs(e));
                worst = d > worst ? d : worst;
            }
            CHECK(worst < 1e-5, "dit_decoder step %d: hidden_states off the closed form by %g", i, worst);
        }
        outs[0] = tensor_f32(3, s3[0], s3[1], s3[2]);
        float *v = outs[0].data;
        for (size_t k = 0; k < n; k++)
            v[k] = (float)(k < half ? K_VELOCITY : K_UNCOND) * x[k];
        r->dit_seen++;
        return true;
    }
    if (strcmp(comp, "vae_decoder") == 0) {
        const float *z = input_data(r, call, "latents", ACE_DTYPE_FLOAT32, s3, 3);
        if (!z)
            return false;
        int64_t b = s3[0], c = s3[1], f = s3[2], n = f * ACE_SAMPLES_PER_FRAME;
        outs[0] = tensor_f32(3, b, 2, n);
        float *audio = outs[0].data;
        for (int64_t i = 0; i < b; i++)
            for (int64_t ch = 0; ch < 2; ch++)
                for (int64_t s = 0; s < n; s++)
                    audio[(i * 2 + ch) * n + s] = VAE_GAIN * z[(i * c + ch) * f + s / ACE_SAMPLES_PER_FRAME];
        r->vae_seen++;
        return true;
    }
    CHECK(false, "unknown component %s", comp);
    return false;
}

/* ---------- the host loop ---------- */

static int stage_index(const char *stage) {
    return strcmp(stage, "encode") == 0 ? 0 : strcmp(stage, "diffusion") == 0 ? 1 : 2;
}

/* One turn of the loop: next, run, keep, release, submit. Returns 1 after a run, 0 when the
 * generation is done, −1 on failure. With `until` set, stops before running a call of that
 * component (the call is then pending and returned in *pending). */
static int drive_once(AceGeneration *gen, Run *r, const char *until, const AceGraphCall **pending) {
    const AceGraphCall *call = NULL;
    if (!EXPECT_OK(ace_generation_next(gen, &call), "ace_generation_next"))
        return -1;
    if (!call)
        return 0;
    if (pending)
        *pending = call;
    if (until && strcmp(call->component, until) == 0)
        return 2;

    int si = stage_index(call->stage);
    uint32_t expect_done = r->stage_seen[si] ? r->last_done[si] + 1 : 0;
    CHECK(call->stage_done == expect_done && call->stage_done < call->stage_total,
          "%s: progress %u/%u, expected %u done", call->component, call->stage_done, call->stage_total, expect_done);
    r->stage_seen[si] = true;
    r->last_done[si] = call->stage_done;

    Tensor outs[4] = {{0}};
    if (call->num_outputs > 4 || !run_graph(r, call, outs)) {
        for (size_t i = 0; i < 4; i++)
            free(outs[i].data);
        return -1;
    }
    /* The graph has run: the host keeps what it is told to keep and drops what is released. */
    AceTensor submit[4];
    size_t n_submit = 0;
    for (size_t i = 0; i < call->num_outputs; i++) {
        if (call->outputs[i].keep_as) {
            store_put(&r->store, call->outputs[i].keep_as, outs[i]);
            outs[i].data = NULL;
        } else {
            /* names (and here shapes) may point into the call: it stays valid during submit */
            submit[n_submit++] = as_ace(call->outputs[i].name, &outs[i]);
        }
    }
    for (size_t i = 0; i < call->num_release; i++)
        CHECK(store_drop(&r->store, call->release[i]), "release of \"%s\", which the host does not hold",
              call->release[i]);
    const AceTensor *hs = call_input(call, "hidden_states");
    if (hs && n_submit == 1 && hs->rank == 3)
        submit[0].shape = hs->shape; /* the velocity has the latents' shape: reuse the call's array */
    AceStatus st = ace_generation_submit(gen, submit, n_submit);
    for (size_t i = 0; i < 4; i++)
        free(outs[i].data);
    r->calls++;
    return EXPECT_OK(st, "ace_generation_submit") ? 1 : -1;
}

static bool drive_to_end(AceGeneration *gen, Run *r) {
    int rc;
    while ((rc = drive_once(gen, r, NULL, NULL)) == 1) {
    }
    return rc == 0;
}

/* Drives until a call of `component` is pending and returns it (NULL on failure). */
static const AceGraphCall *drive_until(AceGeneration *gen, Run *r, const char *component) {
    const AceGraphCall *call = NULL;
    int rc;
    while ((rc = drive_once(gen, r, component, &call)) == 1) {
    }
    return rc == 2 ? call : NULL;
}

static const char *TURBO = "{\"model\": \"turbo\", \"shift\": 3.0}";

/* Reads the manifest widths and recomputes the turbo schedule with the per-step ABI. */
static bool run_init(Run *r, const AcePackage *pkg, const char *context_json) {
    memset(r, 0, sizeof *r);
    char *info = NULL;
    if (!EXPECT_OK(ace_package_info_json(pkg, &info), "ace_package_info_json"))
        return false;
    r->text_width = sig_last_dim(info, "text_encoder", "last_hidden_state");
    r->lyric_width = sig_last_dim(info, "lyric_embedding", "token_embeddings");
    r->enc_width = sig_last_dim(info, "condition_encoder", "encoder_hidden_states");
    r->ctx_width = sig_last_dim(info, "condition_encoder", "context_latents");
    r->hint_width = sig_last_dim(info, "audio_detokenizer", "lm_hints");
    ace_string_free(info);
    CHECK(r->text_width > 0 && r->lyric_width > 0 && r->enc_width > 0 && r->ctx_width > 0 && r->hint_width > 0,
          "manifest widths: text %ld lyric %ld encoder %ld context %ld hints %ld", r->text_width, r->lyric_width,
          r->enc_width, r->ctx_width, r->hint_width);

    AceContext *ctx = NULL;
    if (!EXPECT_OK(ace_create_context(context_json, &ctx), "ace_create_context"))
        return false;
    size_t n = 0;
    float ts[MAX_STEPS];
    bool ok = EXPECT_OK(ace_context_num_steps(ctx, &n), "ace_context_num_steps") && n > 0 && n < MAX_STEPS &&
              EXPECT_OK(ace_context_timesteps(ctx, ts, n), "ace_context_timesteps");
    for (size_t i = 0; ok && i < n; i++) {
        r->schedule[i] = ts[i];
        ok = EXPECT_OK(ace_context_timestep_input(ctx, i, &r->timestep_input[i]), "ace_context_timestep_input");
    }
    r->schedule[n] = 0;
    r->num_steps = (int)n;
    ace_free_context(ctx);
    return ok;
}

/* ---------- the full run ---------- */

/* Drives one complete generation and checks what a host can check on its own. */
static void test_full_run(const AcePackage *pkg, int duration_s, int batch) {
    Run r;
    if (!run_init(&r, pkg, TURBO))
        return;
    char request[256];
    /* The tiny package has an LM, which runs by default; this test drives the DiT path. */
    snprintf(request, sizeof request,
             "{\"thinking\": false, \"caption\": \"calm piano\", \"lyrics\": \"[Instrumental]\", \"duration\": %d, "
             "\"batch_size\": %d, \"seeds\": [42], \"infer_method\": \"ode\", \"shift\": 3}",
             duration_s, batch);
    AceGeneration *gen = NULL;
    char *info = NULL;
    if (!EXPECT_OK(ace_generation_create(pkg, request, &gen), "ace_generation_create") ||
        !EXPECT_OK(ace_generation_info_json(gen, &info), "ace_generation_info_json")) {
        ace_generation_free(gen);
        run_free(&r);
        return;
    }
    /* The plan, against values computed here. */
    int64_t frames = (int64_t)duration_s * 25; /* 48000 Hz / 1920 samples per frame */
    if (frames < ACE_MIN_DIT_FRAMES)
        frames = ACE_MIN_DIT_FRAMES;
    CHECK(json_valid(info), "generation info is valid JSON");
    CHECK(json_get_number(info, "frames") == (double)frames, "info.frames %g, expected %lld",
          json_get_number(info, "frames"), (long long)frames);
    CHECK(json_get_number(info, "batch_size") == batch, "info.batch_size");
    double seeds[8], sched[MAX_STEPS];
    int ns = json_get_numbers(info, "seeds", seeds, 8);
    CHECK(ns == batch && seeds[0] == 42 && (batch < 2 || seeds[1] == 43),
          "seeds: items without a seed continue from the last one + 1");
    int nsched = json_get_numbers(info, "schedule", sched, MAX_STEPS);
    bool same = nsched == r.num_steps;
    for (int i = 0; same && i < nsched; i++)
        same = (float)sched[i] == (float)r.schedule[i];
    CHECK(same, "info.schedule equals the per-step ABI's turbo schedule (%d vs %d steps)", nsched, r.num_steps);
    double tiles = json_get_number(info, "vae_tiles");
    size_t expected_tiles = 0;
    EXPECT_OK(ace_vae_tile_count((uint32_t)frames, ACE_VAE_DEFAULT_CHUNK, ACE_VAE_DEFAULT_OVERLAP, &expected_tiles),
              "ace_vae_tile_count");
    CHECK(tiles == (double)expected_tiles, "info.vae_tiles %g, expected %zu", tiles, expected_tiles);
    char ids[8][80];
    const char *idp = json_get(info, "track_ids");
    bool ids_ok = idp && *idp == '[';
    for (int i = 0; ids_ok && i < batch; i++) {
        idp = json_ws(idp + 1);
        ids_ok = json_plain_string(idp, ids[i], sizeof ids[i]) && strlen(ids[i]) == 64 &&
                 strspn(ids[i], "0123456789abcdef") == 64 && (i == 0 || strcmp(ids[i], ids[0]) != 0);
        idp = json_string(idp);
    }
    CHECK(ids_ok, "info.track_ids: one distinct 64-hex id per item");

    /* Results before the end are refused. */
    const float *data = NULL;
    size_t shape[3] = {0, 0, 0};
    char *sidecar = NULL;
    EXPECT_ERROR(ace_generation_result_audio(gen, &data, shape), ACE_STATUS_INVALID_STATE, "not finished",
                 "result_audio before the end");
    EXPECT_ERROR(ace_generation_result_latents(gen, &data, shape), ACE_STATUS_INVALID_STATE, "not finished",
                 "result_latents before the end");
    EXPECT_ERROR(ace_generation_sidecar_json(gen, 0, NULL, &sidecar), ACE_STATUS_INVALID_STATE, "not finished",
                 "sidecar before the end");
    CHECK(data == NULL && shape[0] == 0 && sidecar == NULL, "failed calls leave their out-parameters alone");

    bool done = drive_to_end(gen, &r);
    CHECK(done, "the loop ran to the end");
    CHECK(r.dit_seen == r.num_steps && (size_t)r.vae_seen == expected_tiles,
          "%d DiT runs (want %d), %d VAE runs (want %zu)", r.dit_seen, r.num_steps, r.vae_seen, expected_tiles);
    CHECK(r.store.n == 0 && r.store.max_n == 4, "every kept value was released (%zu left, %zu at most)", r.store.n,
          r.store.max_n);

    const AceGraphCall *after = (const AceGraphCall *)&r;
    EXPECT_ERROR(ace_generation_next(gen, &after), ACE_STATUS_INVALID_STATE, "finished", "next after NULL");
    CHECK(after == (const AceGraphCall *)&r, "next after NULL leaves *out_call alone");
    AceTensor none = {"velocity", ACE_DTYPE_FLOAT32, NULL, 0, NULL, 0, NULL};
    EXPECT_ERROR(ace_generation_submit(gen, &none, 1), ACE_STATUS_INVALID_STATE, "finished", "submit after the end");

    /* Latents: the first DiT input times prod_i (1 − K·(t_i − t_{i+1})). */
    if (done && EXPECT_OK(ace_generation_result_latents(gen, &data, shape), "result_latents") && r.x_start) {
        CHECK(shape[0] == (size_t)batch && shape[1] == (size_t)frames && shape[2] == (size_t)r.channels,
              "latents shape [%zu, %zu, %zu]", shape[0], shape[1], shape[2]);
        double scale = closed_form_scale(&r, r.num_steps), worst = 0;
        size_t n = shape[0] * shape[1] * shape[2];
        for (size_t k = 0; k < n; k++) {
            double e = scale * r.x_start[k], d = fabs(data[k] - e) / (1 + fabs(e));
            worst = d > worst ? d : worst;
        }
        CHECK(worst < 1e-5 && scale < 0.9, "final latents off the closed form by %g (scale %g)", worst, scale);
    }
    /* Audio: the latents' channels 0 and 1 upsampled ×1920, times the gain, peak-guarded per item. */
    const float *lat = data;
    double peaks[8] = {0};
    if (done && EXPECT_OK(ace_generation_result_audio(gen, &data, shape), "result_audio")) {
        size_t n = (size_t)frames * ACE_SAMPLES_PER_FRAME, c = (size_t)r.channels;
        CHECK(shape[0] == (size_t)batch && shape[1] == 2 && shape[2] == n, "audio shape [%zu, %zu, %zu], want [%d, 2, %zu]",
              shape[0], shape[1], shape[2], batch, n);
        bool peak_used = false;
        for (size_t b = 0; b < (size_t)batch; b++) {
            for (size_t k = 0; k < (size_t)frames * 2; k++)
                peaks[b] = fmax(peaks[b], fabs(VAE_GAIN * lat[(b * (size_t)frames + k / 2) * c + k % 2]));
            peak_used = peak_used || peaks[b] > 1;
        }
        double worst = 0;
        for (size_t b = 0; b < (size_t)batch && shape[2] == n; b++)
            for (size_t ch = 0; ch < 2; ch++)
                for (size_t s = 0; s < n; s++) {
                    double e = VAE_GAIN * lat[(b * (size_t)frames + s / ACE_SAMPLES_PER_FRAME) * c + ch] / fmax(1, peaks[b]);
                    double d = fabs(data[(b * 2 + ch) * n + s] - e);
                    worst = d > worst ? d : worst;
                }
        CHECK(worst < 1e-6, "audio differs from the upsampled, peak-guarded latents by %g", worst);
        CHECK(peak_used, "the run exercised the peak guard (peaks %g, %g)", peaks[0], peaks[1]);
    }
    /* Sidecars: valid JSON with the item's track id, seed, peak and our host object. */
    for (int i = 0; done && i < batch; i++) {
        if (!EXPECT_OK(ace_generation_sidecar_json(gen, (size_t)i, "{\"host\": \"drive_generation.c\"}", &sidecar),
                       "sidecar"))
            continue;
        char id[80] = "";
        const char *host = json_get(sidecar, "host");
        CHECK(json_valid(sidecar), "sidecar %d is valid JSON", i);
        CHECK(json_plain_string(json_get(sidecar, "track_id"), id, sizeof id) && strcmp(id, ids[i]) == 0,
              "sidecar %d track_id \"%s\" equals info.track_ids[%d]", i, id, i);
        CHECK(json_get_number(sidecar, "seed") == seeds[i], "sidecar %d seed", i);
        CHECK(fabs(json_get_number(sidecar, "peak_before_guard") - peaks[i]) < 1e-6 * (1 + peaks[i]),
              "sidecar %d peak_before_guard %g, computed %g", i, json_get_number(sidecar, "peak_before_guard"), peaks[i]);
        CHECK(host && json_get(host, "host") && strncmp(json_get(host, "host"), "\"drive_generation.c\"", 20) == 0,
              "sidecar %d carries the host object", i);
        ace_string_free(sidecar);
    }
    EXPECT_ERROR(ace_generation_sidecar_json(gen, (size_t)batch, NULL, &sidecar), ACE_STATUS_INVALID_ARGUMENT,
                 "out of range", "sidecar of an item past the batch");
    EXPECT_ERROR(ace_generation_sidecar_json(gen, 0, "[1]", &sidecar), ACE_STATUS_INVALID_JSON, "host_json",
                 "sidecar with a host_json that is not an object");

    /* NULL pointers on a finished generation. */
    EXPECT_ERROR(ace_generation_result_audio(NULL, &data, shape), ACE_STATUS_NULL_POINTER, "generation", "audio(NULL)");
    EXPECT_ERROR(ace_generation_result_audio(gen, NULL, shape), ACE_STATUS_NULL_POINTER, "out_data", "audio(out_data NULL)");
    EXPECT_ERROR(ace_generation_result_audio(gen, &data, NULL), ACE_STATUS_NULL_POINTER, "out_shape", "audio(out_shape NULL)");
    EXPECT_ERROR(ace_generation_result_latents(NULL, &data, shape), ACE_STATUS_NULL_POINTER, "generation", "latents(NULL)");
    EXPECT_ERROR(ace_generation_result_latents(gen, NULL, shape), ACE_STATUS_NULL_POINTER, "out_data", "latents(out_data NULL)");
    EXPECT_ERROR(ace_generation_result_latents(gen, &data, NULL), ACE_STATUS_NULL_POINTER, "out_shape", "latents(out_shape NULL)");
    EXPECT_ERROR(ace_generation_sidecar_json(NULL, 0, NULL, &sidecar), ACE_STATUS_NULL_POINTER, "generation", "sidecar(NULL)");
    EXPECT_ERROR(ace_generation_sidecar_json(gen, 0, NULL, NULL), ACE_STATUS_NULL_POINTER, "out", "sidecar(out NULL)");
    EXPECT_ERROR(ace_generation_info_json(NULL, &sidecar), ACE_STATUS_NULL_POINTER, "generation", "info(NULL)");
    EXPECT_ERROR(ace_generation_info_json(gen, NULL), ACE_STATUS_NULL_POINTER, "out", "info(out NULL)");
    EXPECT_ERROR(ace_generation_next(NULL, &after), ACE_STATUS_NULL_POINTER, "generation", "next(NULL)");
    EXPECT_ERROR(ace_generation_next(gen, NULL), ACE_STATUS_NULL_POINTER, "out_call", "next(out_call NULL)");
    EXPECT_ERROR(ace_generation_submit(NULL, &none, 1), ACE_STATUS_NULL_POINTER, "generation", "submit(NULL)");

    ace_string_free(info);
    EXPECT_OK(ace_generation_free(gen), "ace_generation_free");
    run_free(&r);
}

/* LM codes: the detokenizer's hints become src_latents, padded with the silence latent's first
 * frames up to the DiT's 128 (`silence` is the src_latents of a run without codes). */
static void test_codes_run(const AcePackage *pkg, const float *silence, int64_t silence_frames) {
    Run r;
    if (!run_init(&r, pkg, TURBO))
        return;
    char request[512] = "{\"caption\": \"drums\", \"seeds\": [7], \"audio_codes\": [";
    const int n_codes = 20; /* 100 frames of hints */
    for (int i = 0; i < n_codes; i++)
        snprintf(request + strlen(request), sizeof request - strlen(request), "%s%d", i ? ", " : "", 1000 + 37 * i);
    strcat(request, "]}");
    AceGeneration *gen = NULL;
    if (!EXPECT_OK(ace_generation_create(pkg, request, &gen), "create with audio_codes")) {
        run_free(&r);
        return;
    }
    const AceGraphCall *call = drive_until(gen, &r, "condition_encoder");
    CHECK(r.hint_frames == 5 * n_codes, "the detokenizer ran first (hints %lld frames)", (long long)r.hint_frames);
    if (call && r.hints) {
        int64_t shape[3];
        const float *src = input_data(&r, call, "src_latents", ACE_DTYPE_FLOAT32, shape, 3);
        int64_t t = shape[1], c = shape[2];
        CHECK(src && t == ACE_MIN_DIT_FRAMES && t - r.hint_frames <= silence_frames, "src_latents frames %lld",
              (long long)t);
        if (src && t == ACE_MIN_DIT_FRAMES) {
            bool hints_ok = memcmp(src, r.hints, (size_t)(r.hint_frames * c) * sizeof(float)) == 0;
            bool pad_ok = memcmp(src + r.hint_frames * c, silence, (size_t)((t - r.hint_frames) * c) * sizeof(float)) == 0;
            CHECK(hints_ok, "src_latents starts with the detokenizer's hints");
            CHECK(pad_ok, "src_latents is padded with the first silence-latent frames");
        }
    }
    CHECK(drive_to_end(gen, &r), "the codes run ran to the end");
    const float *audio = NULL;
    size_t shape[3] = {0};
    if (EXPECT_OK(ace_generation_result_audio(gen, &audio, shape), "codes run audio"))
        CHECK(shape[0] == 1 && shape[1] == 2 && shape[2] == (size_t)ACE_MIN_DIT_FRAMES * ACE_SAMPLES_PER_FRAME,
              "codes run audio shape [%zu, %zu, %zu]", shape[0], shape[1], shape[2]);
    CHECK(r.store.n == 0, "codes run: every kept value was released");
    ace_generation_free(gen);
    run_free(&r);
}

/* The float32 data of a small C-ordered .npy file (the last `count` values). */
static float *read_npy_tail(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    char head[128] = {0};
    float *data = NULL;
    if (f && fread(head, 1, sizeof head, f) == sizeof head && memcmp(head, "\x93NUMPY", 6) == 0 &&
        strstr(head + 10, "'<f4'") && fseek(f, -(long)(count * sizeof(float)), SEEK_END) == 0) {
        data = xmalloc(count * sizeof(float));
        if (fread(data, sizeof(float), count, f) != count) {
            free(data);
            data = NULL;
        }
    }
    if (f)
        fclose(f);
    return data;
}

/* Guided (base) run: the DiT sees [cond | uncond]; inside the cfg interval the core combines the
 * two velocities with CFG, outside it takes the cond rows, so the closed form has k_i per step. */
static void test_guided_run(const char *dir) {
    AcePackage *pkg = NULL;
    if (!EXPECT_OK(ace_package_open(dir, NULL, &pkg), "open the base-labelled package"))
        return;
    Run r;
    AceGeneration *gen = NULL;
    char *info = NULL;
    const char *request = "{\"thinking\": false, \"caption\": \"x\", \"duration\": 10, \"batch_size\": 2, \"seeds\": [5], "
                          "\"inference_steps\": 5, \"guidance_scale\": 3, \"guidance_type\": \"cfg\", "
                          "\"cfg_interval_start\": 0.5, \"cfg_interval_end\": 1}";
    if (run_init(&r, pkg, "{\"model\": \"base\", \"steps\": 5}") &&
        EXPECT_OK(ace_generation_create(pkg, request, &gen), "create a guided generation") &&
        EXPECT_OK(ace_generation_info_json(gen, &info), "info")) {
        char path[1100];
        snprintf(path, sizeof path, "%.1024s/null_condition_emb.npy", dir);
        r.null_emb = read_npy_tail(path, (size_t)r.enc_width);
        CHECK(r.null_emb != NULL, "read %s", path);
        r.guided = true;
        r.cfg_scale = 3, r.cfg_start = 0.5, r.cfg_end = 1;
        const char *guided = json_get(info, "guided");
        CHECK(guided && strncmp(guided, "true", 4) == 0, "info.guided is true");
        double sched[MAX_STEPS];
        int n = json_get_numbers(info, "schedule", sched, MAX_STEPS);
        bool same = n == r.num_steps && n == 5;
        for (int i = 0; same && i < n; i++)
            same = (float)sched[i] == (float)r.schedule[i];
        CHECK(same, "guided info.schedule equals the per-step ABI's base schedule");
        int active = 0;
        for (int i = 0; i < r.num_steps; i++)
            active += step_k(&r, i) != K_VELOCITY;
        CHECK(active > 0 && active < r.num_steps, "the cfg interval covers some steps, not all (%d)", active);
        CHECK(drive_to_end(gen, &r), "the guided run ran to the end");
        CHECK(r.dit_seen == 5 && r.store.n == 0 && r.store.max_n == 2,
              "guided: 5 DiT runs, the condition submitted (not kept), every kept value released");
        const float *lat = NULL;
        size_t shape[3];
        if (r.x_start && EXPECT_OK(ace_generation_result_latents(gen, &lat, shape), "guided latents")) {
            double scale = closed_form_scale(&r, r.num_steps), worst = 0;
            for (size_t k = 0; k < shape[0] * shape[1] * shape[2]; k++)
                worst = fmax(worst, fabs(lat[k] - scale * r.x_start[k]) / (1 + fabs(scale * r.x_start[k])));
            CHECK(shape[0] == 2 && worst < 1e-5, "guided latents off the CFG closed form by %g", worst);
        }
    }
    ace_string_free(info);
    ace_generation_free(gen);
    ace_package_free(pkg);
    run_free(&r);
}

/* ---------- bad use ---------- */

static const char *SHORT_REQUEST = "{\"thinking\": false, \"caption\": \"x\", \"duration\": 10, \"seeds\": [1]}";

static void test_bad_submits(const AcePackage *pkg) {
    Run r;
    if (!run_init(&r, pkg, TURBO))
        return;
    AceGeneration *gen = NULL;
    if (!EXPECT_OK(ace_generation_create(pkg, SHORT_REQUEST, &gen), "create"))
        return;
    AceTensor none = {"velocity", ACE_DTYPE_FLOAT32, NULL, 0, NULL, 0, NULL};
    EXPECT_ERROR(ace_generation_submit(gen, &none, 1), ACE_STATUS_INVALID_STATE, "no call is pending",
                 "submit before next");

    /* A host-kept output must not be submitted. */
    const AceGraphCall *call = NULL;
    if (EXPECT_OK(ace_generation_next(gen, &call), "next") && call) {
        /* The first call's memory is the generation's until the next `next`: copy what is kept. */
        char component[64];
        snprintf(component, sizeof component, "%s", call->component);
        const AceGraphCall *again = NULL;
        EXPECT_OK(ace_generation_next(gen, &again), "next again before submit");
        CHECK(again && strcmp(again->component, component) == 0, "next again returns the same call");
        call = again;
        CHECK(strcmp(call->component, "text_encoder") == 0 && call->num_outputs == 1 && call->outputs[0].keep_as,
              "the first call is the text encoder, its output kept by the host");
        Tensor t = tensor_f32(3, 1, 4, r.text_width);
        AceTensor kept = as_ace("last_hidden_state", &t);
        EXPECT_ERROR(ace_generation_submit(gen, &kept, 1), ACE_STATUS_INVALID_ARGUMENT, "kept by the host",
                     "submitting a host-kept output");
        free(t.data);
    }
    /* At a DiT step: every malformed submission is refused, and the run is unchanged after it. */
    call = drive_until(gen, &r, "dit_decoder");
    if (call) {
        const AceTensor *hs = call_input(call, "hidden_states");
        Tensor v = tensor_f32(3, hs->shape[0], hs->shape[1], hs->shape[2]);
        const float *x = hs->data;
        for (size_t k = 0; k < numel(v.shape, 3); k++)
            ((float *)v.data)[k] = (float)K_VELOCITY * x[k];
        AceTensor good = as_ace("velocity", &v), bad = good;

        bad.name = "velocty";
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "\"velocty\"", "wrong output name");
        bad = good;
        bad.dtype = ACE_DTYPE_INT64;
        bad.byte_len = good.byte_len * 2;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "int64", "int64 velocity");
        bad = good;
        bad.dtype = 11; /* ONNX double */
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "dtype 11", "unknown dtype");
        int64_t wrong_shape[3] = {v.shape[0], v.shape[2], v.shape[1]};
        bad = good;
        bad.shape = wrong_shape;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "expected float32",
                     "transposed velocity");
        int64_t rank2[2] = {v.shape[0], v.shape[1] * v.shape[2]};
        bad = good;
        bad.shape = rank2;
        bad.rank = 2;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "velocity", "rank-2 velocity");
        int64_t negative[3] = {-v.shape[0], v.shape[1], -v.shape[2]};
        bad = good;
        bad.shape = negative;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_INVALID_ARGUMENT, "negative",
                     "negative dimensions");
        bad = good;
        bad.byte_len -= 4;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_LENGTH_MISMATCH, "bytes", "byte_len one short");
        AceTensor two[2] = {good, good};
        EXPECT_ERROR(ace_generation_submit(gen, two, 2), ACE_STATUS_INVALID_ARGUMENT, "given twice", "duplicate output");
        EXPECT_ERROR(ace_generation_submit(gen, NULL, 0), ACE_STATUS_INVALID_ARGUMENT, "missing", "no outputs");
        EXPECT_ERROR(ace_generation_submit(gen, NULL, 1), ACE_STATUS_NULL_POINTER, "outputs", "outputs NULL");
        bad = good;
        bad.name = NULL;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_NULL_POINTER, "outputs[0].name", "name NULL");
        bad = good;
        bad.shape = NULL;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_NULL_POINTER, "outputs[0].shape", "shape NULL");
        bad = good;
        bad.data = NULL;
        EXPECT_ERROR(ace_generation_submit(gen, &bad, 1), ACE_STATUS_NULL_POINTER, "outputs[0].data", "data NULL");
        float saved = ((float *)v.data)[5];
        ((float *)v.data)[5] = NAN;
        EXPECT_ERROR(ace_generation_submit(gen, &good, 1), ACE_STATUS_INVALID_ARGUMENT, "dit_decoder",
                     "NaN in the velocity");
        ((float *)v.data)[5] = INFINITY;
        EXPECT_ERROR(ace_generation_submit(gen, &good, 1), ACE_STATUS_INVALID_ARGUMENT, "dit_decoder",
                     "Inf in the velocity");
        ((float *)v.data)[5] = saved;

        /* The call survives the rejections: next gives it again; the good submit is taken once. */
        const AceGraphCall *again = NULL;
        EXPECT_OK(ace_generation_next(gen, &again), "next after rejected submits");
        CHECK(again && strcmp(again->component, "dit_decoder") == 0 && again->stage_done == 0,
              "the rejected call is still pending");
        if (again) {
            r.x_start = xmalloc(v.bytes);
            memcpy(r.x_start, call_input(again, "hidden_states")->data, v.bytes);
            r.dit_seen = 1;
            r.stage_seen[1] = true;
            r.last_done[1] = 0;
        }
        EXPECT_OK(ace_generation_submit(gen, &good, 1), "the correct submit");
        EXPECT_ERROR(ace_generation_submit(gen, &good, 1), ACE_STATUS_INVALID_STATE, "no call is pending",
                     "submit twice");
        free(v.data);
        /* The rest of the run still follows the closed form (checked at every DiT step). */
        CHECK(drive_to_end(gen, &r), "the run continues after rejected submits");
        const float *lat = NULL;
        size_t shape[3];
        if (r.x_start && EXPECT_OK(ace_generation_result_latents(gen, &lat, shape), "latents")) {
            double scale = closed_form_scale(&r, r.num_steps), worst = 0;
            for (size_t k = 0; k < shape[0] * shape[1] * shape[2]; k++)
                worst = fmax(worst, fabs(lat[k] - scale * r.x_start[k]) / (1 + fabs(scale * r.x_start[k])));
            CHECK(worst < 1e-5, "after rejected submits the latents still follow the closed form (%g)", worst);
        }
    }
    ace_generation_free(gen);
    run_free(&r);
}

/* Freeing in the middle of a run is a cancel: the host drops its values; valgrind checks the rest. */
static void test_free_midway(const AcePackage *pkg) {
    Run r;
    if (!run_init(&r, pkg, TURBO))
        return;
    AceGeneration *gen = NULL;
    if (!EXPECT_OK(ace_generation_create(pkg, SHORT_REQUEST, &gen), "create"))
        return;
    CHECK(drive_until(gen, &r, "dit_decoder") != NULL, "drive to the DiT");
    CHECK(drive_once(gen, &r, NULL, NULL) == 1 && drive_once(gen, &r, NULL, NULL) == 1, "two DiT steps");
    CHECK(r.store.n == 2, "the host holds the encoder states and the context (%zu values)", r.store.n);
    const AceGraphCall *call = NULL;
    EXPECT_OK(ace_generation_next(gen, &call), "a call is pending");
    EXPECT_OK(ace_generation_free(gen), "free with a call pending");
    run_free(&r); /* cancel: drop the kept values */
    EXPECT_OK(ace_generation_free(NULL), "free(NULL) is a no-op");
}

/* A generation keeps its package alive: the host may free the package first (this frees `pkg`). */
static void test_package_freed_first(AcePackage *pkg) {
    Run r;
    AceGeneration *gen = NULL;
    if (!run_init(&r, pkg, TURBO) || !EXPECT_OK(ace_generation_create(pkg, SHORT_REQUEST, &gen), "create")) {
        ace_package_free(pkg);
        run_free(&r);
        return;
    }
    EXPECT_OK(ace_package_free(pkg), "free the package before its generation");
    CHECK(drive_to_end(gen, &r), "the generation runs to the end without its package handle");
    const float *audio = NULL;
    size_t shape[3];
    if (EXPECT_OK(ace_generation_result_audio(gen, &audio, shape), "audio"))
        CHECK(shape[2] == 250u * ACE_SAMPLES_PER_FRAME, "10 s → 250 frames of audio");
    ace_generation_free(gen);
    run_free(&r);
    EXPECT_OK(ace_package_free(NULL), "package_free(NULL) is a no-op");
}

static void test_bad_requests(const AcePackage *pkg) {
    static const struct {
        const char *json;
        AceStatus status;
        const char *needle;
    } cases[] = {
        {"[1, 2]", ACE_STATUS_INVALID_JSON, "object"},
        {"{\"caption\": \"a\"", ACE_STATUS_INVALID_JSON, "request"},
        {"{\"caption\": \"a\", \"caption\": \"b\"}", ACE_STATUS_INVALID_JSON, "duplicate"},
        {"{\"captoin\": \"a\"}", ACE_STATUS_INVALID_ARGUMENT, "request.captoin"},
        {"{\"duration\": 5}", ACE_STATUS_INVALID_ARGUMENT, "request.duration"},
        {"{\"duration\": \"long\"}", ACE_STATUS_INVALID_ARGUMENT, "request.duration"},
        {"{\"batch_size\": 0}", ACE_STATUS_INVALID_ARGUMENT, "request.batch_size"},
        {"{\"seeds\": [1, 2, 3], \"batch_size\": 2}", ACE_STATUS_INVALID_ARGUMENT, "request.seeds"},
        {"{\"infer_method\": \"euler\"}", ACE_STATUS_INVALID_ARGUMENT, "request.infer_method"},
        {"{\"bpm\": 12.5}", ACE_STATUS_INVALID_ARGUMENT, "request.bpm"},
        {"{\"audio_codes\": []}", ACE_STATUS_INVALID_ARGUMENT, "request.audio_codes"},
        {"{\"src_audio\": \"a.wav\"}", ACE_STATUS_INVALID_ARGUMENT, "request.src_audio"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = (char *)cases;
        AceGeneration *gen = (AceGeneration *)cases;
        char what[160];
        snprintf(what, sizeof what, "normalize %s", cases[i].json);
        EXPECT_ERROR(ace_request_normalize(pkg, cases[i].json, &out), cases[i].status, cases[i].needle, what);
        snprintf(what, sizeof what, "create %s", cases[i].json);
        EXPECT_ERROR(ace_generation_create(pkg, cases[i].json, &gen), cases[i].status, cases[i].needle, what);
        CHECK(out == (char *)cases && gen == (AceGeneration *)cases, "%s: out-parameters untouched", cases[i].json);
    }
    /* 12 and 12.0 are one request (one track id). */
    char *a = NULL, *b = NULL;
    if (EXPECT_OK(ace_request_normalize(pkg, "{\"duration\": 12, \"seeds\": [3]}", &a), "normalize 12") &&
        EXPECT_OK(ace_request_normalize(pkg, "{\"duration\": 12.0, \"seeds\": [3]}", &b), "normalize 12.0"))
        CHECK(strcmp(a, b) == 0 && json_valid(a), "12 and 12.0 normalise alike");
    ace_string_free(a);
    ace_string_free(b);

    char *out = NULL;
    AceGeneration *gen = NULL;
    EXPECT_ERROR(ace_request_normalize(NULL, "{}", &out), ACE_STATUS_NULL_POINTER, "pkg", "normalize(pkg NULL)");
    EXPECT_ERROR(ace_request_normalize(pkg, NULL, &out), ACE_STATUS_NULL_POINTER, "request_json", "normalize(request NULL)");
    EXPECT_ERROR(ace_request_normalize(pkg, "{}", NULL), ACE_STATUS_NULL_POINTER, "out", "normalize(out NULL)");
    EXPECT_ERROR(ace_generation_create(NULL, "{}", &gen), ACE_STATUS_NULL_POINTER, "pkg", "create(pkg NULL)");
    EXPECT_ERROR(ace_generation_create(pkg, NULL, &gen), ACE_STATUS_NULL_POINTER, "request_json", "create(request NULL)");
    EXPECT_ERROR(ace_generation_create(pkg, "{}", NULL), ACE_STATUS_NULL_POINTER, "out", "create(out NULL)");
    EXPECT_ERROR(ace_package_info_json(NULL, &out), ACE_STATUS_NULL_POINTER, "pkg", "info(pkg NULL)");
    EXPECT_ERROR(ace_package_info_json(pkg, NULL), ACE_STATUS_NULL_POINTER, "out", "info(out NULL)");
    CHECK(out == NULL && gen == NULL, "NULL-pointer failures wrote nothing");
}

static void test_bad_packages(const char *good_dir, const char *bad_root) {
    static const struct {
        const char *sub; /* under bad_root; "" = bad_root itself (no manifest) */
        AceStatus status;
        const char *needle;
    } cases[] = {
        {"", ACE_STATUS_IO, "manifest.json is missing"},
        {"does-not-exist", ACE_STATUS_IO, "not a directory"},
        {"bad-json", ACE_STATUS_INVALID_JSON, "not valid JSON"},
        {"not-object", ACE_STATUS_INVALID_JSON, "expected a JSON object"},
        {"bad-version", ACE_STATUS_INVALID_ARGUMENT, "format_version 2"},
        {"escape", ACE_STATUS_INVALID_JSON, "\"../"},
        {"absolute", ACE_STATUS_INVALID_JSON, "not a relative path"},
        {"missing-file", ACE_STATUS_IO, "nothing_here.onnx is missing"},
        {"wrong-size", ACE_STATUS_INVALID_ARGUMENT, "differs from the manifest"},
    };
    char dir[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", bad_root, cases[i].sub);
        AcePackage *pkg = (AcePackage *)cases;
        char what[1100];
        snprintf(what, sizeof what, "open %s", dir);
        EXPECT_ERROR(ace_package_open(dir, NULL, &pkg), cases[i].status, cases[i].needle, what);
        CHECK(pkg == (AcePackage *)cases, "%s: *out untouched", dir);
    }
    /* A package without vae_decoder opens (its files check out) but cannot generate. */
    snprintf(dir, sizeof dir, "%s/no-vae", bad_root);
    AcePackage *pkg = NULL;
    if (EXPECT_OK(ace_package_open(dir, NULL, &pkg), "open the package without vae_decoder")) {
        char *info = NULL;
        if (EXPECT_OK(ace_package_info_json(pkg, &info), "its info")) {
            CHECK(json_get(json_get(info, "components"), "vae_decoder") == NULL &&
                      json_get(json_get(info, "components"), "dit_decoder") != NULL,
                  "info lists the components of the manifest");
            ace_string_free(info);
        }
        AceGeneration *gen = NULL;
        EXPECT_ERROR(ace_generation_create(pkg, SHORT_REQUEST, &gen), ACE_STATUS_INVALID_ARGUMENT, "\"vae_decoder\"",
                     "create on a package without vae_decoder");
        CHECK(gen == NULL, "no generation on failure");
        ace_package_free(pkg);
    }
    pkg = NULL;
    EXPECT_ERROR(ace_package_open(NULL, NULL, &pkg), ACE_STATUS_NULL_POINTER, "dir", "open(dir NULL)");
    EXPECT_ERROR(ace_package_open(good_dir, NULL, NULL), ACE_STATUS_NULL_POINTER, "out", "open(out NULL)");
    EXPECT_ERROR(ace_package_open(good_dir, "{\"verify\": true}", &pkg), ACE_STATUS_INVALID_JSON, "verify",
                 "open with an unknown option");
    CHECK(pkg == NULL, "failed opens wrote nothing");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <tiny-package-dir> <test-packages-dir> [--short]\n", argv[0]);
        return 2;
    }
    bool short_run = argc > 3 && strcmp(argv[3], "--short") == 0;
    CHECK(ace_abi_version() == ACE_ABI_VERSION, "ABI version %u, header %d", ace_abi_version(), ACE_ABI_VERSION);

    AcePackage *pkg = NULL;
    if (!EXPECT_OK(ace_package_open(argv[1], NULL, &pkg), "ace_package_open")) {
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return 1;
    }
    /* 30 s = 750 frames: two VAE tiles, so the crops are checked too; --short: 10 s, one tile. */
    test_full_run(pkg, short_run ? 10 : 30, 2);

    /* The silence latent's first frames, as the core feeds them to a run without codes. */
    Run probe;
    AceGeneration *gen = NULL;
    if (run_init(&probe, pkg, TURBO) && EXPECT_OK(ace_generation_create(pkg, SHORT_REQUEST, &gen), "create") &&
        drive_until(gen, &probe, "condition_encoder")) {
        const AceGraphCall *call = NULL;
        EXPECT_OK(ace_generation_next(gen, &call), "next");
        int64_t shape[3];
        const float *src = call ? input_data(&probe, call, "src_latents", ACE_DTYPE_FLOAT32, shape, 3) : NULL;
        if (src)
            test_codes_run(pkg, src, shape[1]);
    }
    ace_generation_free(gen);
    run_free(&probe);

    char base_dir[1024];
    snprintf(base_dir, sizeof base_dir, "%s/as-base", argv[2]);
    test_guided_run(base_dir);
    test_bad_submits(pkg);
    test_free_midway(pkg);
    test_bad_requests(pkg);
    test_bad_packages(argv[1], argv[2]);
    test_package_freed_first(pkg);

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
