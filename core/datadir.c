/* datadir: an installed binary finds its data next to itself, so 'make install PREFIX=...' works
 * anywhere without a rebuild; a binary in the build tree reads the source tree it came from. */
#include "datadir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
