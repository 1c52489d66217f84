/* hw_profile: JSON loading with strict validation. Strict because a profile silently
 * misread (a typo'd key left at a default, a bandwidth in the wrong unit) gives
 * plausible-looking but wrong predictions, the worst failure a simulator can have. */
#include "profile.h"
#include <dirent.h>
#include <gsl/gsl_interp.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../core/kv_io.h"
#include "../core/suggest.h"
#include "../core/datadir.h"
#include "../core/kv_str.h"

#ifndef KVPR_DATADIR
#define KVPR_DATADIR "."
#endif

typedef struct {
    const char *label; /* file name for messages */
    char path[128];    /* current field path */
} ctx_t;

static kv_status perr(const ctx_t *c, kv_status st, const char *fmt, const char *a, const char *b) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    return kv_errorf(st, "%s: %s", c->label, msg);
}

/* Rejects keys not in `allowed` (NULL-terminated). */
static kv_status check_keys(const ctx_t *c, json_t *obj, const char *where, const char *const *allowed) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, k) == 0) ok = 1;
        if (!ok) return perr(c, KV_EPARSE, "unknown key '%s%s'", where, k);
    }
    return KV_OK;
}

static json_t *need_obj(const ctx_t *c, json_t *parent, const char *where, const char *key, kv_status *st) {
    json_t *o = json_object_get(parent, key);
    if (!o) *st = perr(c, KV_EPARSE, "missing field '%s%s'", where, key);
    else if (!json_is_object(o)) *st = perr(c, KV_EPARSE, "field '%s%s' must be an object", where, key);
    return *st ? NULL : o;
}

static kv_status get_str(const ctx_t *c, json_t *obj, const char *where, const char *key, char *dst, size_t n) {
    json_t *v = json_object_get(obj, key);
    if (!v) return perr(c, KV_EPARSE, "missing field '%s%s'", where, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return perr(c, KV_EPARSE, "field '%s%s' must be a non-empty string", where, key);
    /* never cut: a cut name is another name, and one cut inside a character is not UTF-8 */
    if (json_string_length(v) >= n || strlen(json_string_value(v)) != json_string_length(v)) {
        char lim[32];
        snprintf(lim, sizeof lim, "%zu", n - 1);
        return kv_errorf(KV_EINVAL, "%s: field '%s%s' must be a string of at most %s bytes without NUL", c->label, where, key, lim);
    }
    snprintf(dst, n, "%s", json_string_value(v));
    return KV_OK;
}

/* A value field: {"value": number, "source": "provenance"}. `scale` converts to SI.
 * kind: 'p' positive, 'z' zero or positive, 'e' efficiency in (0,1]. */
static kv_status get_val(const ctx_t *c, json_t *obj, const char *where, const char *key, double scale,
                         char kind, hw_val *out) {
    char full[128];
    snprintf(full, sizeof full, "%s%s", where, key);
    json_t *f = json_object_get(obj, key);
    if (!f) return perr(c, KV_EPARSE, "missing field '%s'%s", full, "");
    if (!json_is_object(f))
        return perr(c, KV_EPARSE, "field '%s' must be {\"value\": number, \"source\": \"...\"}%s", full, "");
    static const char *const keys[] = {"value", "source", NULL};
    char sub[140];
    snprintf(sub, sizeof sub, "%s.", full);
    kv_status st = check_keys(c, f, sub, keys);
    if (st) return st;
    json_t *v = json_object_get(f, "value");
    if (!v) return perr(c, KV_EPARSE, "missing field '%s.value'%s", full, "");
    if (!json_is_number(v)) return perr(c, KV_EPARSE, "field '%s.value' must be a number%s", full, "");
    double x = json_number_value(v);
    if (!isfinite(x)) return perr(c, KV_EINVAL, "field '%s.value' is not finite%s", full, "");
    if (kind == 'p' && !(x > 0)) return perr(c, KV_EINVAL, "field '%s.value' must be > 0%s", full, "");
    if (kind == 'z' && !(x >= 0)) return perr(c, KV_EINVAL, "field '%s.value' must be >= 0%s", full, "");
    if (kind == 'e' && !(x > 0 && x <= 1))
        return perr(c, KV_EINVAL, "field '%s.value' is an efficiency and must be in (0, 1]%s", full, "");
    out->value = x * scale;
    char srcw[140];
    snprintf(srcw, sizeof srcw, "%s.", full);
    return get_str(c, f, srcw, "source", out->source, sizeof out->source);
}

static kv_status get_table(const ctx_t *c, json_t *obj, const char *where, const char *key, hw_table *t) {
    char full[128];
    snprintf(full, sizeof full, "%s%s", where, key);
    json_t *f = json_object_get(obj, key);
    if (!f) return perr(c, KV_EPARSE, "missing field '%s'%s", full, "");
    if (!json_is_object(f))
        return perr(c, KV_EPARSE, "field '%s' must be {\"table\": [[x, eff], ...], \"source\": \"...\"}%s", full, "");
    static const char *const keys[] = {"table", "source", NULL};
    char sub[140];
    snprintf(sub, sizeof sub, "%s.", full);
    kv_status st = check_keys(c, f, sub, keys);
    if (st) return st;
    json_t *a = json_object_get(f, "table");
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > HW_TABLE_MAX)
        return perr(c, KV_EPARSE, "field '%s.table' must be an array of 1 to 32 [x, efficiency] pairs%s", full, "");
    t->n = (int)json_array_size(a);
    for (int i = 0; i < t->n; i++) {
        json_t *p = json_array_get(a, (size_t)i);
        char idx[160];
        snprintf(idx, sizeof idx, "%s.table[%d]", full, i);
        if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_number(json_array_get(p, 0)) ||
            !json_is_number(json_array_get(p, 1)))
            return perr(c, KV_EPARSE, "'%s' must be a pair of numbers [x, efficiency]%s", idx, "");
        t->x[i] = json_number_value(json_array_get(p, 0));
        t->y[i] = json_number_value(json_array_get(p, 1));
        if (!isfinite(t->x[i]) || !(t->x[i] > 0)) return perr(c, KV_EINVAL, "'%s': x must be > 0%s", idx, "");
        if (!isfinite(t->y[i]) || !(t->y[i] > 0 && t->y[i] <= 1))
            return perr(c, KV_EINVAL, "'%s': efficiency must be in (0, 1]%s", idx, "");
        if (i > 0 && !(t->x[i] > t->x[i - 1]))
            return perr(c, KV_EINVAL, "'%s': table is not monotone: x must be strictly increasing%s", idx, "");
        if (i > 0 && t->y[i] < t->y[i - 1])
            return perr(c, KV_EINVAL, "'%s': table is not monotone: efficiency must not decrease as x grows%s", idx, "");
    }
    return get_str(c, f, sub, "source", t->source, sizeof t->source);
}

