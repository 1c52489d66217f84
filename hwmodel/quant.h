/* hw_quant: the cost of 4-bit group-wise (de)quantisation (--compress). Both directions are
 * memory-bound streaming kernels: they read one form and write the other, so their time is the
 * packed plus the fp16 bytes over the memory bandwidth streaming kernels reach, plus a launch. */
#ifndef HW_QUANT_H
#define HW_QUANT_H

#include "profile.h"

/* A GPU (de)quantisation kernel moving `bytes` (packed + fp16) through HBM. */
double hw_quant_gpu_time(const hw_profile *p, double bytes);
/* The CPU's dequantisation of a packed cache before its own attention (cpu-attn), `bytes` packed +
 * fp16, at the CPU's memory bandwidth. */
double hw_quant_cpu_time(const hw_profile *p, double bytes);

#endif
