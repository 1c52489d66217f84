/* hw_topo: loading and strict validation of host topologies (files are untrusted input), and the
 * fair-share profile the planners use. */
#include "topo.h"
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../core/datadir.h"
#include "../core/kv_io.h"
#include "../core/suggest.h"

#define GB 1e9
#define GIB 1073741824.0

typedef struct {
    const char *label;
} tctx;

static kv_status keys_ok(const tctx *c, json_t *o, const char *where, const char *const *allowed) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) ok |= !strcmp(*a, k);
        if (!ok) return kv_errorf(KV_EPARSE, "%s: unknown key '%s%s'", c->label, where, k);
    }
    return KV_OK;
}

static kv_status str_of(const tctx *c, json_t *o, const char *where, const char *key, char *dst, size_t n, int need) {
    json_t *v = json_object_get(o, key);
    if (!v) return need ? kv_errorf(KV_EPARSE, "%s: missing field '%s%s'", c->label, where, key) : KV_OK;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= n ||
        strlen(json_string_value(v)) != json_string_length(v))
        return kv_errorf(KV_EINVAL, "%s: field '%s%s' must be a non-empty string of at most %zu bytes without NUL", c->label, where,
                         key, n - 1);
    snprintf(dst, n, "%s", json_string_value(v));
    return KV_OK;
}

/* {"value": number in [lo, hi], "source": "[label] ..."}, scaled to SI */
static kv_status val_of(const tctx *c, json_t *o, const char *where, const char *key, double lo, double hi, double scale,
                        hw_val *out) {
    json_t *f = json_object_get(o, key);
    if (!f) return kv_errorf(KV_EPARSE, "%s: missing field '%s%s'", c->label, where, key);
    static const char *const vk[] = {"value", "source", NULL};
    char sub[96];
    snprintf(sub, sizeof sub, "%s%s.", where, key);
    if (!json_is_object(f)) return kv_errorf(KV_EPARSE, "%s: field '%s%s' must be {\"value\": number, \"source\": \"...\"}", c->label, where, key);
    kv_status st = keys_ok(c, f, sub, vk);
    if (st) return st;
    json_t *v = json_object_get(f, "value");
    if (!json_is_number(v)) return kv_errorf(KV_EPARSE, "%s: field '%svalue' must be a number", c->label, sub);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi)
        return kv_errorf(KV_EINVAL, "%s: field '%svalue' is %g, outside [%g, %g]", c->label, sub, x, lo, hi);
    out->value = x * scale;
    if ((st = str_of(c, f, sub, "source", out->source, sizeof out->source, 1))) return st;
    if (!strchr(out->source, '['))
        return kv_errorf(KV_EINVAL, "%s: field '%ssource' must carry its label ([spec], [meas] or [est])", c->label, sub);
    return KV_OK;
}

