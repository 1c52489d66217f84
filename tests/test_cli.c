/* The kvpr command: real output for good input; for bad input a one-line message and exit 2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "tests.h"

static char out[1 << 18]; /* hw list --json: every profile, calibrated ones with long provenance */

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

static void t_sim_cmd(void **s) {
    (void)s;
    char a[2000], tr[400], db[400];
    snprintf(tr, sizeof tr, "%s/cli-trace.json", tmp_dir());
    snprintf(db, sizeof db, "%s/cli.db", tmp_dir());
    snprintf(a, sizeof a, "sim --model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 128 --gen 4 --trace %s --db %s --spans", tr, db);
    /* the default scheduler chooses the split; the paper's runtime rule on request: l* of 132 tokens = 98.5 -> 98 */
    expect(0, "policy kvpr, split l = 96 (chosen by pipelined)", a);
    snprintf(a, sizeof a, "sim --model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 128 --gen 4 --scheduler paper --no-db --trace %s", tr);
    expect(0, "policy kvpr, split l = 98 (chosen by paper)", a);
    expect(0, "slower than offloading", "sim --model Llama-3-8B --hw a100-40gb-pcie4 --batch 16 --prompt 512 --gen 4 --split 300 --no-db");
    char *t = read_text(tr);
    assert_non_null(t);
    assert_non_null(strstr(t, "\"traceEvents\""));
    free(t);
    char q[800];
    snprintf(q, sizeof q, "sqlite3 %s 'SELECT count(*) FROM runs; SELECT count(*) > 100 FROM spans; SELECT scheduler FROM runs;'", db);
    assert_int_equal(run_cmd(out, sizeof out, "%s", q), 0);
    assert_string_equal(out, "1\n1\npipelined\n"); /* the run records which scheduler chose its split */
    expect(0, "\"decode_s\"", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --mode throughput --nb 2 --json --no-db");
    expect(0, "(paper model)", "sim --model OPT-1.3B --hw paper-a100 --batch 4 --prompt 64 --gen 3 --paper-model --no-db");
    expect(0, "cpu_attn", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --policy cpu-attn --no-db");
    expect(2, "unknown mode 'fast'", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --mode fast");
    expect(2, "unknown policy 'magic'", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --policy magic");
    expect(2, "--gen must be in [2, 16777216], got 1", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 1");
    expect(2, "--split 500 exceeds --prompt 64 (only the prompt's activations", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --split 500");
    expect(2, "--nb must be 1", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --nb 4");
    expect(2, "does not fit in GPU memory", "sim --model OPT-175B --hw a100-40gb-pcie4 --batch 1 --prompt 64 --gen 3 --no-db");
    expect(2, "does not fit in CPU memory", "sim --model OPT-6.7B --hw t4 --batch 1024 --prompt 8192 --gen 3 --no-db");
    expect(2, "overflows 64 bits", "sim --model OPT-175B --hw t4 --batch 1048576 --nb 4096 --mode throughput --prompt 16777216 --gen 3 --no-db");
    expect(2, "are required", "sim --model OPT-1.3B");
    /* a locked database: clear error, exit 1, and the earlier run is still there */
    snprintf(a, sizeof a, "((echo 'BEGIN EXCLUSIVE; SELECT 1;'; sleep 3) | sqlite3 %s >/dev/null) & sleep 1; "
             "KVPR_DB_TIMEOUT_MS=200 %s sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --db %s; rc=$?; wait; exit $rc",
             db, kvpr_bin(), db);
    int rc = run_cmd(out, sizeof out, "%s", a);
    if (rc != 1 || !strstr(out, "is locked by another process")) fail_msg("locked db: exit %d: %s", rc, out);
    snprintf(q, sizeof q, "sqlite3 %s 'SELECT count(*) FROM runs; PRAGMA integrity_check;'", db);
    assert_int_equal(run_cmd(out, sizeof out, "%s", q), 0);
    assert_string_equal(out, "1\nok\n");
}

static void t_plan_validate_cmd(void **s) {
    (void)s;
    char a[3000], f[600];
    expect(0, "closed form  l* = 190.85 for s = 256", "plan --model OPT-6.7B --hw a100-40gb-pcie4 --batch 64 --prompt 128 --gen 128 --scheduler paper");
    expect(0, "split        l = 0 ", "plan --model Llama-3-8B --hw a100-40gb-pcie4 --batch 64 --prompt 512 --gen 32");
    expect(0, "\"splits\"", "plan --model OPT-1.3B --hw t4 --batch 8 --prompt 256 --gen 8 --scheduler dynamic --json");
    snprintf(f, sizeof f, "%s/cli.lp", tmp_dir());
    snprintf(a, sizeof a, "plan --model OPT-1.3B --hw t4 --batch 8 --prompt 256 --gen 8 --write-lp %s", f);
    expect(0, "predicted", a);
    snprintf(a, sizeof a, "glpsol --lp %s -o %s.sol > /dev/null && grep -c 'INTEGER OPTIMAL' %s.sol", f, f, f);
    assert_int_equal(run_cmd(out, sizeof out, "%s", a), 0);
    expect(2, "unknown scheduler 'lucky'", "plan --model OPT-1.3B --hw t4 --batch 8 --prompt 256 --gen 8 --scheduler lucky");
    expect(2, "does not fit in GPU memory", "plan --model OPT-175B --hw t4 --batch 8 --prompt 256 --gen 8");
    expect(2, "--batch must be in [1, 1048576], got 0", "plan --model OPT-1.3B --hw t4 --batch 0 --prompt 256 --gen 8");
    /* validate on a tiny grid */
    snprintf(f, sizeof f, "%s/grid.json", tmp_dir());
    write_text(f, "{\"models\": [\"OPT-1.3B\"], \"hardware\": [\"a100-40gb-pcie4\"], \"batch\": [8], \"prompt\": [64],"
                  " \"gen\": [4], \"mode\": [\"latency\", \"throughput\"], \"nb\": 2, \"schedulers\": [\"paper\", \"pipelined\"]}");
    snprintf(a, sizeof a, "validate --grid %s --no-db --quiet --plots %s/vplots", f, tmp_dir());
    expect(0, "pipelined", a);
    assert_non_null(strstr(out, "over 2 configurations"));
    /* the sweeps in worker processes: the same report, byte for byte, whatever the number of
     * workers (here more than configurations, one without a sweep: a model that does not fit) */
    write_text(f, "{\"models\": [\"OPT-1.3B\", \"OPT-66B\"], \"hardware\": [\"a100-40gb-pcie4\"], \"batch\": [8], \"prompt\": [64],"
                  " \"gen\": [4], \"mode\": [\"latency\", \"throughput\"], \"nb\": 2, \"schedulers\": [\"paper\", \"dynamic\"]}");
    static char one[262144];
    snprintf(a, sizeof a, "validate --grid %s --no-db --plots %s/vplots --jobs 1", f, tmp_dir());
    expect(0, "skip   OPT-66B", a);
    snprintf(one, sizeof one, "%s", out);
    snprintf(a, sizeof a, "validate --grid %s --no-db --plots %s/vplots --jobs 5", f, tmp_dir());
    expect(0, "dynamic", a);
    assert_string_equal(out, one);
    expect(2, "--jobs must be in [1, 64], got 0", "validate --jobs 0");
    write_text(f, "{\"models\": [\"OPT-1.3B\"], \"hardware\": [\"a100-40gb-pcie4\"], \"batch\": [8], \"prompt\": [64],"
                  " \"gen\": [4], \"mode\": [\"latency\", \"throughput\"], \"nb\": 2, \"schedulers\": [\"paper\", \"pipelined\"]}");
    snprintf(a, sizeof a, "%s/vplots/validate-first.png", tmp_dir());
    char *png = read_text(a);
    assert_non_null(png); /* gnuplot drew it */
    free(png);
    write_text(f, "{\"models\": [\"OPT-1.3B\"], \"hw\": [\"t4\"]}");
    snprintf(a, sizeof a, "validate --grid %s --no-db", f);
    expect(2, "unknown key 'hw'", a);
    write_text(f, "{\"models\": [\"OPT-1.3B\"], \"hardware\": [\"t4\"], \"batch\": [0]}");
    expect(2, "'batch[0]' must be an integer in [1, 65536]", a);
    write_text(f, "{\"models\": [\"OPT-1.3B\"],\n \"hardware\": [\"t4\"] \"batch\": [0]}");
    expect(2, "grid.json:2:", a);
}

static void t_run_cmd(void **s) {
    (void)s;
    char f[600], a[1500];
    snprintf(f, sizeof f, "%s/cli-bad.exp", tmp_dir());
    write_text(f, "name = x\nmodels = OPT-125M\nhardwear = t4\n");
    snprintf(a, sizeof a, "run %s --db %s/cli-run.db", f, tmp_dir());
    expect(2, "cli-bad.exp:3: unknown key 'hardwear'", a);
    expect(2, "no experiment 'nope'", "run nope");
    expect(2, "--shard K must be in [1, 2], got 3", "run paper-latency --shard 3/2");
    expect(2, "--shard expects K/N", "run paper-latency --shard 3");
    expect(2, "which experiment", "run");
    snprintf(a, sizeof a, "report paper-latency --db %s/none.db", tmp_dir());
    expect(2, "no results database", a);
    snprintf(a, sizeof a, "merge %s/out.db %s/none.db", tmp_dir(), tmp_dir());
    expect(2, "no shard database", a);
    /* a small real run through the command, then its report from the database */
    write_text(f, "name = cli\nmodels = OPT-125M\nhardware = t4\nbatch = 2\nprompt = 32\ngen = 3\n"
                  "claim latency_reduction = 10  # invented for the test\n");
    snprintf(a, sizeof a, "run %s --db %s/cli-run.db --plots %s/cli-plots --jobs 2", f, tmp_dir(), tmp_dir());
    expect(0, "invented for the test", a);
    snprintf(a, sizeof a, "report %s --db %s/cli-run.db --plots %s/cli-plots", f, tmp_dir(), tmp_dir());
    expect(0, "OPT-125M t4 latency b2 p32 g3", a);
}

/* Issue 11: options a command does not use, conflicting or out-of-range values are errors; plan's
 * predictions are the simulator's; every command answers --help and -h. */
static void t_issue11_options(void **s) {
    (void)s;
    char a[1500], b[1500];
    expect(2, "--split is not used by 'plan'", "plan --model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 64 --gen 8 --policy offload --split 5 --trace x.json");
    expect(2, "--trace is not used by 'plan'", "plan --model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 64 --gen 8 --trace x.json");
    expect(2, "--policy offload is not used by 'plan'", "plan --model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 64 --gen 8 --policy offload");
    expect(2, "--scheduler is not used with --split", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --split 5 --scheduler paper --no-db");
    expect(2, "--trace-steps is not used without --trace", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --trace-steps 0:1 --no-db");
    expect(2, "--batch 8 and --gbs 16 disagree", "sim --model OPT-1.3B --hw t4 --gbs 16 --batch 8 --prompt 64 --gen 3 --no-db");
    expect(0, "4 x 1 sequences", "sim --model OPT-1.3B --hw t4 --gbs 4 --batch 4 --prompt 64 --gen 3 --no-db");
    expect(2, "--split 65 exceeds --prompt 64", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --split 65 --no-db");
    expect(0, "split l = 64 .. 65", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --split 65 --keep-act --no-db");
    /* sim and plan round the paper's split the same way */
    const char *cfgs[] = {"--model OPT-6.7B --hw a100-40gb-pcie4 --batch 8 --prompt 128 --gen 4",
                          "--model OPT-13B --hw h100-pcie --batch 16 --prompt 3700 --gen 16",
                          "--model OPT-6.7B --hw l4 --batch 4 --prompt 1000 --gen 64"};
    for (int i = 0; i < 3; i++) {
        int ls = -1, lp = -2;
        snprintf(a, sizeof a, "sim %s --scheduler paper --no-db", cfgs[i]);
        expect(0, "(chosen by paper)", a);
        sscanf(strstr(out, "split l = ") + 10, "%d", &ls);
        snprintf(b, sizeof b, "plan %s --scheduler paper", cfgs[i]);
        expect(0, "split        l = ", b);
        sscanf(strstr(out, "split        l = ") + 17, "%d", &lp);
        if (ls != lp) fail_msg("%s: sim splits at %d, plan at %d", cfgs[i], ls, lp);
    }
    /* plan's prediction is the simulator's, and the paper's formula is labelled as such */
    expect(0, "paper model  decode", "plan --model OPT-6.7B --hw a100-40gb-pcie4 --batch 64 --prompt 128 --gen 128 --scheduler paper --mode throughput");
    double pred = 0, simd = 0;
    assert_int_equal(sscanf(strstr(out, "predicted    decode ") + 20, "%lf", &pred), 1);
    expect(0, "decode       ", "sim --model OPT-6.7B --hw a100-40gb-pcie4 --batch 64 --prompt 128 --gen 128 --scheduler paper --mode throughput --no-db");
    assert_int_equal(sscanf(strstr(out, "decode       ") + 13, "%lf", &simd), 1);
    if (fabs(pred - simd) > 1e-3 * simd) fail_msg("plan predicts %.4f s, sim gives %.4f s", pred, simd);
    /* GQA: the paper's rule is slower than offloading in the simulator, and plan says so */
    expect(0, "speed-up 0.", "plan --model Llama-3-8B --hw a100-40gb-pcie4 --batch 64 --prompt 512 --gen 32 --scheduler paper");
    assert_non_null(strstr(out, "higher; simulated"));
    /* a context past max_position_embeddings: one warning line, exit 0 */
    int rc = run_cmd(out, sizeof out, "%s sim --model OPT-1.3B --hw t4 --batch 1 --prompt 2040 --gen 16 --no-db 2>&1 >/dev/null", kvpr_bin());
    if (rc != 0 || strcmp(out, "kvpr: warning: context 2056 exceeds OPT-1.3B's max_position_embeddings (2048)\n")) fail_msg("rc %d: %s", rc, out);
}

static void t_issue11_habits(void **s) {
    (void)s;
    const char *cmds[] = {"model", "hw", "cost", "sim", "plan", "search", "validate", "run", "report", "merge", "calibrate", "compare"};
    char a[4000];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        for (int h = 0; h < 2; h++) {
            snprintf(a, sizeof a, "%s %s", cmds[i], h ? "-h" : "--help");
            expect(0, "usage", a);
        }
    const char *eng[] = {"info", "run", "bench", "selftest", "version"};
    for (size_t i = 0; i < sizeof eng / sizeof eng[0]; i++) {
        int rc = run_cmd(out, sizeof out, "%s/kvpr-engine %s --help", KVPR_BUILD_DIR, eng[i]);
        if (rc != 0 || !strstr(out, "usage")) fail_msg("kvpr-engine %s --help: exit %d: %s", eng[i], rc, out);
    }
    expect(0, "\"name\": \"paper-a100\"", "hw list --json");
    assert_int_equal(run_cmd(out, sizeof out, "%s hw list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'", kvpr_bin()), 0);
    assert_true(atoi(out) >= 13);
    expect(0, "profile h100-pcie:", "hw show H100-PCIE");
    expect(2, "did you mean 'h100-pcie'? valid: a100-40gb-pcie4", "hw show h100-pcei");
    expect(2, "did you mean 'OPT-6.7B'?", "sim --model opt-6.7 --hw t4 --batch 1 --prompt 8 --gen 3");
    expect(0, "KVPR_PROFILES", "--help");
    expect(0, "NAME@LINK", "sim --help");
    /* CSV: a header and one row */
    expect(0, "model,hardware,mode,policy,split", "sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --no-db --csv");
    assert_non_null(strstr(out, "\nOPT-1.3B,t4,latency,kvpr,"));
    /* an ad-hoc run: run and metrics stored, spans only with --spans, identical reruns replace */
    char db[600];
    snprintf(db, sizeof db, "%s/adhoc.db", tmp_dir());
    snprintf(a, sizeof a, "rm -f %s*; for i in 1 2; do %s sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --db %s >/dev/null || exit 1; done; "
             "sqlite3 %s 'SELECT count(*) FROM runs; SELECT count(*) FROM spans; SELECT count(*) > 0 FROM metrics;'", db, kvpr_bin(), db, db);
    assert_int_equal(run_cmd(out, sizeof out, "%s", a), 0);
    assert_string_equal(out, "1\n0\n1\n");
    snprintf(a, sizeof a, "%s sim --model OPT-1.3B --hw t4 --batch 4 --prompt 64 --gen 3 --db %s --spans >/dev/null && "
             "sqlite3 %s 'SELECT count(*) FROM runs; SELECT count(*) > 100 FROM spans;'", kvpr_bin(), db, db);
    assert_int_equal(run_cmd(out, sizeof out, "%s", a), 0);
    assert_string_equal(out, "1\n1\n");
    /* kvpr-engine on a machine without a usable GPU points at the host backend */
    int rc = run_cmd(out, sizeof out, "%s/kvpr-engine run --model OPT-125M --batch 1 --prompt 8 --gen 3 --layers 1 --no-db", KVPR_BUILD_DIR);
    if (rc != 0 && !strstr(out, "--backend host")) fail_msg("no hint at --backend host: %s", out);
}

/* make install PREFIX=...: both binaries on PATH, profiles, links and experiments found from the
 * installed location (no KVPR_PROFILES, run from another directory) */
static void t_install(void **s) {
    (void)s;
    static char a[9000];
    const char *b = KVPR_BUILD_DIR, *src = src_dir();
    size_t n = strlen(src);
    const char *rel = !strncmp(b, src, n) && b[n] == '/' ? b + n + 1 : b; /* the Makefile's BUILD */
    snprintf(a, sizeof a, "rm -rf %s/prefix && make -s -C %s BUILD=%s install PREFIX=%s/prefix >/dev/null && cd %s && env -u KVPR_PROFILES "
             "-u KVPR_LINKS -u KVPR_DATADIR PATH=%s/prefix/bin:/usr/bin:/bin sh -c 'kvpr hw show t4@gen5 && kvpr validate --help && "
             "kvpr sim --model OPT-125M --hw L4 --batch 1 --prompt 8 --gen 3 --no-db && kvpr-engine --help'",
             tmp_dir(), src, rel, tmp_dir(), tmp_dir(), tmp_dir());
    int rc = run_cmd(out, sizeof out, "%s", a);
    char want[700];
    snprintf(want, sizeof want, "%s/prefix/bin/../share/kvpr/experiments/validate-grid.json", tmp_dir());
    if (rc != 0 || !strstr(out, "profile t4@gen5:") || !strstr(out, want) || !strstr(out, "OPT-125M on l4") ||
        !strstr(out, "usage: kvpr-engine"))
        fail_msg("installed kvpr: exit %d:\n%s", rc, out);
}

void group_cli(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_model_cmd), cmocka_unit_test(t_hw_cmd),
                                   cmocka_unit_test(t_cost_cmd), cmocka_unit_test(t_sim_cmd), cmocka_unit_test(t_plan_validate_cmd), cmocka_unit_test(t_run_cmd),
                                   cmocka_unit_test(t_issue11_options), cmocka_unit_test(t_issue11_habits),
                                   cmocka_unit_test(t_install)};
    RUN_GROUP(c, "cli", t);
}
