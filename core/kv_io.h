/* kv_io: input files opened only when they are regular files (a FIFO or a device given as an
 * input would block or never end), and output files written whole or not at all: into a
 * temporary file next to the target, every write and the close checked, then renamed into place,
 * so a full disk or a crash never leaves an empty or partial file under the target's name. */
#ifndef KV_IO_H
#define KV_IO_H

#include <stddef.h>
#include <stdio.h>
#include "kv_err.h"

/* Opens path for reading. KV_ENOTFOUND if it does not exist, KV_EINVAL if it is a directory, a
 * FIFO, a device or anything else that is not a regular file; the message names the path. */
kv_status kv_io_open_read(const char *path, FILE **out);
/* Reads a whole regular file (at most max bytes, else KV_EINVAL) into a NUL-terminated
 * malloc'ed buffer; *len may be NULL. */
kv_status kv_io_read_all(const char *path, size_t max, char **text, size_t *len);

/* Checks that path can be created or replaced as a regular file: KV_EINVAL if it is a directory
 * or another non-regular file, or if its directory does not exist (bad input, exit status 2). */
kv_status kv_io_check_output(const char *path);

/* mkstemp(tmpl), with the mode of an ordinary new file (0666 less the umask) instead of 0600:
 * for temporary files that are renamed into place by their writer. Returns the fd or -1. */
int kv_io_mkstemp(char *tmpl);

typedef struct kv_afile kv_afile;
/* Starts writing path: creates the temporary file (mode as an ordinary new file). */
kv_status kv_afile_open(const char *path, kv_afile **out);
/* The stream to write to, and the temporary file's name (for writers that open files by name,
 * like GLPK's: they write there, then kv_afile_commit puts it in place). */
FILE *kv_afile_fp(kv_afile *f);
const char *kv_afile_tmp(const kv_afile *f);
/* Flushes, checks every error the stream saw, syncs, closes and renames into place; on any
 * failure removes the temporary file and leaves an existing target as it was. Frees f. */
kv_status kv_afile_commit(kv_afile *f);
/* Gives up: removes the temporary file. Frees f; NULL is allowed. */
void kv_afile_abort(kv_afile *f);
/* Writes n bytes to path atomically (open, write, commit). */
kv_status kv_io_write_all(const char *path, const void *data, size_t n);

#endif
