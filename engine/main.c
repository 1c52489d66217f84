/* kvpr-engine: runs plans on a GPU (or the host backend), measures the link and the kernels,
 * and checks every kernel against its CPU reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../cli/cli.h"
#include "../hwmodel/cost.h"
#include "../sched/sched.h"
#include "budget.h"
#include "cmds.h"
#include "exec.h"

#include <link.h>

static int fail(kv_status st) { return cli_fail(st); }

static const eng_backend_type *pick(const char *name, kv_status *st) {
    *st = KV_OK;
    if (!strcmp(name, "host")) return &eng_host_backend;
    if (!strcmp(name, "cuda")) {
        if (!eng_cuda_backend()) *st = kv_errorf(KV_EDEVICE, "this kvpr-engine was built without CUDA (no nvcc at build time)");
        return eng_cuda_backend();
    }
    *st = kv_errorf(KV_EINVAL, "unknown backend '%s' (cuda, host)", name);
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: kvpr-engine COMMAND [--backend cuda|host] [options]\n"
               "  info                                   the device\n"
               "  version                                version, how the binary is linked, whether it has CUDA\n"
               "  selftest [--quick] [--kernels]         kernels against CPU references; kvpr against offload (not with --kernels)\n"
               "  run --model M --batch B --prompt P --gen G [--policy P | --policies P,P..] [--split L | --splits L,L..]\n"
               "      [--mode M] [--nb N] [--layers N] [--prefetch D] [--keep-act] [--pageable] [--hw PROFILE]\n"
               "      [--db FILE | --no-db] [--json] [--estimate PROFILE]\n"
               "                                         execute decode plans on one set-up, spans into results.db\n"
               "  bench [--size full|small|ci|tiny] [--db FILE] [--csv FILE] [--estimate PROFILE]\n"
               "                                         copy bandwidth, GEMM and attention times\n"
               "The default backend is cuda; 'host' runs the same executor on CPU threads.\n");
}

/* ---- run ---------------------------------------------------------------------------------- */

static const char *run_help =
    "usage: kvpr-engine run --model M --batch B --prompt P --gen G [--policy offload|kvpr|recompute|gpu] [--split L]\n"
    "       [--policies P,P,...] [--splits L,L,...] [--mode latency|throughput --nb N] [--layers N] [--prefetch D]\n"
    "       [--keep-act] [--pageable] [--hw PROFILE] [--db FILE | --no-db] [--json] [--estimate PROFILE] [--backend cuda|host]\n"
    "       [--compress kv|weights|both]\n"
    "  --compress            4-bit group-wise K/V cache and stored activations (kv), streamed weights, or both\n"
    "  --policies, --splits  every policy (kvpr once per split) on one set-up: the same weights, cache and inputs\n"
    "  --splits              tokens, or fractions of the prompt (1/4, 3/4, 1)\n"
    "  --hw                  the profile of this machine: labels the runs, and without a split the pipelined scheduler picks l on it\n"
    "  --estimate PROFILE    print how long these runs would take on PROFILE (simulated decode, assumed set-up rates) and exit\n"
    "  KVPR_DB_TIMEOUT_MS    how long to wait for a locked database (default 5000)\n";

#define MAXPLANS 64

/* "offload,kvpr" -> policies */
static kv_status parse_policies(const char *s, kv_policy *out, int *n) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == MAXPLANS) return kv_errorf(KV_EINVAL, "--policies: at most %d", MAXPLANS);
        kv_status st = kv_policy_parse(t, &out[*n]);
        if (st) return st;
        for (int i = 0; i < *n; i++)
            if (out[i] == out[*n]) return kv_errorf(KV_EINVAL, "--policies: '%s' is listed twice", t);
        (*n)++;
    }
    return *n ? KV_OK : kv_errorf(KV_EINVAL, "--policies: empty list");
}

/* "0,256,1/2" -> splits, fractions of the prompt rounded down */
static kv_status parse_splits(const char *s, int prompt, int *out, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == MAXPLANS) return kv_errorf(KV_EINVAL, "--splits: at most %d", MAXPLANS);
        char *slash = strchr(t, '/');
        int v;
        if (slash) {
            int a, b;
            *slash = 0;
            kv_status st = cli_int("--splits (numerator)", t, 0, 1 << 20, &a);
            if (!st) st = cli_int("--splits (denominator)", slash + 1, 1, 1 << 20, &b);
            if (st) return st;
            if (a > b) return kv_errorf(KV_EINVAL, "--splits: %d/%d is more than the whole prompt", a, b);
            v = (int)((long)prompt * a / b);
        } else {
            kv_status st = cli_int("--splits", t, 0, 1 << 25, &v);
            if (st) return st;
        }
        for (int i = 0; i < *n; i++)
            if (out[i] == v) return kv_errorf(KV_EINVAL, "--splits: l = %d is listed twice", v);
        out[(*n)++] = v;
    }
    return *n ? KV_OK : kv_errorf(KV_EINVAL, "--splits: empty list");
}

