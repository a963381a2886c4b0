"""test_limits2.py - per-client limits under hostile load (issue 4, "Limits and hostile
input"): a subscriber that never reads while a publisher floods (client_output_limit for
QoS 0, max_queued_messages for QoS 1), max_connections on a listener,
persistent_client_expiration, max_queued_bytes.

As in test_hostile.py (whose helpers are used): in each scenario the broker stays up, the
reference pair keeps its round trips under LATENCY while the limit is being hit, memory
stays within explicit bounds read from /proc, and each limit leaves a precise log line.
"""
import os
import re
import resource
import socket
import threading
import time

import midge_harness as h
from midge_harness import PUBACK
from test_hostile import (LOG_PREFIX, client_closed_re, fd_count, hostile,  # noqa: F401
                          log_lines, wait_all_closed, wait_log_count)

pytestmark = h.midge_only

DROPPED = "$SYS/broker/publish/messages/dropped"
EXPIRED = "$SYS/broker/clients/expired"


class SysValue:
    """A raw client subscribed to one $SYS topic (sys_interval 1), keeping its value."""

    def __init__(self, port, topic, cid):
        self.topic = topic
        self.c = h.client(port, cid)
        assert self.c.subscribe(topic) == [0]
        self.value = None
        self.wait(lambda v: True)  # the retained value comes at once

    def wait(self, pred, timeout=None):
        timeout = timeout or h.scaled(4)
        deadline = time.monotonic() + timeout
        while self.value is None or not pred(self.value):
            left = deadline - time.monotonic()
            assert left > 0, f"{self.topic} = {self.value}, condition not met in {timeout:.1f} s"
            p = self.c.read_packet(left)
            if p is not None:
                m = h.parse_publish(p)
                assert m.topic == self.topic
                self.value = int(m.payload)
        return self.value


