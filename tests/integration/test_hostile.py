"""test_hostile.py - hostile clients against the real binary (issue 4, "Limits and hostile
input"): random bytes, truncated and half-sent packets, a 268 MB remaining length announced
and never sent, 1,000 sockets that never send CONNECT, 10,000 subscriptions from one client,
1,000-level (and 32,768-level) topics, invalid UTF-8 in every string field.

Every scenario checks the same four things:
- the broker stays up (and exits cleanly at teardown, no sanitizer report);
- a well-behaved reference pair (RefPair: a QoS 1 subscriber and a publisher) keeps
  getting its messages, each round trip under LATENCY seconds, measured *while* the attack
  is in place (a background thread runs the round trips);
- memory stays bounded: VmHWM (peak resident set) and VmData (address space) read from
  /proc/<pid>/status, against explicit bounds relative to the start (MemWatch);
- each bad client gets a precise log line naming its address or client id and the reason.

The helpers here (RefPair, MemWatch, log counting) are shared with test_limits2.py.
"""
import contextlib
import os
import random
import re
import selectors
import socket
import struct
import threading
import time

import pytest

import midge_harness as h
from midge_harness import PUBACK, SUBACK, UNSUBACK

pytestmark = h.midge_only

# A reference round trip (PUBLISH QoS 1 -> PUBACK and delivery) must stay under this, on
# both builds, during every attack. Normal is ~1 ms (ASan: a few ms).
LATENCY = 1.0
LOG_PREFIX = r"^\S+ \S+ "

# Every sentence the codec/proto can put after "protocol error: " (include/midge/err.h).
SENTENCES = ("malformed packet", "reserved packet type 0 or 15",
             "reserved fixed-header flags have wrong values",
             "remaining length uses more than 4 bytes", "packet larger than the configured maximum",
             "QoS 3 is reserved", "packet identifier 0", "packet shorter than its fields",
             "bytes left over after the last field", "string is not valid UTF-8",
             "string contains U+0000", "string contains a UTF-16 surrogate code point",
             "unknown protocol name", "CONNECT reserved flag is set",
             "will QoS/retain set without will flag", "password flag set without user name flag",
             "SUBSCRIBE/UNSUBSCRIBE with no topic filter", "reserved bits of requested QoS are set",
             "zero-length topic", "wildcard character in topic name",
             "wildcard not alone in its level or '#' not last",
             "more than 65535 topic filters or return codes in one packet",
             "reserved CONNACK or SUBACK return code", "first packet is not CONNECT",
             "second CONNECT on one connection", "packet type a client must not send")
ANY_SENTENCE = "(?:" + "|".join(re.escape(s) for s in SENTENCES) + ")"
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------

def peer_closed_re(port, reason):
    """The line for a connection closed before it completed CONNECT."""
    return rf"{LOG_PREFIX}notice: connection from 127\.0\.0\.1:{port} closed: {reason}$"


def client_closed_re(cid, reason):
    return rf"{LOG_PREFIX}notice: client {re.escape(cid)} disconnected: {reason}$"


def log_lines(br, regex, since=0):
    pat = re.compile(regex)
    with br.cond:
        return [ln for ln in br.lines[since:] if pat.search(ln)]


def wait_log_count(br, regex, n, timeout, since=0):
    """Wait until at least n lines match; return them."""
    pat = re.compile(regex)
    deadline = time.monotonic() + timeout
    with br.cond:
        while True:
            got = [ln for ln in br.lines[since:] if pat.search(ln)]
            if len(got) >= n or time.monotonic() >= deadline or not br.alive():
                break
            br.cond.wait(0.1)
    assert len(got) >= n, (f"{len(got)} of {n} log lines matching {regex!r} within "
                           f"{timeout:.1f} s; last lines:\n" + "\n".join(br.lines[-20:]))
    return got


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k.startswith("Vm"):
                out[k] = int(v.split()[0])  # kB
    return out


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


MEM_REPORT = []  # (test, start RSS MB, peak RSS MB, end RSS MB, VmData growth MB)


class MemWatch:
    """Memory of the broker process from /proc: bounds relative to the start.

    rss_mb: how far the peak resident set (VmHWM) may rise above the starting VmRSS;
    data_mb: how far the address space of the heap (VmData) may grow. Each is a pair
    (plain build, ASan build): ASan keeps freed memory in quarantine and shadows every
    allocation, so its bounds are generous.
    """

    def __init__(self, br, name):
        self.br = br
        self.pid = br.proc.pid
        self.name = name
        self.start = proc_status(self.pid)
        self.max_data = self.start["VmData"]
        self._stop = threading.Event()
        # VmHWM records the peak resident set by itself; VmData has no peak, so sample it.
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()

    def _sample(self):
        while not self._stop.wait(0.02):
            try:
                self.max_data = max(self.max_data, proc_status(self.pid)["VmData"])
            except (OSError, KeyError, ValueError):
                return

    def check(self, rss_mb, data_mb=None):
        """Assert the bounds (MB; pairs are (plain, ASan)). Returns the figures."""
        now = proc_status(self.pid)
        self.max_data = max(self.max_data, now["VmData"])
        def pick(v):
            return (v[1] if h.SANITIZE else v[0]) if isinstance(v, tuple) else v

        start_rss = self.start["VmRSS"] / 1024
        peak_rss = now["VmHWM"] / 1024
        end_rss = now["VmRSS"] / 1024
        data_growth = (self.max_data - self.start["VmData"]) / 1024
        MEM_REPORT.append((self.name, start_rss, peak_rss, end_rss, data_growth))
        print(f"MEM {self.name}: RSS start {start_rss:.1f} MB, peak {peak_rss:.1f} MB, "
              f"end {end_rss:.1f} MB; VmData growth {data_growth:.1f} MB")
        rb = pick(rss_mb)
        assert peak_rss - start_rss <= rb, (
            f"broker peak RSS rose {peak_rss - start_rss:.1f} MB (from {start_rss:.1f} to "
            f"{peak_rss:.1f} MB), bound {rb} MB")
        if data_mb is not None:
            db = pick(data_mb)
            assert data_growth <= db, (
                f"broker address space (VmData) grew by {data_growth:.1f} MB, bound {db} MB: "
                f"memory reserved up front for data a client only announced")
        return start_rss, peak_rss, end_rss, data_growth

    def stop(self):
        self._stop.set()
        self._t.join(1)


