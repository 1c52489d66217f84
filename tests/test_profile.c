/* Hardware profiles: every shipped profile loads with provenance; the paper's constants are
 * exact; every kind of bad input is rejected with a message that says where. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include "../hwmodel/profile.h"
#include "tests.h"

static void t_shipped(void **s) {
    (void)s;
    char names[64][64];
    int n = hw_profile_list(names, 64);
    assert_true(n >= 11);
    const char *need[] = {"a100-40gb-pcie4", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "gh200",
                          "t4", "l4", "rtx4090", "v100", "paper-a100"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        hw_profile p;
        if (hw_profile_resolve(need[i], &p) != KV_OK) fail_msg("%s: %s", need[i], kv_errmsg());
        assert_string_equal(p.name, need[i]);
    }
    for (int i = 0; i < n; i++) {
        hw_profile p;
        if (hw_profile_resolve(names[i], &p) != KV_OK) fail_msg("%s: %s", names[i], kv_errmsg());
        const hw_val *v[] = {&p.gpu.peak_flops, &p.gpu.hbm_bw, &p.gpu.mem_bytes, &p.gpu.launch, &p.gpu.attn_eff, &p.gpu.hbm_eff,
                             &p.link.h2d.bandwidth, &p.link.d2h.bandwidth, &p.link.h2d.overhead, &p.cpu.mem_bw,
                             &p.cpu.attn_flops};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) assert_true(strlen(v[k]->source) > 5);
        /* provenance carries its label */
        assert_true(strchr(p.link.h2d.bandwidth.source, '[') != NULL);
    }
}

static void t_paper_constants(void **s) {
    (void)s;
    hw_profile p;
    assert_int_equal(hw_profile_resolve("paper-a100", &p), KV_OK);
    assert_true(p.link.h2d.bandwidth.value == 32e9);
    assert_true(p.link.d2h.bandwidth.value == 32e9);
    assert_true(p.gpu.peak_flops.value == 312e12);
    assert_true(p.link.h2d.overhead.value == 0 && p.gpu.launch.value == 0);
    assert_int_equal(p.gpu.memory_floor, 0);
    assert_true(hw_table_eval(&p.gpu.gemm_eff, 7) == 1.0);
    hw_profile a;
    assert_int_equal(hw_profile_resolve("a100-40gb-pcie4", &a), KV_OK);
    assert_true(a.gpu.memory_floor == 1);
    assert_rel(a.link.h2d.overhead.value, 5e-6, 1e-12);
    assert_rel(a.gpu.mem_bytes.value, 40.0 * 1073741824.0, 1e-12);
}

static void t_table_eval(void **s) {
    (void)s;
    hw_table t = {.n = 3, .x = {1e6, 1e7, 1e8}, .y = {0.5, 0.7, 0.9}};
    assert_rel(hw_table_eval(&t, 1), 0.5, 1e-15);      /* clamped below */
    assert_rel(hw_table_eval(&t, 1e12), 0.9, 1e-15);   /* clamped above */
    assert_rel(hw_table_eval(&t, 1e7), 0.7, 1e-15);
    assert_rel(hw_table_eval(&t, sqrt(1e13)), 0.6, 1e-12); /* linear in log x */
    assert_rel(hw_table_eval(&t, pow(10, 7.25)), 0.75, 1e-12);
}

static void t_roundtrip(void **s) {
    (void)s;
    hw_profile a, b;
    assert_int_equal(hw_profile_resolve("a100-40gb-pcie4", &a), KV_OK);
    char *js = hw_profile_to_json(&a);
    assert_non_null(js);
    if (hw_profile_parse(js, "roundtrip", &b) != KV_OK) fail_msg("%s", kv_errmsg());
    free(js);
    assert_rel(b.link.h2d.bandwidth.value, a.link.h2d.bandwidth.value, 1e-9);
    assert_rel(b.gpu.mem_bytes.value, a.gpu.mem_bytes.value, 1e-9);
    assert_int_equal(b.link.h2d.size_eff.n, a.link.h2d.size_eff.n);
    assert_string_equal(b.link.h2d.duplex.source, a.link.h2d.duplex.source);
}

/* Takes the a100 profile, sets (or with val NULL deletes) the field at a dotted path,
 * and checks the parse error. */
