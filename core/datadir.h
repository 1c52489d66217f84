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

/* NAME.json in the search path (env, then builtin), the case of NAME ignored but its exact spelling
 * preferred; the first directory holding it wins. 1 and its path, or 0. */
int kv_search_find(const char *env, const char *builtin, const char *name, char *path, size_t size);

/* The names of the .json files in the search path, sorted, each once (an earlier directory hides a
 * later one's file of the same name); at most max. */
int kv_search_list(const char *env, const char *builtin, char names[][64], int max);

/* A name that may be looked up in the search path: letters, digits, '-', '_', '.' only. */
int kv_search_name_ok(const char *name);

#endif
