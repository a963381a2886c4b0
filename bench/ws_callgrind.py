#!/usr/bin/python3
"""ws_callgrind.py - the load behind bench/ws_callgrind.sh: one publisher, one subscriber,
QoS 0 messages of SIZE bytes on one topic, over plain MQTT (tcp) or MQTT over WebSocket
(ws), sent in batches of BATCH (one sendall each; the next batch only once the subscriber
has every message of this one), so each run feeds the broker the same reads.

usage: ws_callgrind.py MODE TCP_PORT WS_PORT COUNT [SIZE] [BATCH]
MODE: tcp-tcp, ws-tcp, tcp-ws or ws-ws (publisher-subscriber).
WebSocket publishers send one masked binary frame per MQTT packet, as MQTT.js does.
"""
import base64
import os
import socket
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
    def __init__(self, port, ws):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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

    def packet(self):
        """The next MQTT packet: (first byte, body)."""
        while True:
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
            self._fill()


def main():
    mode, tcp_port, ws_port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    pub_ws, sub_ws = (m == "ws" for m in mode.split("-"))
    sub = Conn(ws_port if sub_ws else tcp_port, sub_ws)
    sub.send(sub.wrap(connect_pkt(b"bench-sub")))
    assert sub.packet()[0] == 0x20
    sub.send(sub.wrap(packet(0x82, struct.pack("!H", 1) + mqtt_str(b"bench/t") + b"\x00")))
    assert sub.packet()[0] == 0x90
    pub = Conn(ws_port if pub_ws else tcp_port, pub_ws)
    pub.send(pub.wrap(connect_pkt(b"bench-pub")))
    assert pub.packet()[0] == 0x20
    one = pub.wrap(packet(0x30, mqtt_str(b"bench/t") + bytes(size)))
    left = count
    while left:
        n = min(batch, left)
        pub.send(one * n)
        for _ in range(n):
            first, body = sub.packet()
            assert first == 0x30 and len(body) == 9 + size, (first, len(body))
        left -= n
    for c in (pub, sub):
        c.send(c.wrap(b"\xe0\x00"))
        c.s.close()


if __name__ == "__main__":
    main()
