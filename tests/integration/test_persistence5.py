"""test_persistence5.py - what MQTT 5 adds to durable state, through the real binary with
paho-mqtt's MQTTv5 client: a session's expiry, subscription options and identifiers,
queued QoS 1 messages with user properties and a content type, and a will waiting for its
Will Delay Interval survive a restart and a SIGKILL under `persistence_durability ack`,
arriving exactly once and in order.

Every test keeps its database in its own tmp_path and starts brokers on it one after the
other, each on an ephemeral port; clients reconnect to the new port.
"""
import queue
import sqlite3
import threading
import time

import pytest

import midge_harness as h

pytestmark = h.midge_only

mqtt = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402


def persistent_conf(dbdir, *extra):
    return ["persistence true", f"persistence_location {dbdir}/",
            "persistence_durability ack"] + list(extra)


def db_rows(dbdir, sql):
    con = sqlite3.connect(f"file:{dbdir}/midge.db?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def crash(br):
    """SIGKILL: no shutdown, no final commit, no will published."""
    br.proc.kill()
    br.proc.wait()
    br.stopped = True


def stop(br, how):
    if how == "sigkill":
        crash(br)
    else:
        br.stop()


def props(ptype, **kw):
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class V5:
    """A paho MQTTv5 client on its own network thread; messages go to a queue with what
    MQTT 5 carried (user properties, content type, subscription ids, expiry)."""

    def __init__(self, port, client_id, clean_start=True, expiry=None, will=None,
                 will_props=None, expect_sp=None, loop=True):
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.subacks = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.max_inflight_messages_set(20)  # midge's Receive Maximum (paho 1.6 ignores it)
        if will:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain, properties=will_props)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        cp = props(PacketTypes.CONNECT, SessionExpiryInterval=expiry) if expiry else None
        self.c.connect("127.0.0.1", port, 60, clean_start=clean_start, properties=cp)
        if loop:
            self.c.loop_start()
            assert self.connected.wait(h.TIMEOUT), f"{client_id}: no CONNACK"
        else:  # driven by hand, so that nothing reconnects after drop()
            deadline = time.monotonic() + h.TIMEOUT
            while not self.connected.is_set() and time.monotonic() < deadline:
                self.c.loop(0.05)
            assert self.connected.is_set(), f"{client_id}: no CONNACK"
        assert self.rc == 0, f"{client_id}: CONNACK reason {self.rc}"
        if expect_sp is not None:
            assert self.session_present == expect_sp, f"{client_id}: session present"

    def _on_connect(self, c, userdata, flags, rc, properties=None):
        self.rc = rc.value if hasattr(rc, "value") else rc
        self.session_present = bool(flags.get("session present"))
        self.connected.set()

    def _on_subscribe(self, c, userdata, mid, codes, properties=None):
        with self.cond:
            self.subacks[mid] = [getattr(x, "value", x) for x in codes]
            self.cond.notify_all()

    def subscribe(self, topic, qos=1, no_local=False, rap=False, sub_id=None):
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap)
        rc, mid = self.c.subscribe(topic, options=opts, properties=p)
        assert rc == 0
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.subacks, h.TIMEOUT), "no SUBACK"
        assert self.subacks[mid] == [qos]

    def publish(self, topic, payload, qos=1, retain=False, wait=True, **kw):
        p = props(PacketTypes.PUBLISH, **kw) if kw else None
        info = self.c.publish(topic, payload, qos, retain, properties=p)
        if wait:
            info.wait_for_publish(h.TIMEOUT)
            assert info.is_published(), "publish not acknowledged"
        return info

    def get(self, timeout=h.TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout:.1f} s")

    def expect_nothing(self, t=h.QUIET):
        try:
            m = self.messages.get(timeout=t)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r}")

    def drop(self):
        """The connection ends without DISCONNECT (a lost client): its will counts."""
        self.c.socket().close()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def user_props(m):
    return list(getattr(m.properties, "UserProperty", []) or [])


def sub_ids(m):
    v = getattr(m.properties, "SubscriptionIdentifier", None)
    return list(v) if isinstance(v, list) else ([v] if v is not None else [])


