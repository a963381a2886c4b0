"""test_ws_raw.py - MQTT over WebSocket on a `protocol websockets` listener, byte by byte.

Raw sockets only: the HTTP/1.1 upgrade (subprotocols, refusals with 400/403/405/431 and
their log lines), RFC 6455 framing rules (masking, text frames, fragmentation, control
frames between fragments, close handshake, size limit), MQTT packets split across frames
and several in one frame, the HTTP side (GET /, /metrics, /healthz, 404, 426), the Origin
allow-list, X-Forwarded-For from a trusted proxy, and WebSocket and TCP clients talking
to each other. MQTT.js and the browser page are tested under tests/ws/.
"""
import base64
import hashlib
import os
import re
import socket
import struct
import time

import pytest

import midge_harness as h
from midge_harness import (CONNACK, PUBACK, SUBACK, Closed, MqttConn, TIMEOUT,
                           connect_pkt, disconnect_pkt, publish_pkt, subscribe_pkt)

pytestmark = h.midge_only

WS_CONF = ["protocol websockets"]
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame (masked unless mask=False)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, (0x80 if mask else 0) | n])
    elif n < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(c ^ key[i % 4] for i, c in enumerate(payload)) if n < 4096 else \
        _xor_fast(payload, key)
    return head + key + masked


def _xor_fast(data, key):
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class HttpResponse:
    def __init__(self, status, headers, body, rest=b""):
        self.status, self.headers, self.body, self.rest = status, headers, body, rest

    def header(self, name):
        return self.headers.get(name.lower())


def read_head(sock, timeout=TIMEOUT):
    """Read an HTTP response head; returns (status, headers, bytes after the head)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed before a response head: {buf!r}")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0])
    assert m, f"bad status line {lines[0]!r}"
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, rest


def http_request(port, raw, read_body=True):
    """Send raw request bytes; read the whole response until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        s.sendall(raw)
        status, headers, rest = read_head(s)
        body = rest
        if read_body:
            while True:
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not data:
                    break
                body += data
        return HttpResponse(status, headers, body)
    finally:
        s.close()


def get(port, path, method="GET", extra=""):
    return http_request(port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                              f"{extra}\r\n".encode())


def upgrade_request(port, path="/mqtt", protocols=("mqtt",), key=None, extra=""):
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    req = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return req.encode(), key


