/* The search: its MIP against enumerating the same model, its choice against brute-force
 * simulation on random small configurations, constraints (memory, latency bound, sequences),
 * deterministic ties, FlexGen's published policies, and the command. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "../exp/searchplot.h"
#include "../sched/graph.h"
#include "../sched/regions.h"
#include "../sched/search.h"
#include "../sim/sim.h"
#include "tests.h"

#define GIB 1073741824.0

static const char *SMALL[] = {"OPT-125M", "OPT-1.3B"};
static const char *HWS[] = {"t4", "l4", "a100-40gb-pcie4", "h100-pcie", "rtx4090", "v100", "rtx3090", "gh200"};

static double urand(double a, double b) { return a + (b - a) * rand() / (double)RAND_MAX; }

/* A configuration where memory forces a choice: the GPU holds between a third of the weights
 * and all of them plus some cache; the CPU between a little and plenty. */
static void random_opts(search_opts *o, const kv_model *m) {
    search_opts_defaults(o);
    o->prompt = 16 << (rand() % 5); /* 16 .. 256 */
    o->gen = 3 + rand() % 4;
    o->objective = (search_objective)(rand() % SEARCH_OBJ_COUNT);
    o->max_gbs = 1 + rand() % 6, o->max_nb = 1 + rand() % 3;
    double w = (double)kv_model_bytes_total(m);
    o->gpu_bytes = w * urand(0.4, 1.3);
    o->cpu_bytes = w * urand(1.5, 6);
    o->top = 3;
}

/* Stage 2: GLPK's optimum equals the optimum found by enumerating every weights layout and every
 * number of CPU-resident sequences of the same linear model, and breaks no constraint. */
static void t_mip_vs_enumeration(void **s) {
    (void)s;
    srand(1414);
    int solved = 0, infeasible = 0;
    for (int it = 0; it < 250; it++) {
        kv_model m = mdl(it % 3 ? "OPT-1.3B" : "Llama-3-8B");
        hw_profile p = hwp(HWS[rand() % 8]);
        search_opts o;
        random_opts(&o, &m);
        if (rand() % 3 == 0) o.max_token_s = urand(0.002, 0.2);
        kv_policy pol = (kv_policy)(rand() % KV_POL_COUNT);
        int l = pol == KV_POL_KVPR ? 1 + rand() % o.prompt : 0;
        int gbs = 1 + rand() % 24, nb = 1 + rand() % 6, hg = rand() % 2 ? 100 : 0, D = 1 + rand() % 2;
        double mip, brute;
        if (search_mip_check(&m, &p, &o, pol, l, gbs, nb, hg, D, &mip, &brute)) fail_msg("it %d: %s", it, kv_errmsg());
        if (isinf(brute)) {
            assert_true(isinf(mip)); /* the MIP claims nothing the enumeration does not */
            infeasible++;
            continue;
        }
        if (isinf(mip)) fail_msg("it %d: the MIP found nothing, the enumeration %.6g s", it, brute);
        if (fabs(mip - brute) > 1e-6 * brute) fail_msg("it %d: MIP %.9g s, enumeration %.9g s (%s, gbs %d nb %d)", it, mip, brute,
                                                      kv_policy_name(pol), gbs, nb);
        solved++;
    }
    assert_true(solved > 100);
    assert_true(infeasible > 10); /* the memory rows do bind */
}

/* The search's choice against the best of brute-force simulation over a 10 % placement lattice,
 * every policy, gbs and nb enumerated: the targets, median <= 1 %, max <= 5 %. */