static void mutate(const char *path, const char *val, kv_status want, const char *needle) {
    char f[512];
    snprintf(f, sizeof f, "%s/hwmodel/profiles/a100-40gb-pcie4.json", src_dir());
    json_error_t je;
    json_t *root = json_load_file(f, 0, &je);
    assert_non_null(root);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *o = root;
    char *save, *tok = strtok_r(buf, ".", &save), *next;
    while ((next = strtok_r(NULL, ".", &save))) {
        o = json_object_get(o, tok);
        assert_non_null(o);
        tok = next;
    }
    if (val) {
        json_t *v = json_loads(val, JSON_DECODE_ANY, &je);
        assert_non_null(v);
        json_object_set_new(o, tok, v);
    } else json_object_del(o, tok);
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    hw_profile p;
    kv_status st = hw_profile_parse(text, "bad.json", &p);
    free(text);
    if (st != want || !strstr(kv_errmsg(), needle))
        fail_msg("%s=%s: got %d '%s', wanted %d with '%s'", path, val ? val : "(deleted)", st, kv_errmsg(), want, needle);
}

static void t_bad_profiles(void **s) {
    (void)s;
    mutate("gpu.hbm_gbs", "{\"value\": 1, \"source\": \"x\"}", KV_EPARSE, "unknown key 'gpu.hbm_gbs'");
    mutate("link.h2d.bandwidth_gbps.units", "\"GB/s\"", KV_EPARSE, "unknown key 'link.h2d.bandwidth_gbps.units'");
    mutate("gpu.hbm_gbps", NULL, KV_EPARSE, "missing field 'gpu.hbm_gbps'");
    mutate("link.d2h", NULL, KV_EPARSE, "missing field 'link.d2h'");
    mutate("cpu.mem_bw_gbps.source", NULL, KV_EPARSE, "missing field 'cpu.mem_bw_gbps.source'");
    mutate("link.h2d.bandwidth_gbps.value", "-26", KV_EINVAL, "'link.h2d.bandwidth_gbps.value' must be > 0");
    mutate("link.d2h.bandwidth_gbps.value", "0", KV_EINVAL, "'link.d2h.bandwidth_gbps.value' must be > 0");
    mutate("gpu.launch_us.value", "-1", KV_EINVAL, "'gpu.launch_us.value' must be >= 0");
    mutate("gpu.peak_fp16_tflops.value", "\"312\"", KV_EPARSE, "must be a number");
    mutate("link.h2d.duplex_factor.value", "1.5", KV_EINVAL, "efficiency and must be in (0, 1]");
    mutate("gpu.attention_bw_efficiency.value", "0", KV_EINVAL, "must be in (0, 1]");
    mutate("gpu.gemm_efficiency.table", "[[1, 0.5], [64, 1.2]]", KV_EINVAL, "efficiency must be in (0, 1]");
    mutate("gpu.gemm_efficiency.table", "[[1, 0.8], [64, 0.5]]", KV_EINVAL, "not monotone");
    mutate("link.h2d.size_efficiency.table", "[[1e6, 0.5], [1e5, 0.6]]", KV_EINVAL, "not monotone");
    mutate("link.h2d.size_efficiency.table", "[]", KV_EPARSE, "array of 1 to 32");
    mutate("link.h2d.size_efficiency.table", "[[1, 0.5, 3]]", KV_EPARSE, "pair of numbers");
    mutate("link.h2d.pageable_gbps.value", "100", KV_EINVAL, "exceeds the pinned bandwidth");
    mutate("gpu.memory_floor", "1", KV_EPARSE, "true or false");
    mutate("gpu.name", "\"\"", KV_EPARSE, "non-empty string");
    mutate("link.h2d.overhead_us", "5", KV_EPARSE, "must be {\"value\"");
    hw_profile p;
    /* JSON has no NaN; a literal one is a syntax error with its position. */
    assert_int_equal(hw_profile_parse("{\n  \"name\": \"x\",\n  \"gpu\": {\"hbm_gbps\": {\"value\": NaN}}}", "nan.json", &p),
                     KV_EPARSE);
    assert_non_null(strstr(kv_errmsg(), "nan.json:3:"));
    assert_int_equal(hw_profile_parse("{\"name\": \"x\",\n\n   \"gpu\" {}}", "syn.json", &p), KV_EPARSE);
    assert_non_null(strstr(kv_errmsg(), "syn.json:3:"));
    assert_int_equal(hw_profile_parse("{\"name\": \"x\", \"name\": \"y\"}", "dup.json", &p), KV_EPARSE);
    assert_int_equal(hw_profile_parse("{\"gpu\": {\"hbm_gbps\": {\"value\": 1e999}}}", "big.json", &p), KV_EPARSE);
    assert_int_equal(hw_profile_resolve("no-such-gpu", &p), KV_ENOTFOUND);
    assert_non_null(strstr(kv_errmsg(), "unknown hardware profile 'no-such-gpu'"));
    assert_int_equal(hw_profile_resolve("../etc/passwd", &p), KV_ENOTFOUND);
}