#define GB 1e9
#define TFLOP 1e12
#define GIB 1073741824.0
#define US 1e-6

static kv_status parse_dir(const ctx_t *c, json_t *link, const char *name, hw_link_dir *d) {
    kv_status st = KV_OK;
    char where[64];
    snprintf(where, sizeof where, "link.%s.", name);
    json_t *o = need_obj(c, link, "link.", name, &st);
    if (st) return st;
    static const char *const keys[] = {"bandwidth_gbps", "overhead_us", "pageable_gbps", "duplex_factor",
                                       "size_efficiency", NULL};
    if ((st = check_keys(c, o, where, keys)) || (st = get_val(c, o, where, "bandwidth_gbps", GB, 'p', &d->bandwidth)) ||
        (st = get_val(c, o, where, "overhead_us", US, 'z', &d->overhead)) ||
        (st = get_val(c, o, where, "pageable_gbps", GB, 'p', &d->pageable)) ||
        (st = get_val(c, o, where, "duplex_factor", 1, 'e', &d->duplex)) ||
        (st = get_table(c, o, where, "size_efficiency", &d->size_eff)))
        return st;
    if (d->pageable.value > d->bandwidth.value)
        return perr(c, KV_EINVAL, "field '%spageable_gbps' exceeds the pinned bandwidth%s", where, "");
    return KV_OK;
}

/* Physical ranges, checked after unit scaling. A value finite in the file can scale to infinity,
 * and one absurd but positive (a bandwidth of 1e-300 GB/s) makes simulated times too long for any
 * clock: neither describes a machine. Bounds are in the file's units, wide enough for any real
 * device and for what calibration writes. */
typedef struct {
    const char *field, *unit;
    const hw_val *v;
    double scale, lo, hi;
} range_t;

static kv_status check_range(const ctx_t *c, const char *where, const range_t *r) {
    double x = r->v->value;
    if (x >= r->lo * r->scale && x <= r->hi * r->scale) return KV_OK;
    return kv_errorf(KV_EINVAL, "%s: field '%s%s.value' is %g %s, outside the physical range [%g, %g] %s", c->label, where, r->field,
                     x / r->scale, r->unit, r->lo, r->hi, r->unit);
}

