/* kv_model: built-in shapes, the Hugging Face config.json loader, derived sizes. */
#include "model.h"
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "kv_io.h"
#include "kv_str.h"
#include "suggest.h"

#define OPT(nm, L, H, NH, F) \
    {nm, "opt", L, H, NH, NH, (H) / (NH), F, 50272, 2048, 0, 1, 1, KV_DT_FP16, 0, 2048}
#define LLAMA(nm, fam, L, H, NH, NKV, F, V, CTX) \
    {nm, fam, L, H, NH, NKV, (H) / (NH), F, V, 0, 1, 0, 0, KV_DT_FP16, 0, CTX}

/* Shapes from the models' published configs (Hugging Face config.json). */
static const kv_model builtins[] = {
    OPT("OPT-125M", 12, 768, 12, 3072),
    OPT("OPT-1.3B", 24, 2048, 32, 8192),
    OPT("OPT-2.7B", 32, 2560, 32, 10240),
    OPT("OPT-6.7B", 32, 4096, 32, 16384),
    OPT("OPT-13B", 40, 5120, 40, 20480),
    OPT("OPT-30B", 48, 7168, 56, 28672),
    OPT("OPT-66B", 64, 9216, 72, 36864),
    OPT("OPT-175B", 96, 12288, 96, 49152),
    LLAMA("LLaMA-2-7B", "llama", 32, 4096, 32, 32, 11008, 32000, 4096),
    LLAMA("LLaMA-2-13B", "llama", 40, 5120, 40, 40, 13824, 32000, 4096),
    LLAMA("LLaMA-2-70B", "llama", 80, 8192, 64, 8, 28672, 32000, 4096),
    LLAMA("Llama-3-8B", "llama", 32, 4096, 32, 8, 14336, 128256, 8192),
    LLAMA("Llama-3-70B", "llama", 80, 8192, 64, 8, 28672, 128256, 8192),
    LLAMA("Mistral-7B", "mistral", 32, 4096, 32, 8, 14336, 32000, 32768),
};

int kv_model_builtin_count(void) { return (int)(sizeof builtins / sizeof builtins[0]); }
const kv_model *kv_model_builtin(int i) {
    return i >= 0 && i < kv_model_builtin_count() ? &builtins[i] : NULL;
}

kv_status kv_model_find(const char *name, kv_model *out) {
    for (int i = 0; i < kv_model_builtin_count(); i++)
        if (strcasecmp(builtins[i].name, name) == 0) {
            *out = builtins[i];
            return KV_OK;
        }
    const char *names[sizeof builtins / sizeof builtins[0]];
    for (int i = 0; i < kv_model_builtin_count(); i++) names[i] = builtins[i].name;
    char hint[1024];
    kv_suggest_text(hint, sizeof hint, name, names, kv_model_builtin_count());
    return kv_errorf(KV_ENOTFOUND, "unknown model '%s'%s (or give a config.json path)", name, hint);
}

kv_status kv_model_resolve(const char *name_or_path, kv_model *out) {
    if (strchr(name_or_path, '/') || strstr(name_or_path, ".json"))
        return kv_model_load_hf(name_or_path, out);
    return kv_model_find(name_or_path, out);
}

int kv_dtype_bytes(kv_dtype d) { return d == KV_DT_FP32 ? 4 : 2; }
const char *kv_dtype_name(kv_dtype d) {
    return d == KV_DT_FP32 ? "float32" : d == KV_DT_BF16 ? "bfloat16" : "float16";
}

/* a * b + c; sets *ovf when it does not fit in 64 bits */
static uint64_t mad(uint64_t a, uint64_t b, uint64_t c, int *ovf) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) *ovf = 1;
    return r;
}

