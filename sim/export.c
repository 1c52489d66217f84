/* sim export: Chrome trace JSON, results.db rows, the JSON summary. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "../core/kv_io.h"
#include "sim.h"

/* Picoseconds as microseconds with six exact decimals: printing ts and ts + dur from the same
 * integer end points keeps back-to-back spans of a queue from overlapping (Perfetto drops
 * partially overlapping slices). */
static void us_of(FILE *f, const char *key, int64_t ps) {
    fprintf(f, "\"%s\":%lld.%06lld", key, (long long)(ps / 1000000), (long long)(ps % 1000000));
}

kv_status sim_write_trace(sim_ctx *s, const char *path, const char *title, int step0, int step1) {
    sim_des *d = sim_last_des(s);
    if (sim_des_count(d) > 0 && !sim_des_get(d, 0))
        return kv_errorf(KV_EINVAL, "sim: a trace needs the whole timeline (the run streamed its graph: sim_stream off)");
    kv_afile *af;
    kv_status st = kv_afile_open(path, &af);
    if (st) return st;
    FILE *f = kv_afile_fp(af);
    char esc[512];
    json_t *tj = json_string(title ? title : "kvpr sim");
    char *tq = tj ? json_dumps(tj, JSON_ENCODE_ANY) : NULL; /* a JSON string, quoted and escaped */
    json_decref(tj);
    snprintf(esc, sizeof esc, "%s", tq ? tq : "\"kvpr sim\"");
    free(tq);
    /* Streamed with fprintf: a long run has millions of spans. */
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"run\":%s,\"steps\":\"%d:%d\"},\"traceEvents\":[\n", esc, step0, step1);
    fprintf(f, "{\"ph\":\"M\",\"pid\":0,\"name\":\"process_name\",\"args\":{\"name\":%s}}", esc);
    for (int q = 0; q < KV_Q_COUNT; q++) {
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s (%s)\"}}", q,
                kv_queue_name((kv_queue)q), kv_res_name(kv_queue_res((kv_queue)q)));
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":%d}}", q, q);
    }
    int32_t n = sim_des_count(d);
    for (int32_t i = 0; i < n; i++) {
        sim_task *t = sim_des_get(d, i);
        if (t->step < step0 || t->step > step1) continue;
        int64_t a = (int64_t)(t->start / SIM_FS_PER_PS), z = (int64_t)(t->end / SIM_FS_PER_PS);
        fprintf(f, ",\n{\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"name\":\"%s\",", t->queue, kv_op_name((kv_op)t->op));
        us_of(f, "ts", a);
        fputc(',', f);
        us_of(f, "dur", z - a);
        fprintf(f, ",\"args\":{\"step\":%d,\"layer\":%d,\"mb\":%d,\"bytes\":%.0f,\"flops\":%.0f}}", t->step, t->layer, t->mb,
                t->bytes, t->flops);
    }
    fprintf(f, "\n]}\n");
    return kv_afile_commit(af);
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
    json_t *pf = json_object();
    for (int i = 0; i < KV_OP_COUNT; i++)
        if (r->prefill_op_s[i] > 0) json_object_set_new(pf, kv_op_name((kv_op)i), json_real(r->prefill_op_s[i]));
    const kv_layout *ly = &r->layout;
    json_t *lay = json_pack("{s:i,s:i,s:b,s:f,s:f,s:{s:f,s:f,s:f,s:f,s:f,s:f},s:{s:f,s:f,s:f,s:f}}", "kv_seqs_gpu", ly->b_gpu,
                            "kv_seqs_cpu", ly->b_cpu, "hidden_on_cpu", ly->hidden_cpu, "weights_gpu_bytes_layer", ly->w_gpu,
                            "weights_cpu_bytes_layer", ly->w_cpu, "gpu", "weights", ly->gpu_weights, "weight_buffers",
                            ly->gpu_wslots, "kv_cache", ly->gpu_kv, "kv_buffers", ly->gpu_kvslots, "act_buffers",
                            ly->gpu_actslots, "working", ly->gpu_work + ly->gpu_prefill, "cpu", "weights",
                            ly->cpu_weights, "kv_cache", ly->cpu_kv, "activations", ly->cpu_act, "hidden", ly->cpu_hidden);
    json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:o,s:o,s:f,s:o,s:f,s:f,s:I,s:i,s:o,s:o,s:o}", "model",
                          m->name, "hw", p->name, "workload", workload_json(pl), "plan",
                          json_loads(plan ? plan : "{}", 0, NULL), "prefill_s", r->prefill_s, "decode_s", r->decode_s,
                          "generation_tok_s", r->generation_tok_s, "decode_tok_s", r->decode_tok_s,
                          "throughput_tok_s", r->throughput, "split_first", r->split0,
                          "split_last", r->split_last, "utilisation", util, "busy_s", ops, "gpu_idle_s", r->gpu_idle_s,
                          "critical_path_s", crit, "gpu_mem_peak_bytes", r->mem_peak, "cpu_mem_bytes", r->cpu_mem,
                          "events", (json_int_t)r->events, "tasks", r->tasks, "step_s", steps, "prefill_busy_s", pf,
                          "layout", lay);
    free(plan);
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    return s;
}

kv_status sim_write_db_sched(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *pl,
                       const sim_result *r, const char *run_key, int spans, int64_t *run_id, const char *sched) {
    json_t *w = workload_json(pl);
    char *wl = json_dumps(w, JSON_COMPACT | JSON_PRESERVE_ORDER), *plan = kv_plan_json(pl);
    json_decref(w);
    db_run_info in = {.kind = "sim", .model = m->name, .hardware = p->name, .workload = wl, .plan = plan, .run_key = run_key,
                      .scheduler = sched};
    int64_t id;
    kv_status st = db_run_begin(db, &in, &id);
    free(wl);
    free(plan);
    if (st) return st;
    sim_des *d = sim_last_des(s);
    int32_t n = spans ? sim_des_count(d) : 0;
    if (n > 0 && !sim_des_get(d, 0)) {
        db_run_abort(db);
        return kv_errorf(KV_EINVAL, "sim: spans need the whole timeline (the run streamed its graph: sim_stream off)");
    }
    for (int32_t i = 0; i < n && !st; i++) {
        sim_task *t = sim_des_get(d, i);
        kv_span sp = {t->step, t->layer, t->mb, kv_op_name((kv_op)t->op), kv_res_name((kv_resource)t->res),
                      (int64_t)(t->start / SIM_FS_PER_PS), (int64_t)(t->end / SIM_FS_PER_PS), t->bytes, t->flops};
        st = db_run_span(db, id, &sp);
    }
    struct { const char *n; double v; const char *u; } mt[] = {
        {"decode_s", r->decode_s, "s"},         {"throughput", r->throughput, "tok/s"},
        {"prefill_s", r->prefill_s, "s"},       {"decode_tok_s", r->decode_tok_s, "tok/s"},
        {"generation_tok_s", r->generation_tok_s, "tok/s"},
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

kv_status sim_write_db(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *pl, const sim_result *r,
                       const char *run_key, int spans, int64_t *run_id) {
    return sim_write_db_sched(s, db, m, p, pl, r, run_key, spans, run_id, NULL);
}
