/* status.c: the status table's three views (message, name, gRPC code) and the
 * translation of LMDB and errno values into statuses. */
#include <errno.h>
#include <stddef.h>

#include "eventstore/internal.h"

const char *es_strerror(int status)
{
    switch (status) {
#define ES_STATUS_MSG(name, value, msg, grpc) \
    case value:                                \
        return msg;
        ES_STATUS_TABLE(ES_STATUS_MSG)
#undef ES_STATUS_MSG
    }
    return "unknown status";
}

const char *es_errname(int status)
{
    switch (status) {
#define ES_STATUS_NAME(name, value, msg, grpc) \
    case value:                                 \
        return "ES_" #name;
        ES_STATUS_TABLE(ES_STATUS_NAME)
#undef ES_STATUS_NAME
    }
    return "ES_UNKNOWN";
}

int es_status_grpc_code(int status)
{
    switch (status) {
#define ES_STATUS_GRPC(name, value, msg, grpc) \
    case value:                                 \
        return grpc;
        ES_STATUS_TABLE(ES_STATUS_GRPC)
#undef ES_STATUS_GRPC
    }
    return 2;
}

int es__status_from_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return ES_OK;
    case MDB_NOTFOUND:
        return ES_NOT_FOUND;
    case MDB_MAP_FULL:
        return ES_MAP_FULL;
    case MDB_READERS_FULL:
        return ES_LIMIT;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return ES_CORRUPT;
    case ENOSPC:
    case EDQUOT:
        return ES_NO_SPACE;
    case ENOMEM:
        return ES_NOMEM;
    case EACCES:
    case EROFS:
        return ES_READONLY;
    case EINVAL:
        return ES_INVALID;
    }
    return ES_IO;
}
