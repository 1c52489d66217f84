/* kvpr calibrate / compare: measured timings -> a calibrated profile -> the simulator's error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/kv_io.h"
#include "../core/kv_str.h"
#include "../exp/compare.h"
#include "../hwmodel/calib.h"
#include "cli.h"

int cmd_calibrate(int argc, char **argv) {
    const char *from = DB_DEFAULT_PATH, *base = NULL, *outp = NULL, *device = NULL, *dbpath = DB_DEFAULT_PATH;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr calibrate --from results.db|traces/DIR/traces.sql --base PROFILE --out PROFILE.json\n"
                   "                      [--device NAME] [--db results.db]\n"
                   "Fits the link (overhead, bandwidth, size efficiency, duplex, pageable), the launch overhead, the GEMM\n"
                   "efficiency against M and the attention bandwidth to 'kvpr-engine bench' measurements; holds out every\n"
                   "fourth point; writes a profile whose fitted fields name their source and fit quality.\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_usage("calibrate: option '%s' needs a value", argv[i]);
        if (!strcmp(argv[i], "--from")) from = argv[++i];
        else if (!strcmp(argv[i], "--base")) base = argv[++i];
        else if (!strcmp(argv[i], "--out")) outp = argv[++i];
        else if (!strcmp(argv[i], "--device")) device = argv[++i];
        else if (!strcmp(argv[i], "--db")) dbpath = argv[++i];
        else return cli_usage("calibrate: unknown option '%s'", argv[i]);
    }
    if (!base || !outp) return cli_usage("calibrate: --base and --out are required");
    hw_profile b, o;
    kv_db *src;
    kv_status st = kv_io_check_output(outp); /* a bad --out is bad input, found before any work */
    if (st) return cli_fail(st);
    st = hw_profile_resolve(base, &b);
    if (st || (st = hw_calib_open_source(from, &src))) return cli_fail(st);
    hw_calib_report rep;
    st = hw_calibrate(src, &b, from, device, &o, &rep);
    db_close(src);
    if (st) return cli_fail(st);
    const char *slash = strrchr(outp, '/');
    char stem[256];
    snprintf(stem, sizeof stem, "%.*s", (int)strcspn(slash ? slash + 1 : outp, "."), slash ? slash + 1 : outp);
    if (kv_str_copy(o.name, sizeof o.name, stem)) /* the name is the file's: it must be whole */
        return cli_fail(kv_errorf(KV_EINVAL, "calibrate: --out %s: the profile name '%s' is longer than 63 bytes", outp, stem));
    char *js = hw_profile_to_json(&o), *fit = hw_calib_json(&rep);
    /* the written profile must load back: the same validation every profile gets */
    hw_profile check;
    if (!js || (st = hw_profile_parse(js, outp, &check))) {
        free(js), free(fit);
        return cli_fail(st ? st : kv_errorf(KV_ENOMEM, "out of memory"));
    }
    size_t jl = strlen(js);
    js[jl] = '\n'; /* written with its final newline, then the string is restored */
    st = kv_io_write_all(outp, js, jl + 1);
    js[jl] = 0;
    if (st) {
        free(js), free(fit);
        return cli_fail(st);
    }
    kv_db *db;
    if (!(st = cli_db_open(dbpath, &db))) {
        st = db_calibration(db, b.name, from, js, fit ? fit : "{}", NULL);
        db_close(db);
    }
    free(js), free(fit);
    if (st) return cli_fail(st);
    hw_calib_print(&rep, stdout);
    printf("link  h2d %.2f GB/s + %.2f us per copy (duplex %.2f), d2h %.2f GB/s + %.2f us (duplex %.2f)\n",
           o.link.h2d.bandwidth.value / 1e9, o.link.h2d.overhead.value * 1e6, o.link.h2d.duplex.value, o.link.d2h.bandwidth.value / 1e9,
           o.link.d2h.overhead.value * 1e6, o.link.d2h.duplex.value);
    printf("gpu   launch %.2f us, GEMM efficiency %.3f at M = %g .. %.3f at M = %g, attention %.0f %% of HBM bandwidth\n",
           o.gpu.launch.value * 1e6, o.gpu.gemm_eff.y[0], o.gpu.gemm_eff.x[0], o.gpu.gemm_eff.y[o.gpu.gemm_eff.n - 1],
           o.gpu.gemm_eff.x[o.gpu.gemm_eff.n - 1], 100 * o.gpu.attn_eff.value);
    printf("wrote %s\n", outp);
    return 0;
}

int cmd_compare(int argc, char **argv) {
    const char *sel = "all", *prof = NULL, *dbpath = DB_DEFAULT_PATH, *plots = "plots";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr compare --profile PROFILE [--measured all|ID,ID...] [--db results.db | --from traces/DIR/traces.sql]\n"
                   "                    [--plots DIR]\n"
                   "Re-simulates each measured engine run with its own plan, joins spans on (step, layer, mb, op) and reports\n"
                   "the error per op kind and per decode step (MAPE, median, p90, max).\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_usage("compare: option '%s' needs a value", argv[i]);
        if (!strcmp(argv[i], "--measured")) sel = argv[++i];
        else if (!strcmp(argv[i], "--profile")) prof = argv[++i];
        else if (!strcmp(argv[i], "--db") || !strcmp(argv[i], "--from")) dbpath = argv[++i];
        else if (!strcmp(argv[i], "--plots")) plots = argv[++i];
        else return cli_usage("compare: unknown option '%s'", argv[i]);
    }
    if (!prof) return cli_usage("compare: --profile is required");
    hw_profile p;
    kv_db *db;
    kv_status st = hw_profile_resolve(prof, &p);
    if (st || (st = hw_calib_open_source(dbpath, &db))) return cli_fail(st);
    exp_cmp r;
    st = exp_compare(db, sel, &p, plots, stdout, &r);
    db_close(db);
    return st ? cli_fail(st) : 0;
}
