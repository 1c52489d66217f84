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
