/* Tests of the quant group (filled in with the feature). */
#include "tests.h"

void group_quant(tcount *c) { (void)c; }