static kv_status int_of(const tctx *c, json_t *o, const char *where, const char *key, int lo, int hi, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return kv_errorf(KV_EPARSE, "%s: missing field '%s%s'", c->label, where, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return kv_errorf(KV_EINVAL, "%s: field '%s%s' must be an integer in [%d, %d]", c->label, where, key, lo, hi);
    *out = (int)json_integer_value(v);
    return KV_OK;
}

static kv_status arr_of(const tctx *c, json_t *root, const char *key, int lo, int hi, json_t **out) {
    json_t *a = json_object_get(root, key);
    if (!a && lo == 0) {
        *out = NULL;
        return KV_OK;
    }
    if (!json_is_array(a) || (int)json_array_size(a) < lo || (int)json_array_size(a) > hi)
        return kv_errorf(KV_EPARSE, "%s: field '%s' must be an array of %d to %d objects", c->label, key, lo, hi);
    *out = a;
    return KV_OK;
}

static kv_status parse(const tctx *c, json_t *root, hw_topo *t) {
    memset(t, 0, sizeof *t);
    if (!json_is_object(root)) return kv_errorf(KV_EPARSE, "%s: top level must be a JSON object", c->label);
    static const char *const top[] = {"name", "description", "profile", "sockets", "inter_socket_gbps", "switches", "gpus", NULL};
    static const char *const sk[] = {"name", "dram_gbps", "cores", "attn_gflops_per_core", "memory_gib", NULL};
    static const char *const wk[] = {"name", "socket", "uplink_gbps", NULL};
    static const char *const gk[] = {"switch", "socket", "memory_socket", NULL};
    kv_status st;
    if ((st = keys_ok(c, root, "", top)) || (st = str_of(c, root, "", "name", t->name, sizeof t->name, 1)) ||
        (st = str_of(c, root, "", "description", t->description, sizeof t->description, 0)) ||
        (st = str_of(c, root, "", "profile", t->profile, sizeof t->profile, 1)))
        return st;
    json_t *a, *o;
    size_t i;
    char w[48];
    if ((st = arr_of(c, root, "sockets", 1, HW_TOPO_MAX_SOCKETS, &a))) return st;
    json_array_foreach(a, i, o) {
        hw_socket *s = &t->socket[i];
        snprintf(w, sizeof w, "sockets[%zu].", i);
        if (!json_is_object(o)) return kv_errorf(KV_EPARSE, "%s: '%s' must be an object", c->label, w);
        if ((st = keys_ok(c, o, w, sk)) || (st = str_of(c, o, w, "name", s->name, sizeof s->name, 1)) ||
            (st = val_of(c, o, w, "dram_gbps", 1, 1e5, GB, &s->dram_bw)) || (st = val_of(c, o, w, "cores", 1, 1024, 1, &s->cores)) ||
            (st = val_of(c, o, w, "attn_gflops_per_core", 1e-3, 1e4, 1e9, &s->attn_per_core)) ||
            (st = val_of(c, o, w, "memory_gib", 1, 1e6, GIB, &s->mem_bytes)))
            return st;
    }
    t->nsockets = (int)json_array_size(a);
    if (t->nsockets > 1) {
        if ((st = val_of(c, root, "", "inter_socket_gbps", 0.1, 1e5, GB, &t->inter_socket_bw))) return st;
    } else if (json_object_get(root, "inter_socket_gbps"))
        return kv_errorf(KV_EINVAL, "%s: field 'inter_socket_gbps' needs two or more sockets", c->label);
    if ((st = arr_of(c, root, "switches", 0, HW_TOPO_MAX_SWITCHES, &a))) return st;
    if (a) json_array_foreach(a, i, o) {
        hw_switch *s = &t->sw[i];
        snprintf(w, sizeof w, "switches[%zu].", i);
        if (!json_is_object(o)) return kv_errorf(KV_EPARSE, "%s: '%s' must be an object", c->label, w);
        if ((st = keys_ok(c, o, w, wk)) || (st = str_of(c, o, w, "name", s->name, sizeof s->name, 1)) ||
            (st = int_of(c, o, w, "socket", 0, t->nsockets - 1, &s->socket)) ||
            (st = val_of(c, o, w, "uplink_gbps", 0.1, 1e5, GB, &s->uplink_bw)))
            return st;
    }
    t->nswitches = a ? (int)json_array_size(a) : 0;
    if ((st = arr_of(c, root, "gpus", 1, HW_TOPO_MAX_GPUS, &a))) return st;
    json_array_foreach(a, i, o) {
        hw_gpu_slot *g = &t->gpu[i];
        snprintf(w, sizeof w, "gpus[%zu].", i);
        if (!json_is_object(o)) return kv_errorf(KV_EPARSE, "%s: '%s' must be an object", c->label, w);
        if ((st = keys_ok(c, o, w, gk))) return st;
        int has_sw = json_object_get(o, "switch") != NULL, has_so = json_object_get(o, "socket") != NULL;
        if (has_sw == has_so)
            return kv_errorf(KV_EINVAL, "%s: '%s' needs exactly one of 'switch' (under a PCIe switch) and 'socket' (on a root port)",
                             c->label, w);
        g->sw = -1;
        if (has_sw) {
            if (t->nswitches == 0) return kv_errorf(KV_EINVAL, "%s: '%sswitch' but the topology has no switches", c->label, w);
            if ((st = int_of(c, o, w, "switch", 0, t->nswitches - 1, &g->sw))) return st;
            g->socket = t->sw[g->sw].socket;
        } else if ((st = int_of(c, o, w, "socket", 0, t->nsockets - 1, &g->socket)))
            return st;
        g->mem_socket = g->socket;
        if (json_object_get(o, "memory_socket") && (st = int_of(c, o, w, "memory_socket", 0, t->nsockets - 1, &g->mem_socket)))
            return st;
    }
    t->ngpus = (int)json_array_size(a);
    for (int k = 0; k < t->nswitches; k++) {
        int used = 0;
        for (int g = 0; g < t->ngpus; g++) used += t->gpu[g].sw == k;
        if (!used) return kv_errorf(KV_EINVAL, "%s: switch '%s' has no GPU under it", c->label, t->sw[k].name);
    }
    return KV_OK;
}

static kv_status load_root(json_t *root, const char *label, hw_topo *out) {
    tctx c = {label};
    hw_topo t;
    kv_status st = parse(&c, root, &t);
    json_decref(root);
    if (!st) *out = t;
    return st;
}

kv_status hw_topo_parse(const char *text, const char *label, hw_topo *out) {
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root) return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", label, je.line, je.column, je.text);
    return load_root(root, label, out);
}

