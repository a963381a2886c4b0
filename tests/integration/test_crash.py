"""test_crash.py - SIGKILL at random moments under QoS 1/2 load: nothing midge
acknowledged is lost (persistence_durability ack).

A publisher sends numbered messages to a persistent subscriber's topic, keeping a
window of them in flight. The test kills midge with SIGKILL several times at random
moments and restarts it on the same database; both clients reconnect with clean
session 0 and carry on as MQTT says (the publisher resends unacknowledged PUBLISHes
with DUP and pending PUBRELs, the subscriber keeps its QoS 2 receive state). At the end:
  QoS 1: every message midge PUBACKed reached the subscriber (duplicates allowed);
  QoS 2: every message midge PUBRECed reached it exactly once, and none came twice.
The counts are printed (run pytest with -s to see them; they are in the report on
failure). The random seed is printed too, so a failing run can be replayed.
"""
import os
import random
import select
import struct
import time

import pytest

import midge_harness as h
from midge_harness import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Closed, MqttConn,
                           connect_pkt, pubcomp_pkt, puback_pkt, publish_pkt, pubrec_pkt,
                           pubrel_pkt, subscribe_pkt)

pytestmark = h.midge_only

TOPIC = "channels/1/publish/crash"


class Peer:
    """A raw client that reconnects to whichever broker is running."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.conn = None

    def connect(self, port, expect_sp):
        self.conn = MqttConn(port)
        self.conn.send(connect_pkt(self.client_id, clean=False, keepalive=0))
        p = self.conn.expect(CONNACK)
        assert p.body[1] == 0, f"{self.client_id}: CONNACK {p.body[1]}"
        assert (p.body[0] & 1) == int(expect_sp), f"{self.client_id}: session present {p.body[0]}"

    def packets(self):
        """Every packet already readable, without waiting."""
        out = []
        while True:
            p = self.conn.read_packet(0)
            if p is None:
                return out
            out.append(p)


class Publisher(Peer):
    def __init__(self, qos, n, window):
        super().__init__("crash-pub")
        self.qos, self.n, self.window = qos, n, window
        self.next_num = 0
        self.out = {}  # pid -> [num, phase]  phase: "pub" (sent) or "rel" (PUBREL sent)
        self.acked = set()  # numbers midge PUBACKed / PUBRECed
        self.next_pid = 1

    def done(self):
        return self.next_num >= self.n and not self.out

    def resend(self):
        """After a reconnect: unacknowledged PUBLISHes again with DUP, then PUBRELs."""
        for pid, (num, phase) in sorted(self.out.items(), key=lambda kv: kv[1][0]):
            if phase == "pub":
                self.conn.send(publish_pkt(TOPIC, str(num).encode(), self.qos, dup=True, pid=pid))
            else:
                self.conn.send(pubrel_pkt(pid))

    def fill(self):
        while self.next_num < self.n and len(self.out) < self.window:
            pid = self.next_pid
            self.next_pid = self.next_pid % 65535 + 1
            num = self.next_num
            self.next_num += 1
            self.out[pid] = [num, "pub"]
            self.conn.send(publish_pkt(TOPIC, str(num).encode(), self.qos, pid=pid))

    def handle(self, p):
        (pid,) = struct.unpack("!H", p.body[:2])
        entry = self.out.get(pid)
        assert entry is not None, f"publisher: {h.TYPE_NAMES[p.type]} for unknown id {pid}"
        if p.type == PUBACK and self.qos == 1:
            self.acked.add(entry[0])
            del self.out[pid]
        elif p.type == PUBREC and self.qos == 2:
            self.acked.add(entry[0])
            entry[1] = "rel"
            self.conn.send(pubrel_pkt(pid))
        elif p.type == PUBCOMP and self.qos == 2 and entry[1] == "rel":
            del self.out[pid]
        else:
            raise AssertionError(f"publisher: unexpected {p!r}")


class Subscriber(Peer):
    def __init__(self):
        super().__init__("crash-sub")
        self.received = []  # numbers, in arrival order, duplicates included
        self.held = set()  # QoS 2 ids received, not yet released by PUBREL

    def handle(self, p):
        if p.type == PUBLISH:
            m = h.parse_publish(p)
            assert m.topic == TOPIC
            if m.qos == 1:
                self.received.append(int(m.payload))
                self.conn.send(puback_pkt(m.pid))
            elif m.qos == 2:
                if m.pid not in self.held:  # method A: deliver on the first PUBLISH
                    self.held.add(m.pid)
                    self.received.append(int(m.payload))
                self.conn.send(pubrec_pkt(m.pid))
            else:
                raise AssertionError(f"subscriber: QoS 0 message {m!r}")
        elif p.type == PUBREL:
            (pid,) = struct.unpack("!H", p.body[:2])
            self.held.discard(pid)
            self.conn.send(pubcomp_pkt(pid))
        else:
            raise AssertionError(f"subscriber: unexpected {p!r}")


def pump(peers, seconds):
    """Exchange packets for the given time."""
    pub = peers[0]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.fill()
        r, _, _ = select.select([p.conn.sock for p in peers], [], [], 0.02)
        for peer in peers:
            if peer.conn.sock in r or peer.conn.buf:
                try:
                    for p in peer.packets():
                        peer.handle(p)
                except Closed:
                    raise AssertionError(f"{peer.client_id}: broker closed the connection")


@pytest.mark.parametrize("qos", [1, 2])
def test_sigkill_loses_nothing_acknowledged(start_broker, tmp_path, qos):
    seed = int(os.environ.get("MIDGE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kills = 5
    conf = ["persistence true", f"persistence_location {tmp_path}/",
            "persistence_durability ack", "max_queued_messages 0"]
    br = start_broker(conf)
    # Publish without end while the kills happen, so every kill lands mid-traffic.
    pub, sub = Publisher(qos, 1 << 40, window=20), Subscriber()
    sub.connect(br.port, expect_sp=False)
    sub.conn.send(subscribe_pkt(1, [(TOPIC, qos)]))
    sub.conn.expect(h.SUBACK)
    pub.connect(br.port, expect_sp=False)

    killed_at = []
    for _ in range(kills):
        pump([pub, sub], rng.uniform(0.2, 0.8))
        killed_at.append(pub.next_num)
        br.proc.kill()  # SIGKILL: no shutdown, nothing flushed
        br.proc.wait()
        br.stopped = True
        for peer in (pub, sub):
            peer.conn.close()
        br = start_broker(conf)
        sub.connect(br.port, expect_sp=True)
        pub.connect(br.port, expect_sp=True)
        pub.resend()
    n = pub.n = pub.next_num + 200  # then a last stretch, and stop

    deadline = time.monotonic() + h.scaled(60)
    while not pub.done():
        assert time.monotonic() < deadline, f"publisher stuck: {len(pub.out)} unacknowledged"
        pump([pub, sub], 0.5)
    # Everything is acknowledged: wait until the subscriber has all of it.
    deadline = time.monotonic() + h.scaled(30)
    while not pub.acked <= set(sub.received) and time.monotonic() < deadline:
        pump([pub, sub], 0.2)

    counts = {}
    for num in sub.received:
        counts[num] = counts.get(num, 0) + 1
    missing = sorted(pub.acked - set(counts))
    dups = sorted(num for num, c in counts.items() if c > 1)
    print(f"\ncrash test QoS {qos} (seed {seed}): {n} published, {kills} SIGKILLs after "
          f"messages {killed_at}; {len(pub.acked)} acknowledged by midge, "
          f"{len(sub.received)} delivered ({len(counts)} distinct), {len(missing)} missing, "
          f"{len(dups)} duplicated")
    assert len(pub.acked) == n
    assert not missing, f"acknowledged but never delivered: {missing[:20]} (seed {seed})"
    if qos == 2:
        assert not dups, f"QoS 2 delivered more than once: {dups[:20]} (seed {seed})"
    # Order: apart from redeliveries after a crash, first deliveries arrive in order.
    seen, firsts = set(), []
    for num in sub.received:
        if num not in seen:
            seen.add(num)
            firsts.append(num)
    assert firsts == sorted(firsts), f"first deliveries out of order (seed {seed})"
    for peer in (pub, sub):
        peer.conn.send(h.disconnect_pkt())
        peer.conn.close()
