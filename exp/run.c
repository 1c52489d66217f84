/* exp run: executes an experiment's runs into results.db: in parallel worker processes that
 * each write their own database file (merged at the end, as shards are), or one shard of the
 * sweep for a cluster's job array. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../core/par.h"
#include "../sim/sim.h"
#include <sqlite3.h>
#include "exp.h"

int exp_match(const exp_spec *s, const exp_run *r, const exp_filters *f) {
    for (int i = 0; i < f->n; i++) {
        const char *k = f->f[i].key, *v = f->f[i].val;
        char num[32];
        const char *have = NULL;
        if (!strcmp(k, "model")) have = s->models[r->model];
        else if (!strcmp(k, "hw")) have = s->hws[r->hw];
        else if (!strcmp(k, "mode")) have = kv_mode_name(s->modes[r->mode]);
        else if (!strcmp(k, "policy")) have = kv_policy_name(r->pol);
        else if (!strcmp(k, "scheduler")) have = r->sched >= 0 ? sched_name((sched_kind)r->sched) : "-";
        else if (!strcmp(k, "compress")) have = kv_compress_name(s->comps[r->comp]);
        else {
            int x = !strcmp(k, "batch") ? s->batch[r->batch] : !strcmp(k, "prompt") ? s->prompt[r->prompt] : s->gen[r->gen];
            snprintf(num, sizeof num, "%d", x);
            have = num;
        }
        if (strcasecmp(have, v) != 0) return 0;
    }
    return 1;
}

/* While run_list runs a spec's runs, each model and profile is resolved once (a profile is a
 * JSON file: reading it was an eighth of a shard's time), not once per run. */
static struct plan_cache {
    const exp_spec *s;
    kv_model *m;
    hw_profile *p;
    uint8_t *have_m, *have_p;
} *g_cache;

static void cache_open(struct plan_cache *c, const exp_spec *s) {
    memset(c, 0, sizeof *c);
    c->s = s;
    c->m = calloc((size_t)s->nmodels + 1, sizeof *c->m);
    c->p = calloc((size_t)s->nhws + 1, sizeof *c->p);
    c->have_m = calloc((size_t)s->nmodels + 1, 1);
    c->have_p = calloc((size_t)s->nhws + 1, 1);
    g_cache = c->m && c->p && c->have_m && c->have_p ? c : NULL;
}

static void cache_close(struct plan_cache *c) {
    g_cache = NULL;
    free(c->m), free(c->p), free(c->have_m), free(c->have_p);
}

static kv_status resolve(const exp_spec *s, const exp_run *r, kv_model *m, hw_profile *p) {
    struct plan_cache *c = g_cache && g_cache->s == s ? g_cache : NULL;
    kv_status st;
    if (c && c->have_m[r->model]) *m = c->m[r->model];
    else if ((st = kv_model_resolve(s->models[r->model], m))) return st;
    else if (c) c->m[r->model] = *m, c->have_m[r->model] = 1;
    if (c && c->have_p[r->hw]) *p = c->p[r->hw];
    else if ((st = hw_profile_resolve(s->hws[r->hw], p))) return st;
    else if (c) c->p[r->hw] = *p, c->have_p[r->hw] = 1;
    return KV_OK;
}

void exp_plan_fields(const exp_spec *s, const exp_run *r, kv_plan *pl) {
    kv_plan_defaults(pl);
    pl->mode = s->modes[r->mode];
    pl->policy = r->pol;
    pl->batch = s->batch[r->batch];
    pl->nb = pl->mode == KV_MODE_THROUGHPUT ? s->nb : 1;
    pl->prompt = s->prompt[r->prompt];
    pl->gen = s->gen[r->gen];
    pl->prefetch = s->prefetch;
    pl->keep_act = s->keep_act;
    pl->compress = s->comps[r->comp];
}

kv_status exp_plan(const exp_spec *s, const exp_run *r, kv_model *m, hw_profile *p, kv_plan *pl, int **steps) {
    kv_status st;
    *steps = NULL;
    if ((st = resolve(s, r, m, p))) return st;
    exp_plan_fields(s, r, pl);
    if (r->pol != KV_POL_KVPR) return KV_OK;
    sched_result sr;
    if ((st = sched_plan((sched_kind)r->sched, m, p, pl, NULL, &sr))) return st;
    pl->split = sr.split;
    pl->split_steps = *steps = sr.splits; /* ownership moves to the caller */
    return KV_OK;
}

