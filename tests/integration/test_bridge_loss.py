"""test_bridge_loss.py - a bridge loses nothing (issue 14): QoS 1 streams of thousands of
messages counted end to end by sequence number while the remote is SIGKILLed and restarted,
and a bridge's queue surviving a restart (and a SIGKILL) of midge while its remote is down:
QoS 1 alone, then QoS 0 and QoS 1 interleaved (a bridge's QoS 0 is stored as QoS 1 is), and
the queue cap holding for both across a restart.

The remote is a midge with persistence (durability ack), so that the remote itself loses
nothing it acknowledged; every loss would then be the bridge's. Duplicates are allowed (QoS 1
is at least once) and reported.
"""
import signal
import threading
import time

import pytest

import midge_harness as h
from midge_harness import PahoClient, midge_only, scaled

pytestmark = midge_only

N = 3000


class Counter:
    """A persistent paho subscriber that reconnects by itself and records every sequence
    number it receives on topic filter f."""

    def __init__(self, port, cid, f):
        import paho.mqtt.client as mqtt
        self.seen = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(client_id=cid, clean_session=False)
        self.c.reconnect_delay_set(min_delay=1, max_delay=1)
        self.f = f
        self.ready = threading.Event()

        def on_connect(c, u, flags, rc):
            if rc == 0:
                c.subscribe(f, 1)
                self.ready.set()

        def on_message(c, u, m):
            with self.cond:
                self.seen.append(int(m.payload.split(b" ")[0]))
                self.cond.notify_all()
        self.c.on_connect = on_connect
        self.c.on_message = on_message
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert self.ready.wait(scaled(5))

    def wait(self, n, timeout):
        with self.cond:
            self.cond.wait_for(lambda: len(set(self.seen)) >= n, timeout)
            return set(self.seen), len(self.seen)

    def wait_count(self, n, timeout):
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen) >= n, timeout)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def publish_stream(port, cid, topic, n, errors):
    """Publish n QoS 1 messages "i payload" and wait for every PUBACK."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=cid, clean_session=False)  # unacknowledged ones are sent again
    c.reconnect_delay_set(min_delay=1, max_delay=1)
    c.max_inflight_messages_set(50)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    try:
        infos = [c.publish(topic, f"{i} {'x' * 40}".encode(), 1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(scaled(60))
            if not info.is_published():
                errors.append(f"publish {info.mid} not acknowledged")
                return
    finally:
        c.disconnect()
        c.loop_stop()


def remote_conf(port, store):
    return [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
            f"persistence_location {store}/", "max_queued_messages 100000"]


def test_remote_sigkilled_mid_stream(start_broker, tmp_path):
    """Two QoS 1 streams of 3,000 messages, one each way across the bridge; the remote is
    SIGKILLed a third of the way through and restarted on the same port and store: every
    sequence number arrives on both sides."""
    port = h.free_port()
    store = tmp_path / "remote"
    store.mkdir()
    b = start_broker(remote_conf(port, store), listener=False)
    a = start_broker(["max_queued_messages 100000", "max_inflight_messages 20",
                      "connection b", f"address 127.0.0.1:{port}", "remote_clientid r-b",
                      "local_clientid l-b", "topic up/# out 1", "topic down/# in 1",
                      "restart_timeout 1", "keepalive_interval 5"])
    a.wait_log(r"bridge b: connected to ")
    b.wait_log(r"client r-b subscribed to down/#")
    at_b = Counter(b.port, "count-b", "up/#")
    at_a = Counter(a.port, "count-a", "down/#")
    # Both streams run while the remote dies and comes back: the remote's publisher resends
    # what the remote had not acknowledged, the remote resends what the bridge had not.
    errors = []
    threads = [threading.Thread(target=publish_stream, args=(b.port, "pub-b", "down/s", N, errors)),
               threading.Thread(target=publish_stream, args=(a.port, "pub-a", "up/s", N, errors))]
    for t in threads:
        t.start()
    at_b.wait_count(N // 3, scaled(30))
    b.kill()
    before = (len(set(at_b.seen)), len(set(at_a.seen)))
    time.sleep(0.5)
    b2 = start_broker(remote_conf(port, store), listener=False)
    b2.wait_log(r"client r-b connected from ", timeout=scaled(15))
    for t in threads:
        t.join(scaled(90))
    got_b, total_b = at_b.wait(N, scaled(60))
    got_a, total_a = at_a.wait(N, scaled(60))
    at_a.close()
    at_b.close()
    assert not errors, errors
    missing_b = sorted(set(range(N)) - got_b)
    missing_a = sorted(set(range(N)) - got_a)
    print(f"at the kill: {before[0]} out and {before[1]} in had arrived")
    print(f"local->remote: {len(got_b)} distinct of {N}, {total_b - len(got_b)} duplicates; "
          f"remote->local: {len(got_a)} distinct of {N}, {total_a - len(got_a)} duplicates")
    assert not missing_b, f"lost on the way out: {len(missing_b)}, first {missing_b[:10]}"
    assert not missing_a, f"lost on the way in: {len(missing_a)}, first {missing_a[:10]}"
    a.wait_log(r"bridge b: connection to 127\.0\.0\.1:\d+ lost: ")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_queue_survives_restart_while_remote_down(start_broker, tmp_path, how):
    """The remote is down; 2,500 QoS 1 messages wait in the bridge's session (more than a
    queue keeps in memory: the rest on disk); midge is stopped (or SIGKILLed) and started
    again; when the remote comes up, all of them arrive, in order."""
    port = h.free_port()
    rstore, lstore = tmp_path / "remote", tmp_path / "local"
    rstore.mkdir()
    lstore.mkdir()
    # The remote's subscriber has a persistent session there, so that what the bridge
    # delivers while it reconnects waits for it.
    b = start_broker(remote_conf(port, rstore), listener=False)
    Counter(b.port, "count", "q/#").close()
    b.stop()
    local = ["persistence true", f"persistence_location {lstore}/",
             "max_queued_messages 100000", "connection b", f"address 127.0.0.1:{port}",
             "remote_clientid r-b", "local_clientid l-b", "topic q/# out 1", "restart_timeout 1"]
    a = start_broker(local)
    a.wait_log(r"bridge b: connecting to .* failed")
    errors = []
    publish_stream(a.port, "pub", "q/s", 2500, errors)
    assert not errors
    if how == "SIGKILL":
        a.kill()
    else:
        a.stop()
    a2 = start_broker(local)
    a2.wait_log(r"bridge b: connecting to .* failed")
    b2 = start_broker(remote_conf(port, rstore), listener=False)
    a2.wait_log(r"bridge b: connected to ", timeout=scaled(10))
    at_b = Counter(b2.port, "count", "q/#")
    got, total = at_b.wait(2500, scaled(60))
    seq = list(at_b.seen)
    at_b.close()
    assert got == set(range(2500)), f"missing {sorted(set(range(2500)) - got)[:10]}"
    # In order: the first copy of each number comes after the first copy of the one before.
    first = []
    for x in seq:
        if x not in first[-1:] and (not first or x > first[-1]):
            first.append(x)
    assert first == list(range(2500)), "out of order"
    print(f"{how}: 2500 of 2500, {total - 2500} duplicates")


# ---- QoS 0 for the remote: stored, in line with QoS 1 ---------------------------------------

def publish_mixed(port, topic, n):
    """Publish n messages "i payload" in one stream, QoS 0 for even i and QoS 1 for odd i (n
    even: the last one is QoS 1), then wait for every PUBACK. Under durability ack (the
    default) the last PUBACK comes once its message is on disk, and batches commit in order:
    every message before it, QoS 0 included, is on disk too. A raw client, so that nothing
    reorders the stream on the way (paho sends QoS 0 past QoS 1 it holds back)."""
    c = h.client(port, "pub")
    for i in range(n):
        c.publish(topic, f"{i} {'x' * 40}".encode(), i % 2, wait=False)
    for _ in range(n // 2):
        c.expect(h.PUBACK, timeout=scaled(30))
    c.disconnect()


def open_port(br, port):
    """The remote, started on an ephemeral port with its subscriber already in place, also
    listens on port (the bridge's address) after a reload: the bridge cannot deliver before
    the subscriber is there, which a QoS 0 message would not survive."""
    with open(br.conf_path) as f:
        lines = f.read().splitlines()
    with open(br.conf_path, "w") as f:
        f.write("\n".join(lines + [f"listener {port} 127.0.0.1"]) + "\n")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(r"configuration reloaded from ", since=mark)


def in_order(seq):
    """The first copy of each number, in arrival order, skipping later copies."""
    first = []
    for x in seq:
        if not first or x > first[-1]:
            first.append(x)
    return first


def figures(port, name, want, timeout):
    """Wait until $SYS/broker/bridge/NAME/... shows want ({figure: value}), at most timeout
    seconds; returns the figures seen last (the caller checks them)."""
    s = PahoClient(port, "figures")
    s.subscribe(f"$SYS/broker/bridge/{name}/#", 0)
    seen = {}
    deadline = time.monotonic() + timeout
    try:
        while any(seen.get(k) != v for k, v in want.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = s.messages.get(timeout=min(left, 0.5))
            except Exception:
                continue
            seen[m.topic.split("/", 4)[4]] = m.payload.decode()
    finally:
        s.close()
    return seen


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "SIGTERM, a topic line added"])
def test_qos0_queue_survives_restart_in_order(start_broker, tmp_path, how):
    """The remote is down; 2,500 messages, QoS 0 and QoS 1 alternating, wait in the bridge's
    session (more than a queue keeps in memory: the rest on disk, QoS 0 included); midge is
    stopped (or SIGKILLed) and started again; when the remote comes up, every one of them
    arrives there, in the order published. Before QoS 0 was stored, the 1,250 QoS 0 ones were
    lost in the restart."""
    n = 2500
    port = h.free_port()
    lstore = tmp_path / "local"
    lstore.mkdir()
    local = ["persistence true", f"persistence_location {lstore}/",
             "max_queued_messages 100000", "connection b", f"address 127.0.0.1:{port}",
             "remote_clientid r-b", "local_clientid l-b", "topic q/# out 1", "restart_timeout 1"]
    a = start_broker(local)
    a.wait_log(r"bridge b: connecting to .* failed")
    publish_mixed(a.port, "q/s", n)
    if how == "SIGKILL":
        a.kill()
    else:
        a.stop()
    if "added" in how:
        # The session's subscriptions no longer match: the bridge connects its local side
        # once to subscribe before the remote is up, and what is queued must wait on.
        local.append("topic other/# out 1")
    a2 = start_broker(local)
    a2.wait_log(r"bridge b: connecting to .* failed")
    queued = figures(a2.port, "b", {"queued": str(n)}, scaled(10)).get("queued")
    b = start_broker(["max_queued_messages 100000"])  # the subscriber there is slower
    at_b = Counter(b.port, "count", "q/#")
    open_port(b, port)
    a2.wait_log(r"bridge b: connected to ", timeout=scaled(10))
    got, total = at_b.wait(n, scaled(60))
    seq = list(at_b.seen)
    at_b.close()
    missing = sorted(set(range(n)) - got)
    assert not missing, (f"{len(missing)} lost ({sum(1 for x in missing if x % 2 == 0)} of "
                         f"them QoS 0), first {missing[:10]}")
    assert in_order(seq) == list(range(n)), "out of order"
    assert queued == str(n), f"$SYS/broker/bridge/b/queued after the restart: {queued}, not {n}"
    print(f"{how}: {n} of {n} (QoS 0 and 1), {total - n} duplicates")


def test_qos0_queue_capped_across_restart(start_broker, tmp_path):
    """max_queued_messages holds for a bridge's QoS 0 as for QoS 1 with persistence: of 12
    messages (QoS 0 and QoS 1 alternating) the 5 oldest wait, the 7 newest are dropped,
    counted in $SYS/broker/bridge/NAME/dropped and logged; after a SIGKILL the 5 are still
    queued, and they arrive at the remote in order."""
    port = h.free_port()
    lstore = tmp_path / "local"
    lstore.mkdir()
    local = ["persistence true", f"persistence_location {lstore}/", "max_queued_messages 5",
             "sys_interval 1", "connection cap", f"address 127.0.0.1:{port}",
             "remote_clientid r-cap", "local_clientid l-cap", "topic cap/# out 1",
             "restart_timeout 1"]
    a = start_broker(local)
    a.wait_log(r"bridge cap: connecting to .* failed")
    publish_mixed(a.port, "cap/x", 12)
    a.wait_log(r"client l-cap: queue full \(5 messages, \d+ bytes\), dropped message on cap/x")
    want = {"queued": "5", "dropped": "7"}
    seen = figures(a.port, "cap", want, scaled(10))
    assert all(seen.get(k) == v for k, v in want.items()), seen
    a.kill()
    a2 = start_broker(local)
    a2.wait_log(r"bridge cap: connecting to .* failed")
    after = figures(a2.port, "cap", {"queued": "5"}, scaled(10))
    b = start_broker()
    at_b = Counter(b.port, "count", "cap/#")
    open_port(b, port)
    a2.wait_log(r"bridge cap: connected to ", timeout=scaled(10))
    got, _ = at_b.wait(5, scaled(20))
    time.sleep(0.5)  # nothing more may come
    seq = list(at_b.seen)
    at_b.close()
    assert in_order(seq) == [0, 1, 2, 3, 4], seq
    assert set(seq) == {0, 1, 2, 3, 4}, seq
    assert after.get("queued") == "5", after
