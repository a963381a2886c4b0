/* reason.c - MQTT 5 reason codes: their names, which packet may carry which, and the code
 * each decode error is answered with. (Stubs: the implementation follows.)
 */
#include "midge/codec.h"
#include "midge/err.h"

const char *codec_reason_name(uint8_t code)
{
    (void)code;
    return "unknown reason code";
}

bool codec_reason_allowed(unsigned type, uint8_t code)
{
    (void)type, (void)code;
    return false;
}

uint8_t codec_error_reason(int err)
{
    (void)err;
    return MQ_RC_UNSPECIFIED_ERROR;
}
