#!/usr/bin/python3
"""ws_callgrind.py - the load behind bench/ws_callgrind.sh and bench/callgrind_ab.sh: one
publisher, SUBS subscribers (1), messages of SIZE bytes at QOS (0) on one topic, over plain
MQTT (tcp), MQTT over WebSocket (ws), over TLS (tls: the port in TLS_PORT) or over WebSocket
over TLS (wss: the port in WSS_PORT), sent in batches of BATCH (one sendall each; the next
batch only once every subscriber has every message of this one and, at QoS 1/2, every flow
of it is complete), so each run feeds the broker the same reads.

usage: ws_callgrind.py MODE TCP_PORT WS_PORT COUNT [SIZE] [BATCH] [QOS] [SUBS]
MODE: PUB-SUB, each tcp, ws, tls or wss (publisher-subscriber): tcp-tcp, ws-ws, tls-tls ...
WebSocket publishers send one masked binary frame per MQTT packet, as MQTT.js does. At QoS
1/2 keep BATCH at or below the broker's max_inflight_messages: the subscribers answer every
PUBLISH (PUBACK, or PUBREC and then PUBCOMP) as it comes, the publisher every PUBREC.
"""
import base64
import os
import select
import socket
import ssl
import struct
import sys


def varlen(n):
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def packet(first, body):
    return bytes([first]) + varlen(len(body)) + body


def mqtt_str(s):
    return struct.pack("!H", len(s)) + s


def connect_pkt(cid):
    return packet(0x10, mqtt_str(b"MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + mqtt_str(cid))


def ws_frame(payload, key=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 65536:
        head = bytes([0x82, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", n)
    k = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
    return head + key + masked


class Conn:
    def __init__(self, port, ws, tls=False):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:  # what is measured is the broker's record work, not who it is
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.s = ctx.wrap_socket(self.s)
        self.ws = ws
        self.raw = b""  # socket bytes not yet unframed (ws)
        self.buf = b""  # MQTT bytes
        if ws:
            key = base64.b64encode(os.urandom(16)).decode()
            self.s.sendall((f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                            "Sec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
            while b"\r\n\r\n" not in self.raw:
                self.raw += self._recv()
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise SystemExit("broker closed the connection")
        return d

    def wrap(self, pkt):
        return ws_frame(pkt) if self.ws else pkt

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self._recv()
        # TLS: the rest of a record already decrypted would never wake select()
        while isinstance(self.s, ssl.SSLSocket) and self.s.pending():
            d += self._recv()
        if not self.ws:
            self.buf += d
            return
        self.raw += d
        while len(self.raw) >= 2:  # server frames: unmasked
            n, off = self.raw[1] & 0x7F, 2
            if n == 126:
                if len(self.raw) < 4:
                    return
                n, off = struct.unpack("!H", self.raw[2:4])[0], 4
            elif n == 127:
                if len(self.raw) < 10:
                    return
                n, off = struct.unpack("!Q", self.raw[2:10])[0], 10
            if len(self.raw) < off + n:
                return
            if self.raw[0] & 0x0F in (0, 2):
                self.buf += self.raw[off:off + n]
            self.raw = self.raw[off + n:]

    def take(self):
        """The next complete MQTT packet already read, (first byte, body), or None."""
        if len(self.buf) >= 2:
            n, mult, i = 0, 1, 1
            while i < len(self.buf):
                b = self.buf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            else:
                i = None
            if i is not None and len(self.buf) >= i + n:
                first, body = self.buf[0], self.buf[i:i + n]
                self.buf = self.buf[i + n:]
                return first, body
        return None

    def packet(self):
        """The next MQTT packet: (first byte, body)."""
        while True:
            p = self.take()
            if p is not None:
                return p
            self._fill()


def ack(kind, pid):
    """PUBACK (4), PUBREC (5), PUBREL (6, flags 0010) or PUBCOMP (7)."""
    return packet(kind << 4 | (2 if kind == 6 else 0), struct.pack("!H", pid))


def flows(pub, subs, n, qos, size):
    """Waits until every subscriber has the batch's n messages and every QoS 1/2 flow of it,
    on both sides, is complete, answering each packet as it arrives."""
    got = {id(c): 0 for c in subs}  # messages (QoS 2: PUBCOMPs sent) per subscriber
    pub_done = 0 if qos else n
    want_body = 2 + len(b"bench/t") + (2 if qos else 0) + size
    conns = subs + [pub] if qos else list(subs)
    while pub_done < n or any(v < n for v in got.values()):
        for c in conns:
            out = b""
            while True:
                p = c.take()
                if p is None:
                    break
                first, body = p
                kind = first >> 4
                if c is pub:
                    pid = struct.unpack("!H", body[:2])[0]
                    if kind == 4 or kind == 7:  # PUBACK, PUBCOMP
                        pub_done += 1
                    elif kind == 5:  # PUBREC
                        out += c.wrap(ack(6, pid))
                    else:
                        raise SystemExit(f"publisher: unexpected packet {first:#x}")
                elif kind == 3:
                    assert len(body) == want_body, (first, len(body))
                    if qos:
                        pid = struct.unpack("!H", body[9:11])[0]
                        out += c.wrap(ack(4 if qos == 1 else 5, pid))
                    if qos < 2:
                        got[id(c)] += 1
                elif kind == 6:  # PUBREL
                    out += c.wrap(ack(7, struct.unpack("!H", body[:2])[0]))
                    got[id(c)] += 1
                else:
                    raise SystemExit(f"subscriber: unexpected packet {first:#x}")
            if out:
                c.send(out)
        if pub_done < n or any(v < n for v in got.values()):
            ready, _, _ = select.select([c.s for c in conns], [], [], 60)
            if not ready:
                raise SystemExit("no answer from the broker for 60 s")
            for c in conns:
                if c.s in ready:
                    c._fill()


def main():
    mode, tcp_port, ws_port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    qos = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    nsubs = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    pub_kind, sub_kind = mode.split("-")
    ports = {"tcp": tcp_port, "ws": ws_port, "tls": int(os.environ.get("TLS_PORT", "0")),
             "wss": int(os.environ.get("WSS_PORT", "0"))}
    subs = []
    for k in range(nsubs):
        sub = Conn(ports[sub_kind], "ws" in sub_kind, sub_kind in ("tls", "wss"))
        sub.send(sub.wrap(connect_pkt(b"bench-sub%d" % k)))
        assert sub.packet()[0] == 0x20
        sub.send(sub.wrap(packet(0x82, struct.pack("!H", 1) + mqtt_str(b"bench/t") +
                                 bytes([qos]))))
        assert sub.packet()[0] == 0x90
        subs.append(sub)
    pub = Conn(ports[pub_kind], "ws" in pub_kind, pub_kind in ("tls", "wss"))
    pub.send(pub.wrap(connect_pkt(b"bench-pub")))
    assert pub.packet()[0] == 0x20
    left, pid = count, 0
    while left:
        n = min(batch, left)
        data = b""
        for _ in range(n):
            if qos:
                pid = pid % 65535 + 1
                data += pub.wrap(packet(0x30 | qos << 1, mqtt_str(b"bench/t") +
                                        struct.pack("!H", pid) + bytes(size)))
            else:
                data += pub.wrap(packet(0x30, mqtt_str(b"bench/t") + bytes(size)))
        pub.send(data)
        flows(pub, subs, n, qos, size)
        left -= n
    for c in [pub] + subs:
        c.send(c.wrap(b"\xe0\x00"))
        c.s.close()


if __name__ == "__main__":
    main()