class RefPair:
    """A well-behaved subscriber (QoS 1 on TOPIC) and publisher. trip() is one round trip:
    PUBLISH QoS 1, PUBACK back and the message delivered (and acknowledged), all within
    LATENCY seconds."""

    def __init__(self, port, tag="ref"):
        self.topic = f"{tag}/ping"
        self.sub = h.client(port, f"{tag}-sub")
        assert self.sub.subscribe([(self.topic, 1)]) == [1]
        self.pub = h.client(port, f"{tag}-pub")
        self.n = 0
        self.latencies = []

    def trip(self, limit=LATENCY):
        self.n += 1
        payload = b"ref %d" % self.n
        t0 = time.monotonic()
        pid = self.pub.publish(self.topic, payload, qos=1, wait=False)
        m = self.sub.recv_publish(timeout=limit)
        assert (m.topic, m.payload, m.qos) == (self.topic, payload, 1), f"reference got {m}"
        ack = self.pub._await(PUBACK, max(0.01, limit - (time.monotonic() - t0)))
        assert ack.raw() == h.puback_pkt(pid), f"bad PUBACK {ack!r}"
        dt = time.monotonic() - t0
        self.latencies.append(dt)
        assert dt < limit, f"reference round trip {self.n} took {dt:.3f} s"
        return dt

    def trips(self, n=100, limit=LATENCY):
        for _ in range(n):
            self.trip(limit)

    @contextlib.contextmanager
    def during(self, min_trips=100, limit=LATENCY, pace=0.005):
        """Run round trips in a thread while the with-block attacks; at the end, at least
        min_trips must have been made (the rest are made at once if the block was quick,
        with the attack still in place) and every one under limit."""
        stop = threading.Event()
        errors = []
        first = len(self.latencies)

        def run():
            try:
                while not stop.is_set():
                    self.trip(limit)
                    stop.wait(pace)
            except BaseException as e:  # noqa: BLE001 - reported in the main thread
                errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield self
        finally:
            stop.set()
            t.join(limit + h.TIMEOUT)
        if errors:
            raise AssertionError(f"reference pair harmed during the attack "
                                 f"(after {len(self.latencies) - first} good round trips): "
                                 f"{errors[0]}") from errors[0]
        assert not t.is_alive(), "reference pair thread stuck"
        while len(self.latencies) - first < min_trips:
            self.trip(limit)
        during = self.latencies[first:]
        print(f"REF {len(during)} round trips, max {max(during) * 1000:.1f} ms")

    def close(self):
        self.sub.disconnect()
        self.pub.disconnect()


@pytest.fixture
def hostile(start_broker, request):
    """start(conf) -> (broker, RefPair, MemWatch) with the broker, the reference pair
    connected and the memory baseline taken."""
    made = []

    def start(conf=(), tag="ref"):
        br = start_broker(conf=list(conf))
        ref = RefPair(br.port, tag)
        ref.trips(5)  # warm up: the baseline includes a served client pair
        mem = MemWatch(br, request.node.name)
        made.append(mem)
        return br, ref, mem

    yield start
    for mem in made:
        mem.stop()


def recv_app(conn, timeout=h.TIMEOUT, ref_topic="ref/ping"):
    """Next PUBLISH that is not the reference pair's (seen by a '#' subscriber)."""
    deadline = time.monotonic() + timeout
    while True:
        m = conn.recv_publish(max(0.01, deadline - time.monotonic()))
        if m.topic != ref_topic:
            return m


def expect_no_app(conn, t=h.QUIET, ref_topic="ref/ping"):
    """Within t seconds nothing but reference messages arrives (and no close)."""
    deadline = time.monotonic() + t
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        p = conn.read_packet(left)
        if p is None:
            return
        m = h.parse_publish(p)
        assert m.topic == ref_topic, f"unexpected message {m}"
        if m.qos == 1:
            conn.send(h.puback_pkt(m.pid))


def wait_all_closed(conns, timeout):
    """Wait until the server has closed every MqttConn (packets before the close are
    ignored); return {conn: monotonic time of the close}. Uses epoll: more than 1024 fds."""
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    closed = {}
    deadline = time.monotonic() + timeout
    while len(closed) < len(conns):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(min(left, 0.2)):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[c] = time.monotonic()
                sel.unregister(c.sock)
    sel.close()
    open_ = [c.local_port for c in conns if c not in closed]
    assert not open_, f"{len(open_)} connections still open after {timeout:.1f} s: {open_[:10]}"
    return closed


