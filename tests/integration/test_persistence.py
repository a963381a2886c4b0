"""test_persistence.py - durable state through the real binary: what midge stored is
there after a restart, exactly once and in order; damaged and newer databases.

Every test keeps its database in its own tmp_path and starts two (or more) brokers on it
one after the other, each on an ephemeral port; clients reconnect to the new port.
"""
import os
import re
import sqlite3
import struct
import time

import pytest

import midge_harness as h
from midge_harness import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, client, pubcomp_pkt,
                           puback_pkt, publish_pkt, pubrec_pkt, pubrel_pkt)

pytestmark = h.midge_only


def persistent_conf(dbdir, durability=None):
    conf = ["persistence true", f"persistence_location {dbdir}/"]
    if durability:
        conf.append(f"persistence_durability {durability}")
    return conf


def db_rows(dbdir, sql):
    con = sqlite3.connect(f"file:{dbdir}/midge.db?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("durability", ["ack", "relaxed"])
def test_retained_messages_survive_restart(start_broker, tmp_path, durability):
    conf = persistent_conf(tmp_path, durability)
    br = start_broker(conf)
    pub = client(br)
    pub.publish("home/lights", b"ON", qos=1, retain=True)
    pub.publish("home/lights", b"OFF", qos=1, retain=True)  # replaces ON
    pub.publish("home/temp", b"21.5", qos=0, retain=True)
    pub.publish("home/gone", b"x", qos=1, retain=True)
    pub.publish("home/gone", b"", qos=1, retain=True)  # deletes it
    pub.publish("channels/7/publish/KEY", b"field1=20&field2=55", qos=2, retain=True)
    pub.disconnect()
    br.stop()

    br2 = start_broker(conf)
    br2.wait_log(r"persistence: restored 3 retained messages")
    sub = client(br2)
    sub.subscribe([("#", 2)])
    got = {m.topic: (m.payload, m.qos, m.retain) for m in sub.collect(3)}
    assert got == {"home/lights": (b"OFF", 1, True), "home/temp": (b"21.5", 0, True),
                   "channels/7/publish/KEY": (b"field1=20&field2=55", 2, True)}
    sub.expect_no_packet()
    # $SYS topics are the broker's own and republished by it: never stored.
    assert db_rows(tmp_path, "SELECT count(*) FROM retained WHERE topic LIKE '$SYS%'") == [(0,)]


def test_queued_messages_delivered_after_restart_in_order(start_broker, tmp_path):
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = client(br, "led-1", clean=False)
    assert sub.subscribe([("led/+/set", 1), ("sensor/#", 2)]) == [1, 2]
    sub.disconnect()
    pub = client(br, "pub")
    for i in range(5):
        pub.publish("led/1/set", f"m{i}".encode(), qos=1)
        pub.publish("sensor/t", f"s{i}".encode(), qos=2)
    pub.publish("led/1/set", b"qos0-dropped-offline", qos=0)
    pub.disconnect()
    br.stop()

    br2 = start_broker(conf)
    br2.wait_log(r"restored 0 retained messages, 1 persistent sessions with 2 subscriptions, "
                 r"10 queued")
    sub = client(br2, "led-1", clean=False, expect_sp=True)
    got = [(m.topic, m.payload, m.qos, m.dup) for m in sub.collect(10)]
    expect = []
    for i in range(5):
        expect.append(("led/1/set", f"m{i}".encode(), 1, False))
        expect.append(("sensor/t", f"s{i}".encode(), 2, False))
    assert got == expect
    sub.expect_no_packet()
    # The subscriptions came back too: a new message is routed to the resumed session.
    pub = client(br2)
    pub.publish("led/1/set", b"after", qos=1)
    m = sub.recv_publish()
    assert (m.topic, m.payload) == ("led/1/set", b"after")
    mark = br2.mark()
    sub.disconnect()
    # Its PUBACK is read before its DISCONNECT: once that is logged, the PUBACK was taken
    # (a SIGTERM before it would leave the message unacknowledged, to be resent: correct).
    br2.wait_log(r"client led-1 disconnected: DISCONNECT received", since=mark)
    br2.stop()
    # Everything was acknowledged: nothing is left in the store for the session.
    assert db_rows(tmp_path, "SELECT count(*) FROM out_msg") == [(0,)]


def test_unacknowledged_messages_resent_with_dup_after_restart(start_broker, tmp_path):
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = client(br, "slow", clean=False)
    sub.subscribe([("q/#", 2)])
    pub = client(br)
    pub.publish("q/1", b"one", qos=1)
    pub.publish("q/2", b"two", qos=2)
    pub.publish("q/3", b"three", qos=2)
    # Receive all three but acknowledge only the PUBLISH of q/3 (PUBREC): q/1 waits for
    # PUBACK, q/2 for PUBREC and q/3 for PUBCOMP.
    msgs = sub.collect(3, ack=False)
    assert [m.topic for m in msgs] == ["q/1", "q/2", "q/3"]
    sub.send(pubrec_pkt(msgs[2].pid))
    rel = sub.expect(PUBREL, flags=2)
    assert rel.body == struct.pack("!H", msgs[2].pid)
    sub.close()
    br.stop()

    br2 = start_broker(conf)
    sub = client(br2, "slow", clean=False, expect_sp=True)
    # [MQTT-4.4.0-1]: unacknowledged PUBLISH again with DUP, same ids, original order,
    # and the PUBREL of the flow that had reached it.
    p1 = sub.recv_publish(ack=False)
    p2 = sub.recv_publish(ack=False)
    assert (p1.topic, p1.payload, p1.qos, p1.dup, p1.pid) == ("q/1", b"one", 1, True, msgs[0].pid)
    assert (p2.topic, p2.payload, p2.qos, p2.dup, p2.pid) == ("q/2", b"two", 2, True, msgs[1].pid)
    rel = sub.expect(PUBREL, flags=2)
    assert rel.body == struct.pack("!H", msgs[2].pid)
    sub.send(puback_pkt(p1.pid))
    sub.send(pubrec_pkt(p2.pid))
    rel = sub.expect(PUBREL, flags=2)
    assert rel.body == struct.pack("!H", p2.pid)
    sub.send(pubcomp_pkt(p2.pid))
    sub.send(pubcomp_pkt(msgs[2].pid))
    sub.expect_no_packet()
    sub.disconnect()


def test_half_finished_inbound_qos2_not_delivered_twice(start_broker, tmp_path):
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = client(br, "watcher", clean=False)
    sub.subscribe([("door", 2)])
    sub.disconnect()
    pub = client(br, "door-sensor", clean=False)
    pub.send(publish_pkt("door", b"open", qos=2, pid=42))
    pub.expect_bytes(pubrec_pkt(42))
    pub.close()  # crash of the client before PUBREL: the broker holds id 42
    br.stop()

    br2 = start_broker(conf)
    pub = client(br2, "door-sensor", clean=False, expect_sp=True)
    # A client that lost its state may resend the PUBLISH (DUP) although it got the
    # PUBREC: the broker remembers id 42 across the restart and does not deliver it again.
    pub.send(publish_pkt("door", b"open", qos=2, pid=42, dup=True))
    pub.expect_bytes(pubrec_pkt(42))
    pub.send(pubrel_pkt(42))
    pub.expect_bytes(pubcomp_pkt(42))
    # Id 42 is released: a new message with it is a new message.
    pub.send(publish_pkt("door", b"closed", qos=2, pid=42))
    pub.expect_bytes(pubrec_pkt(42))
    pub.send(pubrel_pkt(42))
    pub.expect_bytes(pubcomp_pkt(42))

    sub = client(br2, "watcher", clean=False, expect_sp=True)
    got = [m.payload for m in sub.collect(2)]
    assert got == [b"open", b"closed"]
    sub.expect_no_packet()


def test_unsubscribe_and_clean_session_are_durable(start_broker, tmp_path):
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    a = client(br, "a", clean=False)
    a.subscribe([("x", 1), ("y", 1)])
    a.unsubscribe("x")
    a.disconnect()
    b = client(br, "b", clean=False)
    b.subscribe([("x", 1)])
    b.disconnect()
    b = client(br, "b", clean=True, expect_sp=False)  # discards b's stored session
    b.disconnect()
    c = client(br, "c", clean=True)  # a clean session is never stored
    c.subscribe([("x", 1)])
    c.disconnect()
    br.stop()
    assert db_rows(tmp_path, "SELECT client_id FROM session ORDER BY client_id") == [("a",)]
    assert db_rows(tmp_path, "SELECT filter, qos FROM sub") == [("y", 1)]

    br2 = start_broker(conf)
    client(br2, "b", clean=False, expect_sp=False).disconnect()
    a = client(br2, "a", clean=False, expect_sp=True)
    pub = client(br2)
    pub.publish("x", b"not for a", qos=1)
    pub.publish("y", b"for a", qos=1)
    assert a.recv_publish().payload == b"for a"
    a.expect_no_packet()


def test_acknowledgements_wait_for_commit_under_ack(start_broker, tmp_path):
    """With durability ack a PUBACK means "on disk": a broker killed right after it
    still has the message."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    sub = client(br, "s", clean=False)
    sub.subscribe([("t", 1)])
    sub.disconnect()
    pub = client(br)
    for i in range(20):
        pub.publish("t", f"{i}".encode(), qos=1)  # waits for each PUBACK
    br.proc.kill()  # SIGKILL: no shutdown, no final commit
    br.proc.wait()
    br.stopped = True
    h.assert_no_sanitizer_report(br.log(), "the broker's output before SIGKILL")

    br2 = start_broker(conf)
    sub = client(br2, "s", clean=False, expect_sp=True)
    assert [m.payload for m in sub.collect(20)] == [f"{i}".encode() for i in range(20)]
    sub.expect_no_packet()


def test_session_expiry_counts_time_across_restart(start_broker, tmp_path):
    conf = persistent_conf(tmp_path) + ["persistent_client_expiration 2s"]
    br = start_broker(conf)
    a = client(br, "old", clean=False)
    a.subscribe([("t", 1)])
    a.disconnect()
    br.stop()
    br2 = start_broker(conf)
    br2.wait_log(r"client old expired", timeout=h.scaled(6))
    br2.stop()
    assert db_rows(tmp_path, "SELECT count(*) FROM session") == [(0,)]


# -- damaged and foreign databases -----------------------------------------------------

def damage_truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def damage_random(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(os.urandom(size))


def damage_zeros(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * size)


def damage_middle_pages(path):
    """Valid header, garbage in the b-tree pages: only a check of the pages finds it."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))


@pytest.mark.parametrize("damage", [damage_truncated, damage_random, damage_zeros,
                                    damage_middle_pages])
def test_damaged_database_is_moved_aside_and_broker_starts(start_broker, tmp_path, damage):
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    pub = client(br)
    for i in range(200):  # enough pages for truncation to hit data
        pub.publish(f"r/{i}", b"x" * 200, qos=0, retain=True)
    pub.disconnect()
    br.stop()
    damage(str(tmp_path / "midge.db"))

    br2 = start_broker(conf)
    m = br2.wait_log_always(r"error: persistence: persistence file \S+/midge\.db is .*; "
                            r"moved it aside to (\S+) and started with an empty store")
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert os.path.basename(m.group(1)) in aside
    assert all(p.startswith("midge.db") for p in aside), aside
    # The broker serves, with an empty store that works.
    c = client(br2)
    c.subscribe([("r/#", 0)])
    c.expect_no_packet()
    c.publish("new", b"1", qos=1, retain=True)
    c.disconnect()
    br2.stop()
    assert db_rows(tmp_path, "SELECT topic FROM retained") == [("new",)]


def test_database_from_newer_midge_is_refused(start_broker, tmp_path):
    """A database of a newer schema: exit status 1, one line saying so and what to do, one
    saying midge does not start; the file is left as it was."""
    conf = persistent_conf(tmp_path)
    br = start_broker(conf)
    br.stop()
    con = sqlite3.connect(str(tmp_path / "midge.db"))
    con.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    con.commit()
    con.close()
    br2 = start_broker(conf, expect_listen=False)
    br2.wait_exit(rc=1)
    db = re.escape(f"{tmp_path}/midge.db")
    br2.wait_log_always(rf" error: persistence: persistence file {db} was written by a newer "
                        r"midge \(schema version 99; this midge knows versions up to \d+\): run "
                        r"a newer midge, or move the file away to start with an empty store$")
    br2.wait_log_always(rf" error: persistence: cannot use {db} \(above\); not starting$")
    br2.assert_no_log(r"listening on")
    # Left exactly as it was, for the newer midge.
    assert db_rows(tmp_path, "SELECT value FROM meta WHERE key='schema_version'") == [(99,)]
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]


