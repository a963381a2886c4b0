/* props.c - MQTT 5 properties: the identifier table, the block iterator, the per-packet
 * validator and the allocation-free writer. (Stubs: the implementation follows.)
 */
#include <string.h>

#include "midge/codec.h"
#include "midge/err.h"

int codec_prop_next(struct mq_prop_iter *it, struct mq_prop *out)
{
    (void)out;
    return it->p == it->end ? 0 : MQ_ERR_PROPERTY_NOT_ALLOWED;
}

enum mq_prop_type codec_prop_type(unsigned id)
{
    (void)id;
    return MQ_PROPT_NONE;
}

const char *codec_prop_name(unsigned id)
{
    (void)id;
    return "unknown property";
}

int codec_props_parse(unsigned where, const uint8_t *block, size_t len, struct mq_props *out)
{
    (void)where;
    out->present = 0;
    out->raw = len ? block : NULL;
    out->raw_len = (uint32_t)len;
    out->user_count = 0;
    out->sub_id_count = 0;
    return len ? MQ_ERR_PROPERTY_NOT_ALLOWED : 0;
}

void codec_prop_put_u8(struct mq_prop_writer *w, enum mq_prop_id id, uint8_t v)
{
    (void)id, (void)v;
    w->invalid = true;
}

void codec_prop_put_u16(struct mq_prop_writer *w, enum mq_prop_id id, uint16_t v)
{
    (void)id, (void)v;
    w->invalid = true;
}

void codec_prop_put_u32(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v)
{
    (void)id, (void)v;
    w->invalid = true;
}

void codec_prop_put_varint(struct mq_prop_writer *w, enum mq_prop_id id, uint32_t v)
{
    (void)id, (void)v;
    w->invalid = true;
}

void codec_prop_put_bytes(struct mq_prop_writer *w, enum mq_prop_id id, const void *p, size_t n)
{
    (void)id, (void)p, (void)n;
    w->invalid = true;
}

void codec_prop_put_pair(struct mq_prop_writer *w, const void *name, size_t name_len,
                         const void *value, size_t value_len)
{
    (void)name, (void)name_len, (void)value, (void)value_len;
    w->invalid = true;
}

void codec_prop_put_raw(struct mq_prop_writer *w, const struct mq_prop *prop)
{
    (void)prop;
    w->invalid = true;
}
