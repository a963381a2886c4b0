"""test_disk_full.py - the disk under the database fills up: midge keeps serving, does not
acknowledge what it cannot store (persistence_durability ack), logs the error, and
recovers by itself when space returns.

The small filesystem is a tmpfs the test mounts itself (root is needed; without it the
test says why it cannot run instead of passing).
"""
import os
import subprocess
import time

import pytest

import midge_harness as h
from midge_harness import client, puback_pkt, publish_pkt

pytestmark = h.midge_only


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs; unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path):
    """Write a file until the filesystem is full; returns its path."""
    filler = path / "filler"
    chunk = b"\xa5" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        # Fill the last partial block too.
        try:
            while True:
                f.write(b"\xa5" * 512)
        except OSError:
            pass
    return filler


def test_disk_full_no_false_ack_and_recovery(start_broker, small_fs):
    conf = ["persistence true", f"persistence_location {small_fs}/",
            "persistence_durability ack"]
    br = start_broker(conf)
    sub = client(br, "keeper", clean=False)
    sub.subscribe([("store/#", 1)])
    sub.disconnect()
    live = client(br, "live")
    live.subscribe([("live", 0)])

    filler = fill(small_fs)
    mark = br.mark()
    pub = client(br, "pub")
    payload = os.urandom(200_000)  # far more than any page the database may have free
    pub.send(publish_pkt("store/big", payload, qos=1, pid=7))
    br.wait_log_always(r"error: persistence: cannot write to persistence file .*midge\.db: "
                       r".*(full|No space)", since=mark)
    # No PUBACK while the message is not on disk: the publisher keeps it and would resend.
    pub.expect_no_packet(h.scaled(1.5))
    # Everyone else is still served: QoS 0 traffic flows, new clients connect.
    other = client(br, "other")
    other.publish("live", b"still here", qos=0)
    assert live.recv_publish().payload == b"still here"
    other.disconnect()
    assert br.alive()
    # Logged once, not once per retry.
    time.sleep(h.scaled(1.0))
    failing = [ln for ln in br.log().splitlines()[mark:] if "cannot write to persistence" in ln]
    assert len(failing) == 1, failing

    os.unlink(filler)  # space returns
    pub.expect_bytes(puback_pkt(7), timeout=h.scaled(15))
    br.wait_log_always(r"notice: persistence: writes to persistence file .* succeed again",
                       since=mark)
    pub.publish("store/after", b"small", qos=1)
    pub.disconnect()
    live.disconnect()
    br.stop()

    # Both messages were stored: the persistent subscriber gets them after a restart.
    br2 = start_broker(conf)
    sub = client(br2, "keeper", clean=False, expect_sp=True)
    got = [(m.topic, m.payload) for m in sub.collect(2)]
    assert got == [("store/big", payload), ("store/after", b"small")]
    sub.expect_no_packet()