static void t_search_vs_brute(void **s) {
    (void)s;
    srand(77);
    double reg[16];
    int n = 0;
    for (int it = 0; it < 10; it++) {
        kv_model m = mdl(SMALL[rand() % 2]);
        hw_profile p = hwp(HWS[rand() % 8]);
        search_opts o;
        random_opts(&o, &m);
        o.objective = (search_objective)(it % SEARCH_OBJ_COUNT);
        o.max_gbs = 2 + rand() % 7, o.max_nb = 1 + rand() % 4;
        search_regret r;
        kv_status st = search_regret_of(&m, &p, &o, &r);
        if (st == KV_ENOFIT) continue;
        if (st) fail_msg("it %d: %s", it, kv_errmsg());
        /* the brute force searched a subset of the search's space: the search may beat it, never
         * by a wide margin (both simulate the same plans) */
        if (r.regret > 0.05)
            fail_msg("it %d: %s on %s, %s: search %.6g (%s %dx%d), brute force %.6g (%s %dx%d): regret %.2f %%", it, m.name, p.name,
                     search_objective_name(o.objective), r.search_value, kv_policy_name(r.chosen.plan.policy), r.chosen.plan.batch,
                     r.chosen.plan.nb, r.brute_value, kv_policy_name(r.best.plan.policy), r.best.plan.batch, r.best.plan.nb,
                     100 * r.regret);
        assert_true(r.brute_sims > 50);
        reg[n++] = r.regret;
        search_regret_free(&r);
    }
    assert_true(n >= 6);
    for (int i = 1; i < n; i++) /* sort for the median */
        for (int j = i; j > 0 && reg[j] < reg[j - 1]; j--) {
            double t = reg[j];
            reg[j] = reg[j - 1], reg[j - 1] = t;
        }
    double med = n % 2 ? reg[n / 2] : (reg[n / 2 - 1] + reg[n / 2]) / 2;
    assert_true(med <= 0.01);
}

/* Everything reported fits both capacities, meets the latency bound, holds the requested number
 * of sequences, and is what sim_run gives for its plan. */
static void t_constraints(void **s) {
    (void)s;
    srand(31337);
    sim_ctx *sx = sim_new();
    assert_non_null(sx);
    int checked = 0, bounded = 0;
    for (int it = 0; it < 12; it++) {
        kv_model m = mdl(it % 2 ? "OPT-1.3B" : "OPT-6.7B");
        hw_profile p = hwp(HWS[rand() % 8]);
        search_opts o;
        random_opts(&o, &m);
        o.max_gbs = 0, o.max_nb = 0; /* only memory bounds them */
        o.objective = (search_objective)(it % 2);
        o.prompt = 128 << (rand() % 3), o.gen = 8;
        o.top = 4;
        if (it % 3 == 0) o.sequences = 4 << (rand() % 4);
        search_result r;
        kv_status st = search_run(&m, &p, &o, &r);
        if (st == KV_ENOFIT) continue;
        if (st) fail_msg("it %d: %s", it, kv_errmsg());
        /* a bound just above the winner's time per token: the second search must meet it */
        double bound = r.c[0].token_s * 1.001;
        search_result_free(&r);
        o.max_token_s = it % 2 ? bound : 0;
        if ((st = search_run(&m, &p, &o, &r))) fail_msg("it %d (bound %.6g s): %s", it, bound, kv_errmsg());
        hw_profile cap = p;
        cap.gpu.mem_bytes.value = o.gpu_bytes, cap.cpu.mem_bytes.value = o.cpu_bytes;
        for (int i = 0; i < r.n; i++) {
            const search_cand *c = &r.c[i];
            kv_layout ly;
            if (kv_layout_resolve(&m, &c->plan, &ly)) fail_msg("%s", kv_errmsg());
            if (kv_layout_fits(&ly, o.gpu_bytes, o.cpu_bytes)) fail_msg("it %d #%d: %s", it, i, kv_errmsg());
            assert_true(c->gpu_bytes <= o.gpu_bytes && c->cpu_bytes <= o.cpu_bytes);
            if (o.max_token_s > 0) {
                assert_true(c->token_s <= o.max_token_s * (1 + 1e-9));
                bounded++;
            }
            if (o.sequences) assert_int_equal(c->plan.batch * c->plan.nb, o.sequences);
            sim_result sr;
            if (sim_run(sx, &m, &cap, &c->plan, &sr)) fail_msg("%s", kv_errmsg());
            assert_rel(sr.generation_tok_s, c->generation_tok_s, 1e-12);
            assert_rel(sr.decode_tok_s, c->decode_tok_s, 1e-12);
            if (i > 0) assert_true(search_cmp(&r.c[i - 1], c, o.objective) < 0); /* ranked */
            checked++;
        }
        search_result_free(&r);
    }
    sim_free(sx);
    assert_true(checked > 20);
    assert_true(bounded > 5);
}

