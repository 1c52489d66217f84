/* searchplot: figures of `kvpr search` (see searchplot.h). Model and profile names reach the
 * scripts from users' config.json and profile files, so every one goes through exp_gp_str (script)
 * or exp_dat_str (data); nothing here builds a command line. */
#include "searchplot.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *searchplot_color(kv_policy p) {
    /* colour-blind-safe, and the same policy has the same colour in every panel and figure */
    static const char *const col[KV_POL_COUNT] = {"#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#0571b0"};
    return (unsigned)p < KV_POL_COUNT ? col[p] : SEARCHPLOT_NOFIT;
}

/* "#rrggbb" as the integer gnuplot's `rgb variable` reads from a data column */
static long rgb_of(const char *hex) { return strtol(hex + 1, NULL, 16); }

/* A colour in a script as "0xrrggbb": gnuplot's colour parser does not read the octal escape
 * exp_gp_str writes for '#', and the 0x form needs no escape at all. */
static void gp_color(FILE *gp, const char *hex) { fprintf(gp, "\"0x%06lx\"", rgb_of(hex) & 0xffffff); }

static void tics(FILE *gp, const char *axis, const int *v, int n, int tokens) {
    fprintf(gp, "set %stics (", axis);
    for (int i = 0; i < n; i++) {
        char b[32];
        if (tokens) regions_fmt_tokens(b, sizeof b, v[i]);
        else snprintf(b, sizeof b, "%d", v[i]);
        exp_gp_str(gp, b);
        fprintf(gp, " %d%s", i, i + 1 < n ? ", " : ")\n");
    }
}

kv_status searchplot_regions(const char *dir, const char *name, const char *title, const regions_grid *g, int n) {
    if (n < 1) return kv_errorf(KV_EINVAL, "regions figure %s: no grid", name);
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, name, 1);
    if (st) return st;
    /* one block per panel: x index, y index, colour, winner, lead, prompt, sequences, value */
    for (int k = 0; k < n; k++) {
        const regions_grid *q = &g[k];
        if (k) fprintf(F.dat, "\n\n");
        fprintf(F.dat, "# ");
        exp_dat_str(F.dat, q->model);
        fprintf(F.dat, " on ");
        exp_dat_str(F.dat, q->hw);
        fprintf(F.dat, ": ix iy rgb winner lead prompt sequences %s\n", search_objective_name(q->objective));
        for (int ip = 0; ip < q->np; ip++)
            for (int is = 0; is < q->ns; is++) {
                const regions_cell *c = regions_at(q, ip, is);
                char lead[32] = "";
                if (c->fits && c->has_runner) snprintf(lead, sizeof lead, "%.2fx", c->lead);
                fprintf(F.dat, "%d %d %ld ", ip, is, rgb_of(c->fits ? searchplot_color(c->policy) : SEARCHPLOT_NOFIT));
                exp_dat_str(F.dat, c->fits ? kv_policy_name(c->policy) : "no fit");
                fputc(' ', F.dat);
                exp_dat_str(F.dat, lead);
                fprintf(F.dat, " %d %d %.9g\n", q->prompts[ip], q->seqs[is], c->fits ? c->value : (double)NAN);
            }
    }
    int panel_w = 520, w = 60 + panel_w * n, h = 480;
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, w, h);
        fprintf(F.gp, "set multiplot layout 1,%d title ", n);
        exp_gp_str(F.gp, title);
        fprintf(F.gp, " noenhanced\nset bmargin 6\nset tmargin 3\nunset grid\nset tics scale 0\nset border 0\n"
                      "set xlabel 'prompt tokens'\nset ylabel 'sequences in flight (gbs x nb)'\n");
        for (int k = 0; k < n; k++) {
            const regions_grid *q = &g[k];
            fprintf(F.gp, "set xrange [-0.5:%g]\nset yrange [-0.5:%g]\n", q->np - 0.5, q->ns - 0.5);
            tics(F.gp, "x", q->prompts, q->np, 1);
            tics(F.gp, "y", q->seqs, q->ns, 0);
            fprintf(F.gp, "set title ");
            exp_gp_str(F.gp, q->model);
            fprintf(F.gp, " noenhanced\n");
            /* the legend once, in one row under the panels: drawn as objects at screen positions,
             * since a key belongs to one panel and wraps to its width */
            if (k == 0) {
                fprintf(F.gp, "unset key\n");
                for (int e = 0; e <= KV_POL_COUNT; e++) {
                    double x = 0.5 + (e - (KV_POL_COUNT + 1) / 2.0) * 0.13;
                    fprintf(F.gp, "set object %d rect from screen %.4f,0.025 to screen %.4f,0.06 fs solid 1.0 noborder fc rgb ", e + 1,
                            x, x + 0.02);
                    gp_color(F.gp, e < KV_POL_COUNT ? searchplot_color((kv_policy)e) : SEARCHPLOT_NOFIT);
                    fprintf(F.gp, "\nset label %d ", e + 1);
                    exp_gp_str(F.gp, e < KV_POL_COUNT ? kv_policy_name((kv_policy)e) : "does not fit");
                    fprintf(F.gp, " at screen %.4f,0.0425 left noenhanced\n", x + 0.026);
                }
            }
            fprintf(F.gp, "plot ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 1:2:(0.48):(0.48):3 with boxxyerror fs solid 1.0 noborder lc rgb variable notitle, ", k);
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 1:2:4 with labels offset 0,0.45 font ',8' noenhanced notitle, ", k);
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 1:2:5 with labels offset 0,-0.45 font ',7' noenhanced notitle", k);
            fprintf(F.gp, "\n");
            if (k == 0) fprintf(F.gp, "unset object\nunset label\n"); /* drawn once */
        }
        fprintf(F.gp, "unset multiplot\n");
    }
    return exp_fig_close(&F);
}