def test_unwritable_location_refuses_to_start(start_broker, tmp_path):
    """persistence_location in a missing directory: exit status 1, the file and the
    system's reason named, and midge does not start."""
    conf = ["persistence true", f"persistence_location {tmp_path}/missing/dir/"]
    br = start_broker(conf, expect_listen=False)
    br.wait_exit(rc=1)
    db = re.escape(f"{tmp_path}/missing/dir/midge.db")
    br.wait_log_always(rf" error: persistence: persistence file {db} cannot be opened or "
                       r"created \(No such file or directory\)$")
    br.wait_log_always(rf" error: persistence: cannot use {db} \(above\); not starting$")
    br.assert_no_log(r"listening on")


# -- long backlogs wait on disk ------------------------------------------------------------

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def publish_pipelined(conn, topic, n, size):
    """n QoS 1 messages numbered in their first 8 bytes, in bursts of 500 sent without
    waiting, each burst's PUBACKs collected before the next (as a client with a window
    would: what is in flight stays bounded)."""
    pad = b"p" * (size - 8)
    for start in range(0, n, 500):
        count = min(500, n - start)
        conn.send(b"".join(publish_pkt(topic, b"%08d" % i + pad, qos=1, pid=i % 65535 + 1)
                           for i in range(start, start + count)))
        for _ in range(count):
            conn.expect(PUBACK, timeout=h.scaled(30))