static search_cand cand(kv_policy pol, int gbs, int nb, double wg, double value, double gpu) {
    search_cand c;
    memset(&c, 0, sizeof c);
    kv_plan_defaults(&c.plan);
    c.plan.policy = pol, c.plan.batch = gbs, c.plan.nb = nb, c.plan.prompt = 64, c.plan.gen = 8;
    c.plan.percent = (kv_percent){1, wg, 100 - wg, 0, 100, 100, 0};
    c.value = value, c.gpu_bytes = gpu;
    return c;
}

/* Ties: equal values (to 7 digits) rank by policy, then memory, then the configuration, whatever
 * order they come in; and the search itself gives the same answer twice. */
static void t_ties_deterministic(void **s) {
    (void)s;
    search_cand base[8] = {
        cand(KV_POL_CPU_ATTN, 8, 2, 50, 100.0, 5e9),     cand(KV_POL_KVPR, 8, 2, 50, 100.0 + 1e-6, 6e9),
        cand(KV_POL_OFFLOAD, 8, 2, 50, 100.0, 7e9),      cand(KV_POL_OFFLOAD, 8, 2, 50, 100.0, 6e9),
        cand(KV_POL_OFFLOAD, 4, 2, 50, 100.0, 6e9),      cand(KV_POL_GPU, 8, 1, 100, 99.0, 1e9),
        cand(KV_POL_CPU_ATTN, 16, 1, 0, 101.0, 9e9),     cand(KV_POL_OFFLOAD, 8, 2, 40, 100.0, 6e9)};
    /* expected: 101 first; then the 100-ties by policy (offload, kvpr, cpu-attn), offloads by GPU
     * bytes then gbs then WG; 99 last */
    const int want[8] = {6, 4, 7, 3, 2, 1, 0, 5};
    srand(5);
    for (int rep = 0; rep < 50; rep++) {
        search_cand c[8];
        memcpy(c, base, sizeof c);
        for (int i = 7; i > 0; i--) { /* shuffle */
            int j = rand() % (i + 1);
            search_cand t = c[i];
            c[i] = c[j], c[j] = t;
        }
        search_rank(c, 8, SEARCH_GENERATION);
        for (int i = 0; i < 8; i++) {
            const search_cand *x = &c[i], *y = &base[want[i]];
            if (x->plan.policy != y->plan.policy || x->plan.batch != y->plan.batch || x->plan.percent.wg != y->plan.percent.wg ||
                x->value != y->value || x->gpu_bytes != y->gpu_bytes)
                fail_msg("rep %d: position %d is not candidate %d", rep, i, want[i]);
        }
    }
    /* the latency objective ranks the smaller value first */
    search_cand a = cand(KV_POL_GPU, 1, 1, 100, 0.010, 1e9), b = cand(KV_POL_GPU, 1, 1, 100, 0.011, 1e9);
    assert_true(search_cmp(&a, &b, SEARCH_LATENCY) < 0 && search_cmp(&a, &b, SEARCH_DECODE) > 0);
    /* the whole search, twice: the same plans in the same order with the same values */
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("t4");
    search_opts o;
    search_opts_defaults(&o);
    o.prompt = 256, o.gen = 8, o.gpu_bytes = 2.2 * GIB, o.cpu_bytes = 16 * GIB, o.top = 6;
    search_result r1, r2;
    if (search_run(&m, &p, &o, &r1) || search_run(&m, &p, &o, &r2)) fail_msg("%s", kv_errmsg());
    assert_int_equal(r1.n, r2.n);
    for (int i = 0; i < r1.n; i++) {
        assert_int_equal(search_cmp(&r1.c[i], &r2.c[i], o.objective), 0);
        assert_true(r1.c[i].value == r2.c[i].value);
    }
    search_result_free(&r1);
    search_result_free(&r2);
}

