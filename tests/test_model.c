/* Model shapes: known parameter counts (the published ones), KV and activation sizes,
 * decode FLOPs, the config.json loader and its errors. */
#include <stdio.h>
#include "../core/model.h"
#include "../core/kv_str.h"
#include "tests.h"


/* Parameter counts as published for the checkpoints (Hugging Face model cards / summaries). */
static void t_param_counts(void **s) {
    (void)s;
    struct { const char *n; uint64_t p; } k[] = {
        {"OPT-125M", 125239296ull},       {"OPT-6.7B", 6658473984ull},   {"LLaMA-2-7B", 6738415616ull},
        {"LLaMA-2-13B", 13015864320ull}, {"LLaMA-2-70B", 68976648192ull}, {"Llama-3-8B", 8030261248ull},
        {"Llama-3-70B", 70553706496ull}, {"Mistral-7B", 7241732096ull}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        kv_model m = mdl(k[i].n);
        if (kv_model_params_total(&m) != k[i].p)
            fail_msg("%s: %llu params, expected %llu", k[i].n, (unsigned long long)kv_model_params_total(&m),
                     (unsigned long long)k[i].p);
    }
}

static void t_opt_shapes(void **s) {
    (void)s;
    /* layers/hidden/heads/ffn as the issue lists them */
    int want[8][4] = {{12, 768, 12, 3072},     {24, 2048, 32, 8192},   {32, 2560, 32, 10240}, {32, 4096, 32, 16384},
                      {40, 5120, 40, 20480},   {48, 7168, 56, 28672},  {64, 9216, 72, 36864}, {96, 12288, 96, 49152}};
    const char *names[8] = {"OPT-125M", "OPT-1.3B", "OPT-2.7B", "OPT-6.7B", "OPT-13B", "OPT-30B", "OPT-66B", "OPT-175B"};
    for (int i = 0; i < 8; i++) {
        kv_model m = mdl(names[i]);
        assert_int_equal(m.n_layers, want[i][0]);
        assert_int_equal(m.hidden, want[i][1]);
        assert_int_equal(m.n_heads, want[i][2]);
        assert_int_equal(m.ffn, want[i][3]);
        assert_int_equal(m.vocab, 50272);
        assert_int_equal(m.head_dim * m.n_heads, m.hidden);
        assert_int_equal(kv_model_validate(&m), KV_OK);
    }
    assert_int_equal(kv_model_builtin_count(), 14);
}

static void t_kv_sizes(void **s) {
    (void)s;
    kv_model o = mdl("opt-6.7b"), l3 = mdl("Llama-3-8B"), l2 = mdl("LLaMA-2-7B");
    assert_int_equal(kv_model_kv_bytes_token_layer(&o), 16384);   /* 16 KiB */
    assert_int_equal(kv_model_act_bytes_token(&o), 8192);
    assert_int_equal(kv_model_kv_bytes_token_layer(&l3), 4096);   /* 4 KiB: GQA, 8 KV heads */
    assert_int_equal(kv_model_act_bytes_token(&l3), 8192);        /* activation > K+V */
    assert_int_equal(kv_model_kv_bytes_token_layer(&l2), 16384);
    kv_model f = mdl("OPT-175B");
    double gib = (double)kv_model_bytes_total(&f) / 1073741824.0;
    assert_true(gib > 325.0 && gib < 325.5); /* "about 325 GiB" */
    /* bytes per layer: 12 h^2 + biases (5h + ffn) + two LayerNorms (4h), times 2 bytes */
    assert_int_equal(kv_model_bytes_layer(&o), 2ull * (12ull * 4096 * 4096 + 5 * 4096 + 16384 + 4 * 4096));
}

static void t_flops(void **s) {
    (void)s;
    kv_model o = mdl("OPT-6.7B"), l3 = mdl("Llama-3-8B");
    /* 2 FLOPs per weight of the 12 h^2 matrices, + 4 h per attended position */
    assert_rel(kv_model_decode_flops_layer(&o, 1, 0), 24.0 * 4096 * 4096 + 4.0 * 4096, 1e-15);
    assert_rel(kv_model_decode_flops_layer(&o, 8, 1023), 8 * (24.0 * 4096 * 4096 + 4.0 * 1024 * 4096), 1e-15);
    /* Llama-3-8B: q,o 2*h*h, k,v 2*h*1024, MLP 3*h*14336, each times 2 */
    double want = 2.0 * (2.0 * 4096 * 4096 + 2.0 * 4096 * 1024 + 3.0 * 4096 * 14336) + 4.0 * 4096;
    assert_rel(kv_model_decode_flops_layer(&l3, 1, 0), want, 1e-15);
    /* recompute of K and V: 4 b l h^2 for multi-head attention */
    assert_rel(kv_model_recompute_flops(&o, 64 * 100), 4.0 * 64 * 100 * 4096.0 * 4096.0, 1e-15);
    assert_rel(kv_model_recompute_flops(&l3, 10), 2.0 * 10 * 4096 * 2048, 1e-15);
}

