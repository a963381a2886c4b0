"""test_reload.py - SIGHUP (issue 3): the configuration file is read again; unchanged
listeners keep their sockets, removed ones close, new ones open; new settings apply while
connected clients stay connected; a file with errors is refused with the precise error and
the running configuration stays in force; systemd hears RELOADING=1 (with MONOTONIC_USEC)
then READY=1.
"""
import os
import re
import shutil
import signal
import socket
import tempfile
import time

import pytest

from midge_harness import (QUIET, TIMEOUT, MqttConn, client, connect_pkt, midge_only,
                           parse_publish, puback_pkt, scaled)

pytestmark = midge_only

BASE = ["listener 0 127.0.0.1", "allow_anonymous true"]


def rewrite(br, lines):
    with open(br.conf_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def reload(br, lines=None, ok=True):
    """Rewrite the broker's file (if lines), send SIGHUP, wait for the outcome line."""
    if lines is not None:
        rewrite(br, lines)
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(rf"SIGHUP received: reloading {re.escape(br.conf_path)}$", since=mark)
    if ok:
        br.wait_log(rf"configuration reloaded from {re.escape(br.conf_path)} "
                    rf"\(\d+ listening sockets?\)$", since=mark)
    else:
        br.wait_log(rf"error: reload: {re.escape(br.conf_path)} has errors \(above\); the "
                    r"running configuration stays in force$", since=mark)
    return mark


def connect_v6(port, cid):
    c = MqttConn(port, host="::1", family=socket.AF_INET6)
    c.send(connect_pkt(cid))
    c.expect_bytes(b"\x20\x02\x00\x00")
    return c


def refused(port, host="127.0.0.1", family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def inflight_window(sub, pub, topic, n_published):
    """pub sends n_published QoS 1 messages to sub (subscribed to topic, not acking);
    return how many sub receives before the broker stops sending."""
    for i in range(n_published):
        pub.publish(topic, b"m%d" % i, qos=1)
    got = []
    while True:
        p = sub.read_packet(QUIET)
        if p is None:
            return got
        got.append(p)


def ack_all(conn, packets):
    for p in packets:
        conn.send(puback_pkt(parse_publish(p).pid))


# --------------------------------------------------------------------------------------

def test_reload_adds_listener_and_raises_inflight_while_client_stays(start_broker):
    """max_inflight_messages 2 -> 5 and a new IPv6 listener: the subscriber connected
    before the reload stays connected and its in-flight window becomes 5; the original
    listener keeps its port; the new one serves MQTT."""
    br = start_broker(conf=["max_inflight_messages 2"])
    sub = client(br, "keeper", clean=False)
    sub.subscribe([("w/#", 1)])
    pub = client(br, "feeder")
    first = inflight_window(sub, pub, "w/a", 10)
    assert len(first) == 2, f"window before reload: {len(first)} messages in flight"

    mark = reload(br, BASE + ["max_inflight_messages 5", "listener 0 ::1"])
    m6 = br.wait_log(r"notice: listening on \[::1\]:(\d+) \(mqtt\)$", since=mark)
    br.assert_no_log(r"no longer listening|listening on 127\.0\.0\.1", since=mark)
    # No bridges before or after: nothing to say about them (it once logged "out of memory").
    br.assert_no_log(r" error: ", since=mark)

    sub.ping()  # still connected, same session
    ack_all(sub, first)
    second = []
    while True:
        p = sub.read_packet(QUIET)
        if p is None:
            break
        second.append(p)
    assert len(second) == 5, f"window after reload: {len(second)} messages in flight"
    ack_all(sub, second)
    rest = sub.collect(3)
    assert [m.payload for m in rest] == [b"m7", b"m8", b"m9"]

    c4 = client(br.port, "old-listener")  # same port as before the reload
    c4.ping()
    c6 = connect_v6(int(m6.group(1)), "new-listener")
    c6.ping()
    sub2 = client(br, "late", clean=True)
    sub2.subscribe([("z/#", 1)])
    assert len(inflight_window(sub2, pub, "z/a", 7)) == 5


def test_reload_removes_listener_keeps_its_clients(start_broker):
    """A listener dropped from the file stops accepting ("no longer listening on ..."); a
    client that came in through it stays connected; the kept listener keeps its port."""
    br = start_broker(conf=["listener 0 ::1"])
    port6 = int(br.wait_log(r"listening on \[::1\]:(\d+)").group(1))
    c6 = connect_v6(port6, "via-v6")
    c6.subscribe("r/#")
    mark = reload(br, BASE)
    br.wait_log(rf"notice: no longer listening on \[::1\]:{port6}$", since=mark)
    br.assert_no_log(r"no longer listening on 127\.0\.0\.1", since=mark)
    assert refused(port6, "::1", socket.AF_INET6), "removed listener still accepts"
    c6.ping()
    pub = client(br.port, "pub")  # the kept listener: same port
    pub.publish("r/x", b"still here")
    assert c6.recv_publish().payload == b"still here"


def test_reload_bad_config_keeps_running_configuration(start_broker):
    """A new file with an error: the error is logged with file:line, the reload is refused,
    the old configuration stays (the new listener is not opened, the in-flight window stays
    2, the old listener still accepts, connected clients stay); a later good file
    applies."""
    br = start_broker(conf=["max_inflight_messages 2"])
    sub = client(br, "stay", clean=False)
    sub.subscribe([("b/#", 1)])
    pub = client(br, "pub")
    mark = reload(br, BASE + ["max_inflight_messages 5", "listener 0 ::1",
                              "max_inflight_mesages 7"], ok=False)
    br.wait_log(rf"error: {re.escape(br.conf_path)}:5: unknown option "
                r'"max_inflight_mesages"$', since=mark)
    br.assert_no_log(r"listening on|configuration reloaded", since=mark)
    sub.ping()
    client(br, "newcomer").ping()
    assert len(inflight_window(sub, pub, "b/x", 4)) == 2, "old window not in force"

    mark = reload(br, BASE + ["max_inflight_messages 5", "listener 0 ::1"])
    br.wait_log(r"listening on \[::1\]:\d+", since=mark)


def test_reload_bad_value_message_is_precise(start_broker):
    """The refused reload reports the option, the value and the range."""
    br = start_broker()
    mark = reload(br, BASE + ["max_inflight_messages x"], ok=False)
    br.wait_log(rf'error: {re.escape(br.conf_path)}:3: max_inflight_messages: expected a '
                r'number from 0 to 65535, got "x"$', since=mark)
    client(br, "alive").ping()


def test_reload_allow_anonymous_off_then_on(start_broker):
    """allow_anonymous true -> false: the connected anonymous client stays, a new one is
    refused with CONNACK 5; back to true: accepted again."""
    br = start_broker()
    a = client(br, "anon-before")
    reload(br, ["listener 0 127.0.0.1", "allow_anonymous false"])
    c = MqttConn(br.port)
    c.send(connect_pkt("anon-after"))
    c.expect_bytes(b"\x20\x02\x00\x05")
    c.expect_closed()
    a.ping()
    reload(br, BASE)
    client(br, "anon-again").ping()
    a.ping()


def test_reload_new_listener_port_busy_rest_applies(start_broker):
    """A new listener whose port is taken: that error is logged, the rest of the new
    file is in force (connection_messages false), the old listener still accepts."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        br = start_broker()
        mark = reload(br, BASE + [f"listener {port} 127.0.0.1", "connection_messages false"])
        br.wait_log(rf"error: cannot listen on 127\.0\.0\.1:{port}: address already in use$",
                    since=mark)
        br.wait_log(r"error: reload: some new listeners could not be opened", since=mark)
        mark = br.mark()
        c = client(br, "quiet-after-reload")
        c.disconnect()
        client(br, "marker").ping()
        br.assert_no_log(r"quiet-after-reload", since=mark)
    finally:
        busy.close()


def test_reload_without_config_file(start_broker):
    """No -c: SIGHUP says there is nothing to reload and the broker goes on."""
    br = start_broker(args=["-p", "0", "-v"])
    c = client(br, "nofile")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(r"SIGHUP received: running without a configuration file, nothing to reload",
                since=mark)
    c.ping()
    client(br, "nofile2").ping()


def test_reload_many_times_with_traffic(start_broker):
    """Ten reloads alternating two listener sets while a subscriber receives messages:
    every reload completes, nothing is lost, the process stays healthy (ASan checks the
    retired configurations)."""
    br = start_broker()
    sub = client(br, "steady")
    sub.subscribe([("s/#", 1)])
    pub = client(br, "pub")
    for i in range(10):
        extra = ["listener 0 ::1"] if i % 2 == 0 else []
        reload(br, BASE + extra + [f"max_inflight_messages {10 + i}"])
        pub.publish("s/x", b"%d" % i, qos=1)
        assert sub.recv_publish().payload == b"%d" % i
    assert len(re.findall(r"configuration reloaded", br.log())) == 10


def test_reload_turns_sys_on(start_broker):
    """sys_interval 0 -> 1 on reload: $SYS appears without a restart."""
    br = start_broker(conf=["sys_interval 0"])
    w = client(br, "watch")
    w.subscribe("$SYS/broker/uptime")
    w.expect_no_packet(QUIET)
    reload(br, BASE + ["sys_interval 1"])
    m = w.recv_publish(timeout=scaled(3))
    assert m.topic == "$SYS/broker/uptime" and re.fullmatch(rb"\d+ seconds", m.payload)


# --------------------------------------------------------------------------------------
# sd_notify around a reload
# --------------------------------------------------------------------------------------

class Notify:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mn-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            raise AssertionError(f"no notification within {timeout:.1f} s")

    def pending(self):
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify(monkeypatch):
    n = Notify()
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield n
    n.close()


@pytest.mark.parametrize("good", [True, False], ids=["good-file", "bad-file"])
def test_reload_notify_reloading_then_ready(start_broker, notify, good):
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, taken after the signal),
    then READY=1 with STATUS= - for a refused file too, so systemd leaves the reloading
    state either way."""
    br = start_broker()
    assert notify.recv().startswith("READY=1\n")
    keep = client(br, "present")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reload(br, BASE + ([] if good else ["oops"]), ok=good)
    msg = notify.recv()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", msg)
    assert m, f"first notification after SIGHUP: {msg!r}"
    assert before <= int(m.group(1)) <= after, (before, m.group(1), after)
    ready = notify.recv()
    assert re.fullmatch(r"READY=1\nSTATUS=1 clients connected, \d+ messages received, "
                        r"\d+ sent", ready), ready
    assert notify.pending() == []
    keep.ping()
