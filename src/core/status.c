/*
 * status.c - status names and the thread-local last-error message.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *sp_status_name(sp_status st) {
    switch (st) {
    case SP_OK: return "SP_OK";
    case SP_EINVAL: return "SP_EINVAL";
    case SP_ESHAPE: return "SP_ESHAPE";
    case SP_ENOMEM: return "SP_ENOMEM";
    case SP_EIO: return "SP_EIO";
    case SP_EFORMAT: return "SP_EFORMAT";
    case SP_EUNSUPPORTED: return "SP_EUNSUPPORTED";
    case SP_EOVERFLOW: return "SP_EOVERFLOW";
    }
    return "SP_E?";
}

const char *sp_last_error(void) { return last_error; }

void sp_clear_error(void) { last_error[0] = '\0'; }

sp_status sp_fail(sp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *sp_version(void) { return "0.1.0"; }
