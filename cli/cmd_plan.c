/* kvpr plan: choose the split with a scheduler and say what it predicts. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/kv_io.h"
#include "../sched/sched.h"
#include "../sim/sim.h"
#include "cli.h"
#include "cmd_search.h"

static const char *plan_help =
    "usage: kvpr plan --model M --hw H --batch B --prompt P --gen G [options]\n"
    "  --scheduler paper|pipelined|dynamic   (default pipelined)\n"
    "  --mode latency|throughput --nb N      as for 'kvpr sim' (--batch is the GPU batch)\n"
    "  --prefetch D --keep-act --pageable    as for 'kvpr sim'\n"
    "  --compress kv|weights|both            as for 'kvpr sim': the split sees the packed byte ratio\n"
    "  --write-lp FILE                        write the (first) LP in CPLEX LP format; 'glpsol --lp FILE' solves it\n"
    "  --json                                 one JSON object\n"
    "The predicted times are the simulator's (kvpr sim of the chosen split and of offloading); with\n"
    "--scheduler paper the paper's formula T(l) is printed beside them, labelled as such.\n"
    "Options that only 'kvpr sim' uses (--split, --policy other than kvpr, --trace, --db) are errors here.\n";

/* Simulated decode time of pl (split fixed or per step); *out 0 where it cannot be simulated. */
static kv_status simulate(const kv_model *m, const hw_profile *p, const kv_plan *pl, double *out) {
    sim_ctx *s = sim_new();
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    sim_result r;
    kv_status st = sim_run(s, m, p, pl, &r);
    *out = st ? 0 : r.decode_s;
    sim_free(s);
    return st;
}

/* GLPK writes the LP by name and does not report every failed write: a complete CPLEX LP file
 * ends with its "End" line, so a file cut short by a full disk is caught here. */
static kv_status lp_complete(const char *tmp, const char *target) {
    char *text;
    size_t n;
    kv_status st = kv_io_read_all(tmp, (size_t)1 << 30, &text, &n);
    if (st) return kv_errorf(KV_EIO, "cannot write %s: the LP file cannot be read back", target);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ')) n--;
    int ok = n >= 3 && !strncmp(text + n - 3, "End", 3);
    free(text);
    return ok ? KV_OK : kv_errorf(KV_EIO, "cannot write %s: GLPK left it incomplete (is the disk full?)", target);
}

