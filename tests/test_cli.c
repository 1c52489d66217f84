/* The kvpr command: real output for good input; for bad input a one-line message and exit 2. */
#include <stdio.h>
#include "tests.h"

static char out[1 << 16];

static void expect(int want_rc, const char *needle, const char *args) {
    int rc = run_cmd(out, sizeof out, "%s %s", kvpr_bin(), args);
    if (rc != want_rc || !strstr(out, needle))
        fail_msg("kvpr %s: exit %d, wanted %d with '%s'; output:\n%s", args, rc, want_rc, needle, out);
    if (want_rc != 0) {
        /* one line, prefixed */
        if (strncmp(out, "kvpr: ", 6) != 0 || strchr(out, '\n') != out + strlen(out) - 1)
            fail_msg("kvpr %s: error is not one 'kvpr: ' line:\n%s", args, out);
    }
}

static void t_model_cmd(void **s) {
    (void)s;
    expect(0, "KV per token     16.0 KiB per layer", "model show OPT-6.7B");
    expect(0, "grouped-query", "model show Llama-3-8B");
    expect(0, "moves MORE bytes", "model show Llama-3-8B");
    expect(0, "325.23 GiB", "model show OPT-175B");
    expect(0, "Mistral-7B", "model list");
    expect(0, "\"kv_bytes_token_layer\": 16384", "model show opt-6.7b --json");
    char a[600];
    snprintf(a, sizeof a, "model show %s/tests/data/llama-3-8b-config.json", src_dir());
    expect(0, "4.0 KiB per layer", a);
    expect(2, "unknown model 'GPT-9'", "model show GPT-9");
    expect(2, "expected 'list' or 'show NAME'", "model");
    expect(2, "unknown verb 'frob'", "model frob");
    snprintf(a, sizeof a, "%s/bad-config.json", tmp_dir());
    write_text(a, "{\"hidden_size\": 4096,\n  \"num_hidden_layers\": 32,,}");
    char b[700];
    snprintf(b, sizeof b, "model show %s", a);
    expect(2, "bad-config.json:2:", b);
}

static void t_hw_cmd(void **s) {
    (void)s;
    expect(0, "paper-a100", "hw list");
    expect(0, "PCIe Gen4 x16", "hw show a100-40gb-pcie4");
    expect(0, "nvbandwidth", "hw show a100-40gb-pcie4");
    expect(0, "\"bandwidth_gbps\"", "hw show paper-a100 --json");
    expect(2, "unknown hardware profile 'b200'", "hw show b200");
    char a[600], b[700];
    snprintf(a, sizeof a, "%s/bad-hw.json", tmp_dir());
    write_text(a, "{\"name\": \"x\", \"gpu\": {\"name\": \"g\", \"peak_fp16_tflops\": {\"value\": -3, \"source\": \"s\"}}}");
    snprintf(b, sizeof b, "hw show %s", a);
    expect(2, "'gpu.peak_fp16_tflops.value' must be > 0", b);
    write_text(a, "{\"name\": \"x\",\n \"gpu\": {\"name\": \"g\", \"turbo\": 1}}");
    expect(2, "unknown key 'gpu.turbo'", b);
    write_text(a, "{\"name\": \"x\",\n \"gpu\": }");
    expect(2, "bad-hw.json:2:", b);
}

static void t_cost_cmd(void **s) {
    (void)s;
    /* paper model, OPT-6.7B, s = 640: l* = 640 * 0.7042 = 450.7 */
    expect(0, "l* = 450.7 (l*/s = 0.704)", "cost --model OPT-6.7B --hw paper-a100 --batch 64 --ctx 640");
    expect(0, "\"speedup\"", "cost --model OPT-6.7B --hw a100-40gb-pcie4 --batch 64 --ctx 640 --json");
    /* GQA: the best split is l = 0 */
    expect(0, "best split by brute force: l = 0 ", "cost --model Llama-3-8B --hw a100-40gb-pcie4 --batch 64 --ctx 640");
    expect(2, "--batch must be in [1, 1048576], got 0", "cost --model OPT-6.7B --hw t4 --batch 0 --ctx 640");
    expect(2, "--ctx expects an integer, got '12x'", "cost --model OPT-6.7B --hw t4 --batch 1 --ctx 12x");
    expect(2, "--split 700 exceeds --ctx 640", "cost --model OPT-6.7B --hw t4 --batch 1 --ctx 640 --split 700");
    expect(2, "are required", "cost --model OPT-6.7B");
    expect(2, "unknown or incomplete option", "cost --frobnicate");
    expect(2, "unknown command 'smi'", "smi");
}

void group_cli(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_model_cmd), cmocka_unit_test(t_hw_cmd),
                                   cmocka_unit_test(t_cost_cmd)};
    RUN_GROUP(c, "cli", t);
}
