/* hw_quant: (de)quantisation costs (see quant.h). */
#include "quant.h"

double hw_quant_gpu_time(const hw_profile *p, double bytes) {
    if (bytes <= 0) return 0;
    /* the same streaming rate the cost model gives norms and the GEMMs' memory floor */
    return p->gpu.launch.value + bytes / (p->gpu.hbm_bw.value * p->gpu.hbm_eff.value);
}

double hw_quant_cpu_time(const hw_profile *p, double bytes) {
    return bytes > 0 ? bytes / p->cpu.mem_bw.value : 0;
}
