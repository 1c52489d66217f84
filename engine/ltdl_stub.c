/* eng_ltdl_stub: libltdl's entry points for the portable kvpr-engine (see the Makefile). GLPK's
 * static archive calls them only to load ODBC/MySQL table drivers for MathProg, which kvpr never
 * uses, and libltdl ships no static archive; these answer that dynamic loading is not available,
 * which GLPK turns into an ordinary error. Pointers stand in for lt_dlhandle (a pointer type). */
#include <stddef.h>

int lt_dlinit(void);
int lt_dlexit(void);
void *lt_dlopen(const char *filename);
void *lt_dlsym(void *handle, const char *name);
const char *lt_dlerror(void);
int lt_dlclose(void *handle);

int lt_dlinit(void) { return 1; }
int lt_dlexit(void) { return 0; }
void *lt_dlopen(const char *filename) { return (void)filename, NULL; }
void *lt_dlsym(void *handle, const char *name) { return (void)handle, (void)name, NULL; }
const char *lt_dlerror(void) { return "dynamic loading is not available in this kvpr-engine (statically linked GLPK)"; }
int lt_dlclose(void *handle) { return (void)handle, 0; }
