/* Shared by the libFuzzer harnesses: the input as a NUL-terminated string, and a check that
 * aborts (a finding) with a message when an invariant breaks. */
#ifndef KV_FUZZ_H
#define KV_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input with a NUL appended (parsers take C strings); caller frees. */
static inline char *fuzz_text(const uint8_t *data, size_t size) {
    char *t = malloc(size + 1);
    if (!t) abort();
    memcpy(t, data, size);
    t[size] = 0;
    return t;
}

#define FUZZ_CHECK(cond, ...)                                  \
    do {                                                       \
        if (!(cond)) {                                         \
            fprintf(stderr, "invariant broken: " __VA_ARGS__); \
            fputc('\n', stderr);                               \
            abort();                                           \
        }                                                      \
    } while (0)

#endif
