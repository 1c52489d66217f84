/* hw_quant: (de)quantisation costs (see quant.h). */
#include "quant.h"

double hw_quant_gpu_time(const hw_profile *p, double bytes) {
    if (bytes <= 0) return 0;
    /* measured, not the streaming rate of norms and copies: one warp per 64-value group leaves
     * HBM far from saturated (quant.h) */
    return p->gpu.launch.value + bytes / (p->gpu.hbm_bw.value * HW_QUANT_HBM_FRAC);
}

double hw_quant_cpu_time(const hw_profile *p, double bytes) {
    return bytes > 0 ? bytes / p->cpu.mem_bw.value : 0;
}