def receive_numbered(conn, n):
    """n QoS 1 messages, acknowledged as they come; returns their numbers in order."""
    nums = []
    deadline = time.monotonic() + h.scaled(60)
    while len(nums) < n:
        p = conn.read_packet(max(0.1, deadline - time.monotonic()))
        assert p is not None, f"received {len(nums)} of {n}"
        m = h.parse_publish(p)
        nums.append(int(m.payload[:8]))
        conn.send(puback_pkt(m.pid))
    return nums


@pytest.mark.parametrize("restart", [False, True])
def test_long_backlog_is_paged_from_disk(start_broker, tmp_path, restart):
    """A persistent session with 20,000 queued messages keeps about 1,000 in memory; the
    rest is read back from the database as it drains, in order, with none lost."""
    n, size = 20000, 1024
    conf = persistent_conf(tmp_path) + ["max_queued_messages 100000", "max_inflight_messages 50"]
    br = start_broker(conf)
    sub = client(br, "backlog", clean=False)
    sub.subscribe([("bulk", 1)])
    sub.disconnect()
    before = rss_kib(br.proc.pid)
    pub = client(br, "bulk-pub")
    publish_pipelined(pub, "bulk", n, size)
    pub.disconnect()
    grown = rss_kib(br.proc.pid) - before
    if not h.SANITIZE:  # ASan's allocator keeps freed memory in quarantine
        # 20 MB of payloads are queued; what may stay in memory is the memory queue (1,000
        # messages, ~1 MB) and the store's page cache (4 MiB).
        assert grown < 10 * 1024, f"RSS grew by {grown} KiB with {n} messages queued"
    if restart:
        br.stop()
        br = start_broker(conf)
        br.wait_log(r"restored 0 retained messages, 1 persistent sessions with 1 subscriptions, "
                    r"1050 queued")
    sub = client(br, "backlog", clean=False, expect_sp=True)
    nums = receive_numbered(sub, n)
    assert nums == list(range(n))
    sub.expect_no_packet()
    sub.disconnect()
