/* eng_fill: host buffers filled fast. A run pins tens of GB; one scalar at a time through a float
 * generator and a float-to-fp16 conversion took minutes per run. Random fp16 bit patterns come
 * straight from a 64-bit generator (five values per draw), and copies are split over threads. */
#ifndef ENG_FILL_H
#define ENG_FILL_H

#include <stddef.h>
#include <stdint.h>
#include "backend.h"

/* n random fp16 values, mean zero, root mean square within a factor sqrt(2) of rms (a power-of-two
 * step): sign and a 10-bit mantissa uniform, the exponent one of two neighbours, so every value is
 * finite and normal. The result depends on seed and n only, not on the number of threads. */
void eng_fill_random(eng_half *p, size_t n, double rms, uint64_t seed);
/* The root mean square eng_fill_random actually produces for a requested rms. */
double eng_fill_rms(double rms);
/* memcpy split over threads (the set-up replicates one filled buffer into many). */
void eng_fill_copy(void *dst, const void *src, size_t bytes);
/* Threads the two functions use: the cores online, at most 16. */
int eng_fill_threads(void);

#endif
