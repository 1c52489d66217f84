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
    const char *from = DB_DEFAULT_PATH, *base = NULL, *outp = NULL, *device = NULL, *dbpath = DB_DEFAULT_PATH, *note = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) {
            force = 1;
            continue;
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr calibrate --from results.db|traces/DIR/traces.sql --base PROFILE --out PROFILE.json\n"
                   "                      [--device NAME] [--db results.db] [--force] [--note TEXT]\n"
                   "Fits the link (overhead, bandwidth, size efficiency, duplex, pageable) and the device's own rates (GEMM\n"
                   "peak and efficiency against M, memory bandwidth, attention bandwidth, FLOP rate and fixed time, a launch\n"
                   "overhead no larger than the smallest kernel) to 'kvpr-engine bench' measurements; the base profile gives\n"
                   "only what was not measured (CPU, capacities). Holds out every fourth point; a group whose held-out RMS\n"
                   "error exceeds 15 %% fails: nothing is written and the exit status is 1, unless --force (the failure is\n"
                   "then written into the fields' provenance, and 'kvpr compare' warns about it). --note: what the\n"
                   "measurements do not say (driver, link, date), put first in the profile's description.\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_usage("calibrate: option '%s' needs a value", argv[i]);
        if (!strcmp(argv[i], "--from")) from = argv[++i];
        else if (!strcmp(argv[i], "--base")) base = argv[++i];
        else if (!strcmp(argv[i], "--out")) outp = argv[++i];
        else if (!strcmp(argv[i], "--device")) device = argv[++i];
        else if (!strcmp(argv[i], "--db")) dbpath = argv[++i];
        else if (!strcmp(argv[i], "--note")) note = argv[++i];
        else return cli_usage("calibrate: unknown option '%s'", argv[i]);
    }
    if (!base || !outp) return cli_usage("calibrate: --base and --out are required");
    if (note && strlen(note) > 300) return cli_usage("calibrate: --note is longer than 300 bytes");
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
    char bad[512];
    if (hw_calib_failures(&rep, bad, sizeof bad)) {
        if (!force) {
            hw_calib_print(&rep, stderr);
            fprintf(stderr, "kvpr: calibrate: the fit cannot explain its own held-out data (%s; limit %.0f %%): nothing written"
                            " (--force writes it, marked as failed)\n", bad, 100 * HW_CALIB_MAX_ERROR);
            return 1;
        }
        fprintf(stderr, "kvpr: calibrate: warning: held-out error above %.0f %% (%s): written because of --force, marked as failed\n",
                100 * HW_CALIB_MAX_ERROR, bad);
    }
    if (note) {
        char d[1024];
        snprintf(d, sizeof d, "%s; %s", note, o.description);
        memcpy(o.description, d, sizeof o.description - 1); /* the profile's limit: its end cut */
        o.description[sizeof o.description - 1] = 0;
    }
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
    printf("gpu   launch %.2f us, GEMM peak %.3g TFLOP/s, efficiency %.3f at M = %g .. %.3f at M = %g, memory %.1f GB/s"
           " (GEMM stream %.0f %%)\n",
           o.gpu.launch.value * 1e6, o.gpu.peak_flops.value / 1e12, o.gpu.gemm_eff.y[0], o.gpu.gemm_eff.x[0],
           o.gpu.gemm_eff.y[o.gpu.gemm_eff.n - 1], o.gpu.gemm_eff.x[o.gpu.gemm_eff.n - 1], o.gpu.hbm_bw.value / 1e9,
           100 * o.gpu.hbm_eff.value);
    printf("      attention %.1f GB/s K/V + %.3g TFLOP/s + %.2f us fixed\n", o.gpu.hbm_bw.value * o.gpu.attn_eff.value / 1e9,
           o.gpu.attn_flops.value / 1e12, o.gpu.attn_fixed.value * 1e6);
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
    char why[HW_SRC_MAX];
    if (hw_profile_failed_fit(&p, why, sizeof why))
        fprintf(stderr, "kvpr: compare: warning: profile %s was calibrated by a fit that failed its held-out check (%s)\n", p.name, why);
    exp_cmp r;
    st = exp_compare(db, sel, &p, plots, stdout, &r);
    db_close(db);
    return st ? cli_fail(st) : 0;
}
