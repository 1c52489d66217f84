/* kvpr hw: list the shipped hardware profiles, show one with the provenance of every value. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/profile.h"
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

int cmd_hw(int argc, char **argv) {
    int js = 0;
    const char *verb = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) js = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr hw list [--json]\n       kvpr hw show NAME|NAME@LINK|profile.json [--json]\n"
                   "NAME ignores case. NAME@LINK is the profile with its host link replaced by LINK (hwmodel/links,\n"
                   "or $KVPR_LINKS), e.g. h100-sxm@gen3. Profiles are found in $KVPR_PROFILES (directories separated\n"
                   "by ':', searched first), then in %s; a file NAME.json must say \"name\": \"NAME\".\n"
                   "The format is in hwmodel/profiles/README.md.\n",
                   hw_profile_dir());
            return 0;
        } else if (argv[i][0] == '-') return cli_usage("hw: unknown option '%s'", argv[i]);
        else if (!verb) verb = argv[i];
        else if (!name) name = argv[i];
        else return cli_usage("hw: unexpected argument '%s'", argv[i]);
    }
    if (!verb) return cli_usage("hw: expected 'list' or 'show NAME'");
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
        return 0;
    }
    if (strcmp(verb, "show") != 0) return cli_usage("hw: unknown verb '%s' (list, show)", verb);
    if (!name) return cli_usage("hw show: expected a profile name or a .json path");
    hw_profile p;
    kv_status st = hw_profile_resolve(name, &p);
    if (st) return cli_fail(st);
    if (js) {
        char *s = hw_profile_to_json(&p);
        if (!s) return cli_fail(kv_errorf(KV_ENOMEM, "hw show: cannot encode profile"));
        printf("%s\n", s);
        free(s);
    } else show(&p);
    return 0;
}