kv_status hw_topo_load(const char *path, hw_topo *out) {
    char *text;
    size_t len;
    kv_status st = kv_io_read_all(path, 1 << 20, &text, &len);
    if (st) return st;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    hw_topo t;
    if ((st = load_root(root, path, &t))) return st;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl > 5 && !strcmp(base + bl - 5, ".json") && (strlen(t.name) != bl - 5 || strncmp(t.name, base, bl - 5)))
        return kv_errorf(KV_EINVAL, "%s: field 'name' is '%s' but the file is %s: they must agree", path, t.name, base);
    *out = t;
    return KV_OK;
}

const char *hw_topo_dir(void) {
    static _Thread_local char d[4200];
    snprintf(d, sizeof d, "%s/hwmodel/topologies", kv_datadir());
    return d;
}

int hw_topo_list(char names[][64], int max) { return kv_search_list("KVPR_TOPOLOGIES", hw_topo_dir(), names, max); }

kv_status hw_topo_resolve(const char *name, hw_topo *out) {
    if (strchr(name, '/') || strstr(name, ".json")) return hw_topo_load(name, out);
    if (!kv_search_name_ok(name)) return kv_errorf(KV_EINVAL, "bad topology name '%s'", name);
    /* names ignore case, as model names do: the first directory of the search path holding the
     * name wins */
    char path[4800];
    if (kv_search_find("KVPR_TOPOLOGIES", hw_topo_dir(), name, path, sizeof path)) return hw_topo_load(path, out);
    char names[64][64];
    const char *cands[64];
    int n = hw_topo_list(names, 64);
    for (int i = 0; i < n; i++) cands[i] = names[i];
    char hint[900];
    kv_suggest_text(hint, sizeof hint, name, cands, n);
    return kv_errorf(KV_ENOTFOUND, "unknown topology '%s'%s (or give a .json path)", name, hint);
}

kv_status hw_topo_check(const hw_topo *t, const hw_profile *p, int n, double cpu_bytes) {
    if (n < 1 || n > t->ngpus)
        return kv_errorf(KV_EINVAL, "topology %s has %d GPUs: --gpus must be 1 to %d, not %d", t->name, t->ngpus, t->ngpus, n);
    (void)p;
    double need[HW_TOPO_MAX_SOCKETS] = {0};
    for (int g = 0; g < n; g++) need[t->gpu[g].mem_socket] += cpu_bytes;
    for (int s = 0; s < t->nsockets; s++)
        if (need[s] > t->socket[s].mem_bytes.value)
            return kv_errorf(KV_ENOFIT, "%d replicas need %.1f GiB of host memory on socket %s, which has %.0f GiB", n,
                             need[s] / GIB, t->socket[s].name, t->socket[s].mem_bytes.value / GIB);
    return KV_OK;
}

