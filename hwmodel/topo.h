/* hw_topo: a host's topology, for several GPUs sharing one host (data-parallel replicas, one per
 * GPU). A topology names a GPU profile (the GPU, its own host link, its per-copy costs) and adds
 * what the GPUs share: PCIe switches with one uplink each, CPU sockets with their DRAM bandwidth,
 * cores and memory, and the link between sockets. Each GPU hangs under a switch (or directly under
 * a socket's root port) and keeps its host buffers (KV cache, activations) on a socket, its own
 * by default.
 *
 * Files live in hwmodel/topologies/NAME.json ($KVPR_TOPOLOGIES first, colon-separated), in human
 * units, every number {"value", "source"} with its provenance label, as profiles are; the format
 * is documented in hwmodel/topologies/README.md. Single-GPU profiles need none. */
#ifndef HW_TOPO_H
#define HW_TOPO_H

#include "profile.h"

#define HW_TOPO_MAX_GPUS 16
#define HW_TOPO_MAX_SWITCHES 16
#define HW_TOPO_MAX_SOCKETS 4

typedef struct {
    char name[32];
    hw_val dram_bw;      /* bytes/s: copies to and from its memory and CPU attention share it */
    hw_val cores;        /* count */
    hw_val attn_per_core;/* FLOP/s of decode attention per core */
    hw_val mem_bytes;    /* host memory on this socket */
} hw_socket;

typedef struct {
    char name[32];
    int socket;          /* the socket its uplink goes to */
    hw_val uplink_bw;    /* bytes/s per direction */
} hw_switch;

typedef struct {
    int sw;              /* switch index, -1: directly on a root port of `socket` */
    int socket;          /* the socket it attaches to (the switch's when sw >= 0) */
    int mem_socket;      /* where its host buffers live */
} hw_gpu_slot;

typedef struct {
    char name[64];
    char description[512];
    char profile[64];    /* the GPU profile every GPU of the box uses */
    int nsockets, nswitches, ngpus;
    hw_socket socket[HW_TOPO_MAX_SOCKETS];
    hw_switch sw[HW_TOPO_MAX_SWITCHES];
    hw_gpu_slot gpu[HW_TOPO_MAX_GPUS];
    hw_val inter_socket_bw; /* bytes/s per direction (0 with one socket) */
} hw_topo;

/* Loads and validates; errors name the file and the field. A file NAME.json must have "name": "NAME". */
kv_status hw_topo_parse(const char *text, const char *label, hw_topo *out);
kv_status hw_topo_load(const char *path, hw_topo *out);
/* A topology name (case ignored) on the search path, or a path to a .json file. */
kv_status hw_topo_resolve(const char *name_or_path, hw_topo *out);
const char *hw_topo_dir(void);
/* Names on the search path, sorted, without duplicates; returns the count. */
int hw_topo_list(char names[][64], int max);

/* Checks that the topology's numbers make sense with profile p and that n GPUs (1..ngpus) can
 * run: total host memory holds n replicas of cpu_bytes each. */
kv_status hw_topo_check(const hw_topo *t, const hw_profile *p, int n, double cpu_bytes);

/* Replicas sharing each hop when n GPUs run (the first n of the topology). */
typedef struct {
    int on_switch[HW_TOPO_MAX_SWITCHES];
    int on_socket[HW_TOPO_MAX_SOCKETS];   /* replicas whose buffers live on the socket */
    int remote[HW_TOPO_MAX_SOCKETS];      /* of those, attached to the other socket */
} hw_topo_load_t;
void hw_topo_loads(const hw_topo *t, int n, hw_topo_load_t *out);

/* The profile one replica (GPU g of n) sees when every replica streams at once: its link's rate
 * capped by a fair share of its switch uplink, of its socket's DRAM and of the inter-socket link,
 * and the CPU attention rate and DRAM bandwidth of its socket divided among the replicas there.
 * A planning approximation (the simulator shares flow by flow): it lets a single-GPU scheduler or
 * search choose a split for the shared host. */
void hw_topo_effective(const hw_topo *t, const hw_profile *p, int n, int g, hw_profile *out);

/* Without a topology file: n GPUs on root ports of one host whose DRAM, CPU attention rate and
 * memory are the profile's cpu section, shared by all. */
void hw_topo_default(const hw_profile *p, int n, hw_topo *t);

#endif
