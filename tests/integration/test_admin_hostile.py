"""test_admin_hostile.py - the admin API against requests meant to break it.

Oversized, truncated, chunked and malformed JSON bodies; path traversal and odd bytes in
client ids; percent-encoding that is wrong or smuggles a NUL; a client id with slashes and
UTF-8; absurd pagination values and forged cursors; unknown and repeated parameters; many
requests at once. Each must get a clear JSON error (or a plain refusal from the HTTP
parser), never a crash, a hang or a leak (the ASan build runs this file too), and the
broker keeps serving MQTT meanwhile.
"""
import concurrent.futures
import socket
import time

import pytest

import midge_harness as h
from admin_harness import AdminBroker, api, basic, raw

pytestmark = h.midge_only

AUTH = basic("alice", "secret").encode()


@pytest.fixture(scope="module")
def broker():
    b = AdminBroker()
    yield b
    assert b.alive(), b.log()
    b.stop()


def post(port, body, ctype=b"application/json", extra=b""):
    head = (b"POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + AUTH +
            b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n")
    return raw(port, head + body)


@pytest.mark.parametrize("body,words", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b'{"topic": "a", "payload": "x"', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"topic": "a", "topic": "b", "payload": "x"}', "duplicate"),
    (b'{"topic": "a\\u0000b", "payload": "x"}', "not valid JSON"),
    (b'{"topic": "\xff\xfe", "payload": "x"}', "not valid JSON"),
    (b'{"topic": "a", "payload": "x"} trailing', "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    (b'{"topic": "a", "payload": "x", "qos": 1e400}', "not valid JSON"),
    (b'{"topic": "a", "payload": "x", "qos": 99999999999999999999999}', "not valid JSON"),
    (b'{"topic": "a", "payload": "x", "qos": -1}', "qos must be 0, 1 or 2"),
], ids=lambda v: None if isinstance(v, str) else f"{len(v)}b")
def test_hostile_malformed_json(broker, body, words):
    r = post(broker.port, body)
    assert r.status == 400 and words in r.json["message"], (body[:80], r)
    assert r.json["status"] == 400 and r.json["error"] == "bad_request"


def test_hostile_deep_topic(broker):
    r = post(broker.port, b'{"topic": "' + b"a/" * 2000 + b'a", "payload": "x"}')
    assert r.status == 403 and "max_topic_levels" in r.json["message"], r


