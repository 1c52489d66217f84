/* kv_io: regular-file input and atomic output. */
#include "kv_io.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Errors that mean the user named a wrong path (exit status 2) rather than a failing disk. */
static kv_status path_status(int err) {
    return err == ENOENT || err == ENOTDIR || err == EISDIR || err == ENAMETOOLONG || err == ELOOP ? KV_EINVAL : KV_EIO;
}

kv_status kv_io_open_read(const char *path, FILE **out) {
    /* O_NONBLOCK: opening a FIFO for reading must not wait for a writer before we can refuse it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return kv_errorf(e == ENOENT ? KV_ENOTFOUND : path_status(e), "cannot read %s: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kv_errorf(KV_EIO, "cannot read %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        int dir = S_ISDIR(sb.st_mode);
        close(fd);
        return kv_errorf(KV_EINVAL, "cannot read %s: %s", path, dir ? "it is a directory" : "not a regular file");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        close(fd);
        return kv_errorf(KV_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return kv_errorf(KV_ENOMEM, "cannot read %s: out of memory", path);
    }
    *out = f;
    return KV_OK;
}

kv_status kv_io_read_all(const char *path, size_t max, char **text, size_t *len) {
    FILE *f;
    kv_status st = kv_io_open_read(path, &f);
    if (st) return st;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            if (cap > max) break;
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b, cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return kv_errorf(KV_ENOMEM, "cannot read %s: out of memory", path);
    if (bad) {
        free(buf);
        return kv_errorf(KV_EIO, "cannot read %s: read error", path);
    }
    if (n > max) {
        free(buf);
        return kv_errorf(KV_EINVAL, "%s is larger than %zu bytes", path, max);
    }
    buf[n] = 0;
    *text = buf;
    if (len) *len = n;
    return KV_OK;
}

/* The directory part of path ("." for a bare name); malloc'ed. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

kv_status kv_io_check_output(const char *path) {
    if (!*path) return kv_errorf(KV_EINVAL, "empty output path");
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return kv_errorf(KV_EINVAL, "cannot write %s: it is a directory", path);
        if (!S_ISREG(sb.st_mode)) return kv_errorf(KV_EINVAL, "cannot write %s: not a regular file", path);
        return KV_OK;
    }
    int e = errno;
    if (e != ENOENT) return kv_errorf(path_status(e), "cannot write %s: %s", path, strerror(e));
    char *dir = dir_of(path);
    if (!dir) return kv_errorf(KV_ENOMEM, "out of memory");
    kv_status st = KV_OK;
    if (stat(dir, &sb) != 0) {
        e = errno;
        st = e == ENOENT ? kv_errorf(KV_EINVAL, "cannot write %s: directory %s does not exist", path, dir)
                         : kv_errorf(path_status(e), "cannot write %s: %s: %s", path, dir, strerror(e));
    } else if (!S_ISDIR(sb.st_mode))
        st = kv_errorf(KV_EINVAL, "cannot write %s: %s is not a directory", path, dir);
    free(dir);
    return st;
}

struct kv_afile {
    char *path, *tmp;
    FILE *fp;
    int fd;
};

/* The mode an ordinary new file gets: 0666 less the umask, read from /proc because umask(2)
 * can only be read by changing it, which would race with other threads creating files. */
static mode_t file_mode(void) {
    mode_t mask = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[128];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "Umask:", 6)) {
                mask = (mode_t)strtoul(line + 6, NULL, 8);
                break;
            }
        fclose(f);
    }
    return (mode_t)(0666 & ~mask);
}

int kv_io_mkstemp(char *tmpl) {
    int fd = mkstemp(tmpl);
    if (fd >= 0 && fchmod(fd, file_mode()) != 0) {
        int e = errno;
        close(fd);
        unlink(tmpl);
        errno = e;
        return -1;
    }
    return fd;
}

kv_status kv_afile_open(const char *path, kv_afile **out) {
    kv_status st = kv_io_check_output(path);
    if (st) return st;
    kv_afile *f = calloc(1, sizeof *f);
    char *dir = dir_of(path);
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    size_t n = (dir ? strlen(dir) : 0) + strlen(base) + 32;
    if (f) f->path = strdup(path), f->tmp = malloc(n);
    if (!f || !dir || !f->path || !f->tmp) {
        free(dir);
        if (f) free(f->path), free(f->tmp), free(f);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    /* hidden, next to the target (rename is atomic only within one file system), and short
     * enough for NAME_MAX whatever the target's name */
    snprintf(f->tmp, n, "%s/.%.100s.tmp-XXXXXX", dir, base);
    free(dir);
    f->fd = kv_io_mkstemp(f->tmp);
    if (f->fd < 0) {
        int e = errno;
        st = kv_errorf(path_status(e), "cannot write %s: %s", path, strerror(e));
        free(f->path), free(f->tmp), free(f);
        return st;
    }
    if (!(f->fp = fdopen(f->fd, "w"))) {
        int e = errno;
        close(f->fd);
        unlink(f->tmp);
        st = kv_errorf(KV_EIO, "cannot write %s: %s", path, strerror(e));
        free(f->path), free(f->tmp), free(f);
        return st;
    }
    *out = f;
    return KV_OK;
}

FILE *kv_afile_fp(kv_afile *f) { return f->fp; }
const char *kv_afile_tmp(const kv_afile *f) { return f->tmp; }

static void afile_free(kv_afile *f) {
    free(f->path);
    free(f->tmp);
    free(f);
}

kv_status kv_afile_commit(kv_afile *f) {
    int err = 0;
    errno = 0;
    if (fflush(f->fp) != 0) err = errno ? errno : EIO;
    if (!err && ferror(f->fp)) err = EIO; /* an earlier write failed; its errno is gone */
    /* fsync before rename: otherwise a crash can leave the new name on an empty file */
    if (!err && fsync(f->fd) != 0) err = errno;
    if (fclose(f->fp) != 0 && !err) err = errno ? errno : EIO;
    if (!err && rename(f->tmp, f->path) != 0) err = errno;
    if (err) {
        unlink(f->tmp);
        kv_status st = kv_errorf(path_status(err), "cannot write %s: %s", f->path,
                                 err == EIO ? "write error (is the disk full?)" : strerror(err));
        afile_free(f);
        return st;
    }
    /* the rename itself reaches the disk with the directory; failing here loses nothing written */
    char *dir = dir_of(f->path);
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(dir);
    afile_free(f);
    return KV_OK;
}

void kv_afile_abort(kv_afile *f) {
    if (!f) return;
    fclose(f->fp);
    unlink(f->tmp);
    afile_free(f);
}

kv_status kv_io_write_all(const char *path, const void *data, size_t n) {
    kv_afile *f;
    kv_status st = kv_afile_open(path, &f);
    if (st) return st;
    if (n && fwrite(data, 1, n, kv_afile_fp(f)) != n) {
        kv_afile_abort(f);
        return kv_errorf(KV_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    return kv_afile_commit(f);
}
