"""test_wss.py - MQTT over WebSocket over TLS (wss://): a `protocol websockets` listener
with certfile/keyfile. Raw sockets wrapped by Python's ssl: the upgrade and its refusals
(400 with a log line), HTTP answers over TLS, RFC 6455 framing rules carried inside TLS
records (fragmentation, ping between fragments, headers and masking keys split across
records, 16- and 64-bit lengths, unmasked and text frames), the close handshake, the
broker's own close (close frame, then TLS close_notify), plaintext on the wss port,
require_certificate, X-Forwarded-For and SIGHUP certificate renewal. MQTT.js over wss://
is in tests/ws/mqttjs.test.mjs.
"""
import os
import re
import shutil
import signal
import socket
import ssl
import time

import pytest

from midge_harness import (CONNACK, PUBACK, TIMEOUT, Closed, MqttConn, connect_pkt, midge_only,
                           publish_pkt)
from test_tls import certs, client_ctx, make_cert, peer_serial  # noqa: F401 (certs: a fixture)
from test_ws_raw import (BINARY, CLOSE, CONT, PING, PONG, TEXT, WsConn, close_payload,
                         read_head, upgrade_request, ws_frame)

pytestmark = midge_only


class WssConn(WsConn):
    """test_ws_raw's WebSocket client inside a TLS connection. strict: a TCP end without
    TLS close_notify is an error rather than a plain end of file."""

    def __init__(self, port, c, cert=None, strict=False, **kw):
        ctx = client_ctx(c, cert)
        super().__init__(port, wrap=lambda s: ctx.wrap_socket(
            s, server_hostname="localhost", suppress_ragged_eofs=not strict), **kw)

    def _recv_raw(self, deadline):
        try:
            return super()._recv_raw(deadline)
        except ssl.SSLWantReadError:
            return True
        except ssl.SSLError as e:
            if isinstance(e, ssl.SSLEOFError) and not self.allow_ragged:
                raise AssertionError("TCP closed without a TLS close_notify")
            self.closed = True
            raise Closed()

    allow_ragged = True


def wss_conf(c, *extra):
    return ["protocol websockets", f"cafile {c.cafile}", f"certfile {c.server[0]}",
            f"keyfile {c.server[1]}"] + list(extra)


