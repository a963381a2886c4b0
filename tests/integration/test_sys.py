"""test_sys.py - $SYS/broker/... statistics (issue 3, docs/sys.md): retained QoS 0 values
published every sys_interval seconds (first set at start-up), Mosquitto's topic names plus
the HiveMQ-dashboard extras, values that follow what clients do, never seen by `#`, and
nothing at all with sys_interval 0.
"""
import platform
import re
import subprocess
import time

from midge_harness import (MIDGE_BIN, QUIET, SANITIZE, MqttConn, client, midge_only,
                           parse_publish, scaled)

pytestmark = midge_only

P = "$SYS/broker/"
COUNTS = ["clients/connected", "clients/disconnected", "clients/total", "clients/maximum",
          "clients/expired", "messages/received", "messages/sent", "messages/inflight",
          "messages/queued", "messages/stored", "store/messages/count",
          "publish/messages/received", "publish/messages/sent", "publish/messages/dropped",
          "bytes/received", "bytes/sent", "subscriptions/count", "retained messages/count",
          "sessions/count"]
LOADS = [f"load/{s}/{w}" for s in ("messages/received", "messages/sent", "publish/received",
                                   "publish/sent", "publish/dropped", "bytes/received",
                                   "bytes/sent", "connections", "sockets")
         for w in ("1min", "5min", "15min")] + ["publish/rate/received", "publish/rate/sent"]


class SysWatch:
    """A raw client subscribed to $SYS/#, keeping the latest payload of every topic."""

    def __init__(self, port, cid="sys-watch", filt="$SYS/#"):
        self.c = client(port, cid)
        self.c.subscribe(filt)
        self.values = {}
        self.log = []  # (monotonic time, topic, payload, retain)

    def pump(self, timeout):
        """Read one PUBLISH (if any within timeout) into values."""
        p = self.c.read_packet(timeout)
        if p is None:
            return False
        m = parse_publish(p)
        assert m.topic.startswith(P), f"$SYS/# subscriber got {m.topic}"
        assert m.qos == 0, f"{m.topic} delivered at QoS {m.qos}"
        self.values[m.topic[len(P):]] = m.payload.decode()
        self.log.append((time.monotonic(), m.topic[len(P):], m.payload.decode(), m.retain))
        return True

    def wait(self, topic, pred, timeout=None, what=""):
        """Until values[topic] satisfies pred (checked on the current value first)."""
        timeout = timeout or scaled(4)
        deadline = time.monotonic() + timeout
        while True:
            v = self.values.get(topic)
            if v is not None and pred(v):
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{P}{topic} = {v!r}, wanted {what or pred} within "
                                     f"{timeout:.1f} s; other values: {self.values}")
            self.pump(left)

    def wait_eq(self, topic, value, timeout=None):
        return self.wait(topic, lambda v: v == str(value), timeout, f"== {value}")

    def num(self, topic):
        return int(self.values[topic])

    def settle(self):
        """Read what has arrived by now plus one complete sys_interval of updates (the uptime
        changes at every update)."""
        up = self.values.get("uptime")
        self.wait("uptime", lambda v: v != up, what="a new uptime")


def test_sys_initial_set_at_startup_default_interval(start_broker):
    """Default sys_interval (10 s): a $SYS/# subscriber right after start-up gets every
    documented topic at once as a retained message, in the documented payload formats."""
    br = start_broker()
    version = subprocess.run([MIDGE_BIN, "--version"], capture_output=True,
                             timeout=scaled(10)).stdout.decode().strip()
    w = SysWatch(br.port)
    expected = ["version", "uptime"] + COUNTS + LOADS
    deadline = time.monotonic() + scaled(3)
    while set(expected) - set(w.values) and time.monotonic() < deadline:
        w.pump(deadline - time.monotonic())
    missing = set(expected) - set(w.values)
    assert not missing, f"missing $SYS topics: {sorted(missing)}"
    assert all(retain for _, _, _, retain in w.log), "a $SYS value was not retained"
    assert w.values["version"] == version, (w.values["version"], version)
    assert re.fullmatch(r"\d+ seconds", w.values["uptime"]), w.values["uptime"]
    for t in COUNTS:
        assert re.fullmatch(r"\d+", w.values[t]), (t, w.values[t])
    for t in LOADS:
        assert re.fullmatch(r"\d+\.\d\d", w.values[t]), (t, w.values[t])
    glibc = platform.libc_ver()
    if not SANITIZE and glibc[0] == "glibc" and tuple(map(int, glibc[1].split("."))) >= (2, 33):
        assert int(w.values["heap/current"]) > 0
        assert int(w.values["heap/maximum"]) >= int(w.values["heap/current"])
    # Static version, and the 10 s interval: nothing more within the quiet period.
    n = len(w.log)
    w.c.expect_no_packet(QUIET)
    assert len(w.log) == n


