"""linger_*: when the broker ends a connection itself, what it sent last arrives even if the
client was still sending (src/net/linger.c).

Closing a socket with unread input makes the kernel send RST, and a client whose stack gets
the RST may lose what it had received but not read yet: the MQTT 5 DISCONNECT with its
reason, the CONNACK refusal. Each test makes the broker end a connection while the client
has pipelined far more than the broker will read, then checks that the goodbye arrives and
the connection ends in an orderly close (EOF), not a reset."""
import socket
import threading
import time

from midge_harness import (CONNACK, DISCONNECT, TIMEOUT, MqttConn, MqttConn5, connect_pkt, parse_disconnect5, publish5_pkt, publish_pkt, scaled)

# What the client pipelines behind the offending packet: larger than the socket buffers of
# both ends together, so that the broker closes with input it never read.
FLOOD = 4 << 20
ROUNDS = 10


def _flood(sock, stop):
    """Send harmless bytes until the peer stops taking them or stop is set."""
    chunk = publish_pkt("flood", bytes(60000))
    sock.settimeout(0.2)
    sent = 0
    while sent < FLOOD and not stop.is_set():
        try:
            sent += sock.send(chunk)
        except socket.timeout:
            continue
        except OSError:
            return


def _goodbye_then_eof(conn):
    """Read until the connection ends: the packets received, and how it ended ("eof" or
    "reset")."""
    got = []
    deadline = time.monotonic() + scaled(TIMEOUT)
    while time.monotonic() < deadline:
        p = conn._parse_one()
        if p is not None:
            got.append(p)
            continue
        conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.sock.recv(1 << 16)
        except (ConnectionResetError, ConnectionAbortedError):
            return got, "reset"
        except socket.timeout:
            break
        if not data:
            return got, "eof"
        conn.buf += data
    raise AssertionError(f"connection still open after {scaled(TIMEOUT):.0f} s ({got!r})")


def _pipelined(broker, conn, offending):
    """Send offending then flood behind it; return what arrived and how it ended."""
    stop = threading.Event()
    conn.sock.sendall(offending)
    t = threading.Thread(target=_flood, args=(conn.sock, stop), daemon=True)
    t.start()
    try:
        return _goodbye_then_eof(conn)
    finally:
        stop.set()
        t.join()
        conn.close()


def test_linger_v5_disconnect_reason_survives_pipelined_input(broker):
    """A malformed PUBLISH followed by megabytes the broker never reads: every time, the
    client reads DISCONNECT 0x81 (Malformed Packet) and then an orderly close."""
    for i in range(ROUNDS):
        c = MqttConn5(broker.port)
        c.connect(f"lingering{i}")
        # A PUBLISH whose topic has a wildcard: malformed, [MQTT-3.3.2-2].
        got, end = _pipelined(broker, c, publish5_pkt("a/+", b"x"))
        kinds = [p.type for p in got]
        assert kinds == [DISCONNECT], f"round {i}: received {got!r}, then {end}"
        assert parse_disconnect5(got[0]).reason == 0x81, got[0]
        assert end == "eof", f"round {i}: the DISCONNECT came, then a reset instead of FIN"
    broker.wait_log(r"client lingering\d disconnected: .*wildcard")


def test_linger_connack_refusal_survives_pipelined_input(broker):
    """A 3.1.1 client refused at CONNECT (an empty client id without a clean session) that
    pipelines PUBLISHes behind its CONNECT, as clients that do not wait for CONNACK do,
    still reads CONNACK 2 (identifier rejected), [MQTT-3.1.3-8]."""
    for i in range(ROUNDS):
        c = MqttConn(broker.port)
        got, end = _pipelined(broker, c, connect_pkt("", clean=False))
        assert [p.type for p in got] == [CONNACK], f"round {i}: received {got!r}, then {end}"
        assert got[0].body == b"\x00\x02", got[0]
        assert end == "eof", f"round {i}: the CONNACK came, then a reset instead of FIN"


def test_linger_ends_for_a_peer_that_never_closes(broker):
    """A client that keeps its socket open and silent after the broker's DISCONNECT is
    closed anyway, a little later, and the broker goes on serving others."""
    c = MqttConn5(broker.port)
    c.connect("stays")
    c.send(publish5_pkt("a/#", b"x"))
    assert parse_disconnect5(c.expect(DISCONNECT)).reason == 0x81
    # The broker shut down its side (FIN: EOF here) and lingers for input; the client sends
    # nothing and does not close. The socket is closed by the broker within its bound.
    got, end = _goodbye_then_eof(c)
    assert got == [] and end == "eof"
    # What the client sends now finds no one reading: the kernel answers with RST once the
    # broker has closed for good, which it must do on its own within the linger time.
    deadline = time.monotonic() + scaled(TIMEOUT)
    while True:
        try:
            c.sock.send(b"\x00")
        except (BrokenPipeError, ConnectionResetError):
            break
        assert time.monotonic() < deadline, "the broker never closed the lingering socket"
        time.sleep(0.1)
    c.close()
    other = MqttConn5(broker.port)
    other.connect("after")
    other.ping()


def test_linger_sockets_do_not_delay_shutdown(broker):
    """SIGTERM with lingering sockets whose peers never close: the broker exits at once."""
    held = []
    for i in range(20):
        c = MqttConn5(broker.port)
        c.connect(f"held{i}")
        c.send(publish5_pkt("a/+", b"x"))
        c.expect(DISCONNECT)
        held.append(c)
    t0 = time.monotonic()
    broker.stop()
    took = time.monotonic() - t0
    for c in held:
        c.close()
    assert took < scaled(TIMEOUT), f"shutdown took {took:.1f} s"