int cmd_plan(int argc, char **argv) {
    /* --search: policy, placement, batch and split chosen together (kvpr search) */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--search")) return cmd_search(argc, argv);
    sched_kind k = SCHED_PIPELINED;
    const char *lpf = NULL;
    kv_status st;
    /* take out the options of this command, hand the rest to the shared plan parser */
    char **rest = malloc((size_t)(argc + 1) * sizeof *rest);
    if (!rest) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "--scheduler") || !strcmp(argv[i], "--write-lp")) && i + 1 >= argc) {
            free(rest);
            return cli_usage("%s needs a value", argv[i]);
        }
        if (!strcmp(argv[i], "--scheduler")) {
            if ((st = sched_parse(argv[++i], &k))) {
                free(rest);
                return cli_fail(st);
            }
        } else if (!strcmp(argv[i], "--write-lp")) lpf = argv[++i];
        else rest[n++] = argv[i];
    }
    rest[n] = NULL;
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = NULL, *trace = NULL, *dbpath = NULL;
    int js = 0;
    /* plan chooses the split and stores nothing: the options of a single simulated run are errors */
    static const char *const unused[] = {"split", "trace", "db", "no-db", NULL};
    int rc = cli_parse_plan_for("plan", unused, n, rest, &pl, &model, &hw, &trace, &dbpath, &js, plan_help);
    free(rest);
    if (rc >= 0) return rc;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--policy") && strcmp(argv[i + 1], "kvpr"))
            return cli_usage("--policy %s is not used by 'plan' (it chooses the kvpr split; see 'kvpr sim')", argv[i + 1]);
    kv_model m;
    hw_profile p;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    /* the LP goes to a temporary file next to FILE, renamed into place once complete */
    kv_afile *lp = NULL;
    if (lpf && (st = kv_afile_open(lpf, &lp))) return cli_fail(st);
    sched_result r;
    if ((st = sched_plan(k, &m, &p, &pl, lp ? kv_afile_tmp(lp) : NULL, &r))) {
        kv_afile_abort(lp);
        /* GLPK's message names the temporary file: name the one the user asked for */
        if (lp && st == KV_EIO) st = kv_errorf(KV_EIO, "cannot write %s: GLPK failed to write the LP (is the disk full?)", lpf);
        return cli_fail(st);
    }
    if (lp) {
        if ((st = lp_complete(kv_afile_tmp(lp), lpf))) kv_afile_abort(lp);
        else st = kv_afile_commit(lp); /* frees lp, also when it fails */
        if (st) {
            sched_result_free(&r);
            return cli_fail(st);
        }
    }
    /* the numbers shown are the simulator's: a scheduler's own model can leave costs out (the paper's
     * T(l) has no weight streaming and assumes multi-head attention) */
    kv_plan sp = pl, op = pl;
    sp.policy = KV_POL_KVPR, sp.split = r.split, sp.split_steps = r.splits;
    op.policy = KV_POL_OFFLOAD, op.split = -1, op.split_steps = NULL;
    double sim_s = 0, sim_off = 0;
    if ((st = simulate(&m, &p, &sp, &sim_s)) || (st = simulate(&m, &p, &op, &sim_off))) {
        sched_result_free(&r);
        return cli_fail(st);
    }
    double speed = sim_s > 0 ? sim_off / sim_s : 0;
    cli_warn_context(&m, pl.prompt + pl.gen); /* after the plan: an error stays one line */
    if (js) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:i,s:f,s:f,s:{s:i,s:i,s:i}}", "scheduler",
                              sched_name(k), "model", m.name, "hw", p.name, "mode", kv_mode_name(pl.mode), "batch",
                              pl.batch, "nb", pl.nb, "prompt", pl.prompt, "gen", pl.gen, "split", r.split, "lmax", r.lmax,
                              "predicted_s", sim_s, "offload_s", sim_off, "speedup", speed,
                              "scheduler_predicted_s", r.predicted_s, "scheduler_offload_s", r.offload_s, "kept_tokens",
                              r.kept_tokens, "act_cpu_bytes", r.act_cpu_bytes, "solve_us", r.solve_us, "lp", "rows",
                              r.rows, "cols", r.cols, "integer", r.ints);
        if (k == SCHED_PAPER) json_object_set_new(o, "closed_form", json_real(r.closed_form));
        if (pl.compress) json_object_set_new(o, "compress", json_string(kv_compress_name(pl.compress)));
        if (r.splits) {
            json_t *a = json_array();
            for (int i = 0; i < r.nsteps; i++) json_array_append_new(a, json_integer(r.splits[i]));
            json_object_set_new(o, "splits", a);
        }
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(o);
    } else {
        printf("%s on %s, %s mode, batch %d x %d, prompt %d, gen %d: scheduler %s\n", m.name, p.name,
               kv_mode_name(pl.mode), pl.batch, pl.nb, pl.prompt, pl.gen, sched_name(k));
        if (pl.compress) printf("  compression  4-bit, groups of 64 (%s): the split and both predictions use the packed bytes\n", kv_compress_name(pl.compress));
        if (r.splits) {
            printf("  split        per step: l = %d at step 0", r.splits[0]);
            for (int i = 1; i < r.nsteps; i++)
                if (r.splits[i] != r.splits[i - 1]) printf(", %d from step %d", r.splits[i], i);
            printf(" (at most %d allowed)\n", r.lmax);
        } else
            printf("  split        l = %d (at most %d allowed; l/prompt = %.3f)\n", r.split, r.lmax,
                   (double)r.split / pl.prompt);
        if (k == SCHED_PAPER)
            printf("  closed form  l* = %.2f for s = %d, capped at the prompt\n", r.closed_form, pl.prompt + pl.gen);
        printf("  predicted    decode %.4f s, offloading %.4f s: speed-up %.3fx (%.1f %% %s; simulated)\n", sim_s, sim_off,
               speed, 100 * fabs(1 - sim_s / sim_off), sim_s <= sim_off ? "lower" : "higher");
        if (k == SCHED_PAPER)
            printf("  paper model  decode %.4f s, offloading %.4f s: speed-up %.3fx (the paper's formula T(l), not the simulator)\n",
                   r.predicted_s, r.offload_s, r.predicted_s > 0 ? r.offload_s / r.predicted_s : 0);
        printf("  activations  tokens [0, %d) of each sequence kept on the CPU: %.2f GiB\n", r.kept_tokens,
               r.act_cpu_bytes / 1073741824.0);
        printf("  solver       GLPK, %d rows x %d columns (%d integer), %.0f us\n", r.rows, r.cols, r.ints, r.solve_us);
    }
    sched_result_free(&r);
    return 0;
}