def test_sys_interval_one_second_uptime_grows(start_broker):
    """sys_interval 1: uptime is published about every second and grows."""
    br = start_broker(conf=["sys_interval 1"])
    w = SysWatch(br.port, filt="$SYS/broker/uptime")
    w.pump(scaled(2))
    stamps = []
    for _ in range(2):
        w.settle()
        stamps.append((time.monotonic(), int(w.values["uptime"].split()[0])))
    assert stamps[1][1] > stamps[0][1], stamps
    assert stamps[1][0] - stamps[0][0] < scaled(2.5), "uptime not updated every second"


def test_sys_clients_follow_connects_and_disconnects(start_broker):
    """clients/connected, maximum, disconnected, total and sessions/count follow clients
    connecting, leaving and keeping persistent sessions."""
    br = start_broker(conf=["sys_interval 1"])
    w = SysWatch(br.port)
    w.wait_eq("clients/connected", 1)
    a = client(br, "a")
    b = client(br, "b")
    p = client(br, "persistent", clean=False)
    p.subscribe([("p/#", 1)])
    w.wait_eq("clients/connected", 4)
    w.wait_eq("clients/maximum", 4)
    b.disconnect()
    p.disconnect()
    w.wait_eq("clients/connected", 2)
    w.wait_eq("clients/disconnected", 1)
    w.wait_eq("clients/total", 3)
    w.wait_eq("sessions/count", 3)
    assert w.values["clients/maximum"] == "4", "maximum must not fall"
    p2 = client(br, "persistent", clean=False, expect_sp=True)
    w.wait_eq("clients/disconnected", 0)
    w.wait_eq("clients/connected", 3)
    a.ping()
    p2.ping()


def test_sys_message_counters_follow_publishes(start_broker):
    """publish/messages/received counts the clients' PUBLISHes exactly; sent, bytes and
    messages counters grow; subscriptions/count follows SUBSCRIBE/UNSUBSCRIBE."""
    br = start_broker(conf=["sys_interval 1"])
    w = SysWatch(br.port)
    w.wait_eq("subscriptions/count", 1)
    w.wait_eq("publish/messages/received", 0)
    w.settle()
    before = dict(w.values)
    sub = client(br, "sub")
    sub.subscribe([("m/#", 1), ("other/+", 0)])
    pub = client(br, "pub")
    for i in range(5):
        pub.publish("m/q0", b"x" * 100)
    pub.publish("m/q1", b"y", qos=1)
    pub.publish("m/q2", b"z", qos=2)
    sub.collect(7)
    w.wait_eq("publish/messages/received", 7)
    w.wait_eq("subscriptions/count", 3)
    w.wait("publish/messages/sent",
           lambda v: int(v) >= int(before["publish/messages/sent"]) + 7, what=">= before+7")
    w.wait("bytes/received",
           lambda v: int(v) >= int(before["bytes/received"]) + 500, what="+500 payload bytes")
    w.wait("messages/received",
           lambda v: int(v) >= int(before["messages/received"]) + 7 + 2 + 1, what="grown")
    w.wait("load/publish/received/1min", lambda v: float(v) > 0, what="> 0")
    w.wait("load/connections/1min", lambda v: float(v) > 0, what="> 0")
    sub.unsubscribe("other/+")
    w.wait_eq("subscriptions/count", 2)
    assert w.values["store/messages/count"] == w.values["messages/stored"]


