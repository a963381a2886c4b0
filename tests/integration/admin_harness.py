"""admin_harness.py - a broker with the admin API on, and an HTTP client for it.

AdminBroker starts the real binary with a `protocol websockets` listener (where /api/ is
served) and a plain MQTT one, a password file of users and passwords, and `admin_user`
lines. api() makes one HTTP request with http.client (or raw() sends bytes as they are) and
returns the status, the headers and the decoded JSON. Shared by test_admin.py,
test_admin_hostile.py, test_admin_load.py and test_ctl.py.
"""
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import tempfile

import midge_harness as h


def passwd_line(user, password):
    """A Mosquitto $6$ password file line (sha512(password + salt))."""
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class AdminBroker(h.Broker):
    """midge with a websockets listener (self.port, the admin API) and an MQTT one
    (self.tcp). users: {name: password}; admins: the admin_user lines (None: none);
    acl: the text of an acl_file; conf: more lines (after the listeners)."""

    def __init__(self, users=None, admins=("alice",), acl=None, conf=(), anonymous=True,
                 ws_conf=()):
        self.secdir = tempfile.mkdtemp(prefix="midge-admin-")
        users = {"alice": "secret", "bob": "builder"} if users is None else users
        lines = ["listener 0 127.0.0.1", "protocol websockets", *ws_conf,
                 "listener 0 127.0.0.1"]
        if anonymous:
            lines.append("allow_anonymous true")
        self.passwd = os.path.join(self.secdir, "passwd")
        with open(self.passwd, "w") as f:
            f.write("".join(passwd_line(u, p) + "\n" for u, p in users.items()))
        lines.append(f"password_file {self.passwd}")
        if acl is not None:
            self.acl_path = os.path.join(self.secdir, "acl")
            with open(self.acl_path, "w") as f:
                f.write(acl)
            lines.append(f"acl_file {self.acl_path}")
        for a in admins or ():
            lines.append(f"admin_user {a}")
        lines.extend(conf)
        super().__init__(conf=lines, anonymous=False, listener=False)
        m = self.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(mqtt\)")
        self.tcp = int(m.group(1))


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def data(self):
        return self.json["data"]

    @property
    def message(self):
        return (self.json or {}).get("message", "")

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def api(port, method, path, auth=("alice", "secret"), body=None, headers=None, timeout=None):
    """One request to the admin API on port; body: a dict (sent as JSON), bytes or str."""
    hdrs = {"Connection": "close"}
    if auth:
        hdrs["Authorization"] = basic(*auth)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    hdrs.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or h.TIMEOUT)
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data.decode("utf-8"))
    finally:
        c.close()


def raw(port, data, timeout=None):
    """Send bytes as they are; return (status, headers, body) of the response, or None when
    the broker closed without one."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or h.TIMEOUT)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    if not out:
        return None
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(status, headers, body.decode("utf-8", "replace"))


def pages(port, path, limit=10, **kw):
    """Every entry of a paged listing, following the cursors; also the pages seen."""
    out, seen, cursor = [], 0, None
    sep = "&" if "?" in path else "?"
    while True:
        q = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = api(port, "GET", q, **kw)
        assert r.status == 200, r
        out.extend(r.data)
        seen += 1
        meta = r.json["meta"]
        if not meta["hasnext"]:
            assert meta["cursor"] is None, r
            return out, seen
        cursor = meta["cursor"]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), cursor


def many_clients(port, ids, username="bob", password="builder", keepalive=600):
    """Connect a raw MQTT 3.1.1 client per id (many more than select() can watch: the
    harness's MqttConn cannot be used past ~1000 sockets) and read each CONNACK. Returns the
    sockets; the caller closes them."""
    socks = []
    for cid in ids:
        s = socket.create_connection(("127.0.0.1", port), timeout=h.TIMEOUT)
        s.sendall(h.connect_pkt(cid, username=username, password=password, keepalive=keepalive))
        socks.append(s)
    for s in socks:
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            assert chunk, "closed before CONNACK"
            got += chunk
        assert got == b"\x20\x02\x00\x00", got
    return socks