static void t_hf_loader(void **s) {
    (void)s;
    char p[512];
    kv_model m, b = mdl("OPT-6.7B");
    snprintf(p, sizeof p, "%s/tests/data/opt-6.7b-config.json", src_dir());
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.hidden, b.hidden);
    assert_int_equal(m.ffn, b.ffn);
    assert_int_equal(m.gated_mlp, 0);
    assert_int_equal(m.bias, 1);
    assert_int_equal(kv_model_params_total(&m), kv_model_params_total(&b));
    snprintf(p, sizeof p, "%s/tests/data/llama-3-8b-config.json", src_dir());
    b = mdl("Llama-3-8B");
    assert_int_equal(kv_model_resolve(p, &m), KV_OK);
    assert_int_equal(m.n_kv_heads, 8);
    assert_int_equal(m.gated_mlp, 1);
    assert_int_equal(m.bias, 0);
    assert_int_equal(m.tied_embeddings, 0);
    assert_int_equal(m.dtype, KV_DT_BF16);
    assert_int_equal(kv_model_params_total(&m), kv_model_params_total(&b));
    assert_int_equal(kv_model_kv_bytes_token_layer(&m), 4096);
}

static void expect_cfg_error(const char *text, kv_status want, const char *needle) {
    char p[512];
    snprintf(p, sizeof p, "%s/cfg.json", tmp_dir());
    assert_int_equal(write_text(p, text), 0);
    kv_model m;
    kv_status st = kv_model_load_hf(p, &m);
    if (st != want || !strstr(kv_errmsg(), needle))
        fail_msg("config %s: got status %d '%s', wanted %d containing '%s'", text, st, kv_errmsg(), want, needle);
}

static void t_hf_errors(void **s) {
    (void)s;
    expect_cfg_error("{\"hidden_size\": 64,\n \"num_hidden_layers\": }", KV_EPARSE, "cfg.json:2:");
    expect_cfg_error("{\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, \"ffn_dim\": 8}",
                     KV_EPARSE, "missing required field 'hidden_size'");
    expect_cfg_error("{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}",
                     KV_EPARSE, "intermediate_size");
    expect_cfg_error("{\"hidden_size\": -64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, "
                     "\"ffn_dim\": 8}", KV_EINVAL, "'hidden_size' out of range");
    expect_cfg_error("{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 6, "
                     "\"num_key_value_heads\": 4, \"vocab_size\": 10, \"ffn_dim\": 8}", KV_EINVAL, "not a multiple");
    expect_cfg_error("{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10, "
                     "\"ffn_dim\": 8, \"torch_dtype\": \"int4\"}", KV_EINVAL, "unsupported torch_dtype 'int4'");
    expect_cfg_error("{\"hidden_size\": \"64\", \"num_hidden_layers\": 2}", KV_EPARSE, "must be an integer");
    expect_cfg_error("[1,2]", KV_EPARSE, "must be a JSON object");
    expect_cfg_error("{\"hidden_size\": 1048577, \"num_hidden_layers\": 2, \"num_attention_heads\": 1, "
                     "\"vocab_size\": 10, \"ffn_dim\": 8}", KV_EOVERFLOW, "out of range");
    kv_model m;
    assert_int_equal(kv_model_load_hf("/nonexistent/config.json", &m), KV_ENOTFOUND);
    assert_int_equal(kv_model_find("GPT-5", &m), KV_ENOTFOUND);
    assert_non_null(strstr(kv_errmsg(), "unknown model 'GPT-5'"));
}

static void t_overflow(void **s) {
    (void)s;
    uint64_t r;
    assert_int_equal(kv_mul_u64(1ull << 32, 1ull << 31, &r, "x"), KV_OK);
    assert_int_equal(r, 1ull << 63);
    assert_int_equal(kv_mul_u64(1ull << 32, 1ull << 32, &r, "KV cache size"), KV_EOVERFLOW);
    assert_non_null(strstr(kv_errmsg(), "KV cache size overflows"));
}


