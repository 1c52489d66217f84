/* kv_plan: names, parsing, validation of decode plans. */
#include "plan.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[KV_OP_COUNT] = {"w_h2d",   "wkv_h2d", "act_h2d", "kv_h2d",  "recompute", "qkv",
                                                  "attn",    "ffn",     "kv_d2h",  "q_d2h",   "cpu_attn",  "o_h2d",
                                                  "hid_h2d", "hid_d2h", "act_d2h", "lm_head",
                                                  "dequant_w", "dequant_act", "dequant_kv", "quant"};
static const char *const queue_names[KV_Q_COUNT] = {"cache", "store", "compute", "cpu", "weights", "hidden"};
static const char *const preset_names[KV_PRESET_COUNT] = {"none", "hf-offload", "accelerate", "zero-inference", "flexgen", "kvpr"};
static const char *const preset_about[KV_PRESET_COUNT] = {
    "",
    "Hugging Face OffloadedStaticCache: weights on the GPU, KV cache in pinned CPU memory, the next layer's KV "
    "prefetched on one copy stream, attention on the GPU (row-by-row)",
    "Hugging Face Accelerate device_map offload: weights in pageable CPU memory, copied synchronously before each "
    "layer (no prefetch), KV cache on the GPU (row-by-row)",
    "DeepSpeed ZeRO-Inference: weights in pinned CPU memory, the next layer prefetched, KV cache on the GPU "
    "(row-by-row)",
    "FlexGen: zig-zag block over micro-batches, weights, KV cache and activations placed by --percent (default "
    "all on the CPU but activations), attention over the CPU-resident cache on the CPU (cpu_cache_compute)",
    "KVPR latency mode: weights on the GPU, activations of [0, l) and K/V of [l, s) on the CPU, recompute "
    "overlapped with the K/V transfer"};

static const char *const compress_names[4] = {"none", "kv", "weights", "both"};
const char *kv_compress_name(int c) { return c >= 0 && c < 4 ? compress_names[c] : "?"; }
kv_status kv_compress_parse(const char *s, int *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, compress_names[i])) {
            *out = i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown compression '%s' (kv, weights, both, none)", s);
}

const char *kv_queue_name(kv_queue q) { return (unsigned)q < KV_Q_COUNT ? queue_names[q] : "?"; }
const char *kv_preset_name(kv_preset p) { return (unsigned)p < KV_PRESET_COUNT ? preset_names[p] : "?"; }
const char *kv_preset_about(kv_preset p) { return (unsigned)p < KV_PRESET_COUNT ? preset_about[p] : ""; }

