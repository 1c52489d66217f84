/* searchplot: the figures of `kvpr search`: policy regions over context x batch (one panel per
 * model, one figure per machine) and the search's validation against brute force. Drawn with
 * exp_fig (exp.h): gnuplot without a shell, every string an escaped literal, files written whole. */
#ifndef EXP_SEARCHPLOT_H
#define EXP_SEARCHPLOT_H

#include "../sched/regions.h"
#include "exp.h"

/* The colour a policy has in every region figure; "does not fit" is SEARCHPLOT_NOFIT. */
const char *searchplot_color(kv_policy p);
#define SEARCHPLOT_NOFIT "#d9d9d9"

/* DIR/NAME.{dat,gp,png,svg}: n panels side by side, panel i the grid g[i] (its model as the
 * panel's title); each cell coloured by its winner and labelled with the winner and its lead over
 * the best other policy. */
kv_status searchplot_regions(const char *dir, const char *name, const char *title, const regions_grid *g, int n);

typedef struct {
    char label[96];             /* the case, short: "OPT-1.3B t4 generation" */
    search_objective objective;
    double search_value, brute_value, regret;
} searchplot_vcase;

/* DIR/search-validate-regret.* (regret per case, with the 1 % median and 5 % max targets)
 * and DIR/search-validate-values.* (the search's value against the brute force's, log-log, one
 * point per case on the diagonal where they agree). */
kv_status searchplot_validate(const char *dir, const searchplot_vcase *c, int n);

#endif