void hw_topo_loads(const hw_topo *t, int n, hw_topo_load_t *out) {
    memset(out, 0, sizeof *out);
    for (int g = 0; g < n && g < t->ngpus; g++) {
        const hw_gpu_slot *s = &t->gpu[g];
        if (s->sw >= 0) out->on_switch[s->sw]++;
        out->on_socket[s->mem_socket]++;
        if (s->mem_socket != s->socket) out->remote[s->mem_socket]++;
    }
}

static void cap_dir(hw_link_dir *d, double share, const char *why) {
    if (share < d->bandwidth.value) {
        d->bandwidth.value = share;
        snprintf(d->bandwidth.source, sizeof d->bandwidth.source, "[est] fair share of %s", why);
    }
    if (share < d->pageable.value) d->pageable.value = share;
}

void hw_topo_effective(const hw_topo *t, const hw_profile *p, int n, int g, hw_profile *out) {
    *out = *p;
    if (n < 1 || g < 0 || g >= t->ngpus) return;
    hw_topo_load_t L;
    hw_topo_loads(t, n, &L);
    const hw_gpu_slot *s = &t->gpu[g];
    const hw_socket *so = &t->socket[s->mem_socket];
    char why[96];
    if (s->sw >= 0) {
        double u = t->sw[s->sw].uplink_bw.value / L.on_switch[s->sw];
        snprintf(why, sizeof why, "switch %s's uplink", t->sw[s->sw].name);
        cap_dir(&out->link.h2d, u, why);
        cap_dir(&out->link.d2h, u, why);
    }
    if (s->mem_socket != s->socket) {
        double x = t->inter_socket_bw.value / L.remote[s->mem_socket];
        cap_dir(&out->link.h2d, x, "the inter-socket link");
        cap_dir(&out->link.d2h, x, "the inter-socket link");
    }
    /* DRAM: shared by everything of the replicas homed there; a replica streams in one direction
     * at a time mostly, so its share is the socket's bandwidth over the replicas there */
    double dram = so->dram_bw.value / L.on_socket[s->mem_socket];
    snprintf(why, sizeof why, "socket %s's DRAM", so->name);
    cap_dir(&out->link.h2d, dram, why);
    cap_dir(&out->link.d2h, dram, why);
    out->cpu.mem_bw.value = dram;
    snprintf(out->cpu.mem_bw.source, sizeof out->cpu.mem_bw.source, "[est] fair share of %s", why);
    out->cpu.attn_flops.value = so->cores.value * so->attn_per_core.value / L.on_socket[s->mem_socket];
    snprintf(out->cpu.attn_flops.source, sizeof out->cpu.attn_flops.source, "[est] fair share of socket %s's cores", so->name);
    out->cpu.mem_bytes.value = so->mem_bytes.value / L.on_socket[s->mem_socket];
}

void hw_topo_default(const hw_profile *p, int n, hw_topo *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "independent");
    snprintf(t->description, sizeof t->description, "%d GPUs on their own root ports of one host: the profile's CPU shared", n);
    snprintf(t->profile, sizeof t->profile, "%s", p->name);
    t->nsockets = 1;
    hw_socket *s = &t->socket[0];
    snprintf(s->name, sizeof s->name, "host");
    s->dram_bw = p->cpu.mem_bw;
    s->cores.value = 1;
    snprintf(s->cores.source, sizeof s->cores.source, "[est] the profile's CPU counted as one unit");
    s->attn_per_core = p->cpu.attn_flops;
    s->mem_bytes = p->cpu.mem_bytes;
    t->ngpus = n < 1 ? 1 : n > HW_TOPO_MAX_GPUS ? HW_TOPO_MAX_GPUS : n;
    for (int g = 0; g < t->ngpus; g++) t->gpu[g] = (hw_gpu_slot){-1, 0, 0};
}
