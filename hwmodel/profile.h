/* hw_profile: a machine's GPU, host link and CPU, every number with its provenance.
 * Files are JSON in human units (GB/s, TFLOP/s, GiB, microseconds); in memory all
 * values are SI (bytes/s, FLOP/s, bytes, seconds). The format is documented in
 * hwmodel/profiles/README.md. */
#ifndef HW_PROFILE_H
#define HW_PROFILE_H

#include "../core/kv_err.h"

#define HW_TABLE_MAX 32
#define HW_SRC_MAX 256

typedef struct {
    double value;
    char source[HW_SRC_MAX];
} hw_val;

/* Piecewise-linear in log(x), clamped at both ends. x strictly increasing, y in (0,1]
 * and non-decreasing (bigger copies and bigger GEMMs are never less efficient). */
typedef struct {
    int n;
    double x[HW_TABLE_MAX];
    double y[HW_TABLE_MAX];
    char source[HW_SRC_MAX];
} hw_table;

typedef struct {
    hw_val bandwidth;  /* pinned plateau, bytes/s */
    hw_val overhead;   /* per-copy overhead alpha, s */
    hw_val pageable;   /* pageable plateau, bytes/s */
    hw_val duplex;     /* fraction of the plateau left while the other direction copies */
    hw_table size_eff; /* efficiency of the bandwidth term against copy size in bytes */
} hw_link_dir;

typedef struct {
    char name[64];
    char description[512];
    struct {
        char name[64];
        hw_val peak_flops;   /* dense fp16 tensor FLOP/s */
        hw_val hbm_bw;       /* bytes/s */
        hw_val mem_bytes;    /* capacity */
        hw_val launch;       /* s per kernel */
        hw_val attn_eff;     /* fraction of hbm_bw decode attention reaches */
        hw_val hbm_eff;      /* fraction of hbm_bw streaming kernels reach: the GEMM memory floor, norms */
        hw_table gemm_eff;   /* efficiency against GEMM rows M */
        int memory_floor;    /* 1: roofline max(compute, bytes/hbm_bw); 0: compute only */
        /* -- fields calibration fits (hw_calib); optional in files -- */
        hw_val attn_flops;   /* FLOP/s of decode attention's per-query work (scores, softmax, sums), added to
                                its K/V streaming time; 0: not given (the older max(tensor, stream) model) */
        hw_val attn_fixed;   /* s per attention call beyond the launch overhead (with attn_flops only) */
        int gemm_additive;   /* 1: a GEMM's memory term adds to its compute term instead of bounding it (the
                                host backend converts its fp16 operands, then runs sgemm) */
    } gpu;
    struct {
        char name[64];
        hw_link_dir h2d, d2h;
    } link;
    struct {
        char name[64];
        hw_val mem_bw;     /* bytes/s */
        hw_val mem_bytes;  /* capacity */
        hw_val attn_flops; /* FLOP/s of decode attention on the CPU */
    } cpu;
} hw_profile;

/* Loads and validates; errors name the file, and the line/column for syntax errors or
 * the field path ("link.h2d.bandwidth_gbps") otherwise. A file NAME.json must have "name": "NAME". */
kv_status hw_profile_load(const char *path, hw_profile *out);
kv_status hw_profile_parse(const char *text, const char *label, hw_profile *out);
/* A profile name, case ignored (looked up in each directory of $KVPR_PROFILES, colon-separated,
 * then in the built-in directory hw_profile_dir), or a path to a JSON file. */
kv_status hw_profile_resolve(const char *name_or_path, hw_profile *out);
const char *hw_profile_dir(void);
/* Host links for what-if studies (hwmodel/links/NAME.json, $KVPR_LINKS): "h100-sxm@gen3" is the
 * H100 SXM profile with its link replaced by PCIe Gen3's. hw_link_load replaces p's link. */
const char *hw_links_dir(void);
kv_status hw_link_load(const char *name, hw_profile *p);
/* Names of the profiles on the search path, sorted and without duplicates; returns count. */
int hw_profile_list(char names[][64], int max);
/* Writes a profile back as JSON in the documented format (used by calibration). */
char *hw_profile_to_json(const hw_profile *p);

double hw_table_eval(const hw_table *t, double x);

#endif