@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_v5_session_and_queue_survive(start_broker, tmp_path, how):
    """An MQTT 5 session (expiry 300 s) with subscription options and identifiers, and QoS
    1 messages with user properties and a content type queued for it: after a restart or
    a SIGKILL right after the last PUBACK, each arrives once, in order, with its properties,
    and the options still hold."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = V5(br.port, "v5sub", expiry=300)
    sub.subscribe("m/#", qos=1, no_local=True, rap=True, sub_id=42)
    sub.subscribe("w/#", qos=1, sub_id=268435455)
    sub.close()
    pub = V5(br.port, "pub5")
    for i in range(10):
        pub.publish(f"m/{i}", f"msg {i}".encode(), UserProperty=[("seq", str(i)), ("src", "t")],
                    ContentType="text/plain", MessageExpiryInterval=3600)
    pub.publish("w/x", b"wide", CorrelationData=bytes(range(200)))
    pub.publish("m/r", b"retained", retain=True)
    pub.close()
    rows = db_rows(tmp_path, "SELECT filter, qos, options, sub_id FROM sub ORDER BY filter")
    assert rows == [("m/#", 1, 12, 42), ("w/#", 1, 0, 268435455)]
    assert db_rows(tmp_path, "SELECT client_id, expiry_s FROM session") == [("v5sub", 300)]
    stop(br, how)

    br2 = start_broker(conf)
    br2.wait_log(r"restored 1 retained messages, 1 persistent sessions with 2 subscriptions, "
                 r"12 queued or in-flight messages")
    sub = V5(br2.port, "v5sub", clean_start=False, expiry=300, expect_sp=True)
    got = [sub.get() for _ in range(12)]
    for i, m in enumerate(got[:10]):
        assert (m.topic, m.payload, m.qos, m.retain) == (f"m/{i}", f"msg {i}".encode(), 1, False)
        assert user_props(m) == [("seq", str(i)), ("src", "t")]
        assert m.properties.ContentType == "text/plain"
        assert sub_ids(m) == [42]
        assert 3000 < m.properties.MessageExpiryInterval <= 3600
    assert (got[10].topic, got[10].payload, sub_ids(got[10])) == ("w/x", b"wide", [268435455])
    assert got[10].properties.CorrelationData == bytes(range(200))
    # Retain As Published: the retain flag as it was published.
    assert (got[11].topic, got[11].retain, sub_ids(got[11])) == ("m/r", True, [42])
    sub.expect_nothing()
    # No Local still holds: its own message on m/# does not come back.
    sub.publish("m/self", b"mine")
    sub.expect_nothing()
    sub.close()
    br2.stop()
    assert db_rows(tmp_path, "SELECT count(*) FROM out_msg") == [(0,)]


def test_v5_acknowledged_messages_survive_sigkill_exactly_once(start_broker, tmp_path):
    """Pipelined QoS 1 messages with properties: whatever midge acknowledged is delivered
    after a SIGKILL in the middle of the stream, once and in order."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = V5(br.port, "keeper", expiry=600)
    sub.subscribe("s", qos=1, sub_id=9)
    sub.close()
    pub = V5(br.port, "p")
    infos = [pub.publish("s", f"{i}".encode(), wait=False, UserProperty=[("n", str(i))])
             for i in range(200)]
    deadline = time.monotonic() + h.scaled(20)
    while time.monotonic() < deadline and not infos[149].is_published():
        time.sleep(0.01)
    acked = sum(1 for x in infos if x.is_published())
    crash(br)  # possibly in the middle of the last ones
    assert acked >= 150
    pub.c.loop_stop()

    br2 = start_broker(conf)
    sub = V5(br2.port, "keeper", clean_start=False, expiry=600, expect_sp=True)
    nums = []
    while True:
        try:
            m = sub.get(timeout=h.QUIET * 2)
        except AssertionError:
            break
        assert user_props(m) == [("n", m.payload.decode())]
        assert sub_ids(m) == [9]
        nums.append(int(m.payload))
    # Everything acknowledged is there, in order; what was not may or may not be.
    assert nums == list(range(len(nums)))
    assert len(nums) >= acked
    sub.close()


