/* dial.h - outgoing TCP connections (src/net/dial.c): the host name resolved on libuv's thread
 * pool, each of its addresses tried in turn with a non-blocking connect, a timeout per
 * address, an optional local bind address. Nothing here blocks the loop.
 *
 * A dial reports exactly once, from a libuv callback (a safe point to create a client): the
 * connected socket, or why no address could be reached. dial_cancel stops one early; its
 * callback is then never called.
 */
#ifndef MIDGE_DIAL_H
#define MIDGE_DIAL_H

#include <stdint.h>
#include <uv.h>

struct mq_dial;

/* The end of a dial: fd >= 0 is a connected non-blocking socket, now the callee's, to peer
 * ("1.2.3.4:1883", valid during the call); fd < 0 means every address failed and why says
 * so ("DNS lookup of example.com failed: unknown node or service", "connecting to
 * 127.0.0.1:1883 failed: Connection refused"), valid during the call. */
typedef void (*mq_dial_cb)(void *ctx, int fd, const char *peer, const char *why);

/* Start connecting to host (a name or a literal address) at port, binding to bind_address
 * (a literal IPv4 or IPv6 address, or NULL), giving each resolved address timeout_ms. All
 * strings are copied. Returns the dial (owned by the caller until its callback runs or
 * dial_cancel; it frees itself afterwards), or NULL on out of memory (logged; cb is never
 * called). */
struct mq_dial *dial_start(uv_loop_t *loop, const char *host, uint16_t port,
                           const char *bind_address, uint32_t timeout_ms, mq_dial_cb cb, void *ctx);

/* Stop d: its callback will not be called, its socket (if any) is closed, and its memory is
 * released once libuv is done with it. d must not be used afterwards. Not for a dial whose
 * callback has already been called. */
void dial_cancel(struct mq_dial *d);

#endif
