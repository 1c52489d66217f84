/* eng_sysmem: MemAvailable and cgroup limits. */
#include "sysmem.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *s = malloc(65536);
    size_t n = s ? fread(s, 1, 65535, f) : 0;
    fclose(f);
    if (s) s[n] = 0;
    return s;
}

/* Bytes left under a cgroup limit, or -1 for no limit. */
static double cg_left(const char *limit, const char *usage) {
    if (!limit || !usage || !strncmp(limit, "max", 3)) return -1;
    char *end;
    double lim = strtod(limit, &end), use = strtod(usage, NULL);
    /* cgroup v1 reports "no limit" as a huge number: anything above 2^60 is none */
    if (end == limit || lim >= 1152921504606846976.0) return -1;
    return lim > use ? lim - use : 0;
}

double eng_sysmem_parse(const char *meminfo, const char *cg_limit, const char *cg_usage, int *limited_by_cgroup) {
    double avail = -1;
    const char *m = meminfo ? strstr(meminfo, "MemAvailable:") : NULL;
    if (m) avail = strtod(m + strlen("MemAvailable:"), NULL) * 1024.0;
    double left = cg_left(cg_limit, cg_usage);
    if (limited_by_cgroup) *limited_by_cgroup = 0;
    if (left >= 0 && (avail < 0 || left < avail)) {
        avail = left;
        if (limited_by_cgroup) *limited_by_cgroup = 1;
    }
    return avail;
}

/* One cgroup directory's limit applied to the running minimum. */
static void cg_dir(const char *dir, int v2, double *best, char *why, size_t n) {
    char pl[700], pu[700];
    snprintf(pl, sizeof pl, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
    snprintf(pu, sizeof pu, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
    char *l = slurp(pl), *u = slurp(pu);
    double left = cg_left(l, u);
    if (left >= 0 && (*best < 0 || left < *best)) {
        *best = left;
        if (why) snprintf(why, n, "the limit in %.200s", pl);
    }
    free(l), free(u);
}

double eng_sysmem_available(char *why, size_t n) {
    char *mi = slurp("/proc/meminfo");
    double best = eng_sysmem_parse(mi, NULL, NULL, NULL);
    free(mi);
    if (why) snprintf(why, n, "MemAvailable in /proc/meminfo");
    char *cg = slurp("/proc/self/cgroup"), *save = NULL;
    for (char *line = cg ? strtok_r(cg, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        /* v2: "0::/path"; v1: "N:controllers:/path", the controllers a list that may hold memory */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        int v2 = c1[1] == ':';
        *c2 = 0;
        int mem = v2 || strstr(c1 + 1, "memory") != NULL;
        if (!mem) continue;
        char path[512];
        snprintf(path, sizeof path, "%s", c2 + 1);
        /* from this cgroup up to the root: any level's limit may be the binding one */
        for (;;) {
            char dir[600];
            snprintf(dir, sizeof dir, "/sys/fs/cgroup%s%s", v2 ? "" : "/memory", strcmp(path, "/") ? path : "");
            cg_dir(dir, v2, &best, why, n);
            char *slash = strrchr(path, '/');
            if (!slash || !strcmp(path, "/")) break;
            if (slash == path) slash[1] = 0; /* "/x" -> "/" */
            else *slash = 0;
        }
    }
    free(cg);
    return best;
}