def test_sys_retained_count_and_queue_figures(start_broker):
    """retained messages/count = $SYS topics + the clients' retained messages; an offline
    persistent QoS 1 subscriber with max_queued_messages 2 shows messages/queued 2 and
    publish/messages/dropped 3 after five messages."""
    br = start_broker(conf=["sys_interval 1", "max_queued_messages 2"])
    w = SysWatch(br.port)
    w.settle()
    w.settle()
    n_sys = len(w.values)  # every $SYS topic is one retained message
    w.wait_eq("retained messages/count", n_sys)
    off = client(br, "offline", clean=False)
    off.subscribe([("q/#", 1)])
    off.disconnect()
    pub = client(br, "pub")
    for i in range(3):
        pub.publish(f"keep/{i}", b"r", retain=True)
    w.wait_eq("retained messages/count", n_sys + 3)
    pub.publish("keep/1", b"", retain=True)  # deletes one
    w.wait_eq("retained messages/count", n_sys + 2)
    for i in range(5):
        pub.publish("q/x", b"%d" % i, qos=1)
    w.wait_eq("messages/queued", 2)
    w.wait_eq("publish/messages/dropped", 3)
    w.wait("load/publish/dropped/1min", lambda v: float(v) > 0, what="> 0")
    back = client(br, "offline", clean=False, expect_sp=True)
    assert [m.payload for m in back.collect(2)] == [b"0", b"1"]
    w.wait_eq("messages/queued", 0)


def test_sys_never_reaches_wildcard_subscribers(start_broker):
    """`#`, `+/#` and `+/broker/uptime` never get $SYS messages, neither the retained
    ones at subscribe time nor the periodic updates; `$SYS/#` does."""
    br = start_broker(conf=["sys_interval 1"])
    x = client(br, "wild")
    x.subscribe([("#", 0), ("+/#", 0), ("+/broker/uptime", 0), ("+/broker/#", 1)])
    w = SysWatch(br.port)
    w.settle()
    w.settle()  # at least one full update after x subscribed
    x.expect_no_packet(0.05)
    pub = client(br, "pub")
    pub.publish("a/b", b"normal")
    m = x.recv_publish()
    assert m.topic == "a/b"
    # one delivery per matching subscription is not asserted here; only that no $SYS
    # message is among whatever arrives.
    while True:
        p = x.read_packet(0.2)
        if p is None:
            break
        assert not parse_publish(p).topic.startswith("$"), parse_publish(p).topic


def test_sys_interval_zero_publishes_nothing(start_broker):
    """sys_interval 0: no $SYS message at start-up or later (a retained one would be
    delivered on subscribe)."""
    br = start_broker(conf=["sys_interval 0"])
    c = client(br, "w0")
    c.subscribe("$SYS/#")
    other = client(br, "traffic")
    other.publish("t", b"1")
    c.expect_no_packet(QUIET)


def test_sys_direct_topic_subscription(start_broker):
    """A subscription to one exact $SYS topic gets its retained value."""
    br = start_broker()
    c = client(br, "one")
    c.subscribe("$SYS/broker/version")
    m = c.recv_publish()
    assert m.topic == "$SYS/broker/version" and m.retain
    assert re.fullmatch(rb"midge \d+\.\d+\.\d+", m.payload), m.payload
    c2 = MqttConn(br.port)
    c2.connect("two")
    c2.subscribe("$SYS/broker/clients/+")
    topics = set()
    deadline = time.monotonic() + scaled(2)
    while len(topics) < 5 and time.monotonic() < deadline:
        topics.add(c2.recv_publish(deadline - time.monotonic()).topic)
    assert {P + t for t in ("clients/connected", "clients/disconnected", "clients/total",
                            "clients/maximum", "clients/expired")} == topics