/* Results go to the database; if writing fails after a run was measured, that run and the rest go
 * to a side database instead, which `kvpr merge` adds later: a measured run is never thrown away. */
typedef struct {
    const char *path;
    kv_db *db, *side;
    char side_path[600], err[512];
    int kept;
} sink_t;

static kv_status sink_open(sink_t *k, const char *path) {
    memset(k, 0, sizeof *k);
    k->path = path;
    if (!path) return KV_OK;
    kv_status st = cli_db_open(path, &k->db);
    /* writable now (not locked, not read-only), checked before minutes of measuring: a write that
     * is rolled back */
    if (!st && !(st = db_exec(k->db, "BEGIN IMMEDIATE"))) {
        char why[512];
        st = db_exec(k->db, "CREATE TABLE kvpr_engine_write_check(x)");
        snprintf(why, sizeof why, "%s", kv_errmsg());
        kv_status rb = db_exec(k->db, "ROLLBACK");
        if (st) kv_errorf(st, "%s", why);
        else st = rb;
    }
    if (st) {
        db_close(k->db);
        k->db = NULL;
        return kv_errctx(st, "%s: not writable, nothing measured: ", path);
    }
    return KV_OK;
}

static kv_status sink_write(sink_t *k, const eng_result *r, const kv_model *m, const char *hw, const kv_plan *pl) {
    if (!k->path) return KV_OK;
    if (k->db && eng_write_db(k->db, r, m, hw, pl, NULL) == KV_OK) return KV_OK;
    if (k->db) {
        snprintf(k->err, sizeof k->err, "%s", kv_errmsg());
        db_close(k->db);
        k->db = NULL;
    }
    if (!k->side) {
        kv_status st;
        snprintf(k->side_path, sizeof k->side_path, "%s.unsaved-%ld.db", k->path, (long)getpid());
        if (cli_db_open(k->side_path, &k->side) != KV_OK) {
            const char *tmp = getenv("TMPDIR");
            snprintf(k->side_path, sizeof k->side_path, "%s/kvpr-engine-unsaved-%ld.db", tmp && *tmp ? tmp : "/tmp", (long)getpid());
            if ((st = cli_db_open(k->side_path, &k->side)))
                return kv_errorf(KV_EDB, "%s; the measured run could not be kept either (%s)", k->err, kv_errmsg());
        }
    }
    kv_status st = eng_write_db(k->side, r, m, hw, pl, NULL);
    if (st) return kv_errorf(KV_EDB, "%s; the measured run could not be kept either (%s)", k->err, kv_errmsg());
    k->kept++;
    return KV_OK;
}

/* 0, or the one-line failure of the sink (the runs themselves were measured and printed) */
static int sink_close(sink_t *k) {
    db_close(k->db);
    db_close(k->side);
    if (!k->kept) return 0;
    return cli_fail(kv_errorf(KV_EDB, "%s; %d measured run%s kept in %s (add them with: kvpr merge %s %s)", k->err, k->kept,
                              k->kept > 1 ? "s" : "", k->side_path, k->path, k->side_path));
}

static void print_run(const eng_backend_type *bt, const kv_model *m, const kv_plan *pl, const eng_result *r, double setup_s, int js) {
    double busy[KV_OP_COUNT] = {0};
    int cnt[KV_OP_COUNT] = {0};
    for (int i = 0; i < r->nspans; i++)
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (!strcmp(r->spans[i].op, kv_op_name((kv_op)k))) busy[k] += (double)(r->spans[i].end_ps - r->spans[i].start_ps) * 1e-12, cnt[k]++;
    int T = kv_plan_steps(pl);
    if (js) {
        printf("{\"device\": \"%s\", \"backend\": \"%s\", \"model\": \"%s\", \"policy\": \"%s\", \"split\": %d, \"compress\": \"%s\", \"mode\": \"%s\", "
               "\"batch\": %d, \"nb\": %d, \"prompt\": %d, \"gen\": %d, \"layers\": %d, \"prefill_s\": %.9g, \"decode_s\": %.9g, "
               "\"step_s\": %.9g, \"setup_s\": %.6g, \"warm_s\": %.6g, \"spans\": %d, \"ops\": {",
               r->device, bt->name, m->name, kv_policy_name(pl->policy), pl->policy == KV_POL_KVPR ? pl->split : kv_plan_split_at(pl, 0),
               kv_compress_name(pl->compress), kv_mode_name(pl->mode), pl->batch, pl->nb, pl->prompt, pl->gen, kv_plan_layers(pl, m), r->prefill_s, r->decode_s,
               r->decode_s / T, setup_s, r->warm_s, r->nspans);
        int first = 1;
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (cnt[k]) printf("%s\"%s\": {\"count\": %d, \"mean_s\": %.9g}", first ? "" : ", ", kv_op_name((kv_op)k), cnt[k], busy[k] / cnt[k]), first = 0;
        printf("}}\n");
    } else {
        printf("  %-9s", kv_policy_name(pl->policy));
        if (pl->policy == KV_POL_KVPR) printf(" l = %-6d", pl->split);
        else printf("           ");
        if (r->prefill_s > 0) printf(" prefill %.4f s,", r->prefill_s);
        printf(" decode %.4f s, %.3f ms per step   ", r->decode_s, 1e3 * r->decode_s / T);
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (cnt[k]) printf("%s %.3f ms x %d  ", kv_op_name((kv_op)k), 1e3 * busy[k] / cnt[k], cnt[k]);
        printf("\n");
    }
    fflush(stdout);
}