# --------------------------------------------------------------------------------------
# What the broker must say about random bytes: a model of the fixed-header rules
# (src/codec/mqtt_codec.c), exact where the fixed header decides, and a reason naming
# the packet type where the body's decoder does.
# --------------------------------------------------------------------------------------

def first_packet(data):
    """('error', reason) | ('wait',) | ('complete', type, flags, header_len, total)."""
    if not data:
        return ("wait",)
    b0 = data[0]
    t, flags = b0 >> 4, b0 & 0x0F
    if t in (0, 15):
        return ("error", "protocol error: reserved packet type 0 or 15")
    name = NAMES[t]
    if t == 3:
        if (flags >> 1) & 3 == 3:
            return ("error", f"protocol error: QoS 3 is reserved \\({name}\\)")
        if (flags >> 1) & 3 == 0 and flags & 8:
            return ("error", f"protocol error: reserved fixed-header flags have wrong values "
                             f"\\({name}\\)")
    elif flags != (2 if t in (6, 8, 10) else 0):
        return ("error", f"protocol error: reserved fixed-header flags have wrong values "
                         f"\\({name}\\)")
    value, i = 0, 1
    while True:
        if i >= len(data):
            return ("wait",)
        byte = data[i]
        value |= (byte & 0x7F) << (7 * (i - 1))
        i += 1
        if not byte & 0x80:
            break
        if i == 5:
            return ("error", f"protocol error: remaining length uses more than 4 bytes "
                             f"\\({name}\\)")
    if (t in (2, 4, 5, 6, 7, 11) and value != 2) or (t in (12, 13, 14) and value != 0):
        return ("error", f"protocol error: malformed packet \\({name}\\)")
    if len(data) < i + value:
        return ("wait",)
    return ("complete", t, flags, i, i + value)


def expected_reason(data, connected, keepalive_s=1, connect_timeout_s=2):
    """(regex for the reason part of the log line, when) for a connection whose first
    bytes (after CONNECT when connected) are data and which then stays open. when is
    "now" (closed as soon as the bytes are read), "timeout" (the bytes end inside a packet:
    closed by connect_timeout or keepalive) or "any" (a body decides)."""
    wait = (f"keepalive {keepalive_s} s exceeded" if connected
            else f"no CONNECT within {connect_timeout_s} s")
    anything = (rf"(?:protocol error: {ANY_SENTENCE}(?: \(\w+\))?|{wait}|DISCONNECT received)")
    off = 0
    while True:
        fate = first_packet(data[off:])
        if fate[0] == "error":
            return fate[1], "now"
        if fate[0] == "wait":
            return wait, "timeout"
        _, t, _flags, hl, total = fate
        body = data[off + hl:off + total]
        name = NAMES[t]
        if not connected:
            if t != 1:  # body error or "first packet is not CONNECT"
                return rf"protocol error: {ANY_SENTENCE} \({name}\)", "now"
            if len(body) < 2 or len(body) - 2 < struct.unpack("!H", body[:2])[0]:
                return r"protocol error: packet shorter than its fields \(CONNECT\)", "now"
            n = struct.unpack("!H", body[:2])[0]
            if body[2:2 + n] not in (b"MQTT", b"MQIsdp"):
                return r"protocol error: unknown protocol name \(CONNECT\)", "now"
            return anything, "any"
        if t in (4, 5, 6, 7):
            if body == b"\x00\x00":
                return rf"protocol error: packet identifier 0 \({name}\)", "now"
        elif t == 12:
            pass
        elif t == 14:
            return "DISCONNECT received", "now"
        elif t in (1, 2, 9, 11, 13):  # a body error or a packet a client may not send
            return rf"protocol error: {ANY_SENTENCE} \({name}\)", "now"
        else:  # PUBLISH, SUBSCRIBE, UNSUBSCRIBE: the body decides; may even be valid
            return anything, "any"
        off += total


VALID_FIRST = (0x10, 0x20, 0x30, 0x33, 0x3D, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0,
               0xC0, 0xD0, 0xE0)


def random_cases(seeds):
    """(label, bytes) for each seed: raw random bytes of random length; the same with a
    valid first byte (so the random remaining length is parsed); random bodies framed
    with a valid fixed header of each type that has a variable body."""
    cases = []
    for seed in seeds:
        rng = random.Random(seed)
        cases.append((f"raw-{seed}", rng.randbytes(rng.randint(1, 2048))))
        cases.append((f"first-{seed}", bytes([rng.choice(VALID_FIRST)])
                      + rng.randbytes(rng.randint(1, 2048))))
        for first in (0x10, 0x32, 0x82, 0xA2):
            n = rng.randint(0, 300)
            cases.append((f"framed-{first:02x}-{seed}", bytes([first]) + h.enc_len(n)
                          + rng.randbytes(n)))
    return cases


# --------------------------------------------------------------------------------------
# Random bytes
# --------------------------------------------------------------------------------------

