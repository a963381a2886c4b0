"""test_ctl.py - midge-ctl (tools/midge_ctl.c) against the real broker.

Every command in table and --json form, credentials from options, the environment and a
file, listings longer than one page, and the exit status with the API's own sentence on
every kind of error (wrong password, unknown client, unreachable broker, bad usage).
"""
import json
import os
import subprocess

import pytest

import midge_harness as h
from admin_harness import AdminBroker, api, many_clients

pytestmark = [h.midge_only]

CTL = os.path.join(os.path.dirname(os.path.abspath(h.MIDGE_BIN)), "midge-ctl")
needs_ctl = h.needs(CTL, reason="midge-ctl is built beside midge")


@pytest.fixture(scope="module")
def broker():
    b = AdminBroker()
    yield b
    b.stop()


def ctl(broker, *args, rc=0, env=None, creds=True):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MIDGE_ADMIN_")}
    e["MIDGE_ADMIN_URL"] = f"http://127.0.0.1:{broker.port}"
    if creds:
        e["MIDGE_ADMIN_USER"], e["MIDGE_ADMIN_PASSWORD"] = "alice", "secret"
    e.update(env or {})
    r = subprocess.run([CTL, *args], capture_output=True, text=True, env=e, timeout=h.scaled(30))
    h.assert_no_sanitizer_report(r.stdout + r.stderr, "midge-ctl's output")
    assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
    return r


@needs_ctl
def test_ctl_clients_client_kick(broker):
    # The select()-based clients first: their sockets must stay below 1024.
    w = h.client(broker.tcp, "watch", username="bob", password="builder")
    w.subscribe([("st/#", 1)])
    victim = h.client(broker.tcp, "教室/board 7", username="bob", password="builder",
                      will=("st/7", "gone", 1, False))
    devs = many_clients(broker.tcp, [f"esp-{i:04d}" for i in range(1203)])
    try:
        out = ctl(broker, "clients").stdout.splitlines()
        assert out[0].split()[:3] == ["CLIENT", "ID", "CONNECTED"], out[0]
        assert len(out) == 1 + 1205, len(out)  # more than one page of 1,000
        row = next(ln for ln in out if ln.startswith("esp-0007"))
        assert row.split()[1:3] == ["yes", f"127.0.0.1:{devs[7].getsockname()[1]}"], row
        # Columns line up, UTF-8 ids included.
        starts = {ln.index("yes") for ln in out[1:] if "yes" in ln}
        assert len(starts) == 1, starts
        j = json.loads(ctl(broker, "--json", "clients", "--prefix", "esp-000").stdout)
        assert [x["client_id"] for x in j] == [f"esp-{i:04d}" for i in range(10)]
        d = ctl(broker, "client", "教室/board 7").stdout
        assert "client_id                教室/board 7" in d and "will_topic" in d, d
        j = json.loads(ctl(broker, "client", "教室/board 7", "--json").stdout)
        assert j["username"] == "bob" and j["will_topic"] == "st/7"
        r = ctl(broker, "kick", "教室/board 7")
        assert r.stdout == "教室/board 7 disconnected\n"
        assert w.recv_publish().payload == b"gone"
        r = ctl(broker, "kick", "nobody", rc=1)
        assert r.stderr == 'midge-ctl: no client with id "nobody" (HTTP 404)\n', r.stderr
    finally:
        for c in devs:
            c.close()
        w.close()
        victim.close()


@needs_ctl
def test_ctl_retained_publish_subscriptions_broker(broker):
    s = h.client(broker.tcp, "subber", username="bob", password="builder")
    s.subscribe([("ctl/#", 1)])
    r = ctl(broker, "publish", "ctl/a", "héllo wörld", "-q", "1", "-r")
    assert r.stdout == "published to ctl/a (QoS 1, retained): 1 receiver\n", r.stdout
    m = s.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ctl/a", "héllo wörld".encode(), 1)
    ctl(broker, "publish", "ctl/b", "x", "-r")
    assert s.recv_publish().topic == "ctl/b"
    out = ctl(broker, "retained", "ctl/#").stdout.splitlines()
    assert out[0].split() == ["TOPIC", "SIZE", "QOS", "STORED", "PAYLOAD"]
    assert out[1].split()[0:3] == ["ctl/a", "13", "1"] and out[1].endswith("héllo wörld"), out
    r = ctl(broker, "retained", "--delete", "ctl/#", "--dry-run")
    assert r.stdout == "2 retained messages match ctl/# (nothing deleted: --dry-run)\n"
    r = ctl(broker, "retained", "--delete", "ctl/#")
    assert r.stdout == "2 retained messages deleted under ctl/#\n"
    assert ctl(broker, "retained", "ctl/#").stdout.splitlines()[1:] == []
    out = ctl(broker, "subscriptions", "ctl/x").stdout.splitlines()
    assert out[1].split() == ["subber", "ctl/#", "1", "-"], out
    b = json.loads(ctl(broker, "broker", "--json").stdout)
    assert b["admin_user"] == "alice" and "clients/connected" in b["sys"]
    out = ctl(broker, "broker").stdout
    assert out.startswith("midge ") and "admin API" in out and "clients/connected" in out
    r = ctl(broker, "publish", "bad/+", "x", rc=1)
    assert "a topic name cannot contain + or #" in r.stderr and "HTTP 400" in r.stderr
    s.close()


@needs_ctl
def test_ctl_credentials_and_errors(broker, tmp_path):
    r = ctl(broker, "broker", creds=False, rc=1)
    assert "log in" in r.stderr and "HTTP 401" in r.stderr
    r = ctl(broker, "-u", "alice", "-P", "nope", "broker", creds=False, rc=1)
    assert r.stderr == "midge-ctl: wrong user name or password (HTTP 401)\n"
    f = tmp_path / "creds"
    f.write_text("alice:secret\n")
    assert ctl(broker, "-F", str(f), "broker", creds=False).stdout.startswith("midge ")
    r = ctl(broker, "-u", "bob", "-P", "builder", "clients", creds=False, rc=1)
    assert "not an admin_user" in r.stderr
    r = ctl(broker, "-H", "http://127.0.0.1:1", "broker", rc=1)
    assert r.stderr.startswith("midge-ctl: GET http://127.0.0.1:1/api/v1/broker: ")
    r = ctl(broker, "frobnicate", rc=2)
    assert "unknown command" in r.stderr and "usage:" in r.stderr
    r = ctl(broker, "publish", "only-topic", rc=2)
    assert "TOPIC and MESSAGE are required" in r.stderr
    r = ctl(broker, "publish", "t", "m", "-q", "7", rc=2)
    r = ctl(broker, "--help")
    assert r.stdout.startswith("usage: midge-ctl")
    # The broker's MQTT listener is not the API: a clear sentence, not a crash.
    r = ctl(broker, "-H", f"http://127.0.0.1:{broker.tcp}", "broker", rc=1)
    assert r.stderr.startswith("midge-ctl: ")
    assert api(broker.port, "GET", "/api/v1/broker").status == 200
