/* datadir: an installed binary finds its data next to itself, so 'make install PREFIX=...' works
 * anywhere without a rebuild; a binary in the build tree reads the source tree it came from. */
#include "datadir.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef KVPR_DATADIR
#define KVPR_DATADIR "."
#endif

const char *kv_datadir(void) {
    static _Thread_local char dir[4096];
    const char *e = getenv("KVPR_DATADIR");
    if (e && *e) return e;
    char exe[3072];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char probe[4200];
            snprintf(dir, sizeof dir, "%s/../share/kvpr", exe);
            snprintf(probe, sizeof probe, "%s/hwmodel/profiles", dir);
            if (access(probe, R_OK) == 0) return dir;
        }
    }
    return KVPR_DATADIR;
}

int kv_search_dir(const char *env, const char *builtin, int i, char *out, size_t size) {
    const char *e = getenv(env);
    for (const char *c = e && *e ? e : NULL; c;) {
        const char *colon = strchr(c, ':');
        size_t n = colon ? (size_t)(colon - c) : strlen(c);
        if (n > 0 && i-- == 0) {
            snprintf(out, size, "%.*s", (int)n, c);
            return 1;
        }
        c = colon ? colon + 1 : NULL;
    }
    if (i != 0) return 0;
    snprintf(out, size, "%s", builtin);
    return 1;
}

int kv_search_find(const char *env, const char *builtin, const char *name, char *path, size_t size) {
    char dir[4400];
    for (int i = 0; kv_search_dir(env, builtin, i, dir, sizeof dir); i++) {
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        char found[256] = "";
        while ((e = readdir(d))) {
            size_t len = strlen(e->d_name);
            if (len == strlen(name) + 5 && !strcmp(e->d_name + len - 5, ".json") && !strncasecmp(e->d_name, name, len - 5)) {
                snprintf(found, sizeof found, "%s", e->d_name);
                if (!strncmp(e->d_name, name, len - 5)) break; /* the exact spelling first */
            }
        }
        closedir(d);
        if (*found) {
            snprintf(path, size, "%s/%s", dir, found);
            return 1;
        }
    }
    return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

int kv_search_list(const char *env, const char *builtin, char names[][64], int max) {
    int n = 0;
    char dir[4400];
    for (int i = 0; kv_search_dir(env, builtin, i, dir, sizeof dir); i++) {
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d)) && n < max) {
            size_t len = strlen(e->d_name);
            if (len <= 5 || len - 5 >= 64 || strcmp(e->d_name + len - 5, ".json")) continue;
            memcpy(names[n], e->d_name, len - 5);
            names[n][len - 5] = 0;
            int dup = 0;
            for (int k = 0; k < n && !dup; k++) dup = !strcmp(names[k], names[n]);
            if (!dup) n++;
        }
        closedir(d);
    }
    qsort(names, (size_t)n, 64, cmp_names);
    return n;
}

int kv_search_name_ok(const char *name) {
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.'))
            return 0;
    return 1;
}