/* item 9: a value that is absurd once in SI units is not a profile */
static void t_physical_ranges(void **s) {
    (void)s;
    mutate("gpu.hbm_gbps.value", "1e-300", KV_EINVAL, "'gpu.hbm_gbps.value' is 1e-300 GB/s, outside the physical range");
    mutate("gpu.peak_fp16_tflops.value", "1e300", KV_EINVAL, "'gpu.peak_fp16_tflops.value' is inf TFLOP/s, outside"); /* finite, then infinite */
    mutate("gpu.memory_gib.value", "1e-12", KV_EINVAL, "outside the physical range");
    mutate("gpu.launch_us.value", "1e300", KV_EINVAL, "outside the physical range");
    mutate("link.d2h.overhead_us.value", "1e12", KV_EINVAL, "'link.d2h.overhead_us.value'");
    mutate("link.h2d.duplex_factor.value", "1e-200", KV_EINVAL, "outside the physical range");
    mutate("cpu.attn_tflops.value", "1e-30", KV_EINVAL, "'cpu.attn_tflops.value'");
    mutate("gpu.gemm_efficiency.table", "[[1, 1e-300], [64, 1]]", KV_EINVAL, "outside the physical range");
    mutate("link.h2d.size_efficiency.table", "[[1e-300, 0.5], [1e6, 0.9]]", KV_EINVAL, "outside the physical range");
    mutate("name", "\"a123456789b123456789c123456789d123456789e123456789f123456789abcd\"", KV_EINVAL, "at most 63 bytes");
}

static void same_val(const char *what, const hw_val *a, const hw_val *b) {
    if (a->value != b->value || strcmp(a->source, b->source))
        fail_msg("%s: %.17g '%s' came back as %.17g '%s'", what, a->value, a->source, b->value, b->source);
}

static void same_table(const char *what, const hw_table *a, const hw_table *b) {
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++)
        if (a->x[i] != b->x[i] || a->y[i] != b->y[i]) fail_msg("%s[%d] changed", what, i);
    assert_string_equal(a->source, b->source);
}

static void same_dir(const char *what, const hw_link_dir *a, const hw_link_dir *b) {
    same_val(what, &a->bandwidth, &b->bandwidth);
    same_val(what, &a->overhead, &b->overhead);
    same_val(what, &a->pageable, &b->pageable);
    same_val(what, &a->duplex, &b->duplex);
    same_table(what, &a->size_eff, &b->size_eff);
}

/* every field of b equals a's, bit for bit */
static void same_profile(const hw_profile *a, const hw_profile *b) {
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->description, b->description);
    assert_string_equal(a->gpu.name, b->gpu.name);
    same_val("peak", &a->gpu.peak_flops, &b->gpu.peak_flops);
    same_val("hbm", &a->gpu.hbm_bw, &b->gpu.hbm_bw);
    same_val("gpu mem", &a->gpu.mem_bytes, &b->gpu.mem_bytes);
    same_val("launch", &a->gpu.launch, &b->gpu.launch);
    same_val("attn", &a->gpu.attn_eff, &b->gpu.attn_eff);
    same_val("hbm_eff", &a->gpu.hbm_eff, &b->gpu.hbm_eff);
    same_table("gemm", &a->gpu.gemm_eff, &b->gpu.gemm_eff);
    assert_int_equal(a->gpu.memory_floor, b->gpu.memory_floor);
    assert_string_equal(a->link.name, b->link.name);
    same_dir("h2d", &a->link.h2d, &b->link.h2d);
    same_dir("d2h", &a->link.d2h, &b->link.d2h);
    assert_string_equal(a->cpu.name, b->cpu.name);
    same_val("cpu bw", &a->cpu.mem_bw, &b->cpu.mem_bw);
    same_val("cpu mem", &a->cpu.mem_bytes, &b->cpu.mem_bytes);
    same_val("cpu attn", &a->cpu.attn_flops, &b->cpu.attn_flops);
}

static void roundtrip(const hw_profile *a) {
    char *js = hw_profile_to_json(a);
    if (!js) fail_msg("%s: cannot be printed", a->name);
    hw_profile b;
    if (hw_profile_parse(js, "roundtrip", &b) != KV_OK) fail_msg("%s does not load back: %s", a->name, kv_errmsg());
    free(js);
    same_profile(a, &b);
}