kv_status kv_preset_parse(const char *s, kv_preset *out) {
    for (int i = 1; i < KV_PRESET_COUNT; i++)
        if (!strcmp(s, preset_names[i])) {
            *out = (kv_preset)i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown preset '%s' (hf-offload, accelerate, zero-inference, flexgen, kvpr)", s);
}

kv_status kv_percent_parse(const char *s, kv_percent *out) {
    double v[6];
    const char *c = s;
    for (int i = 0; i < 6; i++) {
        while (*c == ' ' || *c == ',') c++;
        char *e;
        v[i] = strtod(c, &e);
        if (e == c || !(v[i] >= 0 && v[i] <= 100))
            return kv_errorf(KV_EINVAL, "--percent wants six numbers in [0, 100] (WG WC CG CC HG HC), got '%s'", s);
        c = e;
    }
    while (*c == ' ' || *c == ',') c++;
    if (*c) return kv_errorf(KV_EINVAL, "--percent wants six numbers in [0, 100] (WG WC CG CC HG HC), got '%s'", s);
    *out = (kv_percent){1, v[0], v[1], v[2], v[3], v[4], v[5]};
    return KV_OK;
}
static const char *const res_names[KV_RES_COUNT] = {"h2d", "d2h", "gpu", "cpu"};
static const char *const pol_names[KV_POL_COUNT] = {"gpu", "offload", "kvpr", "recompute", "cpu-attn"};

const char *kv_op_name(kv_op op) { return (unsigned)op < KV_OP_COUNT ? op_names[op] : "?"; }
const char *kv_res_name(kv_resource r) { return (unsigned)r < KV_RES_COUNT ? res_names[r] : "?"; }
const char *kv_mode_name(kv_mode m) { return m == KV_MODE_THROUGHPUT ? "throughput" : "latency"; }
const char *kv_policy_name(kv_policy p) { return (unsigned)p < KV_POL_COUNT ? pol_names[p] : "?"; }

kv_status kv_mode_parse(const char *s, kv_mode *out) {
    if (!strcmp(s, "latency")) *out = KV_MODE_LATENCY;
    else if (!strcmp(s, "throughput")) *out = KV_MODE_THROUGHPUT;
    else return kv_errorf(KV_EINVAL, "unknown mode '%s' (latency, throughput)", s);
    return KV_OK;
}

kv_status kv_policy_parse(const char *s, kv_policy *out) {
    for (int i = 0; i < KV_POL_COUNT; i++)
        if (!strcmp(s, pol_names[i])) {
            *out = (kv_policy)i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown policy '%s' (gpu, offload, kvpr, recompute, cpu-attn)", s);
}

void kv_plan_defaults(kv_plan *p) {
    memset(p, 0, sizeof *p);
    p->mode = KV_MODE_LATENCY;
    p->policy = KV_POL_KVPR;
    p->nb = 1;
    p->split = -1;
    p->prefetch = 2;
}

/* What each named system does (offloading.md section 1), as data: one row per preset. */
static const struct {
    kv_mode mode;
    kv_policy policy;
    int prefetch, pageable;
    kv_percent percent;
} presets[KV_PRESET_COUNT] = {
    [KV_PRESET_HF_OFFLOAD] = {KV_MODE_LATENCY, KV_POL_OFFLOAD, 2, 0, {1, 100, 0, 0, 100, 100, 0}},
    [KV_PRESET_ACCELERATE] = {KV_MODE_LATENCY, KV_POL_OFFLOAD, 1, 1, {1, 0, 100, 100, 0, 100, 0}},
    [KV_PRESET_ZERO] = {KV_MODE_LATENCY, KV_POL_OFFLOAD, 2, 0, {1, 0, 100, 100, 0, 100, 0}},
    [KV_PRESET_FLEXGEN] = {KV_MODE_THROUGHPUT, KV_POL_CPU_ATTN, 2, 0, {1, 0, 100, 0, 100, 100, 0}},
    [KV_PRESET_KVPR] = {KV_MODE_LATENCY, KV_POL_KVPR, 2, 0, {1, 100, 0, 0, 100, 100, 0}},
};

void kv_plan_preset(kv_plan *p, kv_preset preset) {
    p->preset = preset;
    if (preset <= KV_PRESET_NONE || preset >= KV_PRESET_COUNT) return;
    p->mode = presets[preset].mode, p->policy = presets[preset].policy;
    p->prefetch = presets[preset].prefetch, p->pageable = presets[preset].pageable;
    p->percent = presets[preset].percent;
}

kv_percent kv_plan_percent(const kv_plan *p) {
    if (p->percent.set) return p->percent;
    int gpu = p->policy == KV_POL_GPU;
    double wg = p->mode == KV_MODE_LATENCY || gpu ? 100 : 0, cg = gpu ? 100 : 0;
    return (kv_percent){0, wg, 100 - wg, cg, 100 - cg, 100, 0};
}

int kv_plan_steps(const kv_plan *p) { return p->gen - 1; }
int kv_plan_layers(const kv_plan *p, const kv_model *m) {
    return p->layers > 0 && p->layers < m->n_layers ? p->layers : m->n_layers;
}

int kv_plan_act_avail(const kv_plan *p, int step) { return p->keep_act ? p->prompt + step : p->prompt; }

int kv_plan_split_at(const kv_plan *p, int step) {
    int avail = kv_plan_act_avail(p, step), l;
    switch (p->policy) {
    case KV_POL_KVPR: l = p->split_steps ? p->split_steps[step] : p->split; break;
    case KV_POL_RECOMPUTE: l = avail; break;
    default: return 0;
    }
    if (l < 0) l = 0;
    return l < avail ? l : avail;
}

kv_status kv_plan_validate(const kv_plan *p, const kv_model *m) {
    if (p->batch < 1 || p->batch > (1 << 20)) return kv_errorf(KV_EINVAL, "batch must be in [1, 1048576], got %d", p->batch);
    if (p->nb < 1 || p->nb > 4096) return kv_errorf(KV_EINVAL, "micro-batches (nb) must be in [1, 4096], got %d", p->nb);
    if (p->mode == KV_MODE_LATENCY && p->nb != 1)
        return kv_errorf(KV_EINVAL, "latency mode runs one batch: --nb must be 1, got %d", p->nb);
    if (p->prompt < 1 || p->prompt > (1 << 24)) return kv_errorf(KV_EINVAL, "prompt must be in [1, 16777216], got %d", p->prompt);
    if (p->gen < 2 || p->gen > (1 << 24))
        return kv_errorf(KV_EINVAL, "gen must be in [2, 16777216] (gen - 1 decode steps), got %d", p->gen);
    if (p->prefetch < 1 || p->prefetch > 64) return kv_errorf(KV_EINVAL, "prefetch depth must be in [1, 64], got %d", p->prefetch);
    if (p->policy == KV_POL_KVPR && !p->split_steps && p->split > p->prompt + p->gen)
        return kv_errorf(KV_EINVAL, "split %d exceeds the final context %d", p->split, p->prompt + p->gen);
    if (p->policy != KV_POL_KVPR && p->split > 0)
        return kv_errorf(KV_EINVAL, "--split applies to the kvpr policy only (policy %s)", kv_policy_name(p->policy));
    if (p->layers < 0) return kv_errorf(KV_EINVAL, "layers must be >= 0, got %d", p->layers);
    if (p->compress < 0 || p->compress > KV_COMP_BOTH) return kv_errorf(KV_EINVAL, "compress must be 0..3, got %d", p->compress);
    if (p->percent.set) {
        const kv_percent *c = &p->percent;
        double v[6] = {c->wg, c->wc, c->cg, c->cc, c->hg, c->hc};
        for (int i = 0; i < 6; i++)
            if (!(v[i] >= 0 && v[i] <= 100)) return kv_errorf(KV_EINVAL, "--percent: every share must be in [0, 100]");
        const char *what[3] = {"weights", "KV cache", "activations"};
        for (int i = 0; i < 3; i++) {
            double sum = v[2 * i] + v[2 * i + 1];
            if (sum > 100 + 1e-9) return kv_errorf(KV_EINVAL, "--percent: %s on GPU and CPU add up to %g%% (> 100)", what[i], sum);
            if (sum < 100 - 1e-9)
                return kv_errorf(KV_EINVAL, "--percent: %s on GPU and CPU add up to %g%%; the rest would be on disk, which is not modelled",
                                 what[i], sum);
        }
        if (c->hg != 0 && c->hg != 100)
            return kv_errorf(KV_EINVAL, "--percent: activations live wholly on one device (HG 0 or 100, as in FlexGen), got %g", c->hg);
        if (p->policy == KV_POL_GPU && (c->cg != 100 || c->wg != 100))
            return kv_errorf(KV_EINVAL, "policy gpu keeps weights and KV cache on the GPU: --percent must be 100 0 100 0 ...");
    }
    /* Every size the executor will compute: the whole KV cache must fit 64 bits. */
    uint64_t seq, tok, kv;
    kv_status st;
    if ((st = kv_mul_u64((uint64_t)p->batch, (uint64_t)p->nb, &seq, "sequences (batch x micro-batches)")) ||
        (st = kv_mul_u64(seq, (uint64_t)p->prompt + (uint64_t)p->gen, &tok, "tokens (sequences x context)")) ||
        (st = kv_mul_u64(tok, kv_model_kv_bytes_token_layer(m), &kv, "KV cache bytes per layer")) ||
        (st = kv_mul_u64(kv, (uint64_t)m->n_layers, &kv, "KV cache bytes")))
        return st;
    return KV_OK;
}

char *kv_plan_json(const kv_plan *p) {
    json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:b,s:b,s:b,s:b,s:i}", "mode", kv_mode_name(p->mode),
                          "policy", kv_policy_name(p->policy), "batch", p->batch, "nb", p->nb, "prompt", p->prompt,
                          "gen", p->gen, "split", p->split, "prefetch", p->prefetch, "keep_act", p->keep_act,
                          "wkv_first", p->wkv_first, "pageable", p->pageable, "paper_model", p->paper_model, "layers",
                          p->layers);
    /* Only what differs from the default, so that plans of earlier runs keep their JSON (run keys). */
    if (o && p->percent.set) {
        const kv_percent *c = &p->percent;
        json_object_set_new(o, "percent", json_pack("[f,f,f,f,f,f]", c->wg, c->wc, c->cg, c->cc, c->hg, c->hc));
    }
    if (o && p->preset) json_object_set_new(o, "preset", json_string(kv_preset_name(p->preset)));
    if (o && p->no_prefill) json_object_set_new(o, "no_prefill", json_true());
    if (o && p->compress) json_object_set_new(o, "compress", json_string(kv_compress_name(p->compress)));
    if (o && p->split_steps) {
        json_t *a = json_array();
        for (int i = 0; i < kv_plan_steps(p); i++) json_array_append_new(a, json_integer(p->split_steps[i]));
        json_object_set_new(o, "split_steps", a);
    }
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

kv_status kv_plan_from_json(const char *text, kv_plan *p) {
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return kv_errorf(KV_EPARSE, "plan JSON: %s", o ? "not an object" : je.text);
    }
    kv_plan_defaults(p);
    kv_status st = KV_OK;
    const char *s;
    if ((s = json_string_value(json_object_get(o, "mode"))) && (st = kv_mode_parse(s, &p->mode))) goto out;
    if ((s = json_string_value(json_object_get(o, "policy"))) && (st = kv_policy_parse(s, &p->policy))) goto out;
    struct { const char *k; int *dst; } ints[] = {{"batch", &p->batch},       {"nb", &p->nb},           {"prompt", &p->prompt},
                                                {"gen", &p->gen},           {"split", &p->split},     {"prefetch", &p->prefetch},
                                                {"layers", &p->layers},     {"keep_act", &p->keep_act}, {"wkv_first", &p->wkv_first},
                                                {"pageable", &p->pageable}, {"paper_model", &p->paper_model},
                                                {"no_prefill", &p->no_prefill}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        json_t *v = json_object_get(o, ints[i].k);
        if (json_is_integer(v)) *ints[i].dst = (int)json_integer_value(v);
        else if (json_is_boolean(v)) *ints[i].dst = json_is_true(v);
    }
    if ((s = json_string_value(json_object_get(o, "preset"))) && (st = kv_preset_parse(s, &p->preset))) goto out;
    if ((s = json_string_value(json_object_get(o, "compress"))) && (st = kv_compress_parse(s, &p->compress))) goto out;
    json_t *pc = json_object_get(o, "percent");
    if (json_is_array(pc) && json_array_size(pc) == 6) {
        double v[6];
        for (int i = 0; i < 6; i++) v[i] = json_number_value(json_array_get(pc, (size_t)i));
        p->percent = (kv_percent){1, v[0], v[1], v[2], v[3], v[4], v[5]};
    }
    json_t *a = json_object_get(o, "split_steps");
    if (json_is_array(a)) {
        p->split_steps = malloc(sizeof(int) * (json_array_size(a) + 1));
        if (!p->split_steps) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < json_array_size(a); i++) p->split_steps[i] = (int)json_integer_value(json_array_get(a, i));
        if ((int)json_array_size(a) != kv_plan_steps(p)) {
            free(p->split_steps);
            p->split_steps = NULL;
            st = kv_errorf(KV_EPARSE, "plan JSON: split_steps has %zu entries for %d steps", json_array_size(a), kv_plan_steps(p));
        }
    }
out:
    json_decref(o);
    return st;
}
