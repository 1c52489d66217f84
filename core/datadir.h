/* datadir: where profiles, links and experiments are read from. */
#ifndef KV_DATADIR_H
#define KV_DATADIR_H

#include <stddef.h>

/* $KVPR_DATADIR if set; else PREFIX/share/kvpr when this binary runs from PREFIX/bin after
 * 'make install PREFIX=...'; else the source tree the binary was built from. */
const char *kv_datadir(void);

/* The i-th directory of a search path: the non-empty entries of the colon-separated environment
 * variable env first, then builtin; 0 when i is past the end. */
int kv_search_dir(const char *env, const char *builtin, int i, char *out, size_t size);

#endif