static kv_status check_table(const ctx_t *c, const char *where, const char *field, const hw_table *t) {
    for (int i = 0; i < t->n; i++)
        if (!(t->x[i] >= 1 && t->x[i] <= 1e15) || !(t->y[i] >= 1e-4))
            return kv_errorf(KV_EINVAL, "%s: '%s%s.table[%d]' = [%g, %g] is outside the physical range (x in [1, 1e15], efficiency in [1e-4, 1])",
                             c->label, where, field, i, t->x[i], t->y[i]);
    return KV_OK;
}

static kv_status check_dir(const ctx_t *c, const char *name, const hw_link_dir *d) {
    char where[32];
    snprintf(where, sizeof where, "link.%s.", name);
    const range_t r[] = {{"bandwidth_gbps", "GB/s", &d->bandwidth, GB, 1e-3, 1e5},
                         {"overhead_us", "us", &d->overhead, US, 0, 1e6},
                         {"pageable_gbps", "GB/s", &d->pageable, GB, 1e-3, 1e5},
                         {"duplex_factor", "", &d->duplex, 1, 1e-3, 1}};
    kv_status st = KV_OK;
    for (size_t i = 0; i < sizeof r / sizeof r[0] && !st; i++) st = check_range(c, where, &r[i]);
    return st ? st : check_table(c, where, "size_efficiency", &d->size_eff);
}

static kv_status check_ranges(const ctx_t *c, const hw_profile *p) {
    const range_t g[] = {{"peak_fp16_tflops", "TFLOP/s", &p->gpu.peak_flops, TFLOP, 1e-3, 1e6},
                         {"hbm_gbps", "GB/s", &p->gpu.hbm_bw, GB, 0.1, 1e6},
                         {"memory_gib", "GiB", &p->gpu.mem_bytes, GIB, 1.0 / 1024, 1 << 20},
                         {"launch_us", "us", &p->gpu.launch, US, 0, 1e6},
                         {"attention_bw_efficiency", "", &p->gpu.attn_eff, 1, 1e-4, 1},
                         {"hbm_efficiency", "", &p->gpu.hbm_eff, 1, 1e-4, 1}};
    const range_t u[] = {{"mem_bw_gbps", "GB/s", &p->cpu.mem_bw, GB, 1e-3, 1e6},
                         {"memory_gib", "GiB", &p->cpu.mem_bytes, GIB, 1.0 / 1024, 1 << 20},
                         {"attn_tflops", "TFLOP/s", &p->cpu.attn_flops, TFLOP, 1e-6, 1e6}};
    kv_status st = KV_OK;
    for (size_t i = 0; i < sizeof g / sizeof g[0] && !st; i++) st = check_range(c, "gpu.", &g[i]);
    if (!st) st = check_table(c, "gpu.", "gemm_efficiency", &p->gpu.gemm_eff);
    if (!st) st = check_dir(c, "h2d", &p->link.h2d);
    if (!st) st = check_dir(c, "d2h", &p->link.d2h);
    for (size_t i = 0; i < sizeof u / sizeof u[0] && !st; i++) st = check_range(c, "cpu.", &u[i]);
    return st;
}