def test_random_bytes_before_connect(hostile):
    """Random bytes (8 seeds; raw, and random bodies in valid frames) as the first bytes
    of a connection: each connection is closed at once with the protocol error its first
    bytes make, or (an unfinished packet) at connect_timeout, with that line."""
    br, ref, mem = hostile(["connect_timeout 2"])
    cases = random_cases(range(1, 9))
    mark = br.mark()
    conns = []
    with ref.during():
        sent = {}
        for label, data in cases:
            c = h.MqttConn(br.port)
            c.send(data)
            sent[c] = time.monotonic()
            conns.append((label, c, data))
        closed = wait_all_closed([c for _, c, _ in conns], h.scaled(2.0) + 2.5)
        for label, c, data in conns:
            reason, when = expected_reason(data, connected=False)
            got = wait_log_count(br, peer_closed_re(c.local_port, reason), 1, h.TIMEOUT, mark)
            assert len(got) == 1, f"{label}: {got}"
            took = closed[c] - sent[c]
            if when == "now":
                assert took < h.scaled(1.0), f"{label}: closed after {took:.2f} s, not at once"
            elif when == "timeout":
                assert took >= 1.9, f"{label}: closed after {took:.2f} s, before the timeout"
    assert br.alive()
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


def test_random_bytes_after_connect(hostile):
    """The same random bytes after a valid CONNECT (keepalive 1, with a will): each client
    is closed with its precise line (its client id and the reason), its will published."""
    br, ref, mem = hostile()
    watch = h.client(br, "will-watch")
    watch.subscribe([("will/#", 0)])
    cases = random_cases(range(11, 19))
    mark = br.mark()
    conns = []
    with ref.during():
        sent = {}
        for label, data in cases:
            c = h.client(br, f"rnd-{label}", keepalive=1,
                         will=(f"will/{label}", b"gone", 0, False))
            c.send(data)
            sent[c] = time.monotonic()
            conns.append((label, c, data))
        closed = wait_all_closed([c for _, c, _ in conns], h.scaled(2.0) + 2.5)
        for label, c, data in conns:
            reason, when = expected_reason(data, connected=True)
            got = wait_log_count(br, client_closed_re(f"rnd-{label}", reason), 1, h.TIMEOUT,
                                 mark)
            assert len(got) == 1, f"{label}: {got}"
            took = closed[c] - sent[c]
            if when == "now":
                assert took < h.scaled(1.0), f"{label}: closed after {took:.2f} s, not at once"
            elif when == "timeout":
                assert took >= 1.45, f"{label}: closed after {took:.2f} s, before keepalive"
    # A will is published unless the random bytes happened to hold a DISCONNECT.
    clean = {label for label, _, data in conns
             if expected_reason(data, True)[0] == "DISCONNECT received"}
    wills = set()
    while len(wills) < len(conns) - len(clean):
        wills.add(watch.recv_publish().topic[len("will/"):])
    assert wills == {label for label, _, _ in conns} - clean
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# Truncated and half-sent packets
# --------------------------------------------------------------------------------------

def _connect_full():
    return h.connect_pkt("t" * 200, will=("w/t", b"p" * 50, 1, False), username="u",
                         password=b"pw")


def _connected_packets():
    return {
        "publish": h.publish_pkt("trunc/t", b"x" * 300, qos=1, pid=7),
        "subscribe": h.subscribe_pkt(3, [("a/#", 1), ("b/+/c", 2), ("d" * 150, 0)]),
        "unsubscribe": h.unsubscribe_pkt(4, ["a/#", "b/+/c", "e" * 150]),
        "pubrel": h.pubrel_pkt(9),
        "pingreq": h.pingreq_pkt(),
    }


