/* exp plot: gnuplot figures. Names and titles come from experiment files and config.json files
 * that users share, so nothing here goes through a shell: gnuplot is started with an argument
 * vector, every string in a script is an escaped gnuplot literal, and figure names are checked to
 * be plain file names. Data and scripts are written atomically; gnuplot renders into temporary
 * files that are renamed into place only once they are complete. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../core/kv_str.h"
#include "exp.h"

extern char **environ;

static const char *const fmt_ext[2] = {"png", "svg"};

/* A double-quoted gnuplot string in which every byte but a few plain ones is an octal escape.
 * Single quotes cannot carry every string: gnuplot reads a leading '' as an empty string and
 * the rest of the title as commands. In double quotes gnuplot substitutes `backquotes` before it
 * reads escapes, so no quote, backquote, backslash, '@', '$' or '#' is ever written as itself. */
void exp_gp_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr(" -_.,:/+=()[]", *c))
            fputc(*c, f);
        else if (*c < 0x20 || *c == 0x7f) fputc(' ', f); /* one line: a title is no place for a newline */
        else fprintf(f, "\\%03o", *c);
    }
    fputc('"', f);
}

void exp_dat_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        fputc(*c == '"' ? '\'' : *c < 0x20 || *c == 0x7f ? ' ' : *c, f); /* one field, one line */
    fputc('"', f);
}

const char *exp_op_color(int k) {
    static const char *const col[] = {"#7b3294", "#c2a5cf", "#4dac26", "#e66101", "#fdb863", "#92c5de", "#0571b0", "#404040",
                                      "#ca0020", "#f4a582", "#b8e186", "#5e3c99", "#1b9e77", "#d95f02", "#7570b3", "#e7298a",
                                      "#66a61e", "#e6ab02", "#a6761d", "#666666"};
    int n = (int)(sizeof col / sizeof col[0]);
    return col[((k % n) + n) % n]; /* as many kinds of op as there are: colours repeat, never run out */
}

kv_status exp_plot_dir(const char *dir) {
    if (mkdir(dir, 0777) == 0) return KV_OK;
    int e = errno;
    struct stat sb;
    if (e == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return KV_OK;
    if (e == EEXIST) return kv_errorf(KV_EINVAL, "figures: %s exists and is not a directory", dir);
    if (e == ENOENT || e == ENOTDIR) return kv_errorf(KV_EINVAL, "figures: cannot create %s: its parent directory does not exist", dir);
    return kv_errorf(KV_EIO, "figures: cannot create %s: %s", dir, strerror(e));
}

kv_status exp_fig_open(exp_fig *f, const char *dir, const char *name, int with_data) {
    memset(f, 0, sizeof *f);
    if (!kv_str_is_name(name, EXP_NAME_MAX + 16))
        return kv_errorf(KV_EINVAL, "figure name '%s' is not a plain file name", name);
    if (strlen(dir) >= sizeof f->dir) return kv_errorf(KV_EINVAL, "figure directory name too long: %s", dir);
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    snprintf(f->name, sizeof f->name, "%s", name);
    char p[sizeof f->dir + sizeof f->name + 8];
    kv_status st;
    snprintf(p, sizeof p, "%s/%s.gp", dir, name);
    if ((st = kv_afile_open(p, &f->gpf))) return st;
    if (with_data) {
        snprintf(f->dat_path, sizeof f->dat_path, "%s/%s.dat", dir, name);
        if ((st = kv_afile_open(f->dat_path, &f->datf))) {
            kv_afile_abort(f->gpf);
            f->gpf = NULL;
            return st;
        }
        f->dat = kv_afile_fp(f->datf);
    }
    f->gp = kv_afile_fp(f->gpf);
    /* the script names its outputs through variables: run by hand it writes NAME.png and
     * NAME.svg, run by kvpr it writes the temporary files given with -e */
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s.%s", dir, name, fmt_ext[k]);
        fprintf(f->gp, "if (!exists(\"out_%s\")) out_%s = ", fmt_ext[k], fmt_ext[k]);
        exp_gp_str(f->gp, p);
        fputc('\n', f->gp);
    }
    return KV_OK;
}

void exp_fig_terminal(exp_fig *f, int fmt, int w, int h) {
    fprintf(f->gp, "set terminal %s size %d,%d\nset output out_%s\n", fmt ? "svg" : "pngcairo", w, h, fmt_ext[fmt]);
}

void exp_fig_abort(exp_fig *f) {
    kv_afile_abort(f->gpf);
    kv_afile_abort(f->datf);
    f->gpf = f->datf = NULL;
}

/* Is the rendered file complete? A PNG ends with its IEND chunk, an SVG with </svg>. */
static int complete(const char *path, int fmt) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char tail[16] = {0};
    long n = 0;
    if (fseek(f, -16, SEEK_END) == 0) n = (long)fread(tail, 1, sizeof tail, f);
    fclose(f);
    if (n != 16) return 0;
    if (fmt == 0) return !memcmp(tail + 8, "IEND\xae\x42\x60\x82", 8);
    int e = 16;
    while (e > 0 && (tail[e - 1] == '\n' || tail[e - 1] == '\r' || tail[e - 1] == ' ')) e--;
    return e >= 6 && !memcmp(tail + e - 6, "</svg>", 6);
}