def expected_accept(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class WsConn(MqttConn):
    """MqttConn over WebSocket: MQTT bytes go out in masked binary frames and come back
    from binary frames; control frames are recorded. Frame-level helpers for the
    framing tests."""

    def __init__(self, port, path="/mqtt", protocols=("mqtt",), extra="", pipelined=b"",
                 wrap=None):
        super().__init__(port)
        if wrap is not None:  # wss: the caller's TLS socket around the TCP one
            self.sock = wrap(self.sock)
        self.raw = b""
        self.frames = []  # non-data frames received: (opcode, payload)
        self.close_code = None
        req, key = upgrade_request(port, path, protocols, extra=extra)
        self.sock.sendall(req + pipelined)
        status, headers, rest = read_head(self.sock)
        assert status == 101, f"upgrade answered {status}"
        assert headers.get("upgrade", "").lower() == "websocket"
        assert "upgrade" in headers.get("connection", "").lower()
        assert headers.get("sec-websocket-accept") == expected_accept(key)
        self.protocol = headers.get("sec-websocket-protocol")
        self.sock.settimeout(TIMEOUT)
        self.raw = rest

    # -- frames ---------------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(ws_frame(BINARY, data))

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def _parse_frame(self):
        r = self.raw
        if len(r) < 2:
            return None
        fin, op = r[0] >> 7, r[0] & 0x0F
        assert r[0] & 0x70 == 0, "server set RSV bits"
        assert not r[1] & 0x80, "server masked a frame"
        n, i = r[1] & 0x7F, 2
        if n == 126:
            if len(r) < 4:
                return None
            n, i = struct.unpack("!H", r[2:4])[0], 4
        elif n == 127:
            if len(r) < 10:
                return None
            n, i = struct.unpack("!Q", r[2:10])[0], 10
        if len(r) < i + n:
            return None
        self.raw = r[i + n:]
        return fin, op, r[i:i + n]

    def _recv_raw(self, deadline):
        left = max(0.0, deadline - time.monotonic())
        self.sock.settimeout(max(left, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.closed = True
            raise Closed()
        self.raw += data
        return True

    def read_frame(self, timeout=TIMEOUT):
        """Next frame (fin, opcode, payload); None on timeout; raises Closed."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse_frame()
            if f is not None:
                return f
            if self.closed or not self._recv_raw(deadline):
                if self.closed:
                    raise Closed()
                return None

    def _fill(self, deadline):
        """MqttConn's byte source: payloads of binary frames."""
        while True:
            f = self._parse_frame()
            if f is None:
                if self.closed:
                    raise Closed()
                if not self._recv_raw(deadline):
                    return False
                continue
            fin, op, payload = f
            if op in (BINARY, CONT):
                self.buf += payload
                return True
            assert op != TEXT, "server sent a text frame"
            self.frames.append((op, payload))
            if op == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.closed = True
                raise Closed()

    def expect_close(self, code, timeout=TIMEOUT):
        """The server sends a close frame with code, then closes the TCP connection."""
        deadline = time.monotonic() + timeout
        got = None
        while got is None:
            try:
                f = self.read_frame(max(0.0, deadline - time.monotonic()))
            except Closed:
                raise AssertionError(f"TCP closed without a close frame (wanted {code})")
            assert f is not None, f"no close frame within {timeout:.1f} s"
            if f[1] == CLOSE:
                got = f
        payload = got[2]
        assert len(payload) >= 2, "close frame without a status code"
        assert struct.unpack("!H", payload[:2])[0] == code, f"close code {payload!r} != {code}"
        # Then the TCP connection ends.
        while True:
            try:
                f = self.read_frame(max(0.0, deadline - time.monotonic()))
            except Closed:
                return payload[2:]
            except OSError:
                return payload[2:]
            assert f is not None, "TCP connection still open after the close frame"


def ws_broker(start_broker, conf=()):
    return start_broker(conf=WS_CONF + list(conf))


def two_listener_broker(start_broker, conf=()):
    """A TCP listener (br.port) and a WebSocket listener (returned port)."""
    br = start_broker(conf=["listener 0 127.0.0.1", "protocol websockets"] + list(conf))
    m = br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(websockets\)")
    tcp = br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(mqtt\)")
    br.port = int(tcp.group(1))
    return br, int(m.group(1))


# --------------------------------------------------------------------------------------
# Upgrade
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("offered,chosen", [
    (("mqtt",), "mqtt"),
    (("mqttv3.1",), "mqttv3.1"),
    ((), None),
    (("chat", "mqttv3.1", "mqtt"), "mqttv3.1"),
])
def test_upgrade_subprotocols(start_broker, offered, chosen):
    br = ws_broker(start_broker)
    c = WsConn(br.port, protocols=offered)
    assert c.protocol == chosen
    c.connect("ws-proto")
    br.wait_log(r"ws: 127\.0\.0\.1:\d+: WebSocket upgrade on /mqtt")
    br.wait_log(r"client ws-proto connected from 127\.0\.0\.1:\d+")
    c.disconnect()


@pytest.mark.parametrize("path", ["/", "/mqtt", "/any/path?x=1"])
def test_upgrade_any_path(start_broker, path):
    br = ws_broker(start_broker)
    c = WsConn(br.port, path=path)
    c.connect("ws-path")
    c.ping()
    c.close()


def test_frames_pipelined_behind_the_request(start_broker):
    """A client may send its first frames right behind the upgrade request."""
    br = ws_broker(start_broker)
    c = WsConn(br.port, pipelined=ws_frame(BINARY, connect_pkt("ws-pipe")))
    c.expect(CONNACK)
    c.close()


def _refused(br, raw, status, log_regex):
    r = http_request(br.port, raw)
    assert r.status == status, f"{r.status} {r.body!r}"
    assert r.header("connection") == "close"
    br.wait_log(log_regex)
    return r


def _bad_upgrade(port, **kw):
    drop = kw.pop("drop", None)
    replace = kw.pop("replace", {})
    req, _ = upgrade_request(port, **kw)
    lines = req.decode().split("\r\n")
    out = []
    for ln in lines:
        name = ln.split(":", 1)[0].lower()
        if drop and name == drop.lower():
            continue
        if name in replace:
            ln = replace[name]
        out.append(ln)
    return "\r\n".join(out).encode()


@pytest.mark.parametrize("case,status,why", [
    ("missing_key", 400, r"bad request: missing Sec-WebSocket-Key"),
    ("short_key", 400, r"bad request: invalid Sec-WebSocket-Key"),
    ("version_8", 400, r"bad request: unsupported Sec-WebSocket-Version"),
    ("no_version", 400, r"bad request: missing Sec-WebSocket-Version"),
    ("no_connection_upgrade", 400, r"bad request: Connection header lacks Upgrade"),
    ("upgrade_h2c", 400, r"bad request: Upgrade header is not websocket"),
    ("http10", 400, r"bad request: a WebSocket upgrade needs HTTP/1\.1"),
    ("no_host", 400, r"bad request: missing Host header"),
    ("unknown_subprotocol", 400, r"bad request: no supported WebSocket subprotocol"),
    ("post", 405, r"method not allowed: POST"),
    ("garbage", 400, r"bad request: invalid method in request line"),
    ("tls_hello", 400, r"bad request: invalid method in request line"),
    ("bare_lf", 400, r"bad request: header line ends with a bare LF"),
    ("space_before_colon", 400, r"bad request: whitespace before colon"),
    ("folding", 400, r"bad request: obsolete header line folding"),
    ("absolute_target", 400, r"bad request: request target is not a path"),
    ("http2", 400, r"bad request: unsupported HTTP version"),
    ("oversized", 431, r"bad request: request head larger than 8192 bytes"),
])
def test_bad_upgrade_refused(start_broker, case, status, why):
    br = ws_broker(start_broker)
    p = br.port
    raw = {
        "missing_key": lambda: _bad_upgrade(p, drop="Sec-WebSocket-Key"),
        "short_key": lambda: _bad_upgrade(p, key="dGhlIHNhbXBsZQ=="),
        "version_8": lambda: _bad_upgrade(p, replace={
            "sec-websocket-version": "Sec-WebSocket-Version: 8"}),
        "no_version": lambda: _bad_upgrade(p, drop="Sec-WebSocket-Version"),
        "no_connection_upgrade": lambda: _bad_upgrade(p, replace={
            "connection": "Connection: keep-alive"}),
        "upgrade_h2c": lambda: _bad_upgrade(p, replace={"upgrade": "Upgrade: h2c"}),
        "http10": lambda: _bad_upgrade(p).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        "no_host": lambda: _bad_upgrade(p, drop="Host"),
        "unknown_subprotocol": lambda: _bad_upgrade(p, protocols=("chat", "superchat")),
        "post": lambda: _bad_upgrade(p).replace(b"GET", b"POST", 1),
        "garbage": lambda: b"garbage\r\n\r\n",
        "tls_hello": lambda: bytes.fromhex("16030100a5010000a10303") + os.urandom(32),
        "bare_lf": lambda: f"GET / HTTP/1.1\r\nHost: x\nUpgrade: websocket\r\n\r\n".encode(),
        "space_before_colon": lambda: b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "folding": lambda: b"GET / HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n",
        "absolute_target": lambda: b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "http2": lambda: b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "oversized": lambda: _bad_upgrade(p, extra="X-Filler: " + "a" * 9000 + "\r\n"),
    }[case]()
    r = _refused(br, raw, status, r"http: 127\.0\.0\.1:\d+: " + why)
    if case == "version_8":
        assert r.header("sec-websocket-version") == "13"
    if case == "post":
        assert r.header("allow") == "GET, HEAD"
    assert r.body.endswith(b"\n")


def test_partial_request_then_rest(start_broker):
    """A request head split across TCP segments is assembled."""
    br = ws_broker(start_broker)
    req, key = upgrade_request(br.port)
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    for i in range(0, len(req), 7):
        s.sendall(req[i:i + 7])
        time.sleep(0.002)
    status, headers, _ = read_head(s)
    assert status == 101 and headers["sec-websocket-accept"] == expected_accept(key)
    s.close()


def test_origin_allow_list(start_broker):
    br = ws_broker(start_broker, ["websockets_origins http://good.example:8080 "
                                  "https://also.example"])
    ok = ["Origin: http://good.example:8080\r\n", "Origin: https://ALSO.example\r\n", "",
          f"Origin: http://127.0.0.1:{br.port}\r\n"]  # listed, listed, none, same origin
    for extra in ok:
        c = WsConn(br.port, extra=extra)
        c.connect("ws-origin")
        c.disconnect()
    req, _ = upgrade_request(br.port, extra="Origin: http://evil.example\r\n")
    r = _refused(br, req, 403, r"http: 127\.0\.0\.1:\d+: forbidden: origin not allowed")
    assert b"origin not allowed" in r.body


def test_x_forwarded_for_from_trusted_proxy(start_broker):
    br = ws_broker(start_broker, ["http_trusted_proxies 10.0.0.0/8, 127.0.0.1"])
    c = WsConn(br.port, extra="X-Forwarded-For: 203.0.113.9, 10.1.2.3\r\n")
    c.connect("ws-proxied")
    br.wait_log(r"client ws-proxied connected from 203\.0\.113\.9 via 127\.0\.0\.1:\d+ ")
    c.disconnect()


def test_x_forwarded_for_ignored_from_untrusted_peer(start_broker):
    br = ws_broker(start_broker, ["http_trusted_proxies 192.0.2.1"])
    c = WsConn(br.port, extra="X-Forwarded-For: 203.0.113.9\r\n")
    c.connect("ws-direct")
    br.wait_log(r"client ws-direct connected from 127\.0\.0\.1:\d+ ")
    br.assert_no_log(r"203\.0\.113\.9")
    c.disconnect()


# --------------------------------------------------------------------------------------
# MQTT over frames
# --------------------------------------------------------------------------------------

def test_connect_subscribe_publish_round_trip(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-rt")
    assert c.subscribe([("ws/rt/#", 1)]) == [1]
    c.publish("ws/rt/a", b"hello", qos=1)
    m = c.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ws/rt/a", b"hello", 1)
    c.publish("ws/rt/b", b"zero", qos=0)
    assert c.recv_publish().payload == b"zero"
    c.ping()
    c.disconnect()
    br.wait_log(r"client ws-rt disconnected")


def test_packet_split_across_three_frames(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    pkt = connect_pkt("ws-split-3")
    c.send(pkt[:1])
    c.send(pkt[1:5])
    c.expect_no_packet(0.2)
    c.send(pkt[5:])
    c.expect(CONNACK)
    c.close()


def test_two_packets_in_one_frame(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.send(connect_pkt("ws-two") + subscribe_pkt(1, [("two/#", 0)]))
    c.expect(CONNACK)
    c.expect(SUBACK)
    # And a frame that ends in the middle of the next packet.
    pub = publish_pkt("two/x", b"payload")
    c.send(publish_pkt("two/y", b"first") + pub[:4])
    c.send(pub[4:])
    assert [c.recv_publish().topic for _ in range(2)] == ["two/y", "two/x"]
    c.close()


def test_fragmented_message_with_ping_between_fragments(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-frag")
    c.subscribe("frag/t")
    pub = publish_pkt("frag/t", b"fragmented payload")
    c.send_frame(BINARY, pub[:3], fin=False)
    c.send_frame(PING, b"between")
    c.send_frame(CONT, pub[3:10], fin=False)
    c.send_frame(CONT, pub[10:], fin=True)
    assert c.recv_publish().payload == b"fragmented payload"
    assert (PONG, b"between") in c.frames
    c.close()


def test_large_messages_both_ways(start_broker):
    """A 300 KB payload: WebSocket -> TCP and TCP -> WebSocket."""
    br, ws_port = two_listener_broker(start_broker)
    payload = os.urandom(300 * 1024)
    w = WsConn(ws_port)
    w.connect("ws-big")
    w.subscribe([("big/to-ws", 1)])
    t = MqttConn(br.port)
    t.connect("tcp-big")
    t.subscribe([("big/to-tcp", 1)])
    pkt = publish_pkt("big/to-tcp", payload, qos=1, pid=7)
    for i in range(0, len(pkt), 65536):  # across five frames of one message
        last = i + 65536 >= len(pkt)
        w.send_frame(BINARY if i == 0 else CONT, pkt[i:i + 65536], fin=last)
    m = t.recv_publish(timeout=TIMEOUT * 2)
    assert m.payload == payload
    assert w.expect(PUBACK).body == b"\x00\x07"
    t.publish("big/to-ws", payload, qos=1)
    assert w.recv_publish(timeout=TIMEOUT * 2).payload == payload
    w.close()
    t.close()


# --------------------------------------------------------------------------------------
# Framing rules and close handshake
# --------------------------------------------------------------------------------------

def test_unmasked_frame_closes_with_1002(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.sock.sendall(ws_frame(BINARY, connect_pkt("ws-unmasked"), mask=False))
    c.expect_close(1002)
    br.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: websocket protocol error \(close 1002")


def test_text_frame_closes_with_1003(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-text")
    c.send_frame(TEXT, b"hello")
    c.expect_close(1003)
    br.wait_log(r"client ws-text disconnected: websocket unsupported data \(close 1003")


def test_reserved_bits_close_with_1002(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.send_frame(BINARY, connect_pkt("ws-rsv"), rsv=4)  # RSV1: no extension negotiated
    c.expect_close(1002)


@pytest.mark.parametrize("case", ["reserved_opcode", "continuation_first", "bad_close_code",
                                  "data_frame_inside_fragmented_message"])
def test_protocol_violations_close_with_1002(start_broker, case):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-violation")
    frames = {
        "reserved_opcode": ws_frame(0x3, b"x"),
        "continuation_first": ws_frame(CONT, b"x"),
        "bad_close_code": ws_frame(CLOSE, close_payload(999)),
        "data_frame_inside_fragmented_message":
            ws_frame(BINARY, b"\xc0", fin=False) + ws_frame(BINARY, b"\x00"),
    }[case]
    c.sock.sendall(frames)
    c.expect_close(1002)
    br.wait_log(r"client ws-violation disconnected: websocket protocol error \(close 1002")


@pytest.mark.parametrize("case", ["control_frame_over_125_bytes", "non_minimal_length",
                                  "non_minimal_64_bit_length", "64_bit_length_top_bit_set"])
def test_malformed_frames_end_the_connection(start_broker, case):
    """wslay answers a malformed frame header with a close frame without status code."""
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-malformed")
    key = b"\x01\x02\x03\x04"
    raw = {"control_frame_over_125_bytes": ws_frame(PING, b"x" * 126),
           "non_minimal_length": bytes([0x82, 0x80 | 126, 0, 5]) + key + b"abcde",
           "non_minimal_64_bit_length":
               bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 300) + key + b"a" * 300,
           "64_bit_length_top_bit_set":
               bytes([0x82, 0x80 | 127]) + struct.pack("!Q", (1 << 63) | 70000) + key + b"a"}[case]
    c.sock.sendall(raw)
    f = c.read_frame()
    assert f is not None and f[1] == CLOSE
    c.expect_closed()
    br.wait_log(r"client ws-malformed disconnected: websocket: protocol error")


# --------------------------------------------------------------------------------------
# The receive path (transport_ws.c parses data frames and unmasks them itself; control
# frames go to libwslay): frames split across reads anywhere
# --------------------------------------------------------------------------------------

def send_pieces(sock, data, cuts):
    """data in pieces ending at the offsets in cuts, each sent alone with a pause so the
    broker usually reads them separately (the result must not depend on it)."""
    start = 0
    for end in list(cuts) + [len(data)]:
        if end > start:
            sock.sendall(data[start:end])
            time.sleep(0.01)
        start = max(start, end)


@pytest.mark.parametrize("size", [30, 300, 70000])
def test_frame_split_anywhere_in_its_header_and_mask(start_broker, size):
    """7-bit, 16-bit and 64-bit lengths (headers of 6, 8 and 14 bytes with the key), split
    after every header byte: the header and the masking key straddle reads."""
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-split-head")
    c.subscribe("split/h")
    payload = os.urandom(size)
    frame = ws_frame(BINARY, publish_pkt("split/h", payload))
    head = 6 if size < 100 else 8 if size < 65000 else 14
    for cut in range(1, head + 2):
        send_pieces(c.sock, frame, [cut])
        assert c.recv_publish(timeout=TIMEOUT * 2).payload == payload, f"cut after {cut} bytes"
    c.close()


def test_payload_split_at_odd_offsets_keeps_the_mask_position(start_broker):
    """A payload in pieces of 1, 2, 3, 5, 7, 11 and 13 bytes: each read resumes unmasking at
    another position of the 4-byte key; and the pieces end inside 8-byte steps."""
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-split-mask")
    c.subscribe("split/m")
    payload = bytes(range(256)) * 4
    frame = ws_frame(BINARY, publish_pkt("split/m", payload))
    cuts, at = [], 9
    for step in (1, 2, 3, 5, 7, 11, 13) * 4:
        at += step
        cuts.append(at)
    send_pieces(c.sock, frame, cuts)
    assert c.recv_publish().payload == payload
    c.close()


def test_control_and_refused_frames_split_across_reads(start_broker):
    """A ping whose header arrives a byte at a time is answered by wslay with the same
    payload; an unmasked frame whose header straddles reads still gets 1002."""
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-split-ctl")
    ping = ws_frame(PING, b"split ping")
    send_pieces(c.sock, ping, range(1, 8))
    assert c.read_frame() == (1, PONG, b"split ping")
    bad = ws_frame(BINARY, publish_pkt("t", b"x"), mask=False)
    send_pieces(c.sock, bad, [1])
    c.expect_close(1002)


def test_empty_frames_and_many_frames_in_one_read(start_broker):
    """Empty data frames are allowed anywhere in a message; a read holding many frames
    (one packet each, a ping among them) is decoded whole and in order."""
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-many-frames")
    c.subscribe("many/f")
    pkt = publish_pkt("many/f", b"after empty frames")
    c.sock.sendall(ws_frame(BINARY, b"", fin=False) + ws_frame(CONT, pkt[:5], fin=False) +
                   ws_frame(CONT, b"", fin=False) + ws_frame(CONT, pkt[5:], fin=True) +
                   ws_frame(BINARY, b""))
    assert c.recv_publish().payload == b"after empty frames"
    n = 300
    frames = [ws_frame(BINARY, publish_pkt("many/f", str(i).encode())) for i in range(n)]
    frames.insert(n // 2, ws_frame(PING, b"mid"))
    c.sock.sendall(b"".join(frames))
    got = [m.payload for m in c.collect(n, timeout=TIMEOUT * 2)]
    assert got == [str(i).encode() for i in range(n)]
    assert (PONG, b"mid") in c.frames
    c.close()


def test_ping_pong(start_broker):
    br = ws_broker(start_broker)
    c = WsConn(br.port)
    c.connect("ws-ping")
    c.send_frame(PING, b"are you there")
    f = c.read_frame()
    assert f == (1, PONG, b"are you there")
    c.send_frame(PONG, b"unsolicited")  # ignored, as RFC 6455 allows
    c.ping()
    c.close()


def test_close_handshake_publishes_will(start_broker):
    """The peer's close is answered with the same code and the TCP connection ends; no
    MQTT DISCONNECT was sent, so the will is published."""
    br, ws_port = two_listener_broker(start_broker)
    t = MqttConn(br.port)
    t.connect("tcp-will-watcher")
    t.subscribe("will/ws")
    c = WsConn(ws_port)
    c.connect("ws-will", will=("will/ws", b"gone", 0, False))
    c.send_frame(CLOSE, close_payload(1000, b"bye"))
    assert c.expect_close(1000) == b"bye"
    br.wait_log(r"client ws-will disconnected: websocket closed by peer \(1000")
    assert t.recv_publish().payload == b"gone"
    t.close()


def test_mqtt_disconnect_then_close_no_will(start_broker):
    br, ws_port = two_listener_broker(start_broker)
    t = MqttConn(br.port)
    t.connect("tcp-nowill-watcher")
    t.subscribe("will/none")
    c = WsConn(ws_port)
    c.connect("ws-nowill", will=("will/none", b"gone", 0, False))
    c.send(disconnect_pkt())
    c.expect_closed()
    t.expect_no_packet()
    t.close()


def test_oversize_frame_closes_with_1009(start_broker):
    br = ws_broker(start_broker, ["websockets_max_frame_size 1024"])
    c = WsConn(br.port)
    c.connect("ws-big-frame")
    c.send_frame(BINARY, publish_pkt("t", b"x" * 1000))  # 1006 bytes: fits
    c.send_frame(BINARY, publish_pkt("t", b"x" * 2000))
    c.expect_close(1009)
    br.wait_log(r"client ws-big-frame disconnected: websocket")


def test_oversize_fragmented_message_closes_with_1009(start_broker):
    br = ws_broker(start_broker, ["websockets_max_frame_size 1024"])
    c = WsConn(br.port)
    c.connect("ws-big-msg")
    pkt = publish_pkt("t", b"y" * 1500)
    c.send_frame(BINARY, pkt[:800], fin=False)
    c.send_frame(CONT, pkt[800:], fin=True)
    c.expect_close(1009)


def test_connect_timeout_applies_to_websocket(start_broker):
    br = ws_broker(start_broker, ["connect_timeout 1"])
    c = WsConn(br.port)
    c.expect_closed(timeout=h.scaled(4))
    br.wait_log(r"closed: no CONNECT within 1 s")


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------

def test_get_root_serves_the_page(start_broker):
    br = ws_broker(start_broker)
    r = get(br.port, "/")
    assert r.status == 200
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert r.header("cache-control") == "no-cache"
    assert int(r.header("content-length")) == len(r.body)
    assert r.body.lstrip().lower().startswith(b"<!doctype html")
    head = get(br.port, "/", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == r.header("content-length")
    br.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: HTTP GET / 200")


def test_metrics(start_broker):
    br, ws_port = two_listener_broker(start_broker)
    c = WsConn(ws_port)
    c.connect("ws-metrics")
    r = get(ws_port, "/metrics")
    assert r.status == 200
    assert r.header("content-type").startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    assert "midge_" in text
    # The WebSocket client counts like any other.
    assert re.search(r"^midge_clients_connected 1$", text, re.M), text
    c.disconnect()


def test_healthz(start_broker):
    br = ws_broker(start_broker)
    r = get(br.port, "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")


def test_not_found_and_mqtt_without_upgrade(start_broker):
    br = ws_broker(start_broker)
    assert get(br.port, "/nope").status == 404
    r = get(br.port, "/mqtt")
    assert r.status == 426 and r.header("upgrade") == "websocket"


def test_websocket_and_tcp_clients_exchange_messages(start_broker):
    br, ws_port = two_listener_broker(start_broker)
    w = WsConn(ws_port)
    w.connect("ws-side")
    w.subscribe([("x/to-ws", 2)])
    t = MqttConn(br.port)
    t.connect("tcp-side")
    t.subscribe([("x/to-tcp", 2)])
    for qos in (0, 1, 2):
        t.publish("x/to-ws", f"from tcp q{qos}".encode(), qos=qos)
        m = w.recv_publish()
        assert (m.payload, m.qos) == (f"from tcp q{qos}".encode(), qos)
        w.publish("x/to-tcp", f"from ws q{qos}".encode(), qos=qos)
        m = t.recv_publish()
        assert (m.payload, m.qos) == (f"from ws q{qos}".encode(), qos)
    w.disconnect()
    t.disconnect()


def test_many_small_messages_arrive_in_order(start_broker):
    """A burst from a TCP publisher reaches a WebSocket subscriber complete and in order
    (the broker gathers a turn's packets into one message)."""
    br, ws_port = two_listener_broker(start_broker)
    w = WsConn(ws_port)
    w.connect("ws-burst")
    w.subscribe("burst/t")
    t = MqttConn(br.port)
    t.connect("tcp-burst")
    n = 2000
    t.send(b"".join(publish_pkt("burst/t", str(i).encode()) for i in range(n)))
    got = [m.payload for m in w.collect(n, timeout=TIMEOUT * 2)]
    assert got == [str(i).encode() for i in range(n)]
    w.ping()
    t.close()
    w.close()


def test_large_asset_to_a_slow_reader_is_complete(start_broker):
    """The response is closed only after it has been written, even when the socket does
    not take it at once."""
    br = ws_broker(start_broker)
    size = max(len(get(br.port, p).body) for p in ("/", "/app.js", "/mqtt.js"))
    path = next(p for p in ("/", "/app.js", "/mqtt.js") if len(get(br.port, p).body) == size)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", br.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.3)
    status, headers, body = read_head(s)
    while True:
        time.sleep(0.001)
        data = s.recv(1024)
        if not data:
            break
        body += data
    s.close()
    assert status == 200 and len(body) == int(headers["content-length"]) == size


ORIGIN_LIKE = r" like http://192\.168\.1\.10:9001"
PREFIX_LIKE = r" like 192\.168\.1\.0/24"


@pytest.mark.parametrize("line,error", [
    ("websockets_origins http://ok.example evil.example",
     r'websockets_origins: "evil\.example" is not an origin' + ORIGIN_LIKE),
    ("websockets_origins http://ok.example/path",
     r'websockets_origins: "http://ok\.example/path" is not an origin' + ORIGIN_LIKE),
    ("http_trusted_proxies 10.0.0.0/33",
     r'http_trusted_proxies: "10\.0\.0\.0/33" is not an IP address or prefix' + PREFIX_LIKE),
    ("http_trusted_proxies proxy.lan",
     r'http_trusted_proxies: "proxy\.lan" is not an IP address or prefix' + PREFIX_LIKE),
    ("websockets_max_frame_size -1",
     r'websockets_max_frame_size: expected a number from 0 to 4294967295, got "-1"'),
])
def test_websocket_options_are_checked_at_load(tmp_path, line, error):
    """A bad WebSocket option refuses the configuration (--test-config): exit status 1,
    one error line naming file:line, then "configuration not loaded"; no sanitizer report."""
    conf = tmp_path / "midge.conf"
    conf.write_text(f"listener 0 127.0.0.1\nprotocol websockets\n{line}\n")
    p = h.run_midge("-c", conf, "--test-config", rc=1)
    assert p.stdout == "", p.stdout
    assert re.search(r"^\S+ \S+ error: " + re.escape(f"{conf}:3: ") + error + "$", p.stderr,
                     re.M), p.stderr
    assert re.search(r"^\S+ \S+ error: " + re.escape(f"{conf}: configuration not loaded") + "$",
                     p.stderr, re.M), p.stderr
