/* ws_client.h - MQTT over WebSocket as a client (src/net/transport_ws_client.c): the layer a
 * bridge uses for `address ws://host:port/path` and `wss://...` (under it, TLS). */
#ifndef MIDGE_WS_CLIENT_H
#define MIDGE_WS_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "net.h"

/* What attach takes (borrowed for the call): where the upgrade request goes. */
struct mq_ws_client_target {
    const char *host;
    uint16_t port;
    const char *path;     /* "/mqtt" */
    bool tls;             /* wss: the Host header leaves out port 443 rather than 80 */
    const char *protocol; /* the subprotocol asked for: "mqtt" */
};

/* attach sends the HTTP/1.1 upgrade request at once; MQTT written before the 101 answer is
 * sent right after it, each write as one binary message, masked as RFC 6455 requires of a
 * client. A refused upgrade or a bad frame ends the connection with a close reason saying
 * why; the layer logs nothing itself. */
extern const struct mq_transport_ops ws_client_transport;

/* The server's answer to the upgrade request: head[0..len) is its head, up to and including
 * the empty line; accept is the Sec-WebSocket-Accept it must carry. Returns 0 when it accepts
 * (status 101, Upgrade: websocket, Connection: Upgrade, that accept, subprotocol mqtt or
 * none), else -1 with why (why_size bytes) saying what is wrong. Pure (ws_handshake.c). */
int ws_client_check_answer(const char *head, size_t len, const char *accept, char *why,
                           size_t why_size);

#endif
