/*
 * file.c - model files on disk: whole-file reads, and replacing a file atomically (write a new
 * temporary file next to it, fsync, rename it over the target, fsync the directory: a crash or
 * an error at any point leaves the old file whole). Checkpoints and safetensors use both.
 *
 * The temporary file is created with open(O_CREAT | O_EXCL) and mode 0666, so the process's
 * umask applies as to any new file; mkstemp would make it 0600, and widening it afterwards
 * needs the umask, which can only be read by setting it (process-wide, racing other threads).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

sp_status sp_atomic_open(const char *path, const char *who, int *fd, char **tmp) {
    *fd = -1;
    *tmp = NULL;
    const size_t n = strlen(path) + 40;
    char *name = sp_alloc(n);
    if (!name) return SP_ENOMEM;
    /* names differ by process, by call and by the clock; O_EXCL settles any collision */
    static _Atomic unsigned long counter;
    const unsigned long pid = (unsigned long)getpid();
    for (int attempt = 0; attempt < 100; attempt++) {
        const unsigned long k = counter++;
        const unsigned long t = (unsigned long)(sp_now_seconds() * 1e9);
        snprintf(name, n, "%s.tmp%lx.%lx.%lx", path, pid, k, t & 0xffffffu);
        int f = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f >= 0) {
            *fd = f;
            *tmp = name;
            return SP_OK;
        }
        if (errno != EEXIST) break;
    }
    sp_status st = sp_fail(SP_EIO, "%s: cannot create a temporary file next to %s: %s", who,
                           path, strerror(errno));
    sp_free(name);
    return st;
}

int sp_atomic_commit(int fd, const char *tmp, const char *path, int err) {
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) {
        unlink(tmp);
        return err;
    }
    /* make the rename itself durable: fsync the directory that holds path */
    size_t len = strlen(path);
    char *dir = sp_alloc(len + 2);
    if (dir) {
        memcpy(dir, path, len + 1);
        char *slash = strrchr(dir, '/');
        if (slash) slash[slash == dir ? 1 : 0] = '\0';
        else strcpy(dir, ".");
        int dfd = open(dir, O_RDONLY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        sp_free(dir);
    }
    return 0;
}

sp_status sp_read_file(const char *path, const char *who, uint8_t **bytes, size_t *len) {
    *bytes = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sp_fail(SP_EIO, "%s: cannot open %s: %s", who, path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return sp_fail(SP_EIO, "%s: %s is not a regular file", who, path);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *b = sp_alloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return SP_ENOMEM;
    }
    size_t got = fread(b, 1, n, f);
    fclose(f);
    if (got != n) {
        sp_free(b);
        return sp_fail(SP_EIO, "%s: reading %s: got %zu of %zu bytes", who, path, got, n);
    }
    *bytes = b;
    *len = n;
    return SP_OK;
}
