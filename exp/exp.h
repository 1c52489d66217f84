/* exp: experiments. A small line-based file describes a sweep (models x profiles x modes x
 * batch x prompt x gen x policies x schedulers) and the published numbers it is compared with;
 * exp runs it (in parallel, or one shard of it) into results.db and reports from the database,
 * so that shards run anywhere and merge into one report. Format: experiments/README.md. */
#ifndef EXP_H
#define EXP_H

#include "../core/db.h"
#include "../core/kv_io.h"
#include "../core/plan.h"
#include <stdio.h>
#include "../hwmodel/profile.h"
#include "../sched/sched.h"
#include "../sim/multi.h"

#define EXP_MAXV 24
#define EXP_MAXF 8
/* An experiment's name names its figure files and its run keys: at most this many bytes of
 * [A-Za-z0-9._-], not starting with '.', never cut (two names sharing a prefix must not collide). */
#define EXP_NAME_MAX 63

typedef struct {
    char key[16], val[128];
} exp_filter;

typedef struct {
    exp_filter f[EXP_MAXF];
    int n;
} exp_filters;

typedef struct {
    char metric[32];
    exp_filters where;
    double value; /* the published number */
    char text[256];
    int line;
} exp_claim;

typedef struct {
    char name[64], title[256], path[512];
    char models[EXP_MAXV][128], hws[EXP_MAXV][128];
    int nmodels, nhws;
    kv_mode modes[2];
    int nmodes;
    int batch[EXP_MAXV], prompt[EXP_MAXV], gen[EXP_MAXV];
    int nbatch, nprompt, ngen;
    kv_policy pols[KV_POL_COUNT];
    int npols;
    sched_kind scheds[SCHED_COUNT];
    int nscheds;
    int nb, prefetch, keep_act;
    int comps[4], ncomps; /* --compress per configuration (KV_COMP_*): `compress = none kv` doubles the sweep */
    int fig_bars, fig_heatmap, fig_breakdown;
    exp_filters sweep, timeline;
    int has_sweep, has_timeline;
    int sweep_splits; /* 0: off; N: every N-th split (0, N, 2N, ...) of every kvpr configuration is stored (sweep_l_L) */
    exp_claim claims[32];
    int nclaims;
    int key_line[24]; /* the line of each key (exp_parse's key order), for errors found after parsing */
    int gpus[EXP_MAXV], ngpus; /* several GPUs on one host (exp/servers.c): hardware then names topologies */
} exp_spec;

/* One run of the sweep: indices into the spec; sched is -1 for policies without a split. */
typedef struct {
    int model, hw, mode, batch, prompt, gen, sched;
    kv_policy pol;
    int comp; /* index into comps */
} exp_run;

/* Finds a spec: a path, the path + ".exp", or NAME in the shipped experiments/ folder. */
kv_status exp_find(const char *name, char *path, size_t n);
/* Parses; errors carry "file:line: ...". The file must be a regular file. */
kv_status exp_parse(const char *path, exp_spec *s);
/* The same from text in memory; label names it in messages. */
kv_status exp_parse_text(const char *text, const char *label, exp_spec *s);
/* Checks what parsing alone cannot, before any run starts (so a bad name costs no half-written
 * database): every model and profile resolves, and every filter (sweep, timeline, claims) matches
 * at least one run. Errors name the file and line. */
kv_status exp_check(const exp_spec *s);
/* Every run of the spec, in a fixed order (sharding slices it). Caller frees *runs. */
kv_status exp_runs(const exp_spec *s, exp_run **runs, int *n);
void exp_run_key(const exp_spec *s, const exp_run *r, char *key, size_t n);
/* Does run r satisfy every filter? */
int exp_match(const exp_spec *s, const exp_run *r, const exp_filters *f);
/* The plan of run r; for kvpr its scheduler picks the split. *steps (dynamic) is malloc'ed. */
/* The plan of run r without its split: mode, policy, batch, prompt, gen, prefetch, compression. */
void exp_plan_fields(const exp_spec *s, const exp_run *r, kv_plan *pl);
kv_status exp_plan(const exp_spec *s, const exp_run *r, kv_model *m, hw_profile *p, kv_plan *pl, int **steps);