static kv_status parse_root(const ctx_t *c, json_t *root, hw_profile *p) {
    kv_status st = KV_OK;
    memset(p, 0, sizeof *p);
    if (!json_is_object(root)) return perr(c, KV_EPARSE, "top level must be a JSON object%s%s", "", "");
    static const char *const top[] = {"name", "description", "gpu", "link", "cpu", NULL};
    static const char *const gk[] = {"name", "peak_fp16_tflops", "hbm_gbps", "memory_gib", "launch_us",
                                     "attention_bw_efficiency", "hbm_efficiency", "gemm_efficiency", "memory_floor",
                                     "attention_tflops", "attention_fixed_us", "gemm_memory_additive", NULL};
    static const char *const lk[] = {"name", "h2d", "d2h", NULL};
    static const char *const ck[] = {"name", "mem_bw_gbps", "memory_gib", "attn_tflops", NULL};
    if ((st = check_keys(c, root, "", top)) || (st = get_str(c, root, "", "name", p->name, sizeof p->name)))
        return st;
    json_t *d = json_object_get(root, "description");
    if (d && (!json_is_string(d) || json_string_length(d) >= sizeof p->description ||
              strlen(json_string_value(d)) != json_string_length(d)))
        return perr(c, KV_EINVAL, "field 'description' must be a string of at most 511 bytes without NUL%s%s", "", "");
    if (d) snprintf(p->description, sizeof p->description, "%s", json_string_value(d));

    json_t *g = need_obj(c, root, "", "gpu", &st);
    if (st || (st = check_keys(c, g, "gpu.", gk)) || (st = get_str(c, g, "gpu.", "name", p->gpu.name, sizeof p->gpu.name)) ||
        (st = get_val(c, g, "gpu.", "peak_fp16_tflops", TFLOP, 'p', &p->gpu.peak_flops)) ||
        (st = get_val(c, g, "gpu.", "hbm_gbps", GB, 'p', &p->gpu.hbm_bw)) ||
        (st = get_val(c, g, "gpu.", "memory_gib", GIB, 'p', &p->gpu.mem_bytes)) ||
        (st = get_val(c, g, "gpu.", "launch_us", US, 'z', &p->gpu.launch)) ||
        (st = get_val(c, g, "gpu.", "attention_bw_efficiency", 1, 'e', &p->gpu.attn_eff)) ||
        (st = get_table(c, g, "gpu.", "gemm_efficiency", &p->gpu.gemm_eff)))
        return st;
    /* optional (profiles written before it existed): without it, the datasheet bandwidth */
    if (json_object_get(g, "hbm_efficiency")) {
        if ((st = get_val(c, g, "gpu.", "hbm_efficiency", 1, 'e', &p->gpu.hbm_eff))) return st;
    } else {
        p->gpu.hbm_eff.value = 1;
        snprintf(p->gpu.hbm_eff.source, sizeof p->gpu.hbm_eff.source, "not given: the datasheet bandwidth");
    }
    /* calibration's fields (optional): the attention kernel's FLOP rate */
    if (json_object_get(g, "attention_tflops") && (st = get_val(c, g, "gpu.", "attention_tflops", TFLOP, 'p', &p->gpu.attn_flops)))
        return st;
    if (json_object_get(g, "attention_fixed_us") && (st = get_val(c, g, "gpu.", "attention_fixed_us", US, 'z', &p->gpu.attn_fixed)))
        return st;
    json_t *ga = json_object_get(g, "gemm_memory_additive");
    if (ga && !json_is_boolean(ga)) return perr(c, KV_EPARSE, "field 'gpu.gemm_memory_additive' must be true or false%s%s", "", "");
    p->gpu.gemm_additive = ga && json_is_true(ga);
    json_t *mf = json_object_get(g, "memory_floor");
    p->gpu.memory_floor = 1;
    if (mf) {
        if (!json_is_boolean(mf)) return perr(c, KV_EPARSE, "field 'gpu.memory_floor' must be true or false%s%s", "", "");
        p->gpu.memory_floor = json_is_true(mf);
    }

    json_t *l = need_obj(c, root, "", "link", &st);
    if (st || (st = check_keys(c, l, "link.", lk)) ||
        (st = get_str(c, l, "link.", "name", p->link.name, sizeof p->link.name)) ||
        (st = parse_dir(c, l, "h2d", &p->link.h2d)) || (st = parse_dir(c, l, "d2h", &p->link.d2h)))
        return st;

    json_t *cp = need_obj(c, root, "", "cpu", &st);
    if (st || (st = check_keys(c, cp, "cpu.", ck)) || (st = get_str(c, cp, "cpu.", "name", p->cpu.name, sizeof p->cpu.name)) ||
        (st = get_val(c, cp, "cpu.", "mem_bw_gbps", GB, 'p', &p->cpu.mem_bw)) ||
        (st = get_val(c, cp, "cpu.", "memory_gib", GIB, 'p', &p->cpu.mem_bytes)) ||
        (st = get_val(c, cp, "cpu.", "attn_tflops", TFLOP, 'p', &p->cpu.attn_flops)))
        return st;
    return check_ranges(c, p);
}

static kv_status load_json(json_t *root, json_error_t *je, const char *label, hw_profile *out) {
    if (!root) {
        if (je->line < 0) return kv_errorf(KV_ENOTFOUND, "%s: %s", label, je->text);
        return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", label, je->line, je->column, je->text);
    }
    ctx_t c = {.label = label};
    hw_profile p;
    kv_status st = parse_root(&c, root, &p);
    json_decref(root);
    if (st == KV_OK) *out = p;
    return st;
}

