/* sim export: Chrome trace JSON, results.db rows, the JSON summary. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include "sim.h"

kv_status sim_write_trace(sim_ctx *s, const char *path) {
    sim_des *d = sim_last_des(s);
    FILE *f = fopen(path, "w");
    if (!f) return kv_errorf(KV_EIO, "cannot write trace %s", path);
    /* Streamed with fprintf: a long run has hundreds of thousands of spans. */
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    for (int r = 0; r < KV_RES_COUNT; r++)
        fprintf(f, "{\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s\"}},\n", r,
                kv_res_name((kv_resource)r));
    int32_t n = sim_des_count(d);
    for (int32_t i = 0; i < n; i++) {
        sim_task *t = sim_des_get(d, i);
        /* microseconds, as the format wants; femtosecond times keep 9 decimals exact */
        fprintf(f,
                "{\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"name\":\"%s\",\"ts\":%.6f,\"dur\":%.6f,"
                "\"args\":{\"step\":%d,\"layer\":%d,\"mb\":%d,\"bytes\":%.0f,\"flops\":%.0f}}%s\n",
                t->res, kv_op_name((kv_op)t->op), (double)t->start / 1e9, (double)(t->end - t->start) / 1e9, t->step,
                t->layer, t->mb, t->bytes, t->flops, i + 1 < n ? "," : "");
    }
    fprintf(f, "]}\n");
    if (fclose(f) != 0) return kv_errorf(KV_EIO, "error writing trace %s", path);
    return KV_OK;
}

static json_t *workload_json(const kv_plan *pl) {
    return json_pack("{s:i,s:i,s:i,s:i,s:s}", "batch", pl->batch, "nb", pl->nb, "prompt", pl->prompt, "gen", pl->gen,
                     "mode", kv_mode_name(pl->mode));
}

char *sim_result_json(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *pl) {
    json_t *util = json_object(), *ops = json_object(), *crit = json_object(), *steps = json_array();
    for (int i = 0; i < KV_RES_COUNT; i++) json_object_set_new(util, kv_res_name((kv_resource)i), json_real(r->util[i]));
    for (int i = 0; i < KV_OP_COUNT; i++) {
        if (r->op_s[i] > 0) json_object_set_new(ops, kv_op_name((kv_op)i), json_real(r->op_s[i]));
        if (r->crit_s[i] > 0) json_object_set_new(crit, kv_op_name((kv_op)i), json_real(r->crit_s[i]));
    }
    for (int i = 0; i < r->nsteps; i++) json_array_append_new(steps, json_real(r->step_s[i]));
    char *plan = kv_plan_json(pl);
    json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:f,s:f,s:i,s:i,s:o,s:o,s:f,s:o,s:f,s:f,s:I,s:i,s:o}", "model", m->name, "hw",
                          p->name, "workload", workload_json(pl), "plan", json_loads(plan ? plan : "{}", 0, NULL),
                          "decode_s", r->decode_s, "throughput_tok_s", r->throughput, "split_first", r->split0,
                          "split_last", r->split_last, "utilisation", util, "busy_s", ops, "gpu_idle_s", r->gpu_idle_s,
                          "critical_path_s", crit, "gpu_mem_peak_bytes", r->mem_peak, "cpu_mem_bytes", r->cpu_mem,
                          "events", (json_int_t)r->events, "tasks", r->tasks, "step_s", steps);
    free(plan);
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    return s;
}

kv_status sim_write_db(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *pl,
                       const sim_result *r, const char *run_key, int spans, int64_t *run_id) {
    json_t *w = workload_json(pl);
    char *wl = json_dumps(w, JSON_COMPACT | JSON_PRESERVE_ORDER), *plan = kv_plan_json(pl);
    json_decref(w);
    db_run_info in = {.kind = "sim", .model = m->name, .hardware = p->name, .workload = wl, .plan = plan, .run_key = run_key};
    int64_t id;
    kv_status st = db_run_begin(db, &in, &id);
    free(wl);
    free(plan);
    if (st) return st;
    sim_des *d = sim_last_des(s);
    int32_t n = spans ? sim_des_count(d) : 0;
    for (int32_t i = 0; i < n && !st; i++) {
        sim_task *t = sim_des_get(d, i);
        kv_span sp = {t->step, t->layer, t->mb, kv_op_name((kv_op)t->op), kv_res_name((kv_resource)t->res),
                      (int64_t)(t->start / SIM_FS_PER_PS), (int64_t)(t->end / SIM_FS_PER_PS), t->bytes, t->flops};
        st = db_run_span(db, id, &sp);
    }
    struct { const char *n; double v; const char *u; } mt[] = {
        {"decode_s", r->decode_s, "s"},         {"throughput", r->throughput, "tok/s"},
        {"gpu_idle_s", r->gpu_idle_s, "s"},     {"util_gpu", r->util[KV_RES_GPU], ""},
        {"util_h2d", r->util[KV_RES_H2D], ""},  {"util_d2h", r->util[KV_RES_D2H], ""},
        {"util_cpu", r->util[KV_RES_CPU], ""},  {"gpu_mem_peak", r->mem_peak, "bytes"},
        {"cpu_mem", r->cpu_mem, "bytes"},       {"split_first", r->split0, "tokens"},
        {"split_last", r->split_last, "tokens"}};
    for (size_t i = 0; i < sizeof mt / sizeof mt[0] && !st; i++) st = db_run_metric(db, id, mt[i].n, mt[i].v, mt[i].u);
    char name[64];
    for (int i = 0; i < KV_OP_COUNT && !st; i++) {
        if (r->op_s[i] <= 0) continue;
        snprintf(name, sizeof name, "busy_%s", kv_op_name((kv_op)i));
        st = db_run_metric(db, id, name, r->op_s[i], "s");
        if (!st && r->crit_s[i] > 0) {
            snprintf(name, sizeof name, "crit_%s", kv_op_name((kv_op)i));
            st = db_run_metric(db, id, name, r->crit_s[i], "s");
        }
    }
    for (int i = 0; i < r->nsteps && !st; i++) {
        snprintf(name, sizeof name, "step_%d_s", i);
        st = db_run_metric(db, id, name, r->step_s[i], "s");
    }
    if (st) {
        db_run_abort(db);
        return st;
    }
    if ((st = db_run_commit(db))) return st;
    if (run_id) *run_id = id;
    return KV_OK;
}