def _cuts(pkt):
    """Cut points: after the first byte, inside the remaining-length varint (when it has
    two bytes), in the middle of the body, one byte short."""
    cuts = {1, len(pkt) // 2, len(pkt) - 1}
    if len(pkt) > 130:
        cuts.add(2)
    return sorted(c for c in cuts if 0 < c < len(pkt))


def test_truncated_packets_then_close(hostile):
    """A packet cut short and the connection closed (CONNECT cut 4 ways; PUBLISH,
    SUBSCRIBE, UNSUBSCRIBE, PUBREL, PINGREQ after CONNECT): each logged as closed by peer
    (address before CONNECT, client id after), the will of connected ones published, the
    half packet never acted on."""
    br, ref, mem = hostile()
    watch = h.client(br, "will-watch")
    watch.subscribe([("will/#", 0), ("trunc/#", 0)])
    mark = br.mark()
    pre, post = [], []
    with ref.during():
        full = _connect_full()
        for cut in _cuts(full):
            c = h.MqttConn(br.port)
            c.send(full[:cut])
            c.sock.shutdown(socket.SHUT_WR)
            pre.append(c)
        for name, pkt in _connected_packets().items():
            for cut in _cuts(pkt):
                cid = f"trunc-{name}-{cut}"
                c = h.client(br, cid, will=(f"will/{cid}", b"gone", 0, False))
                c.send(pkt[:cut])
                c.sock.shutdown(socket.SHUT_WR)
                post.append((cid, c))
        for c in pre:
            assert c.expect_closed() == [], "a reply to half a CONNECT"
            wait_log_count(br, peer_closed_re(c.local_port, "connection closed by peer"), 1,
                           h.TIMEOUT, mark)
        for cid, c in post:
            assert c.expect_closed() == [], f"{cid}: a reply to half a packet"
            wait_log_count(br, client_closed_re(cid, "connection closed by peer"), 1,
                           h.TIMEOUT, mark)
        wills = {watch.recv_publish().topic for _ in post}
        assert wills == {f"will/{cid}" for cid, _ in post}
        watch.expect_no_packet(h.QUIET)  # no half PUBLISH reached trunc/#
    br.assert_no_log(r"connected from .* \(MQTT 3\.1\.1, clean session 1, keepalive 60 s, "
                     r"with user name\)", since=mark)
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


def test_half_packet_before_connect_closed_by_connect_timeout(hostile):
    """Half a CONNECT (one byte; inside a two-byte remaining length; half the body; all but
    one byte) and then silence: closed by connect_timeout 2, between 2 s and 2 s + a
    tick (+ slack), with "no CONNECT within 2 s" for each address."""
    br, ref, mem = hostile(["connect_timeout 2"])
    full = _connect_full()
    mark = br.mark()
    with ref.during():
        t0 = time.monotonic()
        conns = []
        for cut in _cuts(full):
            c = h.MqttConn(br.port)
            c.send(full[:cut])
            conns.append(c)
        closed = wait_all_closed(conns, h.scaled(2.0) + 2.5)
        for c in conns:
            took = closed[c] - t0
            assert 1.9 <= took <= 2.0 + h.scaled(1.0), f"closed after {took:.2f} s"
            got = wait_log_count(br, peer_closed_re(c.local_port, "no CONNECT within 2 s"), 1,
                                 h.TIMEOUT, mark)
            assert len(got) == 1
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


def test_half_packet_after_connect_closed_by_keepalive(hostile):
    """A connected client (keepalive 1) that sends half a packet and holds it: closed by
    keepalive after 1.5 s (the half packet does not count as activity), will published,
    "keepalive 1 s exceeded"; a sibling that sends whole PINGREQs stays."""
    br, ref, mem = hostile()
    watch = h.client(br, "will-watch")
    watch.subscribe([("will/#", 0)])
    mark = br.mark()
    with ref.during():
        alive = h.client(br, "pinger", keepalive=1)
        stop = threading.Event()
        pings = []

        def pinger():
            while not stop.wait(0.3):
                alive.ping()
                pings.append(time.monotonic())

        t = threading.Thread(target=pinger, daemon=True)
        t.start()
        conns, sent = [], {}
        for name, pkt in _connected_packets().items():
            for cut in _cuts(pkt):
                cid = f"half-{name}-{cut}"
                c = h.client(br, cid, keepalive=1, will=(f"will/{cid}", b"gone", 0, False))
                c.send(pkt[:cut])
                sent[c] = time.monotonic()
                conns.append((cid, c))
        try:
            closed = wait_all_closed([c for _, c in conns], h.scaled(2.0) + 1.0)
        finally:
            stop.set()
            t.join(h.TIMEOUT)
        assert len(pings) >= 4, "the pinger was not served"
        for cid, c in conns:
            took = closed[c] - sent[c]
            assert 1.45 <= took <= 1.5 + h.scaled(0.75), f"{cid} closed after {took:.2f} s"
            wait_log_count(br, client_closed_re(cid, "keepalive 1 s exceeded"), 1, h.TIMEOUT,
                           mark)
        wills = {watch.recv_publish().topic for _ in conns}
        assert wills == {f"will/{cid}" for cid, _ in conns}
        alive.ping()
    br.assert_no_log(r"client pinger disconnected", since=mark)
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# Remaining length 268,435,455 announced and never sent
# --------------------------------------------------------------------------------------

HUGE = 268435455  # the largest remaining length MQTT can express


def test_huge_remaining_length_refused_from_header_with_max_packet_size(hostile):
    """max_packet_size 100000: a fixed header announcing 268,435,455 bytes is refused from
    the header alone ("packet larger than the configured maximum"), at once (not by
    keepalive or connect_timeout), before and after CONNECT; nothing is reserved."""
    br, ref, mem = hostile(["max_packet_size 100000", "connect_timeout 10"])
    mark = br.mark()
    with ref.during():
        t0 = time.monotonic()
        pre = []
        for _ in range(4):
            c = h.MqttConn(br.port)
            c.send(b"\x10" + h.enc_len(HUGE) + h.enc_str("MQTT") + b"\x04\x02\x00\x3c")
            pre.append(c)
        post = []
        for i, first in enumerate((0x30, 0x32, 0x82, 0xA2)):
            cid = f"huge-{i}"
            c = h.client(br, cid, keepalive=60)
            c.send(bytes([first]) + h.enc_len(HUGE) + h.enc_str("a/b"))
            post.append((cid, NAMES[first >> 4], c))
        closed = wait_all_closed(pre + [c for _, _, c in post], h.scaled(1.5))
        assert max(closed.values()) - t0 < h.scaled(1.5)
        for c in pre:
            wait_log_count(br, peer_closed_re(
                c.local_port, r"protocol error: packet larger than the configured maximum "
                              r"\(CONNECT\)"), 1, h.TIMEOUT, mark)
        for cid, name, c in post:
            wait_log_count(br, client_closed_re(
                cid, rf"protocol error: packet larger than the configured maximum \({name}\)"),
                1, h.TIMEOUT, mark)
    mem.check(rss_mb=(8, 64), data_mb=(16, 128))


def test_connect_and_large_publish_in_one_write(start_broker):
    """The size bound for a first packet (no CONNECT is larger than 327,702 bytes) applies
    to that packet only: a CONNECT followed in the same write by a 400 KB PUBLISH is
    accepted and the PUBLISH delivered."""
    br = start_broker()
    sub = h.client(br, "big-sub")
    sub.subscribe([("big/t", 0)])
    c = h.MqttConn(br.port)
    payload = b"P" * 400_000
    c.send(h.connect_pkt("big-pub") + h.publish_pkt("big/t", payload))
    c.expect(h.CONNACK)
    m = sub.recv_publish()
    assert (m.topic, len(m.payload)) == ("big/t", len(payload))
    c.send(h.disconnect_pkt())


def test_huge_remaining_length_without_max_packet_size(hostile):
    """No max_packet_size: 4 connected clients (keepalive 1) announce a 268,435,455-byte
    PUBLISH and send only its first 100 bytes, 2 sockets announce such a CONNECT. The
    broker must not reserve 256 MB per connection up front (peak RSS and VmData
    bounded), the reference pair keeps its latency, the connected ones end by keepalive
    ("keepalive 1 s exceeded"), and the CONNECTs are refused from their header: no valid
    CONNECT can be that large ("first packet larger than any valid CONNECT")."""
    br, ref, mem = hostile(["connect_timeout 2"])
    mark = br.mark()
    with ref.during():
        conns = []
        for i in range(4):
            cid = f"huge-{i}"
            c = h.client(br, cid, keepalive=1)
            c.send(b"\x30" + h.enc_len(HUGE) + h.enc_str("a/b") + b"x" * 95)
            conns.append((cid, c))
        pre = []
        for _ in range(2):
            c = h.MqttConn(br.port)
            c.send(b"\x10" + h.enc_len(HUGE) + h.enc_str("MQTT") + b"\x04\x02\x00\x3c")
            pre.append(c)
        wait_all_closed([c for _, c in conns] + pre, h.scaled(2.0) + 2.5)
        for cid, _ in conns:
            wait_log_count(br, client_closed_re(cid, "keepalive 1 s exceeded"), 1, h.TIMEOUT,
                           mark)
        for c in pre:
            wait_log_count(br, peer_closed_re(c.local_port, r"protocol error: first packet "
                                              r"larger than any valid CONNECT \(CONNECT\)"), 1,
                           h.TIMEOUT, mark)
    assert br.alive()
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# 1,000 sockets that never send CONNECT
# --------------------------------------------------------------------------------------

def test_thousand_silent_sockets(hostile):
    """1,000 sockets that connect and never send a byte (connect_timeout 2): the broker
    accepts them all, closes them all within a few seconds with one "no CONNECT within
    2 s" line each, the reference pair is unaffected and the broker's fd count returns to
    its baseline."""
    br, ref, mem = hostile(["connect_timeout 2"])
    pid = br.proc.pid
    base_fds = fd_count(pid)
    mark = br.mark()
    n = 1000
    with ref.during():
        t0 = time.monotonic()
        conns = [h.MqttConn(br.port) for _ in range(n)]
        opened = time.monotonic() - t0
        deadline = time.monotonic() + h.TIMEOUT
        while fd_count(pid) < base_fds + n and time.monotonic() < deadline:
            time.sleep(0.05)
        peak_fds = fd_count(pid)
        assert peak_fds >= base_fds + n, f"broker holds {peak_fds - base_fds} of {n} sockets"
        closed = wait_all_closed(conns, 2.0 + h.scaled(3.0))
        last = max(closed.values()) - t0
        first = min(closed.values()) - t0
        print(f"1000 silent: opened in {opened:.2f} s, closed between {first:.2f} and "
              f"{last:.2f} s")
        assert first >= 1.9, f"a silent socket was closed after {first:.2f} s"
        lines = wait_log_count(br, r"notice: connection from 127\.0\.0\.1:\d+ closed: "
                                   r"no CONNECT within 2 s$", n, h.TIMEOUT, mark)
        ports = {int(re.search(r":(\d+) closed", ln).group(1)) for ln in lines}
        assert ports == {c.local_port for c in conns}, "log lines do not match the sockets"
        assert len(lines) == n
        deadline = time.monotonic() + h.TIMEOUT
        while fd_count(pid) != base_fds and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fd_count(pid) == base_fds, f"broker fds {fd_count(pid)}, baseline {base_fds}"
    for c in conns:
        c.close()
    mem.check(rss_mb=(24, 128), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# 10,000 subscriptions from one client
# --------------------------------------------------------------------------------------

def test_ten_thousand_subscriptions(hostile):
    """One client subscribes to 10,000 filters in 20 SUBSCRIBE packets of 500 (QoS 0/1/2
    in turn): every one granted with its QoS; messages to the first, a middle and the last
    are delivered at the right QoS, a topic outside is not; a wildcard among them still
    works; unsubscribing all (20 UNSUBSCRIBEs) leaves nothing delivered."""
    br, ref, mem = hostile()
    n, batch = 10000, 500
    many = h.client(br, "many-subs")
    pub = h.client(br, "many-pub")
    with ref.during():
        t0 = time.monotonic()
        for start in range(0, n, batch):
            topics = [(f"many/{i}/x", i % 3) for i in range(start, start + batch)]
            pid = start // batch + 1
            many.send(h.subscribe_pkt(pid, topics))
        for start in range(0, n, batch):
            pid = start // batch + 1
            p = many._await(SUBACK, h.scaled(10))
            assert p.body[:2] == struct.pack("!H", pid), f"SUBACK out of order: {p!r}"
            assert list(p.body[2:]) == [i % 3 for i in range(start, start + batch)]
        took = time.monotonic() - t0
        print(f"10000 subscriptions granted in {took:.2f} s")
        assert many.subscribe([("many/+/wild", 1)]) == [1]
        for i in (0, 1, 4999, 9998, 9999):
            pub.publish(f"many/{i}/x", b"m%d" % i, qos=2)
            m = many.recv_publish()
            assert (m.topic, m.payload, m.qos) == (f"many/{i}/x", b"m%d" % i, i % 3)
        pub.publish("many/10000/x", b"outside", qos=1)
        pub.publish("many/77/wild", b"w", qos=1)
        m = many.recv_publish()
        assert (m.topic, m.payload) == ("many/77/wild", b"w"), f"got {m}"
        t0 = time.monotonic()
        for start in range(0, n, batch):
            many.send(h.unsubscribe_pkt(1000 + start // batch,
                                        [f"many/{i}/x" for i in range(start, start + batch)]))
        for start in range(0, n, batch):
            p = many._await(UNSUBACK, h.scaled(10))
            assert p.raw() == h.packet(UNSUBACK, 0, struct.pack("!H", 1000 + start // batch))
        print(f"10000 unsubscriptions in {time.monotonic() - t0:.2f} s")
        for i in (0, 4999, 9999):
            pub.publish(f"many/{i}/x", b"after", qos=1)
        pub.publish("many/5/wild", b"still", qos=1)
        m = many.recv_publish()
        assert (m.topic, m.payload) == ("many/5/wild", b"still"), f"got {m}"
        many.expect_no_packet(h.QUIET)
    many.disconnect()
    mem.check(rss_mb=(24, 160), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# Deep topics
# --------------------------------------------------------------------------------------

def test_deep_topics(hostile):
    """A 1,000-level topic (a/a/.../a): published and delivered through exact, '+'-only,
    mixed and '#' filters (once, at the highest granted QoS), stored retained and sent
    to later subscribers (a 999-level filter does not match), and cleared."""
    br, ref, mem = hostile()
    deep = "/".join(["a"] * 1000)
    plus = "/".join(["+"] * 1000)
    mixed = "/".join(["a", "+"] * 500)[:-1] + "a"
    assert mixed.count("/") == 999
    with ref.during():
        sub = h.client(br, "deep-sub")
        codes = sub.subscribe([(deep, 0), (plus, 1), (mixed, 2), ("a/#", 1), ("#", 0),
                               ("/".join(["a"] * 999), 2), (deep + "/#", 1)])
        assert codes == [0, 1, 2, 1, 0, 2, 1]
        pub = h.client(br, "deep-pub")
        pub.publish(deep, b"deep-1", qos=2)
        m = recv_app(sub)
        assert (m.topic, m.payload, m.qos) == (deep, b"deep-1", 2)
        expect_no_app(sub)  # overlapping filters: one copy
        pub.publish(deep, b"deep-retained", qos=1, retain=True)
        m = recv_app(sub)
        assert (m.topic, m.payload, m.retain) == (deep, b"deep-retained", False)
        late = h.client(br, "deep-late")
        assert late.subscribe([(plus, 1)]) == [1]
        m = late.recv_publish()
        assert (m.topic, m.payload, m.qos, m.retain) == (deep, b"deep-retained", 1, True)
        assert late.subscribe([("/".join(["+"] * 999), 1)]) == [1]
        late.expect_no_packet(h.QUIET)

        # Clear them: a retained empty payload deletes.
        pub.publish(deep, b"", qos=1, retain=True)
        recv_app(sub)
        again = h.client(br, "deep-again")
        assert again.subscribe([("#", 0)]) == [0]
        expect_no_app(again)
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))


def assert_refusals_logged(br, refused, mark):
    """Each refusal the client "deepest" saw has its own log line: a SUBACK 0x80 the
    SUBSCRIBE line of max_topic_levels, a closed connection a "disconnected" line with a
    reason other than DISCONNECT. (The client's "connected" line names it too, so a
    search for its name alone proves nothing.)"""
    subacks = [r for r in refused if r[0] == "subscribe" and r[2] == [0x80]]
    closes = [r for r in refused if r[0] == "publish" or r[2] is None]
    assert len(subacks) + len(closes) == len(refused), f"neither granted nor refused: {refused}"
    sub_re = (r"client deepest: SUBSCRIBE to a filter deeper than max_topic_levels \d+ "
              r"refused \(SUBACK 0x80\)$")
    close_re = r"client deepest disconnected: (?!DISCONNECT received)"
    if subacks:
        wait_log_count(br, sub_re, len(subacks), h.TIMEOUT, since=mark)
    if closes:
        wait_log_count(br, close_re, len(closes), h.TIMEOUT, since=mark)
    assert len(log_lines(br, sub_re, since=mark)) == len(subacks), br.log()


def test_deepest_topics_memory_bounded(hostile):
    """The deepest topics MQTT allows: 65,535 bytes, i.e. 32,768 levels ("b/b/...") or
    65,535 empty ones ("a////..."). One client publishes 10 retained messages on such
    topics and subscribes 10 such filters: 1.3 MB on the wire. Whether the broker serves
    them (retained one delivered to a matching '#' filter, a 32,768-level '+' filter
    matches) or refuses them, its resident memory must not grow by more than 32 MB
    (ASan: 128): a per-level cost of ~130 bytes turns each 64 KB packet into ~8 MB."""
    br, ref, mem = hostile()
    mark = br.mark()
    refused = []
    with ref.during():
        c = h.client(br, "deepest")
        for i in range(10):
            topic = chr(ord("a") + i) + "/" * 65534
            try:
                c.publish(topic, b"v%d" % i, qos=1, retain=True)
            except AssertionError:
                refused.append(("publish", i))
                c = h.client(br, "deepest")
        for i in range(10):
            flt = chr(ord("A") + i) + "/" * 65534
            try:
                codes = c.subscribe([(flt, 0)])
            except AssertionError:
                codes = None
                c = h.client(br, "deepest")
            if codes != [0]:
                refused.append(("subscribe", i, codes))
        if not refused:
            hunter = h.client(br, "deepest-hunter")
            assert hunter.subscribe([("a/#", 1)]) == [1]
            m = hunter.recv_publish()
            assert (m.topic, m.payload, m.retain) == ("a" + "/" * 65534, b"v0", True)
            deepest = "/".join(["b"] * 32768)
            assert hunter.subscribe([("/".join(["+"] * 32768), 1)]) == [1]
            c.publish(deepest, b"deepest", qos=1)
            m = hunter.recv_publish()
            assert (m.topic, m.payload) == (deepest, b"deepest")
        else:
            print(f"deepest topics refused: {refused}")
            if not h.REFERENCE:
                assert_refusals_logged(br, refused, mark)
    assert br.alive()
    mem.check(rss_mb=(32, 128), data_mb=(64, 256))


# --------------------------------------------------------------------------------------
# Invalid UTF-8 everywhere a string goes
# --------------------------------------------------------------------------------------

BAD_STRINGS = {
    "invalid": (b"ab\xc3\x28cd", "string is not valid UTF-8"),
    "overlong": (b"\xc0\xafx", "string is not valid UTF-8"),
    "nul": (b"ab\x00cd", "string contains U+0000"),
    "surrogate": (b"ab\xed\xa0\x80cd", "string contains a UTF-16 surrogate code point"),
}


def test_invalid_utf8_everywhere(hostile):
    """Invalid UTF-8, U+0000 and a UTF-16 surrogate in every string of MQTT 3.1.1: client
    id, user name, will topic (CONNECT: closed before CONNACK, logged by address), topic
    name, subscribe filter (second of two), unsubscribe filter (logged by client id). Each
    closed without a reply, with the matching sentence and packet type. Binary fields
    (password, will payload, payload) take the same bytes."""
    br, ref, mem = hostile()
    watch = h.client(br, "utf8-watch")
    watch.subscribe([("ok/#", 0)])
    mark = br.mark()
    with ref.during():
        for kind, (bad, sentence) in BAD_STRINGS.items():
            reason = rf"protocol error: {re.escape(sentence)} \(CONNECT\)"
            for field, pkt in (
                    ("client id", h.connect_pkt(bad)),
                    ("user name", h.connect_pkt(f"u-{kind}", username=bad, password=b"pw")),
                    ("will topic", h.connect_pkt(f"w-{kind}", will=(bad, b"x", 0, False)))):
                c = h.MqttConn(br.port)
                c.send(pkt)
                assert c.expect_closed() == [], f"{field} {kind}: a reply"
                got = wait_log_count(br, peer_closed_re(c.local_port, reason), 1, h.TIMEOUT,
                                     mark)
                assert len(got) == 1, f"{field} {kind}: {got}"
            for field, name, pkt in (
                    ("topic name", "PUBLISH", h.publish_pkt(bad, b"x", qos=1, pid=5)),
                    ("subscribe filter", "SUBSCRIBE",
                     h.subscribe_pkt(6, [("ok/fine", 1), (bad, 1)])),
                    ("unsubscribe filter", "UNSUBSCRIBE",
                     h.unsubscribe_pkt(7, ["ok/fine", bad]))):
                cid = f"utf8-{name.lower()}-{kind}"
                c = h.client(br, cid)
                c.send(pkt)
                assert c.expect_closed() == [], f"{field} {kind}: a reply"
                reason = rf"protocol error: {re.escape(sentence)} \({name}\)"
                got = wait_log_count(br, client_closed_re(cid, reason), 1, h.TIMEOUT, mark)
                assert len(got) == 1, f"{field} {kind}: {got}"
        # Binary fields are not strings: the same bytes are fine there.
        weird = b"".join(b for b, _ in BAD_STRINGS.values())
        c = h.client(br, "binary-ok", username="user", password=weird,
                     will=("ok/will", weird, 0, False))
        c.publish("ok/payload", weird, qos=1)
        m = watch.recv_publish()
        assert (m.topic, m.payload) == ("ok/payload", weird)
        c.sock.close()  # no DISCONNECT: the will goes out
        m = watch.recv_publish()
        assert (m.topic, m.payload) == ("ok/will", weird)
    mem.check(rss_mb=(16, 96), data_mb=(64, 256))