kv_status kv_model_validate(const kv_model *m) {
    /* Every field bounded, so that every size below (int dims, uint64 bytes) is exact; the bounds
     * are far above any published model. */
    const struct { const char *k; int v; int lo, hi; } f[] = {
        {"num_hidden_layers", m->n_layers, 1, 4096}, {"hidden_size", m->hidden, 1, 1 << 20},
        {"num_attention_heads", m->n_heads, 1, 1 << 16}, {"num_key_value_heads", m->n_kv_heads, 1, 1 << 16},
        {"head_dim", m->head_dim, 1, 1 << 16}, {"intermediate_size", m->ffn, 1, 1 << 22}, {"vocab_size", m->vocab, 1, 1 << 24},
        {"max_position_embeddings", m->max_pos, 0, 1 << 24}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v < f[i].lo)
            return kv_errorf(KV_EINVAL, "model %s: %s must be >= %d, got %d", m->name, f[i].k, f[i].lo, f[i].v);
        if (f[i].v > f[i].hi)
            return kv_errorf(KV_EOVERFLOW, "model %s: %s out of range: must be <= %d, got %d", m->name, f[i].k, f[i].hi, f[i].v);
    }
    if (m->n_heads % m->n_kv_heads != 0)
        return kv_errorf(KV_EINVAL, "model %s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                         m->name, m->n_heads, m->n_kv_heads);
    /* query width n_heads * head_dim (K/V width is at most that): its products with hidden and the
     * layer count below must fit, and kv_model_kv_dim returns it as an int */
    uint64_t q = (uint64_t)m->n_heads * (uint64_t)m->head_dim;
    if (q > (1u << 22))
        return kv_errorf(KV_EOVERFLOW, "model %s: num_attention_heads x head_dim = %llu exceeds %d", m->name, (unsigned long long)q, 1 << 22);
    /* the total size, in checked arithmetic: it must fit with room for 4-byte weights in an int64 */
    uint64_t h = (uint64_t)m->hidden, kv = (uint64_t)m->n_kv_heads * (uint64_t)m->head_dim, fs = (uint64_t)m->ffn;
    int ovf = 0;
    uint64_t layer = mad(h, 2 * q + 2 * kv, 0, &ovf);          /* Q, O and K, V projections */
    layer = mad(h, 3 * fs, layer, &ovf);                        /* MLP, gated or not */
    layer = mad(1, q + 2 * kv + 7 * h + fs, layer, &ovf);       /* biases and norms */
    uint64_t total = mad(layer, (uint64_t)m->n_layers, 0, &ovf);
    total = mad(2 * (uint64_t)m->vocab, h, total, &ovf);        /* embedding and lm_head */
    total = mad((uint64_t)m->max_pos + 2, h, total, &ovf);      /* learned positions */
    if (ovf || total > ((uint64_t)1 << 60))
        return kv_errorf(KV_EOVERFLOW, "model %s: more than 2^60 parameters (hidden %d, ffn %d, vocab %d, layers %d)", m->name,
                         m->hidden, m->ffn, m->vocab, m->n_layers);
    return KV_OK;
}

kv_status kv_mul_u64(uint64_t a, uint64_t b, uint64_t *out, const char *what) {
    if (__builtin_mul_overflow(a, b, out))
        return kv_errorf(KV_EOVERFLOW, "%s overflows 64 bits (%llu x %llu)", what,
                         (unsigned long long)a, (unsigned long long)b);
    return KV_OK;
}

int kv_model_kv_dim(const kv_model *m) { return m->n_kv_heads * m->head_dim; }

uint64_t kv_model_params_layer(const kv_model *m) {
    uint64_t h = (uint64_t)m->hidden, q = (uint64_t)m->n_heads * (uint64_t)m->head_dim;
    uint64_t kv = (uint64_t)kv_model_kv_dim(m), f = (uint64_t)m->ffn;
    uint64_t attn = h * q + 2 * h * kv + q * h;
    uint64_t mlp = (m->gated_mlp ? 3 : 2) * h * f;
    uint64_t p = attn + mlp;
    if (m->bias) p += q + 2 * kv + h + f + h;
    else if (m->attn_bias) p += q + 2 * kv + (m->attn_bias == 2 ? h : 0);
    /* Two norms per layer: LayerNorm has weight and bias, RMSNorm only a weight. */
    p += (m->bias ? 4 : 2) * h;
    return p;
}