/* items 8, 11: every field bounded (sizes exact in 64 bits), duplicate keys rejected, names whole characters */
static void t_hf_untrusted(void **s) {
    (void)s;
    expect_cfg_error("{\"hidden_size\": 4096, \"num_hidden_layers\": 2, \"num_attention_heads\": 65536, \"num_key_value_heads\": 65536,"
                     " \"head_dim\": 65536, \"vocab_size\": 10, \"ffn_dim\": 8}", KV_EOVERFLOW, "num_attention_heads x head_dim");
    expect_cfg_error("{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"head_dim\": 1073741824,"
                     " \"vocab_size\": 10, \"ffn_dim\": 8}", KV_EOVERFLOW, "head_dim out of range");
    expect_cfg_error("{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 131072, \"num_key_value_heads\": 1,"
                     " \"vocab_size\": 10, \"ffn_dim\": 8}", KV_EOVERFLOW, "num_attention_heads out of range");
    expect_cfg_error("{\"hidden_size\": 64, \"hidden_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                     " \"vocab_size\": 10, \"ffn_dim\": 8}", KV_EPARSE, "duplicate");
    /* the largest accepted shapes still size exactly */
    char p[512];
    snprintf(p, sizeof p, "%s/cfg.json", tmp_dir());
    write_text(p, "{\"hidden_size\": 1048576, \"num_hidden_layers\": 4096, \"num_attention_heads\": 4, \"head_dim\": 1048576,"
                  " \"vocab_size\": 16777216, \"intermediate_size\": 4194304, \"torch_dtype\": \"float32\"}");
    kv_model m;
    kv_status st = kv_model_load_hf(p, &m);
    if (st == KV_OK) {
        assert_int_equal(kv_model_kv_dim(&m), 4 * 1048576);
        assert_true(kv_model_bytes_total(&m) > kv_model_params_total(&m));
    } else assert_int_equal(st, KV_EOVERFLOW);
    /* a long UTF-8 _name_or_path is cut between characters, never inside one */
    char name[80];
    memset(name, 'a', 62);
    snprintf(name + 62, sizeof name - 62, "\xc3\xa9xyz");
    char text[600];
    snprintf(text, sizeof text, "{\"_name_or_path\": \"%s\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                                " \"vocab_size\": 10, \"ffn_dim\": 8}", name);
    write_text(p, text);
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(strlen(m.name), 62);
    assert_true(kv_str_utf8_ok(m.name));
}

/* Issue 11, item 10: config.json read as Transformers reads it. */
static void t_hf_transformers_defaults(void **s) {
    (void)s;
    char p[512];
    snprintf(p, sizeof p, "%s/cfg.json", tmp_dir());
    kv_model m;
#define DENSE "\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100, \"intermediate_size\": 128"
    /* tie_word_embeddings absent: untied for Llama and Mistral (their config classes say False), tied for OPT */
    write_text(p, "{\"model_type\": \"llama\", " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.tied_embeddings, 0);
    uint64_t untied = kv_model_params_total(&m);
    write_text(p, "{\"model_type\": \"mistral\", " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.tied_embeddings, 0);
    write_text(p, "{\"model_type\": \"llama\", \"tie_word_embeddings\": true, " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(untied - kv_model_params_total(&m), 100 * 64); /* the lm_head */
    write_text(p, "{\"model_type\": \"opt\", " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.tied_embeddings, 1);
    /* attention_bias: Q, K, V and O only; no MLP or norm biases */
    write_text(p, "{\"model_type\": \"llama\", \"attention_bias\": true, " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.bias, 0);
    assert_int_equal(kv_model_params_total(&m) - untied, 2 * (64 + 64 + 64 + 64));
    /* Qwen2: biases on Q, K, V always */
    write_text(p, "{\"model_type\": \"qwen2\", \"num_key_value_heads\": 2, " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.attn_bias, 1);
    assert_int_equal(m.tied_embeddings, 0);
    kv_model q = m;
    q.attn_bias = 0;
    assert_int_equal(kv_model_params_total(&m) - kv_model_params_total(&q), 2 * (64 + 32 + 32));
    /* mixture of experts: refused, never taken as dense */
    expect_cfg_error("{\"model_type\": \"mixtral\", \"num_local_experts\": 8, \"num_experts_per_tok\": 2, " DENSE "}", KV_EINVAL,
                     "mixture-of-experts");
    expect_cfg_error("{\"model_type\": \"qwen2_moe\", \"num_experts\": 60, \"num_experts_per_tok\": 4, " DENSE "}", KV_EINVAL,
                     "'num_experts' = 60");
    /* max_position_embeddings is kept for the context warning */
    write_text(p, "{\"model_type\": \"llama\", \"max_position_embeddings\": 4096, " DENSE "}");
    assert_int_equal(kv_model_load_hf(p, &m), KV_OK);
    assert_int_equal(m.ctx_max, 4096);
#undef DENSE
    /* a typo gets the likely name and the list */
    assert_int_equal(kv_model_find("llama-3-8c", &m), KV_ENOTFOUND);
    assert_non_null(strstr(kv_errmsg(), "did you mean 'Llama-3-8B'?"));
    assert_non_null(strstr(kv_errmsg(), "Mistral-7B"));
}

void group_model(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_param_counts), cmocka_unit_test(t_opt_shapes),
                                   cmocka_unit_test(t_kv_sizes),     cmocka_unit_test(t_flops),
                                   cmocka_unit_test(t_hf_loader),    cmocka_unit_test(t_hf_errors),
                                   cmocka_unit_test(t_overflow),
                                   cmocka_unit_test(t_hf_untrusted), cmocka_unit_test(t_hf_transformers_defaults)};
    RUN_GROUP(c, "model", t);
}
