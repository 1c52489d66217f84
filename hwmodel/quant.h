/* hw_quant: the cost of 4-bit group-wise (de)quantisation (--compress). Both directions are
 * memory-bound kernels: they read one form and write the other, so their time is a launch plus
 * the packed and the fp16 bytes over the rate these kernels reach, a fixed fraction of the
 * datasheet HBM bandwidth (HW_QUANT_HBM_FRAC). */
#ifndef HW_QUANT_H
#define HW_QUANT_H

#include "profile.h"

/* [meas] H200, traces/nvidia-h200-2026-11-26b/runs-comp.sql: the 1120 decode dequant_kv and
 * dequant_act spans over 50 MB of kernels/quant.cu (OPT-13B and OPT-6.7B, 4 layers, every split)
 * fit launch + bytes / (4.8 TB/s x 0.308) (least squares with the profile's 3 us launch; K/V alone
 * 0.319, activations alone 0.270), where the earlier model's hbm_eff (0.9, a streaming copy's
 * rate) predicted 0.32 of the measured time. Other GPUs: [est] the same fraction. The small
 * per-token quant of the decode steps measured ~11 us (0.84 MB), the prompt's stores 0.11-0.15 of
 * HBM: neither is on a decode step's critical path, so one fraction serves all four ops. */
#define HW_QUANT_HBM_FRAC 0.31

/* A GPU (de)quantisation kernel moving `bytes` (packed + fp16) through HBM. */
double hw_quant_gpu_time(const hw_profile *p, double bytes);
/* The CPU's dequantisation of a packed cache before its own attention (cpu-attn), `bytes` packed +
 * fp16, at the CPU's memory bandwidth. */
double hw_quant_cpu_time(const hw_profile *p, double bytes);

#endif
