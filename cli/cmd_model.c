/* kvpr model: list the built-in models, show one (or a config.json) with derived sizes. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "../core/model.h"
#include "cli.h"

#define GIB 1073741824.0

static json_t *model_json(const kv_model *m) {
    json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:b,s:b,s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "name",
                     m->name, "family", m->family, "layers", m->n_layers, "hidden", m->hidden, "heads", m->n_heads,
                     "kv_heads", m->n_kv_heads, "head_dim", m->head_dim, "ffn", m->ffn, "vocab", m->vocab,
                     "gated_mlp", m->gated_mlp, "bias", m->bias, "tied_embeddings", m->tied_embeddings, "dtype",
                     kv_dtype_name(m->dtype), "params_layer", (json_int_t)kv_model_params_layer(m), "params_total",
                     (json_int_t)kv_model_params_total(m), "bytes_layer", (json_int_t)kv_model_bytes_layer(m),
                     "bytes_total", (json_int_t)kv_model_bytes_total(m), "kv_bytes_token_layer",
                     (json_int_t)kv_model_kv_bytes_token_layer(m), "act_bytes_token",
                     (json_int_t)kv_model_act_bytes_token(m), "decode_flops_layer_token_ctx0",
                     kv_model_decode_flops_layer(m, 1, 0));
    json_object_set_new(o, "attn_bias", json_integer(m->attn_bias));
    json_object_set_new(o, "max_position_embeddings", json_integer(m->ctx_max));
    return o;
}

static void print_list(void) {
    printf("%-12s %6s %6s %5s %4s %6s %7s %9s %9s %8s %8s\n", "model", "layers", "hidden", "heads", "kv", "ffn",
           "vocab", "params", "weights", "KV/tok/L", "act/tok");
    for (int i = 0; i < kv_model_builtin_count(); i++) {
        const kv_model *m = kv_model_builtin(i);
        printf("%-12s %6d %6d %5d %4d %6d %7d %8.2fB %6.1fGiB %6.1fKiB %6.1fKiB\n", m->name, m->n_layers, m->hidden,
               m->n_heads, m->n_kv_heads, m->ffn, m->vocab, (double)kv_model_params_total(m) / 1e9,
               (double)kv_model_bytes_total(m) / GIB, (double)kv_model_kv_bytes_token_layer(m) / 1024.0,
               (double)kv_model_act_bytes_token(m) / 1024.0);
    }
}

static void print_show(const kv_model *m) {
    uint64_t kv = kv_model_kv_bytes_token_layer(m), act = kv_model_act_bytes_token(m);
    printf("model            %s (%s)\n", m->name, m->family);
    printf("layers           %d\n", m->n_layers);
    printf("hidden           %d\n", m->hidden);
    printf("heads            %d query, %d key/value (%s), head_dim %d\n", m->n_heads, m->n_kv_heads,
           m->n_kv_heads == m->n_heads ? "multi-head" : "grouped-query", m->head_dim);
    printf("ffn              %d (%s MLP)\n", m->ffn, m->gated_mlp ? "gated" : "plain");
    printf("vocab            %d%s\n", m->vocab, m->tied_embeddings ? " (tied lm_head)" : "");
    if (m->attn_bias) printf("biases           on Q, K, V%s only\n", m->attn_bias == 2 ? " and O" : "");
    if (m->ctx_max) printf("context          at most %d positions (max_position_embeddings)\n", m->ctx_max);
    printf("dtype            %s (%d bytes)\n", kv_dtype_name(m->dtype), kv_dtype_bytes(m->dtype));
    printf("params           %.3f B total, %.1f M per layer\n", (double)kv_model_params_total(m) / 1e9,
           (double)kv_model_params_layer(m) / 1e6);
    printf("weights          %.2f GiB total, %.1f MiB per layer\n", (double)kv_model_bytes_total(m) / GIB,
           (double)kv_model_bytes_layer(m) / 1048576.0);
    printf("KV per token     %.1f KiB per layer, %.1f KiB over all layers\n", (double)kv / 1024.0,
           (double)kv * m->n_layers / 1024.0);
    printf("act per token    %.1f KiB per layer (%.2f of its K+V: recomputation %s)\n", (double)act / 1024.0,
           (double)act / (double)kv, act < kv ? "moves fewer bytes" : "moves MORE bytes than it saves");
    printf("decode FLOPs     %.3f GFLOP per token per layer at context 0, + %.1f kFLOP per cached token\n",
           kv_model_decode_flops_layer(m, 1, 0) / 1e9,
           (kv_model_decode_flops_layer(m, 1, 1) - kv_model_decode_flops_layer(m, 1, 0)) / 1e3);
}

int cmd_model(int argc, char **argv) {
    int js = 0;
    const char *verb = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) js = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr model list [--json]\n       kvpr model show NAME|config.json [--json]\n");
            return 0;
        } else if (argv[i][0] == '-') return cli_usage("model: unknown option '%s'", argv[i]);
        else if (!verb) verb = argv[i];
        else if (!name) name = argv[i];
        else return cli_usage("model: unexpected argument '%s'", argv[i]);
    }
    if (!verb) return cli_usage("model: expected 'list' or 'show NAME'");
    if (!strcmp(verb, "list")) {
        if (!js) {
            print_list();
            return 0;
        }
        json_t *a = json_array();
        for (int i = 0; i < kv_model_builtin_count(); i++) json_array_append_new(a, model_json(kv_model_builtin(i)));
        json_dumpf(a, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(a);
        return 0;
    }
    if (strcmp(verb, "show") != 0) return cli_usage("model: unknown verb '%s' (list, show)", verb);
    if (!name) return cli_usage("model show: expected a model name or a config.json path");
    kv_model m;
    kv_status st = kv_model_resolve(name, &m);
    if (st) return cli_fail(st);
    if (js) {
        json_t *o = model_json(&m);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(o);
    } else print_show(&m);
    return 0;
}
