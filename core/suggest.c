/* suggest: a typo in a name gets the likely intended name and the list of valid ones, so the user
 * does not need a second command to find them. */
#include "suggest.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Levenshtein distance, ignoring case; names are short (< 64 bytes), longer ones count as far. */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 1 << 20;
    int row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int sub = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[lb];
}

const char *kv_suggest(const char *name, const char *const *cands, int n) {
    int limit = (int)strlen(name) / 3;
    if (limit < 2) limit = 2;
    const char *best = NULL;
    int bd = limit + 1;
    for (int i = 0; i < n; i++) {
        int d = distance(name, cands[i]);
        if (d < bd) bd = d, best = cands[i];
    }
    return best;
}

void kv_suggest_text(char *buf, size_t size, const char *name, const char *const *cands, int n) {
    const char *s = kv_suggest(name, cands, n);
    size_t k = 0;
    int w = s ? snprintf(buf, size, "; did you mean '%s'? valid:", s) : snprintf(buf, size, "; valid:");
    if (w < 0 || (size_t)w >= size) return;
    k = (size_t)w;
    for (int i = 0; i < n && k < size; i++) {
        w = snprintf(buf + k, size - k, "%s %s", i ? "," : "", cands[i]);
        if (w < 0) return;
        k += (size_t)w;
    }
}
