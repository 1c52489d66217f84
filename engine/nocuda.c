/* eng_nocuda: the CUDA backend's entry point in builds that leave CUDA out (the test binary). */
#include "backend.h"

const eng_backend_type *eng_cuda_backend(void) { return 0; }