static int eng_cmd_run(const eng_backend_type *bt, int argc, char **argv) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = "", *dbpath = DB_DEFAULT_PATH, *trace = NULL, *pols = NULL, *spl = NULL, *estp = NULL;
    int js = 0;
    kv_status st;
    /* --backend was read by main, the lists and --estimate are this command's; the rest are the
     * plan options every command shares */
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!rest) return fail(kv_errorf(KV_ENOMEM, "out of memory"));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--backend")) i++;
        else if (i + 1 < argc && !strcmp(argv[i], "--policies")) pols = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--splits")) spl = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--estimate")) estp = argv[++i];
        else rest[n++] = argv[i];
    }
    rest[n] = NULL;
    int rc = cli_parse_plan(n, rest, &pl, &model, &hw, &trace, &dbpath, &js, run_help);
    free(rest);
    if (rc >= 0) return rc;
    if (trace) return fail(kv_errorf(KV_EINVAL, "run: --trace is for the simulator; engine timelines go to --db"));
    if (!*hw) hw = NULL;
    kv_model m;
    if ((st = kv_model_resolve(model, &m))) return fail(st);
    kv_policy pv[MAXPLANS];
    int npol = 1, sv[MAXPLANS], nspl = 0;
    pv[0] = pl.policy;
    if (pols && (st = parse_policies(pols, pv, &npol))) return fail(st);
    if (spl && (st = parse_splits(spl, pl.prompt, sv, &nspl))) return fail(st);
    if (!spl && pl.split >= 0) sv[0] = pl.split, nspl = 1;
    char note[200] = "";
    int has_kvpr = 0;
    for (int i = 0; i < npol; i++) has_kvpr |= pv[i] == KV_POL_KVPR;
    if (has_kvpr && !nspl) {
        /* the split the pipelined scheduler picks on the named profile; without one, 3/4 of the prompt */
        hw_profile prof;
        sched_result sr;
        kv_plan q = pl;
        q.policy = KV_POL_KVPR;
        if (hw && hw_profile_resolve(hw, &prof) == KV_OK && sched_plan(SCHED_PIPELINED, &m, &prof, &q, NULL, &sr) == KV_OK) {
            sv[0] = sr.split;
            sched_result_free(&sr);
        } else {
            sv[0] = pl.prompt * 3 / 4;
            /* said after the runs: an error must stay one line */
            snprintf(note, sizeof note, "kvpr-engine: no --split and no usable --hw profile: used l = %d (3/4 of the prompt)\n", sv[0]);
        }
        nspl = 1;
    }
    kv_plan plans[MAXPLANS];
    int np = 0;
    for (int i = 0; i < npol; i++)
        for (int j = 0; j < (pv[i] == KV_POL_KVPR ? nspl : 1); j++) {
            if (np == MAXPLANS) return fail(kv_errorf(KV_EINVAL, "run: at most %d plans (policies x splits)", MAXPLANS));
            plans[np] = pl, plans[np].policy = pv[i], plans[np].split = pv[i] == KV_POL_KVPR ? sv[j] : -1;
            np++;
        }
    if (estp) {
        hw_profile prof;
        double setup, total;
        if ((st = hw_profile_resolve(estp, &prof)) || (st = eng_budget_run(&m, plans, np, &prof, &setup, &total))) return fail(st);
        printf("run %s batch %d x %d, prompt %d, gen %d, %d layers, %s: %d plan%s, set-up %.1f s, %.1f s in all predicted on %s\n", m.name,
               pl.batch, pl.nb, pl.prompt, pl.gen, kv_plan_layers(&pl, &m), kv_mode_name(pl.mode), np, np > 1 ? "s" : "", setup, total,
               prof.name);
        return 0;
    }
    sink_t sink;
    if ((st = sink_open(&sink, dbpath))) return fail(st);
    eng_session *s;
    if ((st = eng_session_open(bt, 0, &m, plans, np, 1, &s))) {
        sink_close(&sink);
        return fail(st);
    }
    double setup = eng_session_setup_s(s);
    if (!js)
        printf("%s on %s (%s backend): %s mode, %d x %d sequences, prompt %d, gen %d, %d of %d layers; set-up %.2f s\n", m.name,
               eng_session_device(s), bt->name, kv_mode_name(pl.mode), pl.batch, pl.nb, pl.prompt, pl.gen, kv_plan_layers(&pl, &m),
               m.n_layers, setup);
    for (int i = 0; i < np && !st; i++) {
        eng_result r;
        if ((st = eng_session_run(s, &plans[i], &r))) break;
        if (!js && i == 0)
            printf("  memory %.2f GiB device, %.2f GiB %s host\n", r.dev_bytes / 1073741824.0, r.host_bytes / 1073741824.0,
                   pl.pageable ? "pageable" : "pinned");
        print_run(bt, &m, &plans[i], &r, setup, js);
        st = sink_write(&sink, &r, &m, hw ? hw : r.device, &plans[i]);
        eng_result_free(&r);
    }
    eng_session_close(s);
    if (st) {
        sink_close(&sink);
        return fail(st);
    }
    int src = sink_close(&sink);
    if (!src) fputs(note, stderr);
    return src;
}