/* Figures: DIR/NAME.dat and DIR/NAME.gp written atomically, then gnuplot (started without a
 * shell) renders DIR/NAME.png and DIR/NAME.svg, each renamed into place once complete. A missing
 * gnuplot is reported once and is not an error; a failed write or a failing gnuplot is. */
typedef struct {
    char dir[512], name[128], dat_path[700];
    kv_afile *gpf, *datf;
    FILE *gp, *dat; /* the script, and the data file (NULL unless asked for) */
} exp_fig;
/* Creates the plots directory if needed; KV_EINVAL if it cannot exist there (bad input). */
kv_status exp_plot_dir(const char *dir);
/* name must be a plain file name (kv_str_is_name). */
kv_status exp_fig_open(exp_fig *f, const char *dir, const char *name, int with_data);
/* Writes the terminal (fmt 0: PNG, 1: SVG) and its output into the script. */
void exp_fig_terminal(exp_fig *f, int fmt, int w, int h);
kv_status exp_fig_close(exp_fig *f);
void exp_fig_abort(exp_fig *f);
/* s as a gnuplot string literal (every byte that gnuplot could read as syntax octal-escaped),
 * and as a double-quoted field of a data file. */
void exp_gp_str(FILE *f, const char *s);
void exp_dat_str(FILE *f, const char *s);
/* The colour of op kind k in timelines. */
const char *exp_op_color(int k);

/* Decode time against the split, each scheduler's choice marked. */
typedef struct {
    const char *label;
    int l;
    double t;
} exp_mark;
kv_status exp_plot_sweep(const char *dir, const char *name, const char *title, const double *ts, int n, const exp_mark *m, int nm);

typedef struct {
    int jobs;          /* worker processes */
    int shard, nshard; /* run only runs i with i % nshard == shard - 1 */
    int progress;      /* draw a progress bar on stderr */
    const char *db;    /* results database */
} exp_opts;

/* Runs the (selected) runs into the database; returns how many ran and how many did not fit. */
/* The k-th of m hands of idx[0..n) (runs dealt in a fixed pseudo-random order, each hand in idx's
 * order) into out; returns its size, or -1 when out of memory. Shards and workers use it. */
int exp_deal(const int *idx, int n, int k, int m, int *out);
kv_status exp_execute(const exp_spec *s, const exp_opts *o, int *ran, int *nofit);

/* Reads the experiment's runs back from the database and prints the tables; draws the figures
 * into plots_dir (gnuplot; PNG and SVG). */
kv_status exp_report(const exp_spec *s, const char *db, const char *plots_dir, FILE *out);
/* Specs with 'gpus' (exp/servers.c): replicas on the topologies named under 'hardware', one run
 * per configuration stored in db (exp_servers_store) and reported from it. */
kv_status exp_servers_execute(const exp_spec *s, const char *db, int *ran, int *nofit);
kv_status exp_servers_report(const exp_spec *s, const char *db, const char *plots_dir, int csv, FILE *out);
/* One run of N replicas (sim/multi.h) into db: aggregate_tok_s, per_gpu_tok_s, gpuK_tok_s,
 * "bottleneck:HOP" = its share, hop_saturated:HOP, ...; nofit: the reason it does not fit (r unused). */
kv_status exp_servers_store(kv_db *db, const char *run_key, const char *sched, const kv_model *m, const hw_profile *p,
                            const hw_topo *t, const kv_plan *pl, const sim_multi_result *r, int alone_split, double agg_alone,
                            const char *nofit);
/* The same runs as CSV, one row per run with every dimension its own column (for pandas and
 * spreadsheets); runs not in the database have status 'not run' and empty values. */
kv_status exp_report_csv(const exp_spec *s, const char *db, FILE *out);

#endif
