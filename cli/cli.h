/* cli: shared helpers of the kvpr subcommands. */
#ifndef KV_CLI_H
#define KV_CLI_H

#include <stdint.h>
#include "../core/kv_err.h"

/* The program name that prefixes messages ("kvpr", "kvpr-engine"). */
extern const char *cli_prog;
/* Prints "PROG: <message>" on stderr and returns the exit code for st:
 * 2 for bad input (the user can fix the command or the file), 1 for everything else. */
int cli_fail(kv_status st);
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict integer/float parsing with a range; the message names the option. */
kv_status cli_int(const char *opt, const char *s, long lo, long hi, int *out);
kv_status cli_double(const char *opt, const char *s, double lo, double hi, double *out);

#include "../core/db.h"
/* Opens a results database with the lock timeout of $KVPR_DB_TIMEOUT_MS (default 5000 ms). */
kv_status cli_db_open(const char *path, kv_db **db);

int cmd_model(int argc, char **argv);
int cmd_hw(int argc, char **argv);
int cmd_cost(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_compare(int argc, char **argv);

#ifndef KVPR_DATADIR
#define KVPR_DATADIR "."
#endif
#define KVPR_DATADIR_STR KVPR_DATADIR

#include "../core/plan.h"
#include "../core/model.h"
/* One warning line on stderr when ctx (prompt + generated tokens) exceeds the model's
 * max_position_embeddings. */
void cli_warn_context(const kv_model *m, int ctx);
/* Parses the plan options shared by kvpr sim, kvpr plan and kvpr-engine run (cli/args.c); returns -1
 * to go on, else an exit code. *hw may be preset to "" to make --hw optional. */
int cli_parse_plan(int argc, char **argv, kv_plan *pl, const char **model, const char **hw, const char **trace,
                   const char **dbpath, int *js, const char *help);
/* The same for command cmd, refusing the long options named in unused (NULL-terminated): options a
 * command does not use are errors, not silently ignored. */
int cli_parse_plan_for(const char *cmd, const char *const *unused, int argc, char **argv, kv_plan *pl, const char **model,
                       const char **hw, const char **trace, const char **dbpath, int *js, const char *help);

#endif