def wss_broker(start_broker, c, *extra, tcp=False):
    """A wss listener (br.port), and with tcp a plain MQTT one (br.tcp)."""
    br = start_broker(conf=wss_conf(c, *extra) + (["listener 0 127.0.0.1"] if tcp else []))
    m = br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(websockets over tls\)")
    br.port = int(m.group(1))
    if tcp:
        br.tcp = int(br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(mqtt\)").group(1))
    return br


def tls_socket(port, c, cert=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return client_ctx(c, cert).wrap_socket(s, server_hostname="localhost")


def read_all(sock):
    data = b""
    while True:
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            break
        if not d:
            break
        data += d
    return data


# --------------------------------------------------------------------------------------
# upgrade and HTTP over TLS
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,proto", [("/mqtt", "mqtt"), ("/", "mqttv3.1")])
def test_wss_round_trip_with_a_tcp_client(start_broker, certs, path, proto):
    br = wss_broker(start_broker, certs, tcp=True)
    br.wait_log(r"listening on 127\.0\.0\.1:\d+ \(websockets over tls\)")
    w = WssConn(br.port, certs, path=path, protocols=(proto,))
    assert w.protocol == proto
    w.connect("wss-rt")
    assert w.subscribe([("rt/to-wss", 1)]) == [1]
    t = MqttConn(br.tcp)
    t.connect("tcp-rt")
    t.subscribe([("rt/to-tcp", 2)])
    # The real peer address in the logs and the TLS line, as for TCP and ws clients.
    br.wait_log(rf"client wss-rt connected from 127\.0\.0\.1:{w.local_port} ")
    br.wait_log(rf"TLS connection from 127\.0\.0\.1:{w.local_port}: TLSv1\.[23]")
    for qos in (0, 1, 2):
        w.publish("rt/to-tcp", b"from wss %d" % qos, qos=qos)
        m = t.recv_publish()
        assert (m.payload, m.qos) == (b"from wss %d" % qos, qos)
        t.publish("rt/to-wss", b"from tcp %d" % qos, qos=qos)
        m = w.recv_publish()
        assert (m.payload, m.qos) == (b"from tcp %d" % qos, min(qos, 1))
    w.close()
    t.close()


def test_wss_bad_upgrade_gets_400(start_broker, certs):
    br = wss_broker(start_broker, certs)
    s = tls_socket(br.port, certs)
    s.sendall(f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{br.port}\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    status, headers, rest = read_head(s)
    assert status == 400
    body = rest + read_all(s)
    assert b"missing Sec-WebSocket-Key" in body
    br.wait_log(r"http: 127\.0\.0\.1:\d+: bad request: missing Sec-WebSocket-Key")
    s.close()


def test_wss_http_healthz_and_page(start_broker, certs):
    br = wss_broker(start_broker, certs)
    for path, want in (("/healthz", b"ok\n"), ("/", b"<")):
        s = tls_socket(br.port, certs)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{br.port}\r\n\r\n".encode())
        status, headers, rest = read_head(s)
        assert status == 200
        body = rest + read_all(s)
        assert len(body) == int(headers["content-length"])
        assert body.startswith(want)
        s.close()


def test_plaintext_to_a_wss_port_fails_cleanly(start_broker, certs):
    """A plain ws:// upgrade on the wss port: no HTTP answer, the connection ends at once,
    one log line says why; the listener keeps serving TLS clients."""
    br = wss_broker(start_broker, certs)
    req, _ = upgrade_request(br.port)
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    s.sendall(req)
    data = b""
    while True:  # the broker ends the connection: a timeout here fails the test
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    s.close()
    assert b"HTTP/" not in data
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*\(the client is not speaking TLS\)")
    w = WssConn(br.port, certs)
    w.connect("wss-after-plain")
    w.close()


# --------------------------------------------------------------------------------------
# framing inside TLS
# --------------------------------------------------------------------------------------

def test_wss_fragments_ping_and_split_headers(start_broker, certs):
    br = wss_broker(start_broker, certs)
    c = WssConn(br.port, certs)
    c.connect("wss-frag")
    c.subscribe("frag/t")
    pub = publish_pkt("frag/t", b"fragmented payload")
    c.send_frame(BINARY, pub[:3], fin=False)
    c.send_frame(PING, b"between")
    c.send_frame(CONT, pub[3:10], fin=False)
    # A frame whose header and masking key arrive in separate TLS records.
    last = ws_frame(CONT, pub[10:], fin=True)
    for piece in (last[:1], last[1:4], last[4:]):
        c.sock.sendall(piece)
        time.sleep(0.02)
    assert c.recv_publish().payload == b"fragmented payload"
    assert (PONG, b"between") in c.frames
    c.close()


@pytest.mark.parametrize("size", [200, 70000, 1024 * 1024])
def test_wss_16_and_64_bit_lengths(start_broker, certs, size):
    """Payloads that need a 16-bit and a 64-bit frame length, both ways (1 MB: a message
    spread over many TLS records)."""
    br = wss_broker(start_broker, certs, tcp=True)
    payload = os.urandom(size)
    w = WssConn(br.port, certs)
    w.connect("wss-len")
    w.subscribe([("len/to-wss", 1)])
    t = MqttConn(br.tcp)
    t.connect("tcp-len")
    t.subscribe([("len/to-tcp", 1)])
    w.send(publish_pkt("len/to-tcp", payload, qos=1, pid=9))
    assert w.expect(PUBACK).body == b"\x00\x09"
    assert t.recv_publish(timeout=TIMEOUT * 2).payload == payload
    t.publish("len/to-wss", payload, qos=1)
    assert w.recv_publish(timeout=TIMEOUT * 2).payload == payload
    w.close()
    t.close()


@pytest.mark.parametrize("case,code", [("unmasked", 1002), ("text", 1003)])
def test_wss_framing_violations(start_broker, certs, case, code):
    br = wss_broker(start_broker, certs)
    c = WssConn(br.port, certs)
    c.connect("wss-bad")
    frame = {"unmasked": ws_frame(BINARY, b"\xc0\x00", mask=False),
             "text": ws_frame(TEXT, b"hello")}[case]
    c.sock.sendall(frame)
    c.expect_close(code)
    br.wait_log(rf"client wss-bad disconnected: websocket .*\(close {code}")


def test_wss_peer_close_handshake(start_broker, certs):
    br = wss_broker(start_broker, certs)
    c = WssConn(br.port, certs)
    c.connect("wss-bye")
    c.send_frame(CLOSE, close_payload(1000, b"bye"))
    assert c.expect_close(1000) == b"bye"
    br.wait_log(r"client wss-bye disconnected: websocket closed by peer \(1000")


def test_broker_close_sends_close_frame_then_close_notify(start_broker, certs):
    """A takeover ends the old connection: its close frame 1000 arrives inside TLS, and
    then TLS close_notify (the layers say goodbye top to bottom), not a bare TCP end."""
    br = wss_broker(start_broker, certs)
    old = WssConn(br.port, certs, strict=True)
    old.allow_ragged = False
    old.connect("wss-twice")
    new = WssConn(br.port, certs)
    new.connect("wss-twice")
    old.expect_close(1000)
    new.ping()
    new.close()


# --------------------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------------------

def test_wss_require_certificate(start_broker, certs):
    br = wss_broker(start_broker, certs, "require_certificate true")
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    refused = False
    try:
        t = client_ctx(certs).wrap_socket(s, server_hostname="localhost")
        req, _ = upgrade_request(br.port)
        t.sendall(req)
        refused = t.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        refused = True
    finally:
        s.close()
    assert refused, "a client without a certificate got an answer"
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate")
    c = WssConn(br.port, certs, cert=certs.alice)
    c.connect("wss-alice")
    br.wait_log(r"TLS connection from 127\.0\.0\.1:\d+: .*client certificate CN=alice")
    c.close()


def test_wss_x_forwarded_for_from_trusted_proxy(start_broker, certs):
    br = wss_broker(start_broker, certs, "http_trusted_proxies 127.0.0.1")
    c = WssConn(br.port, certs, extra="X-Forwarded-For: 203.0.113.9\r\n")
    c.connect("wss-proxied")
    br.wait_log(r"client wss-proxied connected from 203\.0\.113\.9 via 127\.0\.0\.1:\d+")
    c.close()


def test_wss_sighup_renews_certificate(start_broker, certs, tmp_path):
    """SIGHUP re-reads a wss listener's certificate: new connections get the renewed one,
    an established wss connection stays up and keeps working."""
    d = str(tmp_path)
    crt, key = os.path.join(d, "live.crt"), os.path.join(d, "live.key")
    shutil.copy(certs.server[0], crt)
    shutil.copy(certs.server[1], key)
    br = start_broker(conf=["protocol websockets", f"cafile {certs.cafile}", f"certfile {crt}",
                            f"keyfile {key}"])
    assert peer_serial(br.port, certs) == 1001
    old = WssConn(br.port, certs)
    old.connect("wss-old", keepalive=0)
    assert old.subscribe([("renew/#", 1)]) == [1]
    new_crt, new_key = make_cert(d, "renewed", "localhost", certs.ca, 1002, server=True)
    os.replace(new_key, key)
    os.replace(new_crt, crt)
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(rf"configuration reloaded from {re.escape(br.conf_path)} ", since=mark)
    assert peer_serial(br.port, certs) == 1002
    pub = WssConn(br.port, certs)
    pub.connect("wss-new")
    pub.publish("renew/x", b"after reload", qos=1)
    assert old.recv_publish().payload == b"after reload"
    old.ping()
    old.close()
    pub.close()


def test_wss_connect_refused_before_close(start_broker, certs):
    """A refused CONNECT over wss (protocol level 3 with name MQTT): CONNACK 1 first, then
    the close frame, both inside TLS."""
    br = wss_broker(start_broker, certs)
    c = WssConn(br.port, certs)
    c.send(connect_pkt("wss-refused", proto_level=3))
    p = c.expect(CONNACK)
    assert p.body[1] == 1
    c.expect_close(1000)