/* Runs gnuplot on script, outputs into out[0] (PNG) and out[1] (SVG). Returns its exit status,
 * or -1 with errno set if it could not be started. */
static int run_gnuplot(const char *script, char out[2][800]) {
    char *set = NULL;
    size_t setn = 0;
    FILE *m = open_memstream(&set, &setn);
    if (!m) return -1;
    for (int k = 0; k < 2; k++) {
        fprintf(m, "out_%s = ", fmt_ext[k]);
        exp_gp_str(m, out[k]);
        fputs("; ", m);
    }
    if (fclose(m) != 0) {
        free(set);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)"gnuplot", (char *)"-e", set, (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(set);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

kv_status exp_fig_close(exp_fig *f) {
    kv_status st = KV_OK;
    char gp[sizeof f->dir + sizeof f->name + 8];
    snprintf(gp, sizeof gp, "%s/%s.gp", f->dir, f->name);
    if (f->datf && (st = kv_afile_commit(f->datf))) {
        f->datf = NULL;
        exp_fig_abort(f);
        return st;
    }
    f->datf = NULL;
    st = kv_afile_commit(f->gpf);
    f->gpf = NULL;
    if (st) return st;
    char tmp[2][800], fin[2][800];
    int fd[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        snprintf(fin[k], sizeof fin[k], "%s/%s.%s", f->dir, f->name, fmt_ext[k]);
        snprintf(tmp[k], sizeof tmp[k], "%s/.%s.%s.tmp-XXXXXX", f->dir, f->name, fmt_ext[k]);
        if ((st = kv_io_check_output(fin[k]))) break;
        if ((fd[k] = kv_io_mkstemp(tmp[k])) < 0) {
            st = kv_errorf(KV_EIO, "cannot write %s: %s", fin[k], strerror(errno));
            break;
        }
        close(fd[k]);
    }
    if (!st) {
        int rc = run_gnuplot(gp, tmp);
        if (rc < 0 && errno == ENOENT) {
            static int told;
            if (!told++) fprintf(stderr, "%s: gnuplot is not installed: figures skipped (scripts and data are written)\n", "kvpr");
        } else if (rc < 0)
            st = kv_errorf(KV_EIO, "cannot run gnuplot on %s: %s", gp, strerror(errno));
        else if (rc != 0)
            st = kv_errorf(KV_EIO, "gnuplot failed on %s (exit status %d; run 'gnuplot %s' to see why)", gp, rc, gp);
        else
            for (int k = 0; k < 2 && !st; k++) {
                /* gnuplot does not always report a failed write: check, sync, then rename */
                int ok = complete(tmp[k], k);
                int sfd = ok ? open(tmp[k], O_RDONLY | O_CLOEXEC) : -1;
                if (ok && (sfd < 0 || fsync(sfd) != 0)) ok = 0;
                if (sfd >= 0) close(sfd);
                if (!ok) st = kv_errorf(KV_EIO, "cannot write %s: gnuplot left it incomplete (is the disk full?)", fin[k]);
                else if (rename(tmp[k], fin[k]) != 0)
                    st = kv_errorf(KV_EIO, "cannot write %s: %s", fin[k], strerror(errno));
                else fd[k] = -1; /* renamed: nothing to remove */
            }
    }
    for (int k = 0; k < 2; k++)
        if (fd[k] >= 0) unlink(tmp[k]);
    return st;
}

kv_status exp_plot_sweep(const char *dir, const char *name, const char *title, const double *ts, int n, const exp_mark *m, int nm) {
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, name, 1);
    if (st) return st;
    fprintf(F.dat, "# l decode_s\n");
    for (int l = 0; l < n; l++) fprintf(F.dat, "%d %.9g\n", l, ts[l]);
    for (int i = 0; i < nm; i++) {
        fprintf(F.dat, "\n\n# ");
        exp_dat_str(F.dat, m[i].label);
        fprintf(F.dat, ": l decode_s\n%d %.9g\n", m[i].l, m[i].t);
    }
    static const int pts[] = {7, 9, 5, 11};
    static const double ps[] = {2.2, 1.6, 1.0, 0.8};
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 900, 580);
        fprintf(F.gp, "set title ");
        exp_gp_str(F.gp, title);
        fprintf(F.gp, " noenhanced\nset xlabel 'split l (tokens recomputed)'\nset ylabel 'simulated decode time (s)'\n"
                      /* the legend below the axes: a curve can pass through any corner */
                      "set grid\nset key outside below center horizontal noenhanced\nplot ");
        exp_gp_str(F.gp, F.dat_path);
        fprintf(F.gp, " index 0 with lines lw 2 title 'simulated, every l'");
        for (int i = 0; i < nm; i++) {
            char t[160];
            snprintf(t, sizeof t, "%s: l = %d", m[i].label, m[i].l);
            fprintf(F.gp, ", ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d with points pt %d ps %.1f title ", i + 1, pts[i % 4], ps[i % 4]);
            exp_gp_str(F.gp, t);
        }
        fprintf(F.gp, "\n");
    }
    return exp_fig_close(&F);
}
