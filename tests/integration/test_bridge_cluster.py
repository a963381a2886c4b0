"""test_bridge_cluster.py - the tested recipe for outgrowing one machine (issue 14): each site
keeps its midge and bridges into a clustered broker. The cluster is a stand-in: two Aedes
nodes (npm aedes, tests/bridge/aedes-node.mjs) sharing one Redis (Debian's redis-server)
through mqemitter-redis and aedes-persistence-redis, all started here on free loopback ports
and stopped at the end (no service is left running).

Two midges, each bridged to a different node with the other as its second address, exchange
QoS 1 streams both ways while one node is SIGKILLed and restarted: the bridge on it fails over
to the other address, and every message arrives (counted by sequence number).
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import midge_harness as h
from midge_harness import midge_only, needs, scaled
from test_bridge_loss import Counter, publish_stream

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", "bridge")
NODE_SCRIPT = os.path.join(NODE_DIR, "aedes-node.mjs")
REDIS = "/usr/bin/redis-server"
NODEJS = shutil.which("node") or "/usr/bin/node"

pytestmark = [midge_only,
              needs(REDIS, reason="the cluster stand-in's store is Debian's redis-server"),
              needs(NODEJS, os.path.join(NODE_DIR, "node_modules", "aedes"),
                    os.path.join(NODE_DIR, "node_modules", "mqemitter-redis"),
                    os.path.join(NODE_DIR, "node_modules", "aedes-persistence-redis"),
                    reason="the cluster stand-in is Aedes (scripts/deps installs tests/bridge)")]


class Proc:
    """A helper process whose output lines are collected; wait() for one."""

    def __init__(self, args, ready, cwd=None, env=None):
        self.lines = []
        self.cond = threading.Condition()
        self.p = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(ready)

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, regex, timeout=None):
        pat = re.compile(regex)
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pat.search(x) for x in self.lines) or
                                    self.p.poll() is not None, timeout or scaled(15))
            assert ok and any(pat.search(x) for x in self.lines), "\n".join(self.lines)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Cluster:
    """redis-server and Aedes nodes on free ports, stopped by close()."""

    def __init__(self, nodes=2, stock=False):
        self.dir = tempfile.mkdtemp(prefix="midge-cluster-")
        self.redis_port = h.free_port()
        self.redis = Proc([REDIS, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                           "--dir", self.dir, "--save", "", "--appendonly", "no",
                           "--daemonize", "no"], r"Ready to accept connections")
        self.env = dict(os.environ, MIDGE_AEDES_STOCK="1" if stock else "0")
        self.ports = [h.free_port() for _ in range(nodes)]
        self.nodes = [self.start(i) for i in range(nodes)]

    def start(self, i):
        return Proc([NODEJS, NODE_SCRIPT, str(self.ports[i]), str(self.redis_port), f"n{i + 1}"],
                    rf"listening {self.ports[i]}", cwd=NODE_DIR, env=self.env)

    def close(self):
        for n in self.nodes:
            n.stop()
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def site(name, other, first, second):
    return ["max_queued_messages 100000", f"connection cluster", f"address 127.0.0.1:{first}",
            f"address 127.0.0.1:{second}", f"remote_clientid site-{name}",
            f"local_clientid l-{name}", f"topic sites/{name}/# out 1",
            f"topic sites/{other}/# in 1", "restart_timeout 1 2", "keepalive_interval 5",
            # Aedes (like many cluster brokers) refuses client publications under $SYS/.
            f"notification_topic sites/{name}/bridge-state"]


N = 2000


def test_sites_through_a_cluster_node_restart(start_broker):
    """Site a is bridged to node 1 (node 2 second), site b to node 2 (node 1 second); both
    publish 2,000 QoS 1 messages for the other while node 1 is SIGKILLed and restarted: site a
    fails over to node 2 (and back to node 1 once it answers), nothing is lost."""
    c = Cluster()
    try:
        a = start_broker(site("a", "b", c.ports[0], c.ports[1]))
        b = start_broker(site("b", "a", c.ports[1], c.ports[0]))
        a.wait_log(rf"bridge cluster: connected to 127\.0\.0\.1:{c.ports[0]}")
        b.wait_log(rf"bridge cluster: connected to 127\.0\.0\.1:{c.ports[1]}")
        at_a = Counter(a.port, "count-a", "sites/b/#")
        at_b = Counter(b.port, "count-b", "sites/a/#")
        time.sleep(0.5)  # both sites' subscriptions are in the cluster's store
        errors = []
        threads = [threading.Thread(target=publish_stream, args=(a.port, "pub-a", "sites/a/s", N,
                                                                 errors)),
                   threading.Thread(target=publish_stream, args=(b.port, "pub-b", "sites/b/s", N,
                                                                 errors))]
        for t in threads:
            t.start()
        at_b.wait_count(N // 3, scaled(60))
        mark = a.mark()
        c.nodes[0].stop(signal.SIGKILL)
        before = (len(set(at_b.seen)), len(set(at_a.seen)))
        a.wait_log(rf"bridge cluster: connection to 127\.0\.0\.1:{c.ports[0]} lost: ", since=mark)
        a.wait_log(rf"bridge cluster: connected to 127\.0\.0\.1:{c.ports[1]}", since=mark,
                   timeout=scaled(10))
        time.sleep(1)
        c.nodes[0] = c.start(0)
        for t in threads:
            t.join(scaled(120))
        got_b, total_b = at_b.wait(N, scaled(90))
        got_a, total_a = at_a.wait(N, scaled(90))
        at_a.close()
        at_b.close()
        assert not errors, errors
        print(f"at the kill: {before[0]} a->b and {before[1]} b->a had arrived; "
              f"a->b {len(got_b)} of {N} ({total_b - len(got_b)} duplicates), "
              f"b->a {len(got_a)} of {N} ({total_a - len(got_a)} duplicates)")
        assert got_b == set(range(N)), f"a->b lost {sorted(set(range(N)) - got_b)[:10]}"
        assert got_a == set(range(N)), f"b->a lost {sorted(set(range(N)) - got_a)[:10]}"
        # round_robin false: once node 1 answers again, site a goes back to it.
        a.wait_log(r"bridge cluster: the main address 127\.0\.0\.1:\d+ answers again", since=mark,
                   timeout=scaled(15))
        a.wait_log(rf"bridge cluster: connected to 127\.0\.0\.1:{c.ports[0]}", since=mark,
                   timeout=scaled(10))
    finally:
        c.close()


@pytest.mark.parametrize("stock", [True, False], ids=["stock", "worked-around"])
def test_stand_in_does_not_send_back_own_messages(stock):
    """A 3.1.1 bridge (the bridge bit: No Local on its subscriptions) with a persistent session:
    stock Aedes does not send it its own message live, but has queued it for the session and
    sends it after a reconnection; the stand-in's script stops that."""
    c = Cluster(nodes=1, stock=stock)
    try:
        def connect():
            conn = h.MqttConn(c.ports[0])
            conn.send(h.connect_pkt("self", clean=False, proto_level=0x84))
            assert conn.expect(h.CONNACK).body[1] == 0
            return conn
        conn = connect()
        conn.subscribe([("own/#", 1)])
        conn.publish("own/x", b"mine", qos=1)
        conn.expect_no_packet(0.5)  # the live copy is held back either way
        conn.disconnect()
        conn = connect()
        got = []
        while True:
            p = conn.read_packet(timeout=1.0)
            if p is None:
                break
            if p.type == h.PUBLISH:
                m = h.parse_publish(p)
                got.append(m.payload)
                conn.send(h.puback_pkt(m.pid))
        conn.disconnect()
        assert got == ([b"mine"] if stock else []), got
    finally:
        c.close()
