/* suggest: "did you mean" for unknown names (models, hardware profiles). */
#ifndef KV_SUGGEST_H
#define KV_SUGGEST_H

#include <stddef.h>

/* The candidate closest to name (case-insensitive edit distance), or NULL when none is close
 * enough to be a likely typo (distance above a third of the name's length, at least 2). */
const char *kv_suggest(const char *name, const char *const *cands, int n);
/* Writes "; did you mean 'X'? valid: a, b, c" (or just "; valid: ...") into buf. */
void kv_suggest_text(char *buf, size_t size, const char *name, const char *const *cands, int n);

#endif