@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_v5_delayed_will(start_broker, tmp_path, how):
    """A will waiting for its Will Delay Interval: a SIGKILL keeps it waiting, and it goes
    out after the restart once due; a clean stop publishes it at shutdown. Either way a
    persistent subscriber gets it exactly once, with its properties."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    watcher = V5(br.port, "watcher", expiry=3600)
    watcher.subscribe("status/#", qos=1, sub_id=5)
    watcher.close()
    delay = 4
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay, ContentType="text/plain",
               UserProperty=[("why", "lost")])
    dev = V5(br.port, "dev", expiry=600, will=("status/dev", b"offline", 1, False),
             will_props=wp, loop=False)
    dev.drop()
    left_at = time.monotonic()
    # The pending will is recorded as soon as the broker sees the connection end.
    deadline = time.monotonic() + h.TIMEOUT
    while db_rows(tmp_path, "SELECT count(*) FROM pending_will") != [(1,)]:
        assert time.monotonic() < deadline, "the pending will never reached the database"
        time.sleep(0.05)
    assert db_rows(tmp_path, "SELECT topic, qos, due_ms - (SELECT last_seen_ms FROM session "
                             "WHERE client_id = 'dev') FROM pending_will") \
        == [("status/dev", 1, delay * 1000)]
    stop(br, how)

    br2 = start_broker(conf)
    if how == "sigkill":
        br2.wait_log(r"restored 0 retained messages, 2 persistent sessions with 1 "
                     r"subscriptions, 0 queued or in-flight messages, 0 QoS 2 receptions and 1 "
                     r"delayed wills")
    watcher = V5(br2.port, "watcher", clean_start=False, expiry=3600, expect_sp=True)
    m = watcher.get(timeout=h.scaled(delay + 5))
    if how == "sigkill":
        assert time.monotonic() - left_at >= delay - 0.2  # not before it was due
    assert (m.topic, m.payload, m.qos) == ("status/dev", b"offline", 1)
    assert user_props(m) == [("why", "lost")]
    assert m.properties.ContentType == "text/plain"
    assert sub_ids(m) == [5]
    watcher.expect_nothing(t=1.0)
    watcher.close()
    br2.stop()
    assert db_rows(tmp_path, "SELECT count(*) FROM pending_will") == [(0,)]

    br3 = start_broker(conf)  # published once: never again
    watcher = V5(br3.port, "watcher", clean_start=False, expiry=3600, expect_sp=True)
    watcher.expect_nothing(t=1.0)
    watcher.close()


def test_v5_session_expiry_counts_across_restart(start_broker, tmp_path):
    """A session with a Session Expiry Interval of 3 s expires 3 s after its client left,
    counted across a restart, and leaves the database; one with 300 s stays."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    for cid, expiry in (("short", 3), ("long", 300)):
        c = V5(br.port, cid, expiry=expiry)
        c.subscribe("t", qos=1)
        c.close()
    br.stop()
    br2 = start_broker(conf)
    br2.wait_log(r"client short expired: away for more than 3 s \(its Session Expiry Interval\)",
                 timeout=h.scaled(6))
    br2.stop()
    assert db_rows(tmp_path, "SELECT client_id, expiry_s FROM session") == [("long", 300)]
    br3 = start_broker(conf)
    c = V5(br3.port, "long", clean_start=False, expiry=300, expect_sp=True)
    c.close()
    c = V5(br3.port, "short", clean_start=False, expiry=300, expect_sp=False)
    c.close()


def test_v5_long_queue_paged_with_properties(start_broker, tmp_path):
    """More queued messages than a session keeps in memory: after a restart the rest is
    paged in from the database (server.c's page worker) with its properties and
    Subscription Identifier."""
    n = 1300
    conf = persistent_conf(tmp_path, "max_queued_messages 10000", "max_inflight_messages 20")
    br = start_broker(conf)
    sub = V5(br.port, "pager", expiry=3600)
    sub.subscribe("bulk", qos=1, sub_id=77)
    sub.close()
    pub = V5(br.port, "bulk-pub")
    infos = [pub.publish("bulk", f"{i}".encode(), wait=False, UserProperty=[("i", str(i))])
             for i in range(n)]
    for x in infos:
        x.wait_for_publish(h.scaled(30))
    pub.close()
    br.stop()

    br2 = start_broker(conf)
    br2.wait_log(r"1 persistent sessions with 1 subscriptions, 1020 queued")
    sub = V5(br2.port, "pager", clean_start=False, expiry=3600, expect_sp=True)
    for i in range(n):
        m = sub.get(timeout=h.scaled(10))
        assert (m.payload, user_props(m), sub_ids(m)) == (f"{i}".encode(), [("i", str(i))], [77])
    sub.expect_nothing()
    sub.close()
