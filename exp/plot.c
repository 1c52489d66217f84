/* exp plot: gnuplot figures from data files the tools write next to them. */
#include <stdio.h>
#include <stdlib.h>
#include "exp.h"

int exp_gnuplot(const char *script) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", script);
    if (system(cmd) != 0) {
        fprintf(stderr, "kvpr: gnuplot failed on %s (figure skipped)\n", script);
        return -1;
    }
    return 0;
}

void exp_plot_sweep(const char *dir, const char *name, const char *title, const double *ts, int n, const exp_mark *m, int nm) {
    char dat[700], gp[700];
    snprintf(dat, sizeof dat, "%s/%s.dat", dir, name);
    snprintf(gp, sizeof gp, "%s/%s.gp", dir, name);
    FILE *f = fopen(dat, "w");
    if (!f) return;
    fprintf(f, "# l decode_s\n");
    for (int l = 0; l < n; l++) fprintf(f, "%d %.9g\n", l, ts[l]);
    for (int i = 0; i < nm; i++) fprintf(f, "\n\n# %s: l decode_s\n%d %.9g\n", m[i].label, m[i].l, m[i].t);
    fclose(f);
    if (!(f = fopen(gp, "w"))) return;
    static const int pts[] = {7, 9, 5, 11};
    static const double ps[] = {2.2, 1.6, 1.0, 0.8};
    for (int fmt = 0; fmt < 2; fmt++) {
        fprintf(f, "set terminal %s size 900,540\nset output '%s/%s.%s'\n", fmt ? "svg" : "pngcairo", dir, name, fmt ? "svg" : "png");
        fprintf(f, "set title '%s' noenhanced\nset xlabel 'split l (tokens recomputed)'\nset ylabel 'simulated decode time (s)'\n"
                   "set grid\nset key top right noenhanced\nplot '%s' index 0 with lines lw 2 title 'simulated, every l'",
                title, dat);
        for (int i = 0; i < nm; i++)
            fprintf(f, ", '%s' index %d with points pt %d ps %.1f title '%s: l = %d'", dat, i + 1, pts[i % 4], ps[i % 4],
                    m[i].label, m[i].l);
        fprintf(f, "\n");
    }
    fclose(f);
    exp_gnuplot(gp);
}
