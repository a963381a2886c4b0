/* ws.h - the WebSocket transport (src/net/transport_ws.c): a `protocol websockets`
 * listener speaks HTTP/1.1 first (the embedded page, /metrics, /healthz) and, after an
 * RFC 6455 upgrade, carries MQTT in binary frames framed by libwslay.
 *
 * The transport needs no listener context: its settings (websockets_origins,
 * http_trusted_proxies, websockets_max_frame_size) are read from the connection's
 * listener context at each request, so a SIGHUP reload applies to new connections.
 */
#ifndef MIDGE_WS_H
#define MIDGE_WS_H

#include "net.h"

/* attach/input/output/detach for one connection; ctx_free accepts NULL (the listener
 * context of ws_transport is always NULL). */
extern const struct mq_transport_ops ws_transport;

#endif
