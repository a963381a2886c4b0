/* err.c - names and messages for enum mq_err, generated from MQ_ERR_MAP. */
#include "midge/err.h"

const char *mq_strerror(int err)
{
    switch (err) {
    case MQ_OK: return "success";
#define XX(name, msg)                                                                              \
    case MQ_ERR_##name: return msg;
        MQ_ERR_MAP(XX)
#undef XX
    default: return "unknown error";
    }
}

const char *mq_err_name(int err)
{
    switch (err) {
    case MQ_OK: return "MQ_OK";
#define XX(name, msg)                                                                              \
    case MQ_ERR_##name: return "MQ_ERR_" #name;
        MQ_ERR_MAP(XX)
#undef XX
    default: return "MQ_ERR_UNKNOWN";
    }
}
