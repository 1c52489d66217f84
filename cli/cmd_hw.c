/* kvpr hw: list the shipped hardware profiles and host topologies, show one with the provenance of
 * every value. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/profile.h"
#include "../hwmodel/topo.h"
#include "cli.h"

#define GIB 1073741824.0

static void line(const char *k, double v, const char *unit, const char *src) {
    printf("  %-24s %10.4g %-8s %s\n", k, v, unit, src);
}
static void table(const char *k, const hw_table *t, const char *xunit) {
    printf("  %-24s", k);
    for (int i = 0; i < t->n; i++) printf(" %s%g%s:%.3g", i ? "" : "", t->x[i], xunit, t->y[i]);
    printf("   %s\n", t->source);
}
static void dir(const char *nm, const hw_link_dir *d) {
    char k[64];
    snprintf(k, sizeof k, "%s bandwidth", nm);
    line(k, d->bandwidth.value / 1e9, "GB/s", d->bandwidth.source);
    snprintf(k, sizeof k, "%s per-copy overhead", nm);
    line(k, d->overhead.value * 1e6, "us", d->overhead.source);
    snprintf(k, sizeof k, "%s pageable", nm);
    line(k, d->pageable.value / 1e9, "GB/s", d->pageable.source);
    snprintf(k, sizeof k, "%s duplex factor", nm);
    line(k, d->duplex.value, "", d->duplex.source);
    snprintf(k, sizeof k, "%s size efficiency", nm);
    table(k, &d->size_eff, "B");
}

static void show(const hw_profile *p) {
    printf("profile %s: %s\n", p->name, p->description);
    printf("gpu: %s\n", p->gpu.name);
    line("peak fp16 tensor", p->gpu.peak_flops.value / 1e12, "TFLOP/s", p->gpu.peak_flops.source);
    line("memory bandwidth", p->gpu.hbm_bw.value / 1e9, "GB/s", p->gpu.hbm_bw.source);
    line("memory", p->gpu.mem_bytes.value / GIB, "GiB", p->gpu.mem_bytes.source);
    line("kernel launch", p->gpu.launch.value * 1e6, "us", p->gpu.launch.source);
    line("attention bw efficiency", p->gpu.attn_eff.value, "", p->gpu.attn_eff.source);
    table("GEMM efficiency (M)", &p->gpu.gemm_eff, "");
    printf("  %-24s %10s\n", "memory-bandwidth floor", p->gpu.memory_floor ? "yes" : "no");
    printf("link: %s\n", p->link.name);
    dir("H2D", &p->link.h2d);
    dir("D2H", &p->link.d2h);
    printf("cpu: %s\n", p->cpu.name);
    line("memory bandwidth", p->cpu.mem_bw.value / 1e9, "GB/s", p->cpu.mem_bw.source);
    line("memory", p->cpu.mem_bytes.value / GIB, "GiB", p->cpu.mem_bytes.source);
    line("attention rate", p->cpu.attn_flops.value / 1e12, "TFLOP/s", p->cpu.attn_flops.source);
}

/* ---- host topologies (hwmodel/topologies) ------------------------------------------------------ */

/* {"value", "source"} in the file's human units */
static json_t *val_json(double v, const hw_val *x) { return json_pack("{s:f,s:s}", "value", v, "source", x->source); }

/* The topology in the format of its file (hwmodel/topologies/README.md), every number with its source. */
static json_t *topo_json(const hw_topo *t) {
    json_t *o = json_pack("{s:s,s:s,s:s}", "name", t->name, "profile", t->profile, "description", t->description);
    json_t *so = json_array(), *sw = json_array(), *g = json_array();
    for (int i = 0; i < t->nsockets; i++) {
        const hw_socket *x = &t->socket[i];
        json_array_append_new(so, json_pack("{s:s,s:o,s:o,s:o,s:o}", "name", x->name, "dram_gbps", val_json(x->dram_bw.value / 1e9, &x->dram_bw),
                                            "cores", val_json(x->cores.value, &x->cores), "attn_gflops_per_core",
                                            val_json(x->attn_per_core.value / 1e9, &x->attn_per_core), "memory_gib",
                                            val_json(x->mem_bytes.value / GIB, &x->mem_bytes)));
    }
    json_object_set_new(o, "sockets", so);
    if (t->nsockets > 1) json_object_set_new(o, "inter_socket_gbps", val_json(t->inter_socket_bw.value / 1e9, &t->inter_socket_bw));
    for (int i = 0; i < t->nswitches; i++)
        json_array_append_new(sw, json_pack("{s:s,s:i,s:o}", "name", t->sw[i].name, "socket", t->sw[i].socket, "uplink_gbps",
                                            val_json(t->sw[i].uplink_bw.value / 1e9, &t->sw[i].uplink_bw)));
    json_object_set_new(o, "switches", sw);
    for (int i = 0; i < t->ngpus; i++) {
        const hw_gpu_slot *x = &t->gpu[i];
        json_t *e = x->sw >= 0 ? json_pack("{s:i}", "switch", x->sw) : json_pack("{s:i}", "socket", x->socket);
        if (x->mem_socket != x->socket) json_object_set_new(e, "memory_socket", json_integer(x->mem_socket));
        json_array_append_new(g, e);
    }
    json_object_set_new(o, "gpus", g);
    return o;
}

