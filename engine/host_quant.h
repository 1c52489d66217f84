/* eng_quant (host): the float versions of the 4-bit group-wise (de)quantisation kernels
 * (kernels/quant.cu does the same arithmetic on the GPU; kernels/ref.h has the double reference
 * and the layout), and the host backend's entries that queue them on a stream. */
#ifndef ENG_HOST_QUANT_H
#define ENG_HOST_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include "backend.h"

void eng_quant_f(const eng_half *x, uint8_t *q, size_t outer, int G, int inner);
void eng_dequant_f(const uint8_t *q, eng_half *x, size_t outer, int G, int inner);
/* the host backend's quant/dequant: the functions above in the stream's order (host_fn) */
kv_status eng_host_quant(eng_backend *b, int stream, const eng_half *x, uint8_t *q, size_t outer, int G, int inner);
kv_status eng_host_dequant(eng_backend *b, int stream, const uint8_t *q, eng_half *x, size_t outer, int G, int inner);

#endif