def small_rcvbuf_client(port, cid, **kw):
    """A connected client whose socket buffers little (4 KB), so that not reading shows
    soon."""
    c = h.MqttConn(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(cid, **kw)
    return c


def broker_end(br_port, peer_port):
    """The broker's end of the loopback connection to peer_port, from /proc/net/tcp:
    (TCP state, inode, bytes in its send queue), or None once it is gone. Inode 0 means
    no process holds it any more (closed by the broker, the kernel still sending)."""
    with open("/proc/net/tcp") as f:
        for ln in f.read().splitlines()[1:]:
            col = ln.split()
            if (int(col[1].split(":")[1], 16) == br_port
                    and int(col[2].split(":")[1], 16) == peer_port):
                return col[3], int(col[9]), int(col[4].split(":")[0], 16)
    return None


def wait_released(br_port, peer_port, timeout):
    """The broker must let go of the socket (close its fd) by itself, without the peer
    reading anything: a non-reader cannot keep its connection, fd and buffers."""
    deadline = time.monotonic() + timeout
    while True:
        end = broker_end(br_port, peer_port)
        if end is None or end[1] == 0:
            return
        assert time.monotonic() < deadline, (
            f"{timeout:.1f} s after the disconnect line the broker still holds the socket of "
            f"127.0.0.1:{peer_port} (state {end[0]}, {end[2]} bytes unsent): the close waits "
            f"for a write the peer never lets finish")
        time.sleep(0.05)


class Flooder:
    """A thread that sends blobs of pre-encoded PUBLISH packets as fast as the broker
    takes them, until stopped."""

    def __init__(self, port, cid, blob):
        self.c = h.client(port, cid, keepalive=0)
        self.blob = blob
        self.sent_blobs = 0
        self.stop_ev = threading.Event()
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self.stop_ev.is_set():
                self.c.sock.sendall(self.blob)
                self.sent_blobs += 1
        except OSError as e:
            self.error = e

    def stop(self):
        self.stop_ev.set()
        self.t.join(h.TIMEOUT)
        assert not self.t.is_alive(), "flooder stuck"
        assert self.error is None, f"flooder's connection failed: {self.error}"


# --------------------------------------------------------------------------------------
# A subscriber that never reads
# --------------------------------------------------------------------------------------

def test_nonreader_qos0_flood_dropped_then_disconnected(hostile):
    """client_output_limit 1048576: a QoS 0 subscriber that never reads (keepalive 0, so
    only the output limit can end it) under a QoS 0 flood of 1 KB messages. Its live
    messages beyond 1 MiB of waiting output are dropped and counted
    ($SYS/broker/publish/messages/dropped rises), and it is finally disconnected with
    "not reading: more than 2097152 bytes of output waiting" (within 6 s of the first
    drops), its socket then released by the broker. The flooder is not disconnected, RSS
    stays bounded, the reference pair keeps its latency."""
    br, ref, mem = hostile(["client_output_limit 1048576", "sys_interval 1"])
    dropped = SysValue(br.port, DROPPED, "sys-dropped")
    start_dropped = dropped.value
    nr = small_rcvbuf_client(br.port, "nonreader", keepalive=0)
    assert nr.subscribe([("flood/#", 0)]) == [0]
    mark = br.mark()
    blob = h.publish_pkt("flood/q0", b"F" * 1000) * 256
    with ref.during():
        fl = Flooder(br.port, "flooder", blob)
        try:
            first = dropped.wait(lambda v: v > start_dropped, h.scaled(6))
            t_drop = time.monotonic()
            print(f"dropped {first - start_dropped} after {fl.sent_blobs * 256} sent")
            # Memory while the flood goes on and the drops are being made.
            mem.check(rss_mb=(24, 192), data_mb=(64, 512))
            wait_log_count(br, client_closed_re(
                "nonreader", r"not reading: more than 2097152 bytes of output waiting"), 1,
                6.0, mark)
            print(f"non-reader disconnected {time.monotonic() - t_drop:.2f} s after the "
                  f"first drops were published")
        finally:
            fl.stop()
    # The broker lets go of the socket although the non-reader still reads nothing.
    wait_released(br.port, nr.local_port, h.scaled(2))
    br.assert_no_log(r"client flooder disconnected", since=mark)
    fl.c.ping()
    mem.check(rss_mb=(24, 192), data_mb=(64, 512))


def test_nonreader_large_qos1_disconnected_and_released(hostile):
    """client_output_limit 1048576: a QoS 1 subscriber that never reads while 600 KB QoS 1
    messages are published: its 20 in-flight messages put more than 2 MiB behind its
    socket, so it is disconnected ("not reading: more than 2097152 bytes of output
    waiting", its will published) and the broker releases its socket and the megabytes
    waiting for it within 2 s, without the non-reader reading anything. The publisher
    gets every PUBACK; RSS bounded; the reference pair keeps its latency."""
    br, ref, mem = hostile(["client_output_limit 1048576", "max_inflight_messages 20"])
    watch = h.client(br, "will-watch")
    watch.subscribe([("will/#", 0)])
    nr = small_rcvbuf_client(br.port, "bigreader", keepalive=0,
                             will=("will/bigreader", b"gone", 0, False))
    assert nr.subscribe([("big/#", 1)]) == [1]
    mark = br.mark()
    with ref.during():
        pub = h.client(br, "bigpub", keepalive=0)
        for i in range(30):
            pub.publish("big/q1", b"%d|" % i + b"L" * 600000, qos=1)
        wait_log_count(br, client_closed_re(
            "bigreader", r"not reading: more than 2097152 bytes of output waiting"), 1,
            h.TIMEOUT, mark)
        m = watch.recv_publish()
        assert (m.topic, m.payload) == ("will/bigreader", b"gone")
        mem.check(rss_mb=(64, 256), data_mb=(96, 512))
        wait_released(br.port, nr.local_port, h.scaled(2))
    br.assert_no_log(r"client bigpub disconnected", since=mark)
    pub.ping()
    mem.check(rss_mb=(64, 256), data_mb=(96, 512))


def test_nonreader_qos1_flood_queue_full(hostile):
    """max_queued_messages 100 (max_inflight_messages 20): a QoS 1 subscriber that never
    reads or acknowledges while 3,000 QoS 1 messages are published: 20 go in flight, 100
    are queued, the other 2,880 are dropped, logged as "queue full (100 messages, B bytes)"
    at the first drop and then at most once per 10 s (so exactly once in this burst), and
    counted in $SYS. The publisher gets all its PUBACKs;
    when the subscriber starts reading it gets exactly messages 0..119 in order."""
    br, ref, mem = hostile(["max_queued_messages 100", "max_inflight_messages 20",
                            "sys_interval 1"])
    dropped = SysValue(br.port, DROPPED, "sys-dropped")
    start_dropped = dropped.value
    nr = small_rcvbuf_client(br.port, "nonreader1", keepalive=0)
    assert nr.subscribe([("flood/#", 1)]) == [1]
    mark = br.mark()
    n = 3000
    with ref.during():
        pub = h.client(br, "flooder1", keepalive=0)
        for start in range(0, n, 500):
            pub.send(b"".join(h.publish_pkt("flood/q1", b"%d|" % i + b"Q" * 500, qos=1,
                                            pid=i + 1) for i in range(start, start + 500)))
            for i in range(start, start + 500):
                p = pub._await(PUBACK, h.TIMEOUT)
                assert p.raw() == h.puback_pkt(i + 1)
        lines = wait_log_count(
            br, rf"{LOG_PREFIX}warning: client nonreader1: queue full \(100 messages, 5\d{{4}} "
                r"bytes\), dropped message on flood/q1 \(1 dropped so far\)$", 1, h.TIMEOUT,
            mark)
        assert len(lines) == 1, lines
        dropped.wait(lambda v: v - start_dropped >= n - 120)
        assert dropped.value - start_dropped == n - 120, dropped.value - start_dropped
        # The rate limit: one line for the whole burst (it took well under 10 s).
        assert len(log_lines(br, r"nonreader1: queue full", since=mark)) == 1
    # Now it reads: exactly the first 120, in order.
    got = [nr.recv_publish(h.TIMEOUT).payload.split(b"|")[0] for _ in range(120)]
    assert got == [b"%d" % i for i in range(120)]
    nr.expect_no_packet(h.QUIET)
    br.assert_no_log(r"client (nonreader1|flooder1) disconnected", since=mark)
    mem.check(rss_mb=(16, 128), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# max_connections
# --------------------------------------------------------------------------------------

def test_max_connections_50(hostile):
    """max_connections 50 on the listener (the reference pair holds 2 of them): 48 more
    clients connect; the 51st to 60th sockets are closed at accept, before any byte is
    read, each with "refused: max_connections 50 reached"; the 50 are served; when one
    leaves, exactly one newcomer gets its slot."""
    br, ref, mem = hostile(["max_connections 50"])
    name = re.search(r"listening on (\S+) \(mqtt\)", br.log()).group(1)
    mark = br.mark()
    with ref.during():
        members = [h.client(br, f"member-{i}") for i in range(48)]
        extra = []
        for _ in range(10):
            c = h.MqttConn(br.port)
            try:
                c.send(h.connect_pkt("one-too-many"))
            except OSError:
                pass
            extra.append(c)
        wait_all_closed(extra, h.TIMEOUT)
        for c in extra:
            wait_log_count(br, rf"{LOG_PREFIX}warning: connection from 127\.0\.0\.1:"
                               rf"{c.local_port} on {re.escape(name)} refused: "
                               rf"max_connections 50 reached$", 1, h.TIMEOUT, mark)
        br.assert_no_log(r"one-too-many", since=mark)
        for m in members:
            m.ping()
        members.pop().disconnect()
        br.wait_log(r"client member-47 disconnected: DISCONNECT received", since=mark)
        deadline = time.monotonic() + h.TIMEOUT
        while True:  # the slot is freed when the socket is closed, just after the line
            late = h.MqttConn(br.port)
            try:
                late.send(h.connect_pkt("late"))
                p = late.read_packet(h.TIMEOUT)
            except (h.Closed, OSError):
                p = None
            if p is not None:
                assert p.raw() == h.packet(h.CONNACK, 0, b"\x00\x00")
                break
            assert time.monotonic() < deadline, "the freed slot was never given out"
            time.sleep(0.05)
        refused = h.MqttConn(br.port)
        assert refused.expect_closed() == []
    for m in members:
        m.ping()
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# persistent_client_expiration
# --------------------------------------------------------------------------------------

def test_persistent_client_expiration(hostile):
    """persistent_client_expiration 2s: an offline clean-session-0 client with 3 queued
    messages is removed 2-3 s after it left ("expired ... 3 queued messages discarded"),
    $SYS/broker/clients/expired goes from 0 to 1, and it reconnects to session present
    0 with no subscription. A persistent client that stays connected the whole time is
    never expired: after it leaves and comes back at once it has its session."""
    br, ref, mem = hostile(["persistent_client_expiration 2s", "sys_interval 1"])
    expired = SysValue(br.port, EXPIRED, "sys-expired")
    assert expired.value == 0
    mark = br.mark()
    with ref.during():
        stays = h.client(br, "stays", clean=False, keepalive=60)
        assert stays.subscribe([("exp/t", 1)]) == [1]
        gone = h.client(br, "gone", clean=False)
        assert gone.subscribe([("exp/t", 1)]) == [1]
        gone.disconnect()
        br.wait_log(r"client gone disconnected: DISCONNECT received", since=mark)
        t_left = time.monotonic()
        pub = h.client(br, "exp-pub")
        for i in range(3):
            pub.publish("exp/t", b"m%d" % i, qos=1)
        assert [stays.recv_publish().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
        br.wait_log_always(rf"{LOG_PREFIX}notice: client gone expired: away for more than 2 s "
                           r"\(persistent_client_expiration\); 3 queued messages discarded$",
                           timeout=2.0 + h.scaled(2.0), since=mark)
        took = time.monotonic() - t_left
        assert 2.0 <= took <= 2.0 + h.scaled(1.5), f"expired {took:.2f} s after leaving"
        expired.wait(lambda v: v == 1)
        back = h.client(br, "gone", clean=False, expect_sp=False)
        pub.publish("exp/t", b"after", qos=1)
        assert stays.recv_publish().payload == b"after"
        back.expect_no_packet(h.QUIET)
        back.disconnect()
        # "stays" has now been connected for more than 2 s: still there and served.
        stays.ping()
        time.sleep(1.0)  # more expiry scans with it online
        stays.ping()
        stays.disconnect()
        again = h.client(br, "stays", clean=False, expect_sp=True)
        pub.publish("exp/t", b"kept", qos=1)
        assert again.recv_publish().payload == b"kept"
    br.assert_no_log(r"client stays expired", since=mark)
    assert len(log_lines(br, r"expired: away", since=mark)) == 1
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# max_queued_bytes
# --------------------------------------------------------------------------------------

def test_max_queued_bytes_offline_subscriber(hostile):
    """max_queued_bytes 10000: an offline persistent QoS 1 subscriber; 9 messages of 1000
    bytes fit, a 2000-byte one does not (dropped, logged), a following 1000-byte one still
    fits (10000 exactly), a 1-byte one does not, nor 20 more of 1000. The first drop is
    logged ("queue full (9 messages, 9000 bytes), dropped message on qb/t (1 dropped so
    far)"), all
    are counted in $SYS; on
    reconnect the subscriber gets exactly what fit, in order, and nothing else."""
    br, ref, mem = hostile(["max_queued_bytes 10000", "sys_interval 1"])
    dropped = SysValue(br.port, DROPPED, "sys-dropped")
    start_dropped = dropped.value
    s = h.client(br, "qbytes", clean=False)
    assert s.subscribe([("qb/t", 1)]) == [1]
    s.disconnect()
    mark = br.mark()
    br.wait_log(r"client qbytes disconnected: DISCONNECT received")
    sizes = [1000] * 9 + [2000, 1000, 1] + [1000] * 20
    fits = list(range(9)) + [10]
    with ref.during():
        pub = h.client(br, "qb-pub")
        for i, size in enumerate(sizes):
            pub.publish("qb/t", (b"%d|" % i).ljust(size, b"B")[:size] if size > 3 else b"x",
                        qos=1)
        wait_log_count(br, rf"{LOG_PREFIX}warning: client qbytes: queue full \(9 messages, "
                           r"9000 bytes\), dropped message on qb/t \(1 dropped so far\)$", 1,
                       h.TIMEOUT, mark)
        dropped.wait(lambda v: v - start_dropped >= len(sizes) - len(fits))
        assert dropped.value - start_dropped == len(sizes) - len(fits)
        back = h.client(br, "qbytes", clean=False, expect_sp=True)
        got = [back.recv_publish() for _ in fits]
        assert [m.payload.split(b"|")[0] for m in got] == [b"%d" % i for i in fits]
        assert [len(m.payload) for m in got] == [sizes[i] for i in fits]
        back.expect_no_packet(h.QUIET)
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


def _cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptors_exhausted_pauses_accepting(hostile):
    """The broker runs out of file descriptors (its RLIMIT_NOFILE lowered while it runs):
    accept fails with EMFILE, logged once ("not accepting for 100 ms"); the broker pauses
    accepting instead of spinning on a listening socket that stays readable; connected
    clients are served all along; once descriptors are free, the connections that waited
    in the backlog are accepted, and a new client connects."""
    br, ref, mem = hostile()
    pid = br.proc.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fd_count(pid) + 4, old[1]))
    mark = br.mark()
    emfile = (rf"{LOG_PREFIX}warning: accept on \S+ failed: too many open files; "
              r"not accepting for 100 ms \(logged once per 10 s\)$")
    waiting = []
    try:
        with ref.during():
            # The kernel completes these handshakes into the listen backlog; the broker
            # accepts 4 and then meets EMFILE.
            waiting = [h.MqttConn(br.port) for _ in range(20)]
            br.wait_log(emfile, since=mark)
            # Pausing, not spinning: a broker retrying a readable listening socket would
            # burn a whole core. A second of wall time must cost well under half of one.
            before = _cpu_seconds(pid)
            time.sleep(1.0)
            assert _cpu_seconds(pid) - before < 0.5, "broker spins on the listening socket"
            assert len(log_lines(br, emfile, mark)) == 1, "EMFILE not rate-limited"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    # Descriptors again: every connection that waited is accepted and served.
    for i, c in enumerate(waiting):
        c.send(h.connect_pkt(f"waited-{i}"))
    for c in waiting:
        assert c.expect(h.CONNACK).body[1] == 0, "connection refused after the pause"
    late = h.client(br, "late")
    late.ping()
    ref.trips(5)
    mem.check(rss_mb=(24, 192), data_mb=(64, 512))
