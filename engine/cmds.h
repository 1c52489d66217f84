/* eng_cmd: the kvpr-engine subcommands, one file each (engine/main.c dispatches). Each returns the
 * process exit code: 0 done, 2 bad input, 1 anything else (cli_fail's rule). */
#ifndef ENG_CMDS_H
#define ENG_CMDS_H

#include "../hwmodel/profile.h"
#include "backend.h"

/* kernels against CPU references, the hold, and kvpr against offloading; --quick: a small subset
 * sized for compute-sanitizer, which slows every kernel down many times */
int eng_cmd_selftest(const eng_backend_type *bt, int argc, char **argv);
/* copy, GEMM and attention micro-benchmarks; --estimate PROFILE prints what they would take there */
int eng_cmd_bench(const eng_backend_type *bt, int argc, char **argv);

#endif
