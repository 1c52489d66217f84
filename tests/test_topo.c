/* Tests of the topo group (filled in with the feature). */
#include "tests.h"

void group_topo(tcount *c) { (void)c; }