static void topo_show(const hw_topo *t) {
    printf("topology %s: %s\n", t->name, t->description);
    printf("gpu profile: %s (kvpr hw show %s), %d GPUs\n", t->profile, t->profile, t->ngpus);
    for (int i = 0; i < t->nsockets; i++) {
        const hw_socket *x = &t->socket[i];
        printf("socket %d: %s\n", i, x->name);
        line("DRAM bandwidth", x->dram_bw.value / 1e9, "GB/s", x->dram_bw.source);
        line("cores", x->cores.value, "", x->cores.source);
        line("attention per core", x->attn_per_core.value / 1e9, "GFLOP/s", x->attn_per_core.source);
        line("attention, socket", x->cores.value * x->attn_per_core.value / 1e12, "TFLOP/s", "cores x attention per core");
        line("memory", x->mem_bytes.value / GIB, "GiB", x->mem_bytes.source);
    }
    printf("links:\n");
    if (t->nsockets > 1) line("inter-socket link", t->inter_socket_bw.value / 1e9, "GB/s", t->inter_socket_bw.source);
    for (int i = 0; i < t->nswitches; i++) {
        char k[64];
        snprintf(k, sizeof k, "%s uplink (socket %d)", t->sw[i].name, t->sw[i].socket);
        line(k, t->sw[i].uplink_bw.value / 1e9, "GB/s", t->sw[i].uplink_bw.source);
    }
    printf("gpus:\n");
    for (int i = 0; i < t->ngpus; i++) {
        const hw_gpu_slot *x = &t->gpu[i];
        printf("  gpu%-2d ", i);
        if (x->sw >= 0) printf("under switch %s (socket %s)", t->sw[x->sw].name, t->socket[x->socket].name);
        else printf("on a root port of socket %s", t->socket[x->socket].name);
        printf(", host buffers on %s\n", t->socket[x->mem_socket].name);
    }
}