def test_hostile_body_bounds(broker):
    # Over 64 KiB: refused from the Content-Length, the body is never read.
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=h.TIMEOUT)
    s.sendall(b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
              b"\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n")
    data = s.recv(65536)
    s.close()
    assert data.startswith(b"HTTP/1.1 413 ") and b"larger than 65536 bytes" in data, data
    body = b'{"topic": "big", "payload": "' + b"x" * 65000 + b'"}'
    assert len(body) <= 65536
    r = post(broker.port, body)
    assert r.status == 200 and r.json["size"] == 65000, r
    assert post(broker.port, b"x", extra=b"Transfer-Encoding: chunked\r\n").status in (400, 411)
    r = raw(broker.port, b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
            b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    assert r.status == 400 and "Content-Length" in r.json["message"], r
    r = raw(broker.port, b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
            b"\r\nContent-Length: -5\r\n\r\n")
    assert r.status == 400, r
    r = raw(broker.port, b"GET /api/v1/broker HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
            b"\r\nContent-Length: 3\r\n\r\nabc")
    assert r.status == 400 and "GET request with a body" in r.json["message"], r


def test_hostile_truncated_body_times_out(tmp_path):
    b = AdminBroker(conf=["connect_timeout 1"])
    try:
        s = socket.create_connection(("127.0.0.1", b.port), timeout=h.scaled(10))
        s.sendall(b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
                  b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"to")
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by connect_timeout, not answered half-read
        assert time.monotonic() - t0 < h.scaled(5)
        s.close()
        assert api(b.port, "GET", "/api/v1/broker").status == 200
    finally:
        b.stop()


@pytest.mark.parametrize("path,status,words", [
    ("/api/v1/clients/../broker", 404, 'no client with id "../broker"'),
    ("/api/v1/clients/%2e%2e%2fbroker", 404, 'no client with id "../broker"'),
    ("/api/v1/../v1/broker", 404, "no such API route"),
    ("/api/v1//clients", 404, "no such API route"),
    ("/api/v2/clients", 404, "no such API route"),
    ("/api", 404, "no such API route"),
    ("/api/v1/clients/", 404, "no such API route"),
    ("/api/v1/clients/%zz", 400, "malformed percent-encoding"),
    ("/api/v1/clients/abc%2", 400, "malformed percent-encoding"),
    ("/api/v1/clients/a%00b", 400, "cannot be a client id"),
    ("/api/v1/clients/%ff%fe", 400, "cannot be a client id"),
    ("/api/v1/clients/%ed%a0%80", 400, "cannot be a client id"),
    ("/api/v1/clients?limit=0", 400, "from 1 to 1000"),
    ("/api/v1/clients?limit=1001", 400, "from 1 to 1000"),
    ("/api/v1/clients?limit=99999999999999999999999999", 400, "from 1 to 1000"),
    ("/api/v1/clients?limit=-1", 400, "from 1 to 1000"),
    ("/api/v1/clients?limit=1e3", 400, "from 1 to 1000"),
    ("/api/v1/clients?limit=", 400, "from 1 to 1000"),
    ("/api/v1/clients?cursor=!!!", 400, "cursor is not one this API gave"),
    ("/api/v1/clients?cursor=" + "A" * 300001, 400, "cursor"),
    ("/api/v1/clients?limit=5&limit=6", 400, "given twice"),
    ("/api/v1/clients?bogus=1", 400, 'unknown query parameter "bogus"'),
    ("/api/v1/clients?%zz=1", 400, "unknown query parameter"),
    ("/api/v1/clients?prefix=%zz", 400, "malformed percent-encoding"),
    ("/api/v1/clients?prefix=a%00", 400, "NUL byte"),
    ("/api/v1/clients?connected=maybe", 400, "must be 1, 0, true or false"),
    ("/api/v1/retained?filter=a/%23/b", 400, "not a valid topic filter"),
    ("/api/v1/retained?filter=", 400, "not a valid topic filter"),
    ("/api/v1/retained?preview=5000", 400, "from 0 to 4096"),
    ("/api/v1/subscriptions?filter=%2B%2B", 400, "not a valid topic filter"),
    ("/api/v1/broker?x=1", 400, 'unknown query parameter "x"'),
])
def test_hostile_paths_and_queries(broker, path, status, words):
    if len(path) > 8000:
        # Past the request-head limit: the HTTP parser refuses it (431), not the API.
        r = raw(broker.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert r.status == 431, r
        return
    r = api(broker.port, "GET", path)
    assert r.status == status and words in r.message, (path, r)


def test_hostile_client_id_with_slashes_and_utf8(broker):
    cid = "教室/esp32 #1/溫度+"
    c = h.client(broker.tcp, cid, username="bob", password="builder")
    try:
        from urllib.parse import quote
        r = api(broker.port, "GET", "/api/v1/clients/" + quote(cid, safe=""))
        assert r.status == 200 and r.data["client_id"] == cid, r
        # The raw slashes are part of the id too (never a path to walk).
        r = api(broker.port, "GET", "/api/v1/clients/" + quote(cid, safe="/"))
        assert r.status == 200 and r.data["client_id"] == cid, r
        r = api(broker.port, "GET", "/api/v1/clients?prefix=" + quote("教室/", safe=""))
        assert [x["client_id"] for x in r.data] == [cid], r
        assert api(broker.port, "DELETE", "/api/v1/clients/" + quote(cid, safe="")).status == 200
        c.expect_closed()
    finally:
        c.close()


def test_hostile_odd_requests(broker):
    # Methods, versions and heads the strict HTTP parser or the router refuse.
    r = raw(broker.port, b"PUT /api/v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH +
            b"\r\n\r\n")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD", r
    r = raw(broker.port, b"DELETE /api/v1/broker HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 405, r
    r = raw(broker.port, b"GET /api/v1/clients HTTP/1.1\r\n\r\n")
    assert r.status == 400, r  # HTTP/1.1 without Host
    r = raw(broker.port, b"GET /api/v1/clients\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 400, r
    r = raw(broker.port, b"GET /api/v1/broker HTTP/1.0\r\nAuthorization: " + AUTH + b"\r\n\r\n")
    assert r.status == 200, r
    long_auth = b"Basic " + b"QUFB" * 1000
    r = raw(broker.port, b"GET /api/v1/broker HTTP/1.1\r\nHost: x\r\nAuthorization: " +
            long_auth + b"\r\n\r\n")
    assert r.status == 401, r


def test_hostile_many_concurrent_requests(broker):
    c = h.client(broker.tcp, "steady", username="bob", password="builder")
    c.subscribe([("load/#", 1)])
    paths = ["/api/v1/clients", "/api/v1/broker", "/api/v1/retained",
             "/api/v1/subscriptions?filter=load/x", "/api/v1/clients/steady"]
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        futs = [ex.submit(api, broker.port, "GET", paths[i % len(paths)]) for i in range(400)]
        futs += [ex.submit(api, broker.port, "POST", "/api/v1/publish",
                           body={"topic": f"load/{i}", "payload": str(i), "qos": 1})
                 for i in range(100)]
        statuses = [f.result().status for f in futs]
    assert statuses == [200] * 500, statuses
    got = sorted(int(c.recv_publish().payload) for _ in range(100))
    assert got == list(range(100))
    c.ping()
    c.close()