static const char *unit_of(search_objective o) { return o == SEARCH_LATENCY ? "ms/token" : "tokens/s"; }

kv_status searchplot_validate(const char *dir, const searchplot_vcase *c, int n) {
    if (n < 1) return kv_errorf(KV_EINVAL, "validation figure: no case");
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, "search-validate-regret", 1);
    if (st) return st;
    fprintf(F.dat, "# case label regret_percent\n");
    for (int i = 0; i < n; i++) {
        fprintf(F.dat, "%d ", i + 1);
        exp_dat_str(F.dat, c[i].label);
        fprintf(F.dat, " %.9g\n", 100 * c[i].regret);
    }
    /* the targets always show, and so does a regret of zero: each bar carries its value */
    double ymin = -0.5, ymax = 7.5;
    for (int i = 0; i < n; i++) ymin = fmin(ymin, 100 * c[i].regret - 0.5), ymax = fmax(ymax, 100 * c[i].regret + 1);
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 1000, 600);
        fprintf(F.gp, "set title 'kvpr search --validate: regret against brute-force simulation (< 0: the search beat the 10 %% lattice)'"
                      " noenhanced\nset ylabel 'regret (%%)'\nset grid ytics\nset xtics rotate by -35 left noenhanced font ',9'\n"
                      "set bmargin 11\nset rmargin 22\nset style fill solid 0.8 noborder\nset boxwidth 0.7\n"
                      "set xrange [0.3:%g]\nset yrange [%g:%g]\nset key top right noenhanced\nplot ",
                n + 0.7, ymin, ymax);
        exp_gp_str(F.gp, F.dat_path);
        fprintf(F.gp, " using 1:3:xtic(2) with boxes lc rgb '#0571b0' title 'regret', ");
        exp_gp_str(F.gp, F.dat_path);
        fprintf(F.gp, " using 1:($3 > 0 ? $3 : 0):(sprintf('%%.2f', $3)) with labels offset 0,0.7 font ',8' notitle, "
                      "1 with lines dt 2 lc rgb '#1b9e77' title 'median target 1 %%', 5 with lines dt 2 lc rgb '#ca0020' "
                      "title 'max target 5 %%'\n");
    }
    if ((st = exp_fig_close(&F))) return st;

    if ((st = exp_fig_open(&F, dir, "search-validate-values", 1))) return st;
    double lo = INFINITY, hi = 0;
    for (int o = 0; o < SEARCH_OBJ_COUNT; o++) {
        /* one block per objective: the units differ (tokens/s against ms/token) */
        fprintf(F.dat, "%s# %s (%s): case brute_force search\n", o ? "\n\n" : "", search_objective_name((search_objective)o),
                unit_of((search_objective)o));
        int any = 0;
        for (int i = 0; i < n; i++) {
            if (c[i].objective != (search_objective)o) continue;
            double k = o == SEARCH_LATENCY ? 1e3 : 1; /* seconds per token shown as ms */
            double b = k * c[i].brute_value, s = k * c[i].search_value;
            fprintf(F.dat, "%d %.9g %.9g\n", i + 1, b, s);
            lo = fmin(lo, fmin(b, s)), hi = fmax(hi, fmax(b, s));
            any = 1;
        }
        /* gnuplot refuses an empty block: a point off the axes keeps the index numbering */
        if (!any) fprintf(F.dat, "0 NaN NaN\n");
    }
    if (!(lo > 0) || !(hi > 0)) lo = 1, hi = 10;
    lo /= 1.5, hi *= 1.5;
    static const int pts[SEARCH_OBJ_COUNT] = {7, 5, 9};
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 760, 680);
        fprintf(F.gp, "set title 'kvpr search: value of its choice against the brute-force best (each simulated)' noenhanced\n"
                      "set logscale xy\nset xrange [%g:%g]\nset yrange [%g:%g]\nset size square\nset grid\n"
                      "set xlabel 'brute-force best (tokens/s; ms/token for latency)'\n"
                      "set ylabel 'search choice (same units)'\nset key top left noenhanced\nplot x with lines dt 2 lc rgb '#808080' "
                      "title 'equal'",
                lo, hi, lo, hi);
        for (int o = 0; o < SEARCH_OBJ_COUNT; o++) {
            char t[64];
            snprintf(t, sizeof t, "%s (%s)", search_objective_name((search_objective)o), unit_of((search_objective)o));
            fprintf(F.gp, ", ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 2:3 with points pt %d ps 1.6 title ", o, pts[o]);
            exp_gp_str(F.gp, t);
            fprintf(F.gp, ", ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 2:3:(sprintf('%%d', $1)) with labels offset 1.2,0.6 font ',8' notitle", o);
        }
        fprintf(F.gp, "\n");
    }
    return exp_fig_close(&F);
}