/* The sweep figure's data, stored with the run it belongs to (metrics sweep_l_L: decode seconds
 * at split L, every L from 0 to the largest that fits), so that 'kvpr report' draws it from
 * results.db instead of simulating every split again. The first scheduler's kvpr run of each
 * configuration the sweep filter matches carries it. With 'sweep_splits = N', every other
 * configuration's first-scheduler kvpr run carries every N-th split (0, N, 2N, ... up to the
 * largest that fits). Returns the step, 0 for none. */
static int sweep_carrier(const exp_spec *s, const exp_run *r) {
    if (r->pol != KV_POL_KVPR || s->nscheds <= 0 || r->sched != (int)s->scheds[0]) return 0;
    if (s->has_sweep && exp_match(s, r, &s->sweep)) return 1;
    return s->sweep_splits > 0 ? s->sweep_splits : 0;
}

/* Processes a large sweep is spread over (exp_execute sets it from --jobs). */
static int g_sweep_jobs = 1;
/* Splits per piece of a parallel sweep, and the fewest splits worth spreading. */
#define SWEEP_PIECE 32
#define SWEEP_PAR_MIN 128

typedef struct {
    const kv_model *m;
    const hw_profile *p;
    kv_plan pl;
    int step, n;
    double *ts;   /* shared: decode seconds of the k-th split (k * step) */
    int *failed;  /* shared: set by the first failure, which alone writes err */
    char *err;    /* shared: that failure's message */
} sweep_job;

static void sweep_fini(void *local) { sim_free(local); }

static int sweep_piece(void *ctx, long i, void **local) {
    sweep_job *j = ctx;
    if (!*local) {
        if (!(*local = sim_new())) return 1;
        sim_stream(*local, SIM_STREAM_LARGE, 0);
    }
    kv_plan pl = j->pl;
    for (long k = i * SWEEP_PIECE; k < j->n && k < (i + 1) * SWEEP_PIECE; k++) {
        sim_result sr;
        pl.split = (int)k * j->step;
        if (sim_run(*local, j->m, j->p, &pl, &sr)) {
            if (!__atomic_exchange_n(j->failed, 1, __ATOMIC_ACQ_REL)) snprintf(j->err, 240, "%s", kv_errmsg());
            return 0;
        }
        j->ts[k] = sr.decode_s;
    }
    return 0;
}

/* sx: the worker's context (reused: a sweep allocates nothing after its first run, and consecutive
 * splits re-cost one kept graph). A figure's sweep (spread) of SWEEP_PAR_MIN splits or more is
 * simulated by g_sweep_jobs processes (results are the same simulations, in the same order in the
 * database). */
static kv_status store_sweep(kv_db *db, sim_ctx *sx, const kv_model *m, const hw_profile *p, const kv_plan *run_pl, int64_t id, int step,
                             int spread) {
    kv_plan pl = *run_pl;
    pl.split_steps = NULL;
    int lmax = sched_lmax(m, p, &pl);
    if (lmax < 0) return KV_OK;
    sim_stream(sx, SIM_STREAM_LARGE, 0);
    int n = lmax / step + 1;
    size_t bytes = sizeof(double) * (size_t)n + sizeof(int) + 240;
    double *ts = spread && n >= SWEEP_PAR_MIN && g_sweep_jobs > 1 ? kv_par_map(bytes) : NULL;
    kv_status st = KV_OK;
    if (ts) {
        sweep_job j = {m, p, pl, step, n, ts, (int *)(ts + n), (char *)(ts + n) + sizeof(int)};
        st = kv_par_for((n + SWEEP_PIECE - 1) / SWEEP_PIECE, g_sweep_jobs, sweep_piece, sweep_fini, &j);
        if (!st && *j.failed) st = kv_errorf(KV_EINVAL, "%s", j.err);
    }
    for (int k = 0; k < n && !st; k++) {
        sim_result sr;
        pl.split = k * step;
        char name[32];
        snprintf(name, sizeof name, "sweep_l_%d", pl.split);
        if (ts) st = db_metric_add(db, id, name, ts[k], "s");
        else if (!(st = sim_run(sx, m, p, &pl, &sr))) st = db_metric_add(db, id, name, sr.decode_s, "s");
    }
    kv_par_unmap(ts, bytes);
    return st;
}