/* Impossible asks are answered with KV_ENOFIT and a message; bad options with KV_EINVAL. */
static void t_infeasible_and_bad(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("t4");
    search_opts o;
    search_opts_defaults(&o);
    o.prompt = 128, o.gen = 8;
    search_result r;
    o.max_token_s = 1e-6;
    assert_int_equal(search_run(&m, &p, &o, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "latency"));
    o.max_token_s = 0, o.cpu_bytes = 0.1 * GIB, o.gpu_bytes = 0.5 * GIB;
    assert_int_equal(search_run(&m, &p, &o, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "fits"));
    search_opts_defaults(&o);
    o.prompt = 0, o.gen = 8;
    assert_int_equal(search_run(&m, &p, &o, &r), KV_EINVAL);
    o.prompt = 64, o.gen = 1;
    assert_int_equal(search_run(&m, &p, &o, &r), KV_EINVAL);
    o.gen = 8, o.top = 0;
    assert_int_equal(search_run(&m, &p, &o, &r), KV_EINVAL);
    search_objective ob;
    assert_int_equal(search_objective_parse("fastest", &ob), KV_EINVAL);
    assert_int_equal(search_objective_parse("decode", &ob), KV_OK);
    assert_int_equal(ob, SEARCH_DECODE);
    /* brute force refuses an unbounded grid */
    search_cand b;
    int n;
    search_opts_defaults(&o);
    o.prompt = 64, o.gen = 4;
    assert_int_equal(search_brute(&m, &p, &o, &b, &n), KV_EINVAL);
}

/* A restricted policy set is respected, and the search never loses to a configuration it could
 * have chosen: FlexGen's published T4 policies, simulated on the same machine. */
static void t_policies_and_flexgen(void **s) {
    (void)s;
    const search_flexgen_case *fc;
    int n = search_flexgen_cases(&fc);
    assert_true(n >= 4);
    hw_profile p = hwp("t4");
    for (int i = 0; i < n; i++) {
        kv_model m = mdl(fc[i].model);
        search_opts o;
        search_opts_defaults(&o);
        o.prompt = fc[i].prompt, o.gen = fc[i].gen, o.cpu_bytes = 200 * GIB, o.top = 1;
        kv_plan pl;
        search_flexgen_plan(&fc[i], &pl);
        search_cand f;
        int fits;
        if (search_simulate(&m, &p, &o, &pl, &f, &fits)) fail_msg("%s", kv_errmsg());
        assert_true(fits);
        search_result r;
        if (search_run(&m, &p, &o, &r)) fail_msg("%s", kv_errmsg());
        if (r.c[0].generation_tok_s < f.generation_tok_s)
            fail_msg("%s prompt %d: search %.4f tok/s < FlexGen's policy %.4f", fc[i].model, fc[i].prompt, r.c[0].generation_tok_s,
                     f.generation_tok_s);
        search_result_free(&r);
        search_cand_free(&f);
    }
    kv_model m = mdl("OPT-6.7B");
    search_opts o;
    search_opts_defaults(&o);
    o.prompt = 512, o.gen = 8, o.top = 8, o.policies = 1u << KV_POL_KVPR | 1u << KV_POL_OFFLOAD;
    search_result r;
    if (search_run(&m, &p, &o, &r)) fail_msg("%s", kv_errmsg());
    for (int i = 0; i < r.n; i++) assert_true(r.c[i].plan.policy == KV_POL_KVPR || r.c[i].plan.policy == KV_POL_OFFLOAD);
    assert_false(r.has[KV_POL_CPU_ATTN] || r.has[KV_POL_GPU]);
    search_result_free(&r);
}