static int topo_list(int js) {
    char names[64][64];
    int n = hw_topo_list(names, 64);
    if (n == 0) return cli_usage("hw topologies: none in $KVPR_TOPOLOGIES or %s", hw_topo_dir());
    json_t *a = js ? json_array() : NULL;
    if (!js)
        printf("%-14s %-12s %4s %7s %8s %10s %10s %9s  %s\n", "topology", "profile", "GPUs", "sockets", "switches", "uplink GB/s",
               "DRAM GB/s", "attn TF/s", "description");
    for (int i = 0; i < n; i++) {
        hw_topo t;
        kv_status st = hw_topo_resolve(names[i], &t);
        if (st) {
            json_decref(a);
            return cli_fail(st);
        }
        if (js) {
            json_array_append_new(a, topo_json(&t));
            continue;
        }
        double up = 0, dram = 0, attn = 0; /* the smallest uplink; DRAM and attention rate of the whole host */
        for (int k = 0; k < t.nswitches; k++)
            if (up == 0 || t.sw[k].uplink_bw.value < up) up = t.sw[k].uplink_bw.value;
        for (int k = 0; k < t.nsockets; k++) dram += t.socket[k].dram_bw.value, attn += t.socket[k].cores.value * t.socket[k].attn_per_core.value;
        char ub[16] = "-";
        if (up > 0) snprintf(ub, sizeof ub, "%.1f", up / 1e9);
        printf("%-14s %-12s %4d %7d %8d %10s %10.0f %9.2f  %s\n", t.name, t.profile, t.ngpus, t.nsockets, t.nswitches, ub, dram / 1e9,
               attn / 1e12, t.description);
    }
    if (js) {
        json_dumpf(a, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
        printf("\n");
        json_decref(a);
    }
    return 0;
}

int cmd_hw(int argc, char **argv) {
    int js = 0;
    const char *verb = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) js = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr hw list [--json]\n       kvpr hw show NAME|NAME@LINK|profile.json [--json]\n"
                   "       kvpr hw topologies [--json]\n       kvpr hw show TOPOLOGY|topology.json [--json]\n"
                   "topologies: several GPUs on one host (kvpr sim|search --gpus N --topology T); found in $KVPR_TOPOLOGIES,\n"
                   "then in %s; the format is in hwmodel/topologies/README.md. `hw show` takes a topology name\n"
                   "where no profile has it.\n"
                   "NAME ignores case. NAME@LINK is the profile with its host link replaced by LINK (hwmodel/links,\n"
                   "or $KVPR_LINKS), e.g. h100-sxm@gen3. Profiles are found in $KVPR_PROFILES (directories separated\n"
                   "by ':', searched first), then in %s; a file NAME.json must say \"name\": \"NAME\".\n"
                   "The format is in hwmodel/profiles/README.md.\n",
                   hw_topo_dir(), hw_profile_dir());
            return 0;
        } else if (argv[i][0] == '-') return cli_usage("hw: unknown option '%s'", argv[i]);
        else if (!verb) verb = argv[i];
        else if (!name) name = argv[i];
        else return cli_usage("hw: unexpected argument '%s'", argv[i]);
    }
    if (!verb) return cli_usage("hw: expected 'list', 'topologies' or 'show NAME'");
    if (!strcmp(verb, "topologies")) {
        if (name) return cli_usage("hw topologies: unexpected argument '%s' (kvpr hw show %s)", name, name);
        return topo_list(js);
    }
    if (!strcmp(verb, "list")) {
        char names[128][64];
        int n = hw_profile_list(names, 128);
        if (n == 0) return cli_usage("hw list: no profiles in $KVPR_PROFILES or %s", hw_profile_dir());
        if (js) {
            json_t *a = json_array();
            for (int i = 0; i < n; i++) {
                hw_profile p;
                kv_status st = hw_profile_resolve(names[i], &p);
                char *t = st ? NULL : hw_profile_to_json(&p);
                json_t *o = t ? json_loads(t, 0, NULL) : NULL;
                free(t);
                if (!o) {
                    json_decref(a);
                    return cli_fail(st ? st : kv_errorf(KV_ENOMEM, "hw list: cannot encode profile %s", names[i]));
                }
                json_array_append_new(a, o);
            }
            json_dumpf(a, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            printf("\n");
            json_decref(a);
            return 0;
        }
        printf("%-16s %-26s %8s %7s %6s %-34s %7s %7s\n", "profile", "gpu", "TFLOP/s", "HBM GB/s", "GiB", "link",
               "H2D", "D2H");
        for (int i = 0; i < n; i++) {
            hw_profile p;
            kv_status st = hw_profile_resolve(names[i], &p);
            if (st) return cli_fail(st);
            printf("%-16s %-26s %8.0f %7.0f %6.0f %-34s %7.2f %7.2f\n", p.name, p.gpu.name, p.gpu.peak_flops.value / 1e12,
                   p.gpu.hbm_bw.value / 1e9, p.gpu.mem_bytes.value / GIB, p.link.name, p.link.h2d.bandwidth.value / 1e9,
                   p.link.d2h.bandwidth.value / 1e9);
        }
        char tn[64][64];
        int nt = hw_topo_list(tn, 64);
        if (nt > 0) {
            printf("\nhost topologies (kvpr hw topologies):");
            for (int i = 0; i < nt; i++) printf(" %s", tn[i]);
            printf("\n");
        }
        return 0;
    }
    if (strcmp(verb, "show") != 0) return cli_usage("hw: unknown verb '%s' (list, topologies, show)", verb);
    if (!name) return cli_usage("hw show: expected a profile or topology name or a .json path");
    hw_profile p;
    kv_status st = hw_profile_resolve(name, &p);
    if (st == KV_ENOTFOUND) { /* not a profile: a topology of that name? */
        char why[512];
        snprintf(why, sizeof why, "%s", kv_errmsg());
        hw_topo t;
        kv_status ts = hw_topo_resolve(name, &t);
        if (ts == KV_ENOTFOUND) return cli_fail(kv_errorf(st, "%s (nor a topology: kvpr hw topologies)", why));
        if (ts) return cli_fail(ts);
        kv_errclear();
        if (!js) {
            topo_show(&t);
            return 0;
        }
        json_t *o = topo_json(&t);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
        printf("\n");
        json_decref(o);
        return 0;
    }
    if (st) return cli_fail(st);
    if (js) {
        char *s = hw_profile_to_json(&p);
        if (!s) return cli_fail(kv_errorf(KV_ENOMEM, "hw show: cannot encode profile"));
        printf("%s\n", s);
        free(s);
    } else show(&p);
    return 0;
}