static kv_status run_one(const exp_spec *s, const exp_run *r, sim_ctx *sx, kv_db *db) {
    kv_model m;
    hw_profile p;
    kv_plan pl;
    int *steps;
    char key[512];
    exp_run_key(s, r, key, sizeof key);
    kv_status st = exp_plan(s, r, &m, &p, &pl, &steps);
    sim_result res;
    /* a run whose spans are stored keeps its timeline; the others stream their graph */
    int spans = s->has_timeline && exp_match(s, r, &s->timeline);
    sim_stream(sx, spans ? SIM_STREAM_OFF : SIM_STREAM_LARGE, 0);
    if (!st) st = sim_run(sx, &m, &p, &pl, &res);
    if (st == KV_ENOFIT) {
        /* recorded, so that a report over merged shards can say which configurations do not fit */
        char plan[1200];
        snprintf(plan, sizeof plan, "{\"nofit\": \"%.1000s\"}", kv_errmsg());
        for (char *c = plan + 11; *c; c++)
            if (*c == '\\') *c = '/';
        db_run_info in = {.kind = "sim", .model = s->models[r->model], .hardware = s->hws[r->hw], .workload = "{}",
                          .plan = plan, .run_key = key};
        int64_t id;
        free(steps);
        if ((st = db_run_begin(db, &in, &id)) || (st = db_run_metric(db, id, "fits", 0, "")) || (st = db_run_commit(db)))
            return st;
        return KV_ENOFIT;
    }
    if (!st) {
        int64_t id = -1;
        st = sim_write_db(sx, db, &m, &p, &pl, &res, key, spans, &id);
        /* after the run's own commit: a sweep cut short leaves the run whole, and the report
         * then simulates the sweep itself */
        int step = sweep_carrier(s, r);
        /* a figure's sweep (one or two a file) is spread over the workers; 'sweep_splits' gives
         * every configuration one, which keep the workers busy as they are */
        if (!st && id >= 0 && step > 0) st = store_sweep(db, sx, &m, &p, &pl, id, step, s->has_sweep && exp_match(s, r, &s->sweep));
    }
    free(steps);
    if (st) return kv_errctx(st, "%s: ", key);
    return KV_OK;
}

static void bar(int done, int total) {
    int w = 40, k = total ? done * w / total : w;
    fprintf(stderr, "\r  [");
    for (int i = 0; i < w; i++) fputc(i < k ? '=' : i == k ? '>' : ' ', stderr);
    fprintf(stderr, "] %d/%d runs", done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Runs the selected runs (indices sel[0..n)) in this process into db; reports each finished run
 * as a byte on fd (or -1). */
static kv_status run_list(const exp_spec *s, const exp_run *runs, const int *sel, int n, kv_db *db, int fd, int *ran, int *nofit) {
    sim_ctx *sx = sim_new();
    if (!sx) return kv_errorf(KV_ENOMEM, "out of memory");
    kv_status st = KV_OK;
    struct plan_cache pc;
    int own = !g_cache || g_cache->s != s; /* a caller's cache serves its whole list */
    if (own) cache_open(&pc, s);
    for (int i = 0; i < n; i++) {
        st = run_one(s, &runs[sel[i]], sx, db);
        if (st == KV_ENOFIT) (*nofit)++, st = KV_OK;
        else if (!st) (*ran)++;
        if (st) break;
        if (fd >= 0 && write(fd, "x", 1) != 1) break;
    }
    if (own) cache_close(&pc);
    sim_free(sx);
    return st;
}

static void unlink_db(const char *path) {
    char p[1024];
    unlink(path);
    snprintf(p, sizeof p, "%.1000s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%.1000s-shm", path);
    unlink(p);
}

/* Worker databases are named DB.jobPID-W after the parent's pid. Those of a run that was killed
 * (its parent is gone) hold completed runs: merge them into db and remove them, so nothing is
 * lost and nothing is left behind. Those of a live run are left alone. */
static kv_status recover_jobs(kv_db *db, const char *dbpath) {
    const char *slash = strrchr(dbpath, '/'), *base = slash ? slash + 1 : dbpath;
    char dir[1024];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - dbpath) + (slash == dbpath) : 1, slash ? dbpath : ".");
    DIR *d = opendir(dir);
    if (!d) return KV_OK; /* nothing to recover where we cannot look */
    size_t bl = strlen(base);
    kv_status st = KV_OK;
    int merged = 0;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".job", 4) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(nm + bl + 4, &end, 10);
        if (errno || pid <= 0 || *end != '-') continue;
        char *end2;
        strtol(end + 1, &end2, 10);
        if (end2 == end + 1 || *end2) continue; /* not DB.jobPID-W itself (its -wal, -shm go with it) */
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[2100];
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        if ((st = db_merge(db, path))) {
            kv_errctx(st, "recovering runs of an interrupted 'kvpr run' (remove %s to skip them): ", path);
            break;
        }
        unlink_db(path);
        merged++;
    }
    closedir(d);
    if (merged) fprintf(stderr, "kvpr: merged the completed runs of %d worker database(s) left by an interrupted run into %s\n", merged, dbpath);
    return st;
}