uint64_t kv_model_params_total(const kv_model *m) {
    uint64_t h = (uint64_t)m->hidden;
    uint64_t p = (uint64_t)m->n_layers * kv_model_params_layer(m);
    p += (uint64_t)m->vocab * h;                         /* token embedding */
    if (!m->tied_embeddings) p += (uint64_t)m->vocab * h; /* separate lm_head */
    if (m->max_pos > 0) p += (uint64_t)(m->max_pos + 2) * h; /* OPT keeps an offset of 2 */
    p += (m->bias ? 2 : 1) * h;                          /* final norm */
    return p;
}

uint64_t kv_model_bytes_layer(const kv_model *m) {
    return kv_model_params_layer(m) * (uint64_t)kv_dtype_bytes(m->dtype);
}
uint64_t kv_model_bytes_total(const kv_model *m) {
    return kv_model_params_total(m) * (uint64_t)kv_dtype_bytes(m->dtype);
}
uint64_t kv_model_kv_bytes_token_layer(const kv_model *m) {
    return 2ull * (uint64_t)kv_model_kv_dim(m) * (uint64_t)kv_dtype_bytes(m->dtype);
}
uint64_t kv_model_act_bytes_token(const kv_model *m) {
    return (uint64_t)m->hidden * (uint64_t)kv_dtype_bytes(m->dtype);
}

double kv_model_decode_flops_layer(const kv_model *m, int batch, int ctx) {
    double h = m->hidden, q = (double)m->n_heads * m->head_dim, kv = kv_model_kv_dim(m), f = m->ffn;
    double proj = 2.0 * (h * q + 2.0 * h * kv + q * h);
    double mlp = 2.0 * (m->gated_mlp ? 3.0 : 2.0) * h * f;
    /* q.K^T and P.V over ctx cached positions plus the new one, for every query head. */
    double attn = 4.0 * (double)(ctx + 1) * q;
    return (double)batch * (proj + mlp + attn);
}

double kv_model_recompute_flops(const kv_model *m, int64_t tokens) {
    return 2.0 * (double)tokens * m->hidden * 2.0 * kv_model_kv_dim(m);
}

/* ---- Hugging Face config.json ------------------------------------------------------ */

static kv_status get_int(json_t *root, const char *path, const char *key, int *out, int required) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return kv_errorf(KV_EPARSE, "%s: missing required field '%s'", path, key);
        return KV_OK;
    }
    if (!json_is_integer(v))
        return kv_errorf(KV_EPARSE, "%s: field '%s' must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > (1 << 30))
        return kv_errorf(KV_EINVAL, "%s: field '%s' out of range: %lld", path, key, (long long)x);
    *out = (int)x;
    return KV_OK;
}

static int str_in(const char *s, const char *const *list) {
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return 1;
    return 0;
}

kv_status kv_model_load_hf(const char *path, kv_model *out) {
    /* config.json files are downloaded from others: a regular file of a sane size only */
    char *text;
    size_t len;
    kv_status st = kv_io_read_all(path, 1 << 24, &text, &len);
    if (st) return st;
    st = kv_model_parse_hf(text, len, path, out);
    free(text);
    return st;
}