/* item 10: whatever loads prints, and what prints loads back to the same values */
static void t_roundtrip_exact(void **s) {
    (void)s;
    char names[64][64];
    int n = hw_profile_list(names, 64);
    for (int i = 0; i < n; i++) {
        hw_profile p = hwp(names[i]);
        roundtrip(&p);
    }
    hw_profile v;
    assert_int_equal(hw_profile_resolve("h100-sxm@gen3", &v), KV_OK);
    roundtrip(&v);
    /* values that need all 17 digits: 10 made the table non-monotone */
    hw_profile p = hwp("a100-40gb-pcie4");
    p.gpu.gemm_eff.n = 2;
    p.gpu.gemm_eff.x[0] = 1, p.gpu.gemm_eff.x[1] = 1.00000000001;
    p.gpu.gemm_eff.y[0] = 0.1, p.gpu.gemm_eff.y[1] = 0.10000000000001;
    p.link.h2d.bandwidth.value = 25.123456789012345e9;
    p.gpu.mem_bytes.value = 40.000000000000007 * 1073741824.0;
    roundtrip(&p);
    /* through the command */
    char f[4200], out[1 << 15];
    for (int i = 0; i < n; i++) {
        snprintf(f, sizeof f, "%s/%s.json", tmp_dir(), names[i]); /* a file NAME.json holds profile NAME */
        if (run_cmd(out, sizeof out, "%s hw show %s --json > %s", kvpr_bin(), names[i], f) != 0) fail_msg("hw show %s --json: %s", names[i], out);
        hw_profile a = hwp(names[i]), b;
        if (hw_profile_load(f, &b) != KV_OK) fail_msg("%s: %s", names[i], kv_errmsg());
        same_profile(&a, &b);
    }
}

/* Issue 11, item 4 and habits: a file's name and its "name" agree; names ignore case; a typo gets
 * "did you mean"; $KVPR_PROFILES is a search path added to the built-in directory. */
static void t_names(void **s) {
    (void)s;
    char dir[600], f[700], cmd[2000], out[1 << 14];
    snprintf(dir, sizeof dir, "%s/myprofiles", tmp_dir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s && sed 's/\"name\": \"h100-pcie\"/\"name\": \"my-h100\"/' %s/hwmodel/profiles/h100-pcie.json > %s/my-h100.json"
             " && cp %s/hwmodel/profiles/h100-pcie.json %s/stale.json", dir, src_dir(), dir, src_dir(), dir);
    assert_int_equal(run_cmd(out, sizeof out, "%s", cmd), 0);
    hw_profile p;
    /* a copy that kept the stock name is refused, and the message says why */
    snprintf(f, sizeof f, "%s/stale.json", dir);
    assert_int_equal(hw_profile_load(f, &p), KV_EINVAL);
    if (!strstr(kv_errmsg(), "field 'name' is 'h100-pcie' but the file is stale.json")) fail_msg("%s", kv_errmsg());
    snprintf(f, sizeof f, "%s/my-h100.json", dir);
    assert_int_equal(hw_profile_load(f, &p), KV_OK);
    assert_string_equal(p.name, "my-h100");
    /* case ignored, like model names */
    assert_int_equal(hw_profile_resolve("H100-PCIe", &p), KV_OK);
    assert_string_equal(p.name, "h100-pcie");
    assert_int_equal(hw_profile_resolve("h100-pcei", &p), KV_ENOTFOUND);
    if (!strstr(kv_errmsg(), "did you mean 'h100-pcie'?") || !strstr(kv_errmsg(), "paper-a100"))
        fail_msg("no suggestion: %s", kv_errmsg());
    /* the search path: the user's directory first, the built-in profiles still there */
    snprintf(cmd, sizeof cmd, "KVPR_PROFILES=%s:/nonexistent %s hw show my-h100 && KVPR_PROFILES=%s %s hw show t4", dir, kvpr_bin(), dir, kvpr_bin());
    if (run_cmd(out, sizeof out, "%s", cmd) != 0 || !strstr(out, "profile my-h100:") || !strstr(out, "profile t4:"))
        fail_msg("search path: %s", out);
    snprintf(cmd, sizeof cmd, "KVPR_PROFILES=%s %s hw list", dir, kvpr_bin());
    if (run_cmd(out, sizeof out, "%s", cmd) == 0) fail_msg("hw list with a stale copy on the path exited 0: %s", out);
    snprintf(cmd, sizeof cmd, "rm %s/stale.json && KVPR_PROFILES=%s %s hw list", dir, dir, kvpr_bin());
    if (run_cmd(out, sizeof out, "%s", cmd) != 0 || !strstr(out, "my-h100") || !strstr(out, "a100-40gb-pcie4")) fail_msg("hw list: %s", out);
}

void group_profile(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_shipped), cmocka_unit_test(t_paper_constants),
                                   cmocka_unit_test(t_table_eval), cmocka_unit_test(t_roundtrip),
                                   cmocka_unit_test(t_bad_profiles),
                                   cmocka_unit_test(t_physical_ranges), cmocka_unit_test(t_roundtrip_exact),
                                   cmocka_unit_test(t_names)};
    RUN_GROUP(c, "profile", t);
}
