"""test_admin.py - the admin API (docs/admin.md) through the real binary.

Every endpoint authorised, and refused: wrong password, not an admin_user, not configured,
cross-origin; failed logins limited per address (429 with Retry-After); clients (TCP and
WebSocket) with their counters, filters and cursor pages; kick with the will published and
DISCONNECT 0x98 to an MQTT 5 client, an offline session discarded; subscriptions matching a
topic or a filter, shared ones included; retained messages listed with previews (none where
the admin's ACL cannot read), deleted after a dry run and still deleted after a restart;
publish with a client's checks; /broker; a reload that adds an admin.
"""
import base64
import json
import os
import signal
import tempfile
import time

import pytest

import midge_harness as h
from admin_harness import AdminBroker, api, basic, pages, raw
from test_tls import certs  # noqa: F401 (a fixture)

pytestmark = h.midge_only


@pytest.fixture
def broker():
    b = AdminBroker()
    yield b
    b.stop()


def ws_client(port, client_id, will=None, username="bob", password="builder"):
    """A paho client over the WebSocket listener (path /mqtt), connected."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=client_id, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.username_pw_set(username, password)
    if will:
        c.will_set(*will)
    ok = []
    c.on_connect = lambda cl, u, f, rc: ok.append(rc)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    deadline = time.monotonic() + h.TIMEOUT
    while not ok and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok == [0], f"WebSocket client {client_id} not connected: {ok}"
    return c


def tcp(broker, client_id, **kw):
    kw.setdefault("username", "bob")
    kw.setdefault("password", "builder")
    return h.client(broker.tcp, client_id, **kw)


# ---- who may use it -----------------------------------------------------------------------

def test_auth_not_configured():
    b = AdminBroker(admins=None)
    try:
        r = api(b.port, "GET", "/api/v1/clients")
        assert r.status == 404 and "admin API is off" in r.message, r
        assert r.headers["content-type"].startswith("application/json")
        # The page, /metrics and WebSocket MQTT are unchanged.
        assert api(b.port, "GET", "/", auth=None).status == 200
    finally:
        b.stop()


def test_auth_missing_wrong_not_admin(broker):
    r = api(broker.port, "GET", "/api/v1/clients", auth=None)
    assert r.status == 401, r
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    # The page's own requests say X-Requested-With: no browser popup.
    r = api(broker.port, "GET", "/api/v1/clients", auth=None,
            headers={"X-Requested-With": "fetch"})
    assert r.status == 401 and "www-authenticate" not in r.headers, r
    r = api(broker.port, "GET", "/api/v1/clients", auth=("alice", "wrong"))
    assert r.status == 401 and r.message == "wrong user name or password", r
    r = api(broker.port, "GET", "/api/v1/clients", auth=("mallory", "secret"))
    assert r.status == 401 and r.message == "wrong user name or password", r
    r = api(broker.port, "GET", "/api/v1/clients", auth=("bob", "builder"))
    assert r.status == 403 and "not an admin_user" in r.message, r
    r = api(broker.port, "GET", "/api/v1/clients",
            headers={"Authorization": "Bearer abc"}, auth=None)
    assert r.status == 401 and "Basic" in r.message, r
    r = api(broker.port, "GET", "/api/v1/clients",
            headers={"Authorization": "Basic !!!"}, auth=None)
    assert r.status == 401, r
    broker.wait_log(r"admin: 127\.0\.0\.1:\d+: failed login as alice \(wrong password\)")
    broker.wait_log(r"admin: 127\.0\.0\.1:\d+: failed login as bob \(not an admin_user\)")
    # Every request is logged with the admin's name (or that there was none).
    assert api(broker.port, "GET", "/api/v1/broker").status == 200
    broker.wait_log(r"info: admin alice: 127\.0\.0\.1:\d+ GET /api/v1/broker -> 200 \(\d+\.\d ms\)")
    broker.wait_log(r"admin \(not logged in\): 127\.0\.0\.1:\d+ GET /api/v1/clients -> 401")
    # The password never reaches the log, nor a hash.
    assert "secret" not in broker.log() and "$6$" not in broker.log()


ENDPOINTS = [("GET", "/api/v1/clients", None), ("GET", "/api/v1/clients/x", None),
             ("DELETE", "/api/v1/clients/x", None), ("GET", "/api/v1/subscriptions", None),
             ("GET", "/api/v1/retained", None), ("DELETE", "/api/v1/retained?filter=a", None),
             ("POST", "/api/v1/publish", {"topic": "a", "payload": "x"}),
             ("GET", "/api/v1/broker", None)]


def test_auth_matrix_every_endpoint():
    """Each endpoint: authorised, no credentials, wrong password, not an admin,
    cross-origin (the changing ones), not configured. Each endpoint's refusals come from an
    address of its own (127.0.0.N), so they stay under the failed-login limit."""
    import http.client as hc
    b = AdminBroker()
    off = AdminBroker(admins=None)
    try:
        for i, (method, path, body) in enumerate(ENDPOINTS):
            src = (f"127.0.0.{10 + i}", 0)

            def call(port, auth, headers=None):
                c = hc.HTTPConnection("127.0.0.1", port, timeout=h.TIMEOUT, source_address=src)
                hdrs = {"Host": f"127.0.0.1:{port}"}
                if auth:
                    hdrs["Authorization"] = basic(*auth)
                data = None
                if body is not None:
                    data = json.dumps(body)
                    hdrs["Content-Type"] = "application/json"
                hdrs.update(headers or {})
                c.request(method, path, body=data, headers=hdrs)
                r = c.getresponse()
                out = (r.status, json.loads(r.read()))
                c.close()
                return out
            status, j = call(b.port, ("alice", "secret"))
            assert status in (200, 404), (method, path, status, j)  # 404: no client x
            assert call(b.port, None)[0] == 401, (method, path)
            assert call(b.port, ("alice", "wrong"))[0] == 401, (method, path)
            assert call(b.port, ("bob", "builder"))[0] == 403, (method, path)
            status, j = call(off.port, ("alice", "secret"))
            assert status == 404 and "admin API is off" in j["message"], (method, path, j)
            status, j = call(b.port, ("alice", "secret"), {"Origin": "http://elsewhere.example"})
            if method == "GET":
                assert status in (200, 404), (method, path, status)
            else:
                assert status == 403 and "cross-origin" in j["message"], (method, path, j)
    finally:
        b.stop()
        off.stop()


def test_auth_failed_logins_rate_limited(broker):
    for i in range(10):
        assert api(broker.port, "GET", "/api/v1/broker", auth=("alice", f"bad{i}")).status == 401
    r = api(broker.port, "GET", "/api/v1/broker", auth=("alice", "bad"))
    assert r.status == 429 and "too many failed logins from 127.0.0.1" in r.message, r
    assert 1 <= int(r.headers["retry-after"]) <= 7, r.headers
    # While the address is blocked, the right password waits too: no guessing continues.
    r = api(broker.port, "GET", "/api/v1/broker")
    assert r.status == 429, r
    time.sleep(int(r.headers["retry-after"]) + 0.2)
    assert api(broker.port, "GET", "/api/v1/broker").status == 200


def test_auth_cross_origin_changes_refused(broker):
    port = broker.port
    retained = h.client(broker.tcp, "pub", username="bob", password="builder")
    retained.publish("keep/me", b"1", retain=True)
    for hdrs in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                 {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},
                 {"Origin": f"https://127.0.0.1:{port}"}):
        r = api(port, "DELETE", "/api/v1/retained?filter=%23", headers=hdrs)
        assert r.status == 403 and "refused" in r.message, (hdrs, r)
        r = api(port, "POST", "/api/v1/publish", body={"topic": "a", "payload": "x"},
                headers=hdrs)
        assert r.status == 403, (hdrs, r)
    assert len(api(port, "GET", "/api/v1/retained?filter=keep/me").data) == 1
    # Reads are not changes (a browser keeps another site from reading the answer).
    assert api(port, "GET", "/api/v1/clients", headers={"Origin": "http://evil.example"}).status == 200
    # The page's own origin, and no Origin at all (curl), may change things.
    r = api(port, "DELETE", "/api/v1/retained?filter=keep/%23",
            headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    assert r.status == 200 and r.json["deleted"] == 1, r
    # A form (text/plain, the only body another page can POST without asking) is refused.
    r = api(port, "POST", "/api/v1/publish", body='{"topic":"a","payload":"x"}',
            headers={"Content-Type": "text/plain"})
    assert r.status == 415, r
    retained.close()


def test_auth_reload_adds_admin(broker):
    assert api(broker.port, "GET", "/api/v1/broker", auth=("bob", "builder")).status == 403
    with open(broker.conf_path, "a") as f:
        f.write("admin_user bob\n")
    mark = broker.mark()
    broker.proc.send_signal(signal.SIGHUP)
    broker.wait_log(r"configuration reloaded", since=mark)
    r = api(broker.port, "GET", "/api/v1/broker", auth=("bob", "builder"))
    assert r.status == 200 and r.json["admin_user"] == "bob", r


def test_config_admin_user_needs_password_file(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("listener 0 127.0.0.1\nprotocol websockets\nadmin_user alice\n")
    r = h.run_midge("-c", conf, "--test-config", rc=1)
    assert "admin_user: listener 0 has admin users but no password_file" in r.stderr
    conf.write_text("listener 0 127.0.0.1\nprotocol websockets\npassword_file /dev/null\n"
                    "admin_user a:b\n")
    r = h.run_midge("-c", conf, "--test-config", rc=1)
    assert "cannot be a user name of a password file (it contains a colon)" in r.stderr
    conf.write_text("listener 0\nprotocol websockets\npassword_file /dev/null\n"
                    "admin_user alice\n")
    r = h.run_midge("-c", conf, "--test-config", rc=0)
    assert "plain HTTP and not bound to loopback" in r.stderr


# ---- clients ------------------------------------------------------------------------------

def test_clients_tcp_and_websocket(broker):
    c = tcp(broker, "esp32-01", keepalive=30, will=("class/esp32-01/status", "offline", 1, True))
    c.subscribe([("class/esp32-01/cmd", 1), ("class/all/#", 0)])
    for i in range(3):
        c.publish("class/esp32-01/temp", b"21.5", qos=1)
    w = ws_client(broker.port, "browser-1")
    try:
        r = api(broker.port, "GET", "/api/v1/clients")
        assert r.status == 200, r
        by_id = {x["client_id"]: x for x in r.data}
        assert set(by_id) == {"esp32-01", "browser-1"}, by_id
        assert r.json["meta"] == {"limit": 100, "count": 2, "hasnext": False, "cursor": None}
        e = by_id["esp32-01"]
        assert e["connected"] and e["username"] == "bob" and e["protocol"] == "3.1.1", e
        assert e["address"] == f"127.0.0.1:{c.local_port}", e
        assert e["listener"] == f"127.0.0.1:{broker.tcp} (mqtt)", e
        assert e["keepalive"] == 30 and e["clean_session"] and e["session_expiry"] == 0, e
        assert e["messages_in"] == 3 and e["subscriptions_count"] == 2, e
        assert e["bytes_in"] > 0 and e["bytes_out"] > 0 and e["will_topic"] == "class/esp32-01/status"
        assert e["connected_at"].endswith("Z") and e["disconnected_at"] is None, e
        assert by_id["browser-1"]["listener"] == f"127.0.0.1:{broker.port} (websockets)"
        d = api(broker.port, "GET", "/api/v1/clients/esp32-01").data
        assert sorted((s["filter"], s["qos"]) for s in d["subscriptions"]) == \
            [("class/all/#", 0), ("class/esp32-01/cmd", 1)], d
        assert d["subscriptions_truncated"] is False
        r = api(broker.port, "GET", "/api/v1/clients/nobody")
        assert r.status == 404 and r.message == 'no client with id "nobody"', r
    finally:
        w.loop_stop()
        w.disconnect()
        c.close()


def test_clients_filters_and_offline_sessions(broker):
    a = tcp(broker, "lab-a", clean=False)
    a.subscribe([("q/#", 1)])
    a.disconnect()
    b = tcp(broker, "lab-b")
    anon = h.client(broker.tcp, "other-1", username="alice", password="secret")
    deadline = time.monotonic() + h.TIMEOUT
    while api(broker.port, "GET", "/api/v1/clients?connected=0").json["meta"]["count"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # A message queued for the offline session shows in its figures.
    b.publish("q/x", b"hello", qos=1)
    ids = lambda q: sorted(x["client_id"] for x in api(broker.port, "GET", "/api/v1/clients" + q).data)
    assert ids("?connected=0") == ["lab-a"]
    assert ids("?connected=1") == ["lab-b", "other-1"]
    assert ids("?prefix=lab-") == ["lab-a", "lab-b"]
    assert ids("?username=alice") == ["other-1"]
    assert ids("?username=bob&connected=true") == ["lab-b"]
    assert ids("?address=127.0.0.1") == ["lab-b", "other-1"]
    assert ids("?address=10.") == []
    off = api(broker.port, "GET", "/api/v1/clients/lab-a").data
    assert not off["connected"] and off["address"] is None and off["disconnected_at"], off
    assert off["queued"] == 1 and off["queued_bytes"] == 5 and off["session_expiry"] is None, off
    b.close()
    anon.close()


def test_clients_pages_follow_cursor(broker):
    conns = [tcp(broker, f"dev-{i:03d}") for i in range(25)]
    try:
        got, n = pages(broker.port, "/api/v1/clients", limit=10)
        assert n == 3 and [x["client_id"] for x in got] == [f"dev-{i:03d}" for i in range(25)]
        # The cursor survives changes between pages: the one it names goes away, others
        # come and go on both sides of it.
        first = api(broker.port, "GET", "/api/v1/clients?limit=10")
        cur = first.json["meta"]["cursor"]
        assert base64.urlsafe_b64decode(cur + "=" * (-len(cur) % 4)) == b"dev-009"
        conns[9].close()
        conns[3].close()
        extra = [tcp(broker, "dev-0005a"), tcp(broker, "dev-100")]
        deadline = time.monotonic() + h.TIMEOUT
        while api(broker.port, "GET", "/api/v1/clients").json["meta"]["count"] != 25:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = api(broker.port, "GET", f"/api/v1/clients?limit=10&cursor={cur}")
        assert [x["client_id"] for x in r.data] == [f"dev-{i:03d}" for i in range(10, 20)]
        extra[0].close()
        extra[1].close()
    finally:
        for c in conns:
            c.close()


def test_clients_kick_will_and_mqtt5_reason(broker):
    watcher = tcp(broker, "watcher")
    watcher.subscribe([("status/#", 1)])
    v3 = tcp(broker, "board-3", will=("status/board-3", "lost", 1, False))
    r = api(broker.port, "DELETE", "/api/v1/clients/board-3")
    assert r.status == 200 and r.json == {"client_id": "board-3", "disconnected": True,
                                          "session_removed": False}, r
    v3.expect_closed()
    p = watcher.recv_publish()
    assert (p.topic, p.payload) == ("status/board-3", b"lost")
    broker.wait_log(r"client board-3 disconnected: disconnected by admin alice")
    broker.wait_log(r"admin alice: 127\.0\.0\.1:\d+ DELETE /api/v1/clients/board-3 -> 200 ")
    # MQTT 5: told why (0x98 administrative action) before the close.
    v5 = h.client5(broker.tcp, "board-5", username="bob", password="builder",
                   will=("status/board-5", "lost5", 0, False))
    assert api(broker.port, "DELETE", "/api/v1/clients/board-5").status == 200
    d = v5.expect_disconnect(0x98)
    assert "admin alice" in repr(d)
    assert watcher.recv_publish().payload == b"lost5"
    # A persistent session: kicked, it stays offline; with discard_session it goes.
    p = tcp(broker, "persist-1", clean=False)
    p.subscribe([("x/#", 1)])
    assert api(broker.port, "DELETE", "/api/v1/clients/persist-1").status == 200
    p.expect_closed()
    r = api(broker.port, "DELETE", "/api/v1/clients/persist-1")
    assert r.status == 409 and "not connected" in r.message and "discard_session" in r.message, r
    r = api(broker.port, "DELETE", "/api/v1/clients/persist-1?discard_session=1")
    assert r.status == 200 and r.json["session_removed"] and not r.json["disconnected"], r
    broker.wait_log(r"client persist-1: offline session removed by admin alice")
    assert api(broker.port, "GET", "/api/v1/clients/persist-1").status == 404
    # Connected and discarded in one step: back without a session.
    p = tcp(broker, "persist-2", clean=False)
    assert api(broker.port, "DELETE", "/api/v1/clients/persist-2?discard_session=1").status == 200
    p.expect_closed()
    p = h.MqttConn(broker.tcp)
    assert p.connect("persist-2", clean=False, username="bob", password="builder") is False
    p.close()
    assert api(broker.port, "DELETE", "/api/v1/clients/ghost").status == 404
    assert api(broker.port, "DELETE", "/api/v1/clients/x?discard_session=maybe").status == 400
    watcher.close()


# ---- subscriptions ------------------------------------------------------------------------

def test_subscriptions_matching(broker):
    a = tcp(broker, "sub-a")
    a.subscribe([("a/+/c", 1), ("b/x", 0)])
    b5 = h.client5(broker.tcp, "sub-b", username="bob", password="builder")
    b5.subscribe([("a/#", 0x06), ("$share/grp/a/b/c", 0x01)], props=[(0x0B, 7)])
    c = tcp(broker, "sub-c")
    c.subscribe([("#", 0)])
    rows = lambda q: sorted((x["client_id"], x["filter"]) for x in
                            api(broker.port, "GET", "/api/v1/subscriptions" + q).data)
    assert rows("?filter=a/b/c") == [("sub-a", "a/+/c"), ("sub-b", "$share/grp/a/b/c"),
                                      ("sub-b", "a/#"), ("sub-c", "#")]
    assert rows("?filter=b/%23") == [("sub-a", "b/x"), ("sub-c", "#")]
    assert rows("?filter=$SYS/x") == []  # '#' does not match $ topics
    assert rows("?client=sub-a") == [("sub-a", "a/+/c"), ("sub-a", "b/x")]
    allsubs = api(broker.port, "GET", "/api/v1/subscriptions").data
    byf = {(x["client_id"], x["filter"]): x for x in allsubs}
    s = byf[("sub-b", "a/#")]
    assert s["qos"] == 2 and s["no_local"] and s["subscription_id"] == 7 and s["share"] is None, s
    assert byf[("sub-b", "$share/grp/a/b/c")]["share"] == "grp"
    got, n = pages(broker.port, "/api/v1/subscriptions", limit=2)
    assert n == 3 and [(x["client_id"], x["filter"]) for x in got] == \
        sorted((x["client_id"], x["filter"]) for x in allsubs)
    r = api(broker.port, "GET", "/api/v1/subscriptions?filter=a/%23/b")
    assert r.status == 400 and "not a valid topic filter" in r.message, r
    for x in (a, b5, c):
        x.close()


# ---- retained -----------------------------------------------------------------------------

def test_retained_list_preview_delete(broker):
    p = tcp(broker, "pub")
    for i in range(12):
        p.publish(f"class/s{i:02d}/debug", f"junk {i}".encode(), qos=1, retain=True)
    p.publish("class/keep", "溫度 21.5".encode(), qos=1, retain=True)
    p.publish("bin/x", bytes(range(256)) * 2, qos=0, retain=True)
    r = api(broker.port, "GET", "/api/v1/retained?filter=class/keep")
    assert r.status == 200 and len(r.data) == 1, r
    e = r.data[0]
    assert e["topic"] == "class/keep" and e["payload"] == "溫度 21.5" and e["qos"] == 1, e
    assert e["size"] == len("溫度 21.5".encode()) and e["stored_at"].endswith("Z") and e["readable"]
    b = api(broker.port, "GET", "/api/v1/retained?filter=bin/%23&preview=16").data[0]
    assert b["payload"] is None and base64.b64decode(b["payload_base64"]) == bytes(range(16))
    assert b["truncated"] and b["size"] == 512
    # A preview never cuts a character in two.
    k = api(broker.port, "GET", "/api/v1/retained?filter=class/keep&preview=4").data[0]
    assert k["payload"] == "溫" and k["truncated"], k
    got, n = pages(broker.port, "/api/v1/retained?filter=class/%2B/debug", limit=5)
    assert n == 3 and [x["topic"] for x in got] == [f"class/s{i:02d}/debug" for i in range(12)]
    # Dry run first: the count, nothing deleted.
    r = api(broker.port, "DELETE", "/api/v1/retained?filter=class/%2B/debug&dry_run=1")
    assert r.status == 200 and r.json == {"filter": "class/+/debug", "dry_run": True,
                                          "matched": 12, "would_delete": 12, "remaining": 12}, r
    r = api(broker.port, "GET", "/api/v1/retained?filter=class/%23")
    # Counting a filter's matches would walk the whole store: only "#" has a count.
    assert len(r.data) == 13 and r.json["meta"]["count"] is None, r
    assert api(broker.port, "GET", "/api/v1/retained").json["meta"]["count"] == 14
    r = api(broker.port, "DELETE", "/api/v1/retained?filter=class/%2B/debug")
    assert r.json["deleted"] == 12 and r.json["remaining"] == 0, r
    broker.wait_log(r"admin alice: deleted 12 retained messages matching class/\+/debug")
    left = [x["topic"] for x in api(broker.port, "GET", "/api/v1/retained").data]
    assert "class/keep" in left and not any(t.endswith("/debug") for t in left), left
    # A new subscriber gets only what is left.
    s = tcp(broker, "late")
    s.subscribe([("class/#", 1)])
    assert s.recv_publish().topic == "class/keep"
    s.expect_no_packet()
    r = api(broker.port, "DELETE", "/api/v1/retained")
    assert r.status == 400 and "filter is required" in r.message, r
    r = api(broker.port, "DELETE", "/api/v1/retained?filter=$SYS/%23")
    assert r.status == 400 and "broker's own" in r.message, r
    s.close()
    p.close()


def test_retained_acl_hides_payloads():
    acl = "user alice\ntopic read public/#\ntopic write out/#\n\nuser bob\ntopic readwrite #\n"
    b = AdminBroker(acl=acl)
    try:
        p = tcp(b, "pub")
        p.publish("public/a", b"visible", retain=True, qos=1)
        p.publish("secret/a", b"hidden-payload", retain=True, qos=1)
        got = {x["topic"]: x for x in api(b.port, "GET", "/api/v1/retained").data}
        assert got["public/a"]["payload"] == "visible" and got["public/a"]["readable"]
        s = got["secret/a"]
        assert s["payload"] is None and s["payload_base64"] is None and not s["readable"], s
        assert s["size"] == 14
        # Publishing is the admin user's write: allowed under out/, refused elsewhere.
        r = api(b.port, "POST", "/api/v1/publish", body={"topic": "out/x", "payload": "1"})
        assert r.status == 200, r
        r = api(b.port, "POST", "/api/v1/publish", body={"topic": "secret/x", "payload": "1"})
        assert r.status == 403 and "acl_file" in r.message, r
        for path in ("/api/v1/clients", "/api/v1/clients/pub", "/api/v1/retained",
                     "/api/v1/broker", "/api/v1/subscriptions"):
            assert "hidden-payload" not in api(b.port, "GET", path).body
            assert "$6$" not in api(b.port, "GET", path).body
        p.close()
    finally:
        b.stop()


def test_retained_delete_is_persisted():
    d = tempfile.mkdtemp(prefix="midge-admin-store-")
    b = AdminBroker(conf=["persistence true", f"persistence_location {d}/"])
    try:
        p = tcp(b, "pub")
        for t in ("junk/1", "junk/2", "keep/1"):
            p.publish(t, b"x", retain=True, qos=1)
        p.close()
        assert api(b.port, "DELETE", "/api/v1/retained?filter=junk/%23").json["deleted"] == 2
    finally:
        b.stop()
    b = AdminBroker(conf=["persistence true", f"persistence_location {d}/"])
    try:
        topics = [x["topic"] for x in api(b.port, "GET", "/api/v1/retained").data]
        assert topics == ["keep/1"], topics
    finally:
        b.stop()


# ---- publish ------------------------------------------------------------------------------

def test_publish_routed_like_a_client(broker):
    s = tcp(broker, "listener")
    s.subscribe([("shell/#", 2)])
    r = api(broker.port, "POST", "/api/v1/publish",
            body={"topic": "shell/a", "payload": "héllo", "qos": 1})
    assert r.status == 200 and r.json == {"topic": "shell/a", "qos": 1, "retain": False,
                                          "size": 6, "delivered": 1}, r
    m = s.recv_publish()
    assert (m.topic, m.payload, m.qos, m.retain) == ("shell/a", "héllo".encode(), 1, False)
    r = api(broker.port, "POST", "/api/v1/publish",
            body={"topic": "shell/bin", "payload_base64": base64.b64encode(b"\x00\xff").decode(),
                  "qos": 2, "retain": True})
    assert r.status == 200, r
    m = s.recv_publish()
    assert m.payload == b"\x00\xff" and m.qos == 2
    got = api(broker.port, "GET", "/api/v1/retained?filter=shell/bin").data[0]
    assert got["qos"] == 2 and got["payload_base64"] == "AP8="
    broker.wait_log(r"admin alice: published 2 bytes to shell/bin \(QoS 2, retained, 1 receivers\)")
    bad = [({"topic": "a/+", "payload": "x"}, 400, "cannot contain + or #"),
           ({"topic": "", "payload": "x"}, 400, "empty topic"),
           ({"payload": "x"}, 400, "topic is required"),
           ({"topic": "a", "payload": "x", "qos": 3}, 400, "qos must be 0, 1 or 2"),
           ({"topic": "a", "payload": "x", "qos": "1"}, 400, "qos must be 0, 1 or 2"),
           ({"topic": "a", "payload": "x", "retain": 1}, 400, "retain must be true or false"),
           ({"topic": "a", "payload": "x", "payload_base64": "eA=="}, 400, "not both"),
           ({"topic": "a", "payload_base64": "e"}, 400, "not base64"),
           ({"topic": "a", "payload": 5}, 400, "must be strings"),
           ({"topic": "a", "payload": "x", "extra": 1}, 400, 'unknown field "extra"')]
    for body, status, words in bad:
        r = api(broker.port, "POST", "/api/v1/publish", body=body)
        assert r.status == status and words in r.message, (body, r)
    s.expect_no_packet()
    s.close()


def test_publish_checks_the_broker_limits():
    b = AdminBroker(conf=["message_size_limit 10", "max_qos 1", "max_topic_levels 3"])
    try:
        for body, words in (({"topic": "a", "payload": "x" * 11}, "message_size_limit"),
                            ({"topic": "a", "payload": "x", "qos": 2}, "max_qos"),
                            ({"topic": "a/b/c/d", "payload": "x"}, "max_topic_levels")):
            r = api(b.port, "POST", "/api/v1/publish", body=body)
            assert r.status == 403 and words in r.message, (body, r)
        assert api(b.port, "POST", "/api/v1/publish",
                   body={"topic": "a", "payload": "x" * 10, "qos": 1}).status == 200
    finally:
        b.stop()


# ---- broker -------------------------------------------------------------------------------

def test_broker_figures(broker):
    c = tcp(broker, "one")
    r = api(broker.port, "GET", "/api/v1/broker")
    assert r.status == 200, r
    j = r.json
    assert j["version"] and j["uptime"] >= 0 and j["started_at"].endswith("Z")
    assert j["config_file"] == broker.conf_path and j["admin_user"] == "alice"
    assert {"address": f"127.0.0.1:{broker.port}", "protocol": "websockets", "admin": True} in j["listeners"]
    assert {"address": f"127.0.0.1:{broker.tcp}", "protocol": "mqtt", "admin": False} in j["listeners"]
    assert j["sys"]["clients/connected"] == 1 and "retained messages/count" in j["sys"]
    # HEAD: the headers of GET, no body.
    s = raw(broker.port, b"HEAD /api/v1/broker HTTP/1.1\r\nHost: x\r\nAuthorization: " +
            basic("alice", "secret").encode() + b"\r\n\r\n")
    assert s.status == 200 and s.body == "" and int(s.headers["content-length"]) > 100
    r = api(broker.port, "POST", "/api/v1/broker", body={})
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD", r
    c.close()


# ---- https --------------------------------------------------------------------------------

def test_https_listener(certs):  # noqa: F811 (the fixture of test_tls)
    import http.client as hc
    from test_tls import client_ctx
    b = AdminBroker(ws_conf=[f"cafile {certs.cafile}", f"certfile {certs.server[0]}",
                             f"keyfile {certs.server[1]}"])
    try:
        b.wait_log_always(rf"listening on 127\.0\.0\.1:{b.port} \(websockets over tls\)")

        def call(method, path, headers=None, body=None):
            c = hc.HTTPSConnection("127.0.0.1", b.port, timeout=h.TIMEOUT,
                                   context=client_ctx(certs))
            hdrs = {"Authorization": basic("alice", "secret"), "Host": f"127.0.0.1:{b.port}"}
            hdrs.update(headers or {})
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            c.close()
            return r.status, json.loads(data)
        status, j = call("GET", "/api/v1/broker")
        assert status == 200 and {"address": f"127.0.0.1:{b.port}",
                                  "protocol": "websockets over tls", "admin": True} in j["listeners"]
        # The page's own origin is https:// here; http:// of the same host is another one.
        body = json.dumps({"topic": "t", "payload": "x"})
        status, j = call("POST", "/api/v1/publish", body=body,
                         headers={"Content-Type": "application/json",
                                  "Origin": f"https://127.0.0.1:{b.port}"})
        assert status == 200, j
        status, j = call("POST", "/api/v1/publish", body=body,
                         headers={"Content-Type": "application/json",
                                  "Origin": f"http://127.0.0.1:{b.port}"})
        assert status == 403, j
        # No warning for an https:// admin API.
        b.assert_no_log(r"plain HTTP and not bound to loopback")
    finally:
        b.stop()