/* Profiles are shared files: read only regular files (a FIFO would block), of a sane size. */
static kv_status read_json(const char *path, json_t **root) {
    char *text;
    size_t len;
    kv_status st = kv_io_read_all(path, 1 << 24, &text, &len);
    if (st) return st;
    json_error_t je;
    *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!*root) return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return KV_OK;
}

kv_status hw_profile_load(const char *path, hw_profile *out) {
    json_t *root;
    kv_status st = read_json(path, &root);
    if (st) return st;
    hw_profile p;
    if ((st = load_json(root, NULL, path, &p))) return st;
    /* tables and results.db know a profile by its name: a copy edited under a new file name that kept
     * the stock name would pass its numbers off as the stock profile's */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl > 5 && !strcmp(base + bl - 5, ".json") && (strlen(p.name) != bl - 5 || strncmp(p.name, base, bl - 5)))
        return kv_errorf(KV_EINVAL, "%s: field 'name' is '%s' but the file is %s: they must agree (a copied profile needs its own name)",
                         path, p.name, base);
    *out = p;
    return KV_OK;
}

kv_status hw_profile_parse(const char *text, const char *label, hw_profile *out) {
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    return load_json(root, &je, label, out);
}

const char *hw_profile_dir(void) {
    static _Thread_local char d[4200];
    snprintf(d, sizeof d, "%s/hwmodel/profiles", kv_datadir());
    return d;
}

const char *hw_links_dir(void) {
    const char *e = getenv("KVPR_LINKS");
    static _Thread_local char d[4200];
    snprintf(d, sizeof d, "%s/hwmodel/links", kv_datadir());
    return e && *e ? e : d;
}

kv_status hw_link_load(const char *name, hw_profile *p) {
    if (!kv_str_is_name(name, 63)) return kv_errorf(KV_EINVAL, "bad link name '%s'", name);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.json", hw_links_dir(), name);
    json_t *root;
    kv_status st = read_json(path, &root);
    if (st == KV_ENOTFOUND) return kv_errorf(KV_ENOTFOUND, "unknown link '%s' (files in %s)", name, hw_links_dir());
    if (st) return st;
    ctx_t c = {.label = path};
    static const char *const lk[] = {"name", "h2d", "d2h", NULL};
    hw_profile q = *p;
    if (!json_is_object(root)) st = perr(&c, KV_EPARSE, "top level must be a JSON object%s%s", "", "");
    if (!st) st = check_keys(&c, root, "link.", lk);
    if (!st) st = get_str(&c, root, "link.", "name", q.link.name, sizeof q.link.name);
    if (!st) st = parse_dir(&c, root, "h2d", &q.link.h2d);
    if (!st) st = parse_dir(&c, root, "d2h", &q.link.d2h);
    if (!st) st = check_dir(&c, "h2d", &q.link.h2d);
    if (!st) st = check_dir(&c, "d2h", &q.link.d2h);
    json_decref(root);
    if (st) return st;
    *p = q;
    return KV_OK;
}

/* NAME@LINK: the profile with its host link replaced (what if this GPU sat on that link?). */
static kv_status resolve_variant(const char *name, hw_profile *out) {
    char base[128];
    const char *at = strchr(name, '@');
    snprintf(base, sizeof base, "%.*s", (int)(at - name), name);
    hw_profile p;
    kv_status st = hw_profile_resolve(base, &p);
    if (st) return st;
    if ((st = hw_link_load(at + 1, &p))) return st;
    if (kv_str_copy(p.name, sizeof p.name, name)) return kv_errorf(KV_EINVAL, "profile name '%s' is longer than 63 bytes", name);
    char tail[128];
    snprintf(tail, sizeof tail, " [link replaced by %s]", p.link.name);
    size_t dl = strlen(p.description), room = sizeof p.description - 1;
    if (dl + strlen(tail) > room) { /* keep the note whole; cut the description at a character */
        char d[sizeof p.description];
        kv_str_copy(d, room - strlen(tail) + 1, p.description);
        snprintf(p.description, sizeof p.description, "%s", d);
        dl = strlen(p.description);
    }
    snprintf(p.description + dl, sizeof p.description - dl, "%s", tail);
    *out = p;
    return KV_OK;
}

