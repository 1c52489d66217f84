/* kvpr run / report / merge: experiments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../exp/exp.h"
#include "cli.h"

static const char *run_help =
    "usage: kvpr run EXPERIMENT [--jobs N] [--shard K/N] [--db FILE] [--plots DIR] [--no-report]\n"
    "  EXPERIMENT        a file, or a name from experiments/ (paper-latency, whatif-links, ...)\n"
    "  --jobs N          worker processes (default: the number of cores)\n"
    "  --shard K/N       run only shard K of N (runs dealt in a fixed order: each shard n/N of them); merge with 'kvpr merge'\n"
    "  --db FILE         results database (default results.db)\n"
    "  --plots DIR       figures (default plots)\n"
    "usage: kvpr report EXPERIMENT [--db FILE] [--plots DIR] [--csv]   tables and figures from the database\n"
    "  --csv             one CSV row per run on stdout (every dimension a column; for pandas or a spreadsheet), no figures\n"
    "usage: kvpr merge OUT.db SHARD.db...                      merge shard databases into OUT.db\n";

static int parse_common(int argc, char **argv, int i, const char **db, const char **plots, int *jobs, int *shard,
                        int *nshard, int *noreport, int *csv, int run) {
    kv_status st;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(run_help, stdout);
            return 0;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--db")) *db = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--plots")) *plots = argv[++i];
        else if (run && i + 1 < argc && !strcmp(argv[i], "--jobs")) {
            if ((st = cli_int("--jobs", argv[++i], 1, 64, jobs))) return cli_fail(st);
        } else if (run && i + 1 < argc && !strcmp(argv[i], "--shard")) {
            const char *v = argv[++i];
            char *slash = strchr(v, '/');
            char a[32], b[32];
            if (!slash || slash - v >= 31 || strlen(slash + 1) >= 31) return cli_usage("--shard expects K/N, got '%s'", v);
            snprintf(a, sizeof a, "%.*s", (int)(slash - v), v);
            snprintf(b, sizeof b, "%s", slash + 1);
            if ((st = cli_int("--shard N", b, 1, 100000, nshard)) || (st = cli_int("--shard K", a, 1, *nshard, shard)))
                return cli_fail(st);
        } else if (run && !strcmp(argv[i], "--no-report")) *noreport = 1;
        else if (!run && !strcmp(argv[i], "--csv")) *csv = 1;
        else return cli_usage("unknown or incomplete option '%s' (see 'kvpr run --help')", argv[i]);
    }
    return -1;
}

static int load(const char *name, exp_spec *s) {
    char path[1024];
    kv_status st = exp_find(name, path, sizeof path);
    if (!st) st = exp_parse(path, s);
    /* the whole file is checked before anything is written: a typo costs no database or job files */
    if (!st) st = exp_check(s);
    return st ? cli_fail(st) : -1;
}

int cmd_run(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            fputs(run_help, stdout);
            return 0;
        }
        return cli_usage("run: which experiment? (see 'kvpr run --help')");
    }
    const char *db = DB_DEFAULT_PATH, *plots = "plots";
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int jobs = cores > 0 ? (int)cores : 1, shard = 1, nshard = 1, noreport = 0;
    int csv = 0;
    int rc = parse_common(argc, argv, 2, &db, &plots, &jobs, &shard, &nshard, &noreport, &csv, 1);
    if (rc >= 0) return rc;
    static exp_spec s;
    if ((rc = load(argv[1], &s)) >= 0) return rc;
    kv_status st;
    /* a --plots that cannot be made is bad input: say so before the runs, not after */
    if (nshard <= 1 && !noreport && (st = exp_plot_dir(plots))) return cli_fail(st);
    exp_opts o = {.jobs = jobs, .shard = shard, .nshard = nshard, .progress = isatty(2), .db = db};
    int ran, nofit;
    st = exp_execute(&s, &o, &ran, &nofit);
    if (st) return cli_fail(st);
    if (nshard > 1) {
        printf("%s: shard %d/%d: %d runs written to %s (%d do not fit); merge the shards with 'kvpr merge', then 'kvpr report %s'\n",
               s.name, shard, nshard, ran + nofit, db, nofit, argv[1]);
        return 0;
    }
    if (noreport) return 0;
    if ((st = exp_report(&s, db, plots, stdout))) return cli_fail(st);
    return 0;
}

int cmd_report(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(run_help, stdout);
            return 0;
        }
    if (argc < 2 || argv[1][0] == '-') return cli_usage("report: which experiment? (see 'kvpr run --help')");
    const char *db = DB_DEFAULT_PATH, *plots = "plots";
    int j, k, n, nr, csv = 0;
    int rc = parse_common(argc, argv, 2, &db, &plots, &j, &k, &n, &nr, &csv, 0);
    if (rc >= 0) return rc;
    static exp_spec s;
    if ((rc = load(argv[1], &s)) >= 0) return rc;
    if (access(db, R_OK) != 0) return cli_fail(kv_errorf(KV_ENOTFOUND, "no results database %s (run the experiment first)", db));
    kv_status st = csv ? exp_report_csv(&s, db, stdout) : exp_report(&s, db, plots, stdout);
    return st ? cli_fail(st) : 0;
}

int cmd_merge(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(run_help, stdout);
            return 0;
        }
    if (argc < 3) return cli_usage("merge: usage: kvpr merge OUT.db SHARD.db...");
    kv_db *db;
    kv_status st = cli_db_open(argv[1], &db);
    if (st) return cli_fail(st);
    for (int i = 2; i < argc && !st; i++) {
        if (access(argv[i], R_OK) != 0) st = kv_errorf(KV_ENOTFOUND, "no shard database %s", argv[i]);
        else st = db_merge(db, argv[i]);
    }
    db_close(db);
    if (st) return cli_fail(st);
    printf("merged %d shard(s) into %s\n", argc - 2, argv[1]);
    return 0;
}