kv_status kv_model_parse_hf(const char *text, size_t len, const char *path, kv_model *out) {
    json_error_t je;
    /* duplicate keys rejected, as in every other input: "last one wins" hides a conflict */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    kv_status st = KV_OK;
    kv_model m;
    memset(&m, 0, sizeof m);
    if (!json_is_object(root)) {
        st = kv_errorf(KV_EPARSE, "%s: top level must be a JSON object", path);
        goto done;
    }
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    kv_str_copy(m.family, sizeof m.family, mt ? mt : "unknown");
    const char *base = strrchr(path, '/');
    const char *nm = json_string_value(json_object_get(root, "_name_or_path"));
    /* a display name: cut at a character boundary (names print in JSON, which must be UTF-8) */
    kv_str_copy(m.name, sizeof m.name, nm && *nm ? nm : base ? base + 1 : path);

    if ((st = get_int(root, path, "hidden_size", &m.hidden, 1)) ||
        (st = get_int(root, path, "num_hidden_layers", &m.n_layers, 1)) ||
        (st = get_int(root, path, "num_attention_heads", &m.n_heads, 1)) ||
        (st = get_int(root, path, "vocab_size", &m.vocab, 1)))
        goto done;
    m.n_kv_heads = m.n_heads;
    m.head_dim = m.hidden / m.n_heads;
    if ((st = get_int(root, path, "num_key_value_heads", &m.n_kv_heads, 0)) ||
        (st = get_int(root, path, "head_dim", &m.head_dim, 0)))
        goto done;
    if (json_object_get(root, "intermediate_size"))
        st = get_int(root, path, "intermediate_size", &m.ffn, 1);
    else if (json_object_get(root, "ffn_dim"))
        st = get_int(root, path, "ffn_dim", &m.ffn, 1);
    else
        st = kv_errorf(KV_EPARSE, "%s: missing required field 'intermediate_size' (or 'ffn_dim')", path);
    if (st) goto done;

    /* Gated MLP: the SwiGLU families, or a gated activation named explicitly. */
    static const char *const gated_types[] = {"llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2", "phi3", NULL};
    static const char *const gated_acts[] = {"silu", "swiglu", "geglu", "gelu_pytorch_tanh", NULL};
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (!act) act = json_string_value(json_object_get(root, "activation_function"));
    m.gated_mlp = str_in(m.family, gated_types) || (act && str_in(act, gated_acts) && strcmp(m.family, "opt") != 0);
    json_t *g = json_object_get(root, "gated_mlp");
    if (g && json_is_boolean(g)) m.gated_mlp = json_is_true(g);

    /* Mixture-of-experts: every expert's MLP is stored and top-k run per token; a dense model of the
     * same shape would be wrong in both bytes and FLOPs, so it is refused, never taken as dense. */
    static const char *const moe_keys[] = {"num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size", NULL};
    for (int i = 0; moe_keys[i]; i++) {
        json_t *e = json_object_get(root, moe_keys[i]);
        if (e && json_is_integer(e) && json_integer_value(e) > 0) {
            st = kv_errorf(KV_EINVAL, "%s: a mixture-of-experts model ('%s' = %lld): kvpr models dense models only", path,
                           moe_keys[i], (long long)json_integer_value(e));
            goto done;
        }
    }

    /* Biases as Transformers builds them: OPT and GPT-2 on every linear layer and LayerNorm; Llama's
     * attention_bias on Q, K, V and O only; Qwen2 on Q, K, V always. */
    m.bias = strcmp(m.family, "opt") == 0 || strcmp(m.family, "gpt2") == 0;
    json_t *b = json_object_get(root, "enable_bias");
    if (b && json_is_boolean(b)) m.bias = json_is_true(b);
    if (!m.bias && !strcmp(m.family, "qwen2")) m.attn_bias = 1;
    json_t *ab = json_object_get(root, "attention_bias");
    if (!m.bias && ab && json_is_boolean(ab)) m.attn_bias = json_is_true(ab) ? 2 : 0;

    /* Transformers' default tie_word_embeddings is per config class: PretrainedConfig ties, but
     * LlamaConfig, MistralConfig, MixtralConfig, Qwen2Config and Phi3Config set False. */
    static const char *const untied[] = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "phi3", NULL};
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    m.tied_embeddings = tie ? json_is_true(tie) : !str_in(m.family, untied);
    if (strcmp(m.family, "opt") == 0 && (st = get_int(root, path, "max_position_embeddings", &m.max_pos, 0)))
        goto done;
    if ((st = get_int(root, path, "max_position_embeddings", &m.ctx_max, 0))) goto done;

    const char *dt = json_string_value(json_object_get(root, "torch_dtype"));
    if (!dt) dt = json_string_value(json_object_get(root, "dtype"));
    if (!dt || strcmp(dt, "float16") == 0) m.dtype = KV_DT_FP16;
    else if (strcmp(dt, "bfloat16") == 0) m.dtype = KV_DT_BF16;
    else if (strcmp(dt, "float32") == 0) m.dtype = KV_DT_FP32;
    else {
        st = kv_errorf(KV_EINVAL, "%s: unsupported torch_dtype '%s' (float16, bfloat16, float32)", path, dt);
        goto done;
    }
    if ((st = kv_model_validate(&m))) {
        kv_errctx(st, "%s: ", path);
        goto done;
    }
    *out = m;
done:
    json_decref(root);
    return st;
}