kv_status hw_profile_resolve(const char *name, hw_profile *out) {
    if (strchr(name, '@')) return resolve_variant(name, out);
    if (strchr(name, '/') || strstr(name, ".json")) return hw_profile_load(name, out);
    if (!kv_search_name_ok(name)) return kv_errorf(KV_EINVAL, "bad profile name '%s'", name);
    /* names ignore case, as model names do: the first directory of the search path holding the
     * name wins */
    char path[4800];
    if (kv_search_find("KVPR_PROFILES", hw_profile_dir(), name, path, sizeof path)) return hw_profile_load(path, out);
    char names[128][64];
    const char *cands[128];
    int n = hw_profile_list(names, 128);
    for (int i = 0; i < n; i++) cands[i] = names[i];
    char hint[900];
    kv_suggest_text(hint, sizeof hint, name, cands, n);
    return kv_errorf(KV_ENOTFOUND, "unknown hardware profile '%s'%s (or give a .json path)", name, hint);
}

int hw_profile_list(char names[][64], int max) { return kv_search_list("KVPR_PROFILES", hw_profile_dir(), names, max); }

double hw_table_eval(const hw_table *t, double x) {
    if (t->n <= 0) return 1.0;
    if (x <= t->x[0]) return t->y[0];
    if (x >= t->x[t->n - 1]) return t->y[t->n - 1];
    size_t i = gsl_interp_bsearch(t->x, x, 0, (size_t)t->n - 1);
    double u = (log(x) - log(t->x[i])) / (log(t->x[i + 1]) - log(t->x[i]));
    return t->y[i] + u * (t->y[i + 1] - t->y[i]);
}

/* The value in the file's unit that loads back to exactly v: v / scale rounded can land one or two
 * ulps beside every x with x * scale == v, so the neighbours are tried. */
static double unscale(double v, double scale) {
    double x = v / scale, c[5] = {x, nextafter(x, HUGE_VAL), nextafter(x, -HUGE_VAL), 0, 0};
    c[3] = nextafter(c[1], HUGE_VAL), c[4] = nextafter(c[2], -HUGE_VAL);
    for (int i = 0; i < 5; i++)
        if (c[i] * scale == v) return c[i];
    return x;
}

static json_t *jval(const hw_val *v, double scale) {
    return json_pack("{s:f,s:s}", "value", unscale(v->value, scale), "source", v->source);
}
static json_t *jtab(const hw_table *t) {
    json_t *a = json_array();
    for (int i = 0; i < t->n; i++) json_array_append_new(a, json_pack("[f,f]", t->x[i], t->y[i]));
    return json_pack("{s:o,s:s}", "table", a, "source", t->source);
}
static json_t *jdir(const hw_link_dir *d) {
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "bandwidth_gbps", jval(&d->bandwidth, GB), "overhead_us",
                     jval(&d->overhead, US), "pageable_gbps", jval(&d->pageable, GB), "duplex_factor",
                     jval(&d->duplex, 1), "size_efficiency", jtab(&d->size_eff));
}

char *hw_profile_to_json(const hw_profile *p) {
    json_t *g = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "name", p->gpu.name, "peak_fp16_tflops",
                          jval(&p->gpu.peak_flops, TFLOP), "hbm_gbps", jval(&p->gpu.hbm_bw, GB), "memory_gib",
                          jval(&p->gpu.mem_bytes, GIB), "launch_us", jval(&p->gpu.launch, US),
                          "attention_bw_efficiency", jval(&p->gpu.attn_eff, 1), "hbm_efficiency", jval(&p->gpu.hbm_eff, 1),
                          "gemm_efficiency", jtab(&p->gpu.gemm_eff), "memory_floor", p->gpu.memory_floor);
    if (g && p->gpu.attn_flops.value > 0) json_object_set_new(g, "attention_tflops", jval(&p->gpu.attn_flops, TFLOP));
    if (g && p->gpu.gemm_additive) json_object_set_new(g, "gemm_memory_additive", json_true());
    if (g && p->gpu.attn_fixed.value > 0) json_object_set_new(g, "attention_fixed_us", jval(&p->gpu.attn_fixed, US));
    json_t *l = json_pack("{s:s,s:o,s:o}", "name", p->link.name, "h2d", jdir(&p->link.h2d), "d2h", jdir(&p->link.d2h));
    json_t *c = json_pack("{s:s,s:o,s:o,s:o}", "name", p->cpu.name, "mem_bw_gbps", jval(&p->cpu.mem_bw, GB),
                          "memory_gib", jval(&p->cpu.mem_bytes, GIB), "attn_tflops", jval(&p->cpu.attn_flops, TFLOP));
    json_t *root = json_pack("{s:s,s:s,s:o,s:o,s:o}", "name", p->name, "description", p->description, "gpu", g,
                             "link", l, "cpu", c);
    /* 17 significant digits: every double prints as itself, so the profile loads back unchanged */
    char *s = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(root);
    return s;
}
