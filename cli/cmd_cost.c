/* kvpr cost: what one decode layer costs on a profile, and where the paper's split lands.
 * A quick look before simulating: per-layer transfer and compute times from the cost
 * functions, the paper's closed-form l*, and the best split under the profile's own costs. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "cli.h"

typedef struct {
    double t_act, t_kv, t_rec, total;
} split_cost;

/* Intra-layer cost of split l with the profile's cost functions (overheads, size curve, GEMM
 * roofline): activations first, then recompute and K/V transfer side by side. */
static split_cost profile_split(const hw_profile *p, const kv_model *m, int b, int s, int l) {
    split_cost c;
    c.t_act = hw_copy_time(p, HW_H2D, (double)b * l * (double)kv_model_act_bytes_token(m), 0, 0);
    c.t_kv = hw_copy_time(p, HW_H2D, (double)b * (s - l) * (double)kv_model_kv_bytes_token_layer(m), 0, 0);
    c.t_rec = hw_recompute_time(p, m, b, l);
    c.total = c.t_act + fmax(c.t_rec, c.t_kv);
    return c;
}

int cmd_cost(int argc, char **argv) {
    const char *model = NULL, *hw = NULL;
    int batch = 0, ctx = 0, split = -1, js = 0;
    kv_status st;
    static const struct option opts[] = {{"model", 1, 0, 'm'}, {"hw", 1, 0, 'w'},   {"batch", 1, 0, 'b'},
                                         {"ctx", 1, 0, 's'},   {"split", 1, 0, 'l'}, {"json", 0, 0, 'j'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'w': hw = optarg; break;
        case 'b': if ((st = cli_int("--batch", optarg, 1, 1 << 20, &batch))) return cli_fail(st); break;
        case 's': if ((st = cli_int("--ctx", optarg, 1, 1 << 24, &ctx))) return cli_fail(st); break;
        case 'l': if ((st = cli_int("--split", optarg, 0, 1 << 24, &split))) return cli_fail(st); break;
        case 'j': js = 1; break;
        case 'h':
            printf("usage: kvpr cost --model M --hw H --batch B --ctx S [--split L] [--json]\n"
                   "Per-layer decode costs at context S, the paper's split l*, and the best split under the\n"
                   "profile's cost functions (brute force over every l).\n");
            return 0;
        default: return cli_usage("cost: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("cost: unexpected argument '%s'", argv[optind]);
    if (!model || !hw || !batch || !ctx) return cli_usage("cost: --model, --hw, --batch and --ctx are required");
    if (split > ctx) return cli_fail(kv_errorf(KV_EINVAL, "--split %d exceeds --ctx %d", split, ctx));
    kv_model m;
    hw_profile p;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    cli_warn_context(&m, ctx);

    double lstar = hw_paper_lstar(&p, &m, ctx);
    int lp = (int)fmin(ctx, floor(lstar + 0.5));
    /* The paper's integer optimum is next to the real-valued crossing. */
    int cand[2] = {(int)floor(lstar), (int)fmin(ctx, ceil(lstar))};
    for (int i = 0; i < 2; i++)
        if (hw_paper_layer(&p, &m, batch, ctx, cand[i]).total < hw_paper_layer(&p, &m, batch, ctx, lp).total) lp = cand[i];
    hw_paper_cost p0 = hw_paper_layer(&p, &m, batch, ctx, 0), pl = hw_paper_layer(&p, &m, batch, ctx, lp);

    int best = 0;
    split_cost bc = profile_split(&p, &m, batch, ctx, 0);
    for (int l = 1; l <= ctx; l++) {
        split_cost x = profile_split(&p, &m, batch, ctx, l);
        if (x.total < bc.total) bc = x, best = l;
    }
    int use = split >= 0 ? split : best;
    split_cost off = profile_split(&p, &m, batch, ctx, 0), at = profile_split(&p, &m, batch, ctx, use);
    hw_layer_cost lc = hw_decode_layer(&p, &m, batch, ctx);
    double kvb = (double)batch * ctx * (double)kv_model_kv_bytes_token_layer(&m);

    if (js) {
        json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:f,s:f,s:f,s:{s:f,s:i,s:f,s:f},s:{s:i,s:f,s:f,s:f,s:f,s:f}}",
                              "model", m.name, "hw", p.name, "batch", batch, "ctx", ctx, "kv_bytes_layer", kvb,
                              "gpu_layer_s", lc.total, "offload_layer_s", off.total, "paper", "lstar", lstar, "l", lp,
                              "T0_s", p0.total, "Tl_s", pl.total, "profile", "l", use, "t_act_s", at.t_act, "t_kv_s",
                              at.t_kv, "t_rec_s", at.t_rec, "total_s", at.total, "speedup", off.total / at.total);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(o);
        return 0;
    }
    printf("%s on %s, batch %d, context %d: one layer of one decode step\n", m.name, p.name, batch, ctx);
    printf("  K/V of the context       %10.2f MiB   H2D %8.3f ms (%.1f GB/s effective)\n", kvb / 1048576.0,
           off.t_kv * 1e3, hw_copy_bw(&p, HW_H2D, kvb, 0, 0) / 1e9);
    printf("  GPU layer compute        %10s       %8.3f ms (qkv %.3f, attn %.3f, out %.3f, mlp %.3f)\n", "",
           lc.total * 1e3, lc.qkv * 1e3, lc.attn * 1e3, lc.out * 1e3, lc.mlp * 1e3);
    printf("paper model (link %.1f GB/s, GPU %.0f TFLOP/s): l* = %.1f (l*/s = %.3f), integer l = %d\n",
           p.link.h2d.bandwidth.value / 1e9, p.gpu.peak_flops.value / 1e12, lstar, lstar / ctx, lp);
    printf("  T(0) = %.3f ms   T(l) = %.3f ms (act %.3f + max(rec %.3f, kv %.3f))   %.1f %% lower\n", p0.total * 1e3,
           pl.total * 1e3, pl.t_act * 1e3, pl.t_rec * 1e3, pl.t_kv * 1e3, 100 * (1 - pl.total / p0.total));
    if (kv_model_kv_dim(&m) != m.hidden)
        printf("  note: the paper's formula assumes K+V = 2h values per token; %s has %d (grouped-query),\n"
               "        so its T(l) above overstates what recomputation saves\n", m.name, 2 * kv_model_kv_dim(&m));
    printf("profile costs%s: l = %d (l/s = %.3f)\n", split >= 0 ? " at --split" : ", best split by brute force", use,
           (double)use / ctx);
    printf("  offload %.3f ms   kvpr %.3f ms (act %.3f + max(rec %.3f, kv %.3f))   speed-up %.3fx\n", off.total * 1e3,
           at.total * 1e3, at.t_act * 1e3, at.t_rec * 1e3, at.t_kv * 1e3, off.total / at.total);
    return 0;
}