/* ---- info, version -------------------------------------------------------------------------- */

/* Whether the project's libraries and the CUDA runtime are inside this binary (the Makefile's
 * portable link) or loaded from shared objects, read off what is actually loaded. */
static int shared_lib(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    static const char *ours[] = {"libjansson", "libsqlite3", "libglpk", "libgsl", "libopenblas", "libcudart.so"};
    for (size_t i = 0; info->dlpi_name && i < sizeof ours / sizeof ours[0]; i++)
        if (strstr(info->dlpi_name, ours[i])) *(int *)data = 1;
    return 0;
}

static int eng_cmd_info(const eng_backend_type *bt) {
    eng_backend *b;
    kv_status st = bt->open(&b, 0, 1);
    if (st) return fail(st);
    eng_devinfo d;
    st = bt->info(b, &d);
    bt->close(b);
    if (st) return fail(st);
    printf("%s backend: %s, %.2f GiB free of %.2f GiB\n", bt->name, d.name, d.free_bytes / 1073741824.0, d.total_bytes / 1073741824.0);
    return 0;
}

int main(int argc, char **argv) {
    cli_prog = "kvpr-engine";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *c = argv[1];
    /* --help and -h anywhere after the command: usage, before any device is touched */
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (!strcmp(c, "run")) fputs(run_help, stdout);
            else usage(stdout);
            return 0;
        }
    if (!strcmp(c, "version") || !strcmp(c, "--version")) {
        int dyn = 0;
        dl_iterate_phdr(shared_lib, &dyn);
        printf("kvpr-engine %s (link: %s, cuda: %s)\n", kvpr_version(), dyn ? "dynamic" : "portable", eng_cuda_backend() ? "yes" : "no");
        return 0;
    }
    const char *be = "cuda";
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--backend")) be = argv[i + 1];
    kv_status st;
    const eng_backend_type *bt = pick(be, &st);
    /* (selftest says itself that it skipped the GPU part) */
    int needs_dev = !strcmp(c, "run") || !strcmp(c, "bench") || !strcmp(c, "info");
    if (!st && bt != &eng_host_backend && needs_dev) {
        /* a machine without a GPU should hear about the host backend, not only that CUDA failed */
        eng_backend *b;
        if (!(st = bt->open(&b, 0, 1))) bt->close(b);
    }
    if (st && !strcmp(be, "cuda") && needs_dev) {
        fprintf(stderr, "%s: %s (no usable GPU: --backend host runs the same executor on CPU threads)\n", cli_prog, kv_errmsg());
        return 1;
    }
    if (st) return fail(st);
    if (!strcmp(c, "selftest")) return eng_cmd_selftest(bt, argc - 1, argv + 1);
    if (!strcmp(c, "run")) return eng_cmd_run(bt, argc - 1, argv + 1);
    if (!strcmp(c, "bench")) return eng_cmd_bench(bt, argc - 1, argv + 1);
    if (!strcmp(c, "info")) return eng_cmd_info(bt);
    return fail(kv_errorf(KV_EINVAL, "unknown command '%s' (info, version, selftest, run, bench)", c));
}