/* The command, once wired into kvpr's command table (skipped until then). */
static void t_search_cmd(void **s) {
    (void)s;
    static char out[1 << 16];
    int rc = run_cmd(out, sizeof out, "%s search --help", kvpr_bin());
    if (rc != 0 && strstr(out, "unknown command")) test_skip();
    assert_int_equal(rc, 0);
    rc = run_cmd(out, sizeof out, "%s search --model OPT-1.3B --hw t4 --prompt 128 --gen 8 --gpu-mem 2 --cpu-mem 16 --top 2 --json",
                 kvpr_bin());
    if (rc != 0) fail_msg("exit %d:\n%s", rc, out);
    const char *keys[] = {"\"policy\"", "\"percent\"", "\"gbs\"", "\"nb\"", "\"split\"", "\"generation_tok_s\"", "\"decode_tok_s\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strstr(out, keys[i])) fail_msg("--json lacks %s:\n%s", keys[i], out);
    const char *bad[][2] = {{"search --model OPT-1.3B --hw t4 --prompt 128", "are required"},
                            {"search --model OPT-1.3B --hw t4 --prompt 128 --gen 8 --objective fastest", "unknown objective"},
                            {"search --model OPT-1.3B --hw t4 --prompt 128 --gen 8 --policies gpu,warp", "unknown policy"},
                            {"search --model OPT-1.3B --hw t4 --prompt 128 --gen 8 --max-token-latency 0.000001", "latency"},
                            {"search --model OPT-1.3B --hw t4 --prompt 128 --gen 8 --top 0", "--top"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = run_cmd(out, sizeof out, "%s %s", kvpr_bin(), bad[i][0]);
        if (rc != 2 || !strstr(out, bad[i][1]) || strncmp(out, "kvpr: ", 6) || strchr(out, '\n') != out + strlen(out) - 1)
            fail_msg("kvpr %s: exit %d, wanted 2 and one line with '%s':\n%s", bad[i][0], rc, bad[i][1], out);
    }
}

static int have_gnuplot(void) {
    char out[256];
    return run_cmd(out, sizeof out, "command -v gnuplot") == 0;
}

/* A rendered figure: a PNG that ends with its IEND chunk, an SVG that closes. */
static void assert_rendered(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.png", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s was not written", path);
    unsigned char head[8] = {0}, tail[8] = {0};
    size_t nh = fread(head, 1, 8, f);
    fseek(f, -8, SEEK_END);
    size_t nt = fread(tail, 1, 8, f);
    fclose(f);
    assert_true(nh == 8 && nt == 8 && !memcmp(head, "\x89PNG", 4) && !memcmp(tail + 4, "\xae\x42\x60\x82", 4));
    snprintf(path, sizeof path, "%s/%s.svg", dir, name);
    char *svg = read_text(path);
    if (!svg || !strstr(svg, "</svg>")) fail_msg("%s was not written whole", path);
    free(svg);
}

/* Policy regions: every cell is what the search answers for that prompt and number of sequences
 * alone (the grid is not transposed, no cell is skipped or reused), a cell the search cannot fit
 * says so, the lead is over the best simulated candidate of another policy, and the figure's data
 * carries each cell's winner; with gnuplot the figure is rendered, whatever the title holds. */
static void t_regions(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("t4");
    search_opts o;
    search_opts_defaults(&o);
    o.gen = 4, o.gpu_bytes = 3 * GIB, o.cpu_bytes = 1.5 * GIB;
    /* three prompts and two sequence counts (a transposed grid would not line up); chosen so that
     * memory gives three different winners and one cell where nothing fits */
    const int prompts[] = {64, 1024, 4096}, seqs[] = {1, 8};
    regions_grid g;
    if (regions_run(&m, &p, &o, prompts, 3, seqs, 2, &g)) fail_msg("%s", kv_errmsg());
    assert_int_equal(g.np, 3);
    assert_int_equal(g.ns, 2);
    assert_int_equal(g.searches, 6);
    unsigned winners = 0;
    int nofit = 0;
    for (int ip = 0; ip < 3; ip++)
        for (int is = 0; is < 2; is++) {
            const regions_cell *c = regions_at(&g, ip, is);
            search_opts q = o;
            q.prompt = prompts[ip], q.sequences = seqs[is], q.top = 1;
            search_result r;
            kv_status st = search_run(&m, &p, &q, &r);
            if (st == KV_ENOFIT) {
                assert_false(c->fits);
                nofit++;
                continue;
            }
            if (st) fail_msg("%s", kv_errmsg());
            if (!c->fits) fail_msg("prompt %d x %d: the grid says no fit, the search found %s", prompts[ip], seqs[is],
                                   kv_policy_name(r.c[0].plan.policy));
            assert_int_equal(c->policy, r.c[0].plan.policy);
            assert_true(c->value == r.c[0].value); /* deterministic: the same search, the same number */
            assert_int_equal(c->gbs * c->nb, seqs[is]);
            assert_int_equal(c->gbs, r.c[0].plan.batch);
            winners |= 1u << c->policy;
            /* the runner-up is the best other policy the search simulated, and behind the winner */
            int others = 0;
            for (int pol = 0; pol < KV_POL_COUNT; pol++) {
                if (pol == (int)c->policy || !r.has[pol]) continue;
                others++;
                assert_true(r.best[pol].value <= c->runner_value);
            }
            assert_int_equal(c->has_runner, others > 0);
            if (c->has_runner) {
                assert_true(c->runner != c->policy && r.has[c->runner]);
                assert_true(c->runner_value == r.best[c->runner].value);
                assert_rel(c->lead, c->value / c->runner_value, 1e-12);
                assert_true(c->lead >= 1 - 1e-6);
            }
            search_result_free(&r);
        }
    assert_int_equal(nofit, 1);
    assert_int_equal(g.nofit, 1);
    assert_true(__builtin_popcount(winners) >= 3); /* the regions are not one colour */
    assert_false(regions_at(&g, 2, 1)->fits);      /* the longest prompt with the most sequences */

    /* the figure: a title with quotes, a backquote and a '#' must neither break nor run anything */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/regions", tmp_dir());
    assert_int_equal(exp_plot_dir(dir), KV_OK);
    regions_grid two[2] = {g, g};
    if (searchplot_regions(dir, "regions-test", "it's `a` \"test\" #1 $x", two, 2)) fail_msg("%s", kv_errmsg());
    char path[600];
    snprintf(path, sizeof path, "%s/regions-test.dat", dir);
    char *dat = read_text(path);
    assert_non_null(dat);
    int rows = 0;
    for (char *line = strtok(dat, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        int ix, iy;
        long rgb;
        char who[32];
        if (sscanf(line, "%d %d %ld \"%31[^\"]\"", &ix, &iy, &rgb, who) != 4) fail_msg("bad data row: %s", line);
        const regions_cell *c = regions_at(&g, ix, iy);
        assert_string_equal(who, c->fits ? kv_policy_name(c->policy) : "no fit");
        assert_int_equal(rgb, strtol((c->fits ? searchplot_color(c->policy) : SEARCHPLOT_NOFIT) + 1, NULL, 16));
        rows++;
    }
    free(dat);
    assert_int_equal(rows, 2 * 6); /* two panels of six cells */
    if (have_gnuplot()) assert_rendered(dir, "regions-test");
    regions_free(&g);

    /* bad grids */
    assert_int_equal(regions_run(&m, &p, &o, prompts, 0, seqs, 2, &g), KV_EINVAL);
    const int zero[] = {0};
    assert_int_equal(regions_run(&m, &p, &o, prompts, 3, zero, 1, &g), KV_EINVAL);
    assert_int_equal(regions_run(&m, &p, &o, prompts, REGIONS_MAX + 1, seqs, 2, &g), KV_EINVAL);

    /* the validation figures */
    searchplot_vcase vc[3] = {{"1 OPT-1.3B t4 generation", SEARCH_GENERATION, 99.0, 100.0, 0.01},
                              {"2 OPT-1.3B t4 latency", SEARCH_LATENCY, 0.0101, 0.01, 0.01},
                              {"3 \"odd\" `case`", SEARCH_GENERATION, 50.0, 50.0, 0.0}};
    if (searchplot_validate(dir, vc, 3)) fail_msg("%s", kv_errmsg());
    snprintf(path, sizeof path, "%s/search-validate-values.dat", dir);
    dat = read_text(path);
    assert_non_null(dat);
    assert_non_null(strstr(dat, "\n2 10 10.1\n")); /* the latency case in its own block, in ms per token */
    free(dat);
    if (have_gnuplot()) {
        assert_rendered(dir, "search-validate-regret");
        assert_rendered(dir, "search-validate-values");
    }
}

/* `kvpr search --regions` on a tiny grid: the table, the figure, and the usage errors. */
static void t_regions_cmd(void **s) {
    (void)s;
    static char out[1 << 16];
    char dir[512];
    snprintf(dir, sizeof dir, "%s/regions-cmd", tmp_dir());
    int rc = run_cmd(out, sizeof out,
                     "%s search --regions --models OPT-1.3B --hw t4 --prompts 64,1024,4096 --batches 1,8 --gen 4 --gpu-mem 3 "
                     "--cpu-mem 1.5 --plots %s",
                     kvpr_bin(), dir);
    if (rc != 0) fail_msg("exit %d:\n%s", rc, out);
    if (!strstr(out, "OPT-1.3B on t4") || !strstr(out, "4k") || !strstr(out, "does not fit 1;") ||
        !strstr(out, "search-regions-t4"))
        fail_msg("unexpected output:\n%s", out);
    char path[600];
    snprintf(path, sizeof path, "%s/search-regions-t4.gp", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    if (have_gnuplot()) assert_rendered(dir, "search-regions-t4");
    const char *bad[][2] = {{"search --regions --prompt 512", "--prompts"},
                            {"search --regions --sequences 4", "--batches"},
                            {"search --models OPT-1.3B --hw t4 --prompt 64 --gen 4", "--regions"},
                            {"search --regions --prompts 512,,1024", "empty"},
                            {"search --regions --batches 0", "--batches"},
                            {"search --regions --validate", "separate"},
                            {"search --regions --models NoSuchModel", "NoSuchModel"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = run_cmd(out, sizeof out, "%s %s --plots %s", kvpr_bin(), bad[i][0], dir);
        if (rc != 2 || !strstr(out, bad[i][1]) || strncmp(out, "kvpr: ", 6))
            fail_msg("kvpr %s: exit %d, wanted 2 and a line with '%s':\n%s", bad[i][0], rc, bad[i][1], out);
    }
}

void group_search(tcount *c) {
    const struct CMUnitTest t[] = {
        cmocka_unit_test(t_mip_vs_enumeration), cmocka_unit_test(t_search_vs_brute),    cmocka_unit_test(t_constraints),
        cmocka_unit_test(t_ties_deterministic), cmocka_unit_test(t_infeasible_and_bad), cmocka_unit_test(t_policies_and_flexgen),
        cmocka_unit_test(t_search_cmd),         cmocka_unit_test(t_regions),            cmocka_unit_test(t_regions_cmd),
    };
    RUN_GROUP(c, "search", t);
}