/* Runs are dealt to shards (and to workers) in a fixed pseudo-random order, not by index: a
 * sweep's innermost loop is usually the policy, so "every N-th run" gave an even N shards of one
 * policy only (all offload, or all kvpr: unequal work). The order depends on the run's index
 * alone (splitmix64), so every machine deals the same shards; each shard gets its n / N runs,
 * and within a shard runs keep the experiment's order. */
static uint64_t deal_key(uint64_t i) {
    uint64_t z = i + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_deal(const void *a, const void *b) {
    uint64_t x = deal_key((uint64_t) * (const int *)a), y = deal_key((uint64_t) * (const int *)b);
    return x < y ? -1 : x > y ? 1 : *(const int *)a - *(const int *)b;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* idx[0..n) -> the k-th of m hands (k in [0, m)) into out, in idx's order; returns its size */
int exp_deal(const int *idx, int n, int k, int m, int *out) {
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order), c = 0;
    if (!order) return -1;
    memcpy(order, idx, (size_t)n * sizeof *order);
    qsort(order, (size_t)n, sizeof *order, cmp_deal);
    for (int j = k; j < n; j += m) out[c++] = order[j];
    free(order);
    qsort(out, (size_t)c, sizeof *out, cmp_int);
    return c;
}

/* Runs committed per transaction (core/db.h's db_batch): a commit per run was a WAL write and
 * sync per run, most of a --jobs 1 shard's time. A killed shard loses at most its open batch. */
#define EXP_DB_BATCH 256

kv_status exp_execute(const exp_spec *s, const exp_opts *o, int *ran, int *nofit) {
    if (s->ngpus) return exp_servers_execute(s, o->db, ran, nofit); /* several GPUs per host: exp/servers.c */
    exp_run *runs;
    int n, ms;
    kv_status st = db_timeout_from_env(30000, &ms);
    if (st || (st = exp_runs(s, &runs, &n))) return st;
    int *sel = malloc((size_t)(n ? n : 1) * sizeof *sel), ns = 0;
    int *part = malloc((size_t)(n ? n : 1) * sizeof *part);
    kv_db *db = NULL;
    if (!sel || !part) st = kv_errorf(KV_ENOMEM, "out of memory");
    /* the main database first: a locked or damaged one stops us before any work */
    if (!st) st = db_open(o->db, ms, &db);
    if (!st) st = recover_jobs(db, o->db);
    if (st) {
        db_close(db);
        free(runs), free(sel), free(part);
        return st;
    }
    for (int i = 0; i < n; i++) part[i] = i;
    if (o->nshard <= 1) memcpy(sel, part, (size_t)n * sizeof *sel), ns = n;
    else if ((ns = exp_deal(part, n, o->shard - 1, o->nshard, sel)) < 0) ns = 0, st = kv_errorf(KV_ENOMEM, "out of memory");
    if (st) {
        db_close(db);
        free(runs), free(sel), free(part);
        return st;
    }
    *ran = *nofit = 0;
    g_sweep_jobs = o->jobs < 1 ? 1 : o->jobs > 64 ? 64 : o->jobs;
    int jobs = o->jobs < 1 ? 1 : o->jobs > ns ? (ns ? ns : 1) : o->jobs;
    if (jobs == 1) {
        int done = 0;
        db_batch(db, EXP_DB_BATCH);
        struct plan_cache pc;
        cache_open(&pc, s);
        if (o->progress) bar(0, ns);
        for (int i = 0; i < ns && !st; i++) {
            st = run_list(s, runs, sel + i, 1, db, -1, ran, nofit);
            if (o->progress) bar(++done, ns);
        }
        cache_close(&pc);
        kv_status fs = db_flush(db); /* the last batch; what completed is kept even after an error */
        if (!st) st = fs;
        db_close(db);
        free(runs), free(sel), free(part);
        return st;
    }
    db_close(db); /* workers write their own files; the parent merges at the end */
    db = NULL;
    /* Workers: worker w takes its hand of the dealt runs and writes its own database, merged at the end. */
    int pfd[2];
    if (pipe(pfd)) {
        free(runs), free(sel), free(part);
        return kv_errorf(KV_EIO, "pipe failed");
    }
    pid_t pids[64];
    char paths[64][600];
    if (jobs > 64) jobs = 64;
    pid_t parent = getpid();
    for (int w = 0; w < jobs; w++) {
        int k = exp_deal(sel, ns, w, jobs, part);
        if (k < 0) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            jobs = w;
            break;
        }
        snprintf(paths[w], sizeof paths[w], "%s.job%d-%d", o->db, (int)parent, w);
        unlink_db(paths[w]);
        fflush(NULL);
        pids[w] = fork();
        if (pids[w] == 0) {
            /* a worker outliving a killed parent would keep writing a file nobody merges */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            close(pfd[0]);
            int r = 0, nf = 0;
            kv_db *wdb;
            kv_status ws = db_open(paths[w], ms, &wdb);
            if (!ws) {
                db_batch(wdb, EXP_DB_BATCH);
                ws = run_list(s, runs, part, k, wdb, pfd[1], &r, &nf);
                kv_status fs = db_flush(wdb);
                if (!ws) ws = fs;
                db_close(wdb);
            }
            if (ws) fprintf(stderr, "\nkvpr: %s\n", kv_errmsg());
            /* exit status carries "did not fit" counts back: ran and nofit travel through the db */
            _exit(ws ? 1 : 0);
        }
        if (pids[w] < 0) {
            st = kv_errorf(KV_EIO, "fork failed");
            jobs = w;
            break;
        }
    }
    close(pfd[1]);
    char buf[256];
    int done = 0;
    ssize_t got;
    if (o->progress) bar(0, ns);
    while ((got = read(pfd[0], buf, sizeof buf)) > 0) {
        done += (int)got;
        if (o->progress) bar(done, ns);
    }
    close(pfd[0]);
    int failed = 0;
    for (int w = 0; w < jobs; w++) {
        int wst;
        if (waitpid(pids[w], &wst, 0) != pids[w] || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) failed = 1;
    }
    /* what every worker completed is merged, failed or not: each run is its own transaction */
    kv_status mst = db_open(o->db, ms, &db);
    for (int w = 0; w < jobs && !mst; w++)
        if (access(paths[w], F_OK) == 0 && !(mst = db_merge(db, paths[w]))) unlink_db(paths[w]);
    if (mst) kv_errctx(mst, "merging worker databases (the next 'kvpr run' with --db %s retries): ", o->db);
    if (!st && failed) st = kv_errorf(KV_EIO, "a worker failed (its message is above); the runs it completed are in %s", o->db);
    if (!st) st = mst;
    /* count what landed */
    for (int i = 0; i < ns && !st; i++) {
        char key[512];
        exp_run_key(s, &runs[sel[i]], key, sizeof key);
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(db_handle(db),
                               "SELECT coalesce((SELECT value FROM metrics m WHERE m.run_id = r.id AND name = 'fits'), 1)"
                               " FROM runs r WHERE run_key = ?", -1, &q, NULL) != SQLITE_OK)
            continue;
        sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(q) == SQLITE_ROW) {
            if (sqlite3_column_double(q, 0) > 0) (*ran)++;
            else (*nofit)++;
        }
        sqlite3_finalize(q);
    }
    db_close(db);
    free(runs), free(sel), free(part);
    return st;
}
