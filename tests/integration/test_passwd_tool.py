"""test_passwd_tool.py - midge-passwd: its command line, its files, and Mosquitto interop.

Runs the real tool (next to MIDGE_BIN) on files in a temporary directory and checks the
results byte for byte; hashes are re-derived here with hashlib, independently of midge.
Interoperability: files written by midge-passwd are given to the real /usr/sbin/mosquitto
on a free loopback port and tried with mosquitto_pub (the reverse direction, files from
mosquitto_passwd read by midge, is covered by tests/unit/test_passwd.c).
"""
import base64
import hashlib
import os
import pty
import pwd
import re
import select
import shutil
import socket
import stat
import subprocess
import time

import pytest

import midge_harness as h

TOOL = os.path.join(os.path.dirname(h.MIDGE_BIN), "midge-passwd")
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"

HASH_RE = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")

pytestmark = h.needs(TOOL, reason="midge-passwd not built")
needs_mosquitto = h.needs(MOSQUITTO, MOSQUITTO_PUB, MOSQUITTO_PASSWD,
                          reason="Debian packages mosquitto and mosquitto-clients")


def run(*args, input=None, rc=0):
    """Run midge-passwd; check its exit status and that no sanitizer spoke."""
    p = subprocess.run([TOOL, *args], input=input, capture_output=True, text=True,
                       timeout=h.scaled(30))
    assert not any(m in p.stderr for m in h.SANITIZER_MARKERS), p.stderr
    assert p.returncode == rc, f"rc {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}"
    return p


def entries(path):
    """user -> hash for every user line of a password file."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line and not line.startswith("#") and ":" in line:
                user, hsh = line.split(":", 1)
                out[user.strip()] = hsh.strip()
    return out


def verifies(hsh, password):
    """Re-derive a $7$ or $6$ hash with hashlib: the format Mosquitto defines."""
    parts = hsh.split("$")
    if parts[1] == "7":
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    else:
        salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
        got = hashlib.sha512(password.encode() + salt).digest()
    return got == want


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def pwfile(tmp_path):
    return str(tmp_path / "passwd")


# --------------------------------------------------------------------------------------
# Creating, updating, deleting
# --------------------------------------------------------------------------------------

def test_create_batch(pwfile):
    p = run("-b", "-c", pwfile, "alice", "correct horse")
    assert p.stdout == "" and p.stderr == ""
    with open(pwfile) as f:
        text = f.read()
    assert text.startswith("alice:") and text.endswith("\n") and text.count("\n") == 1
    hsh = entries(pwfile)["alice"]
    assert HASH_RE.match(hsh), hsh
    assert verifies(hsh, "correct horse")
    assert not verifies(hsh, "correct horsE")
    assert mode(pwfile) == 0o600


def test_create_overwrites(pwfile):
    with open(pwfile, "w") as f:
        f.write("old:$6$whatever\n# comment\n")
    os.chmod(pwfile, 0o644)
    run("-c", "-b", pwfile, "new", "pw")
    assert list(entries(pwfile)) == ["new"]
    assert mode(pwfile) == 0o600


def test_add_and_update_keep_other_lines(pwfile):
    run("-b", "-c", pwfile, "alice", "one")
    run("-b", pwfile, "bob", "two")
    with open(pwfile, "a") as f:
        f.write("# staff\n\ncarol:plain-for-now\r\n")
    with open(pwfile) as f:
        before = f.read().splitlines(keepends=True)
    run("-b", pwfile, "alice", "uno")
    with open(pwfile) as f:
        after = f.read().splitlines(keepends=True)
    # Same lines in the same order; only alice's hash changed.
    assert len(after) == len(before)
    assert after[0] != before[0] and after[0].startswith("alice:")
    assert after[1:] == before[1:]
    e = entries(pwfile)
    assert verifies(e["alice"], "uno") and not verifies(e["alice"], "one")
    assert verifies(e["bob"], "two")
    # A new user is appended at the end.
    run("-b", pwfile, "dave", "four")
    with open(pwfile) as f:
        lines = f.read().splitlines()
    assert lines[-1].startswith("dave:") and verifies(entries(pwfile)["dave"], "four")


def test_update_collapses_duplicates(pwfile):
    with open(pwfile, "w") as f:
        f.write("alice:a\nbob:b\nalice:c\n")
    run("-b", pwfile, "alice", "new")
    with open(pwfile) as f:
        lines = f.read().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["alice", "bob"]
    assert verifies(entries(pwfile)["alice"], "new")


def test_delete(pwfile):
    run("-b", "-c", pwfile, "alice", "one")
    run("-b", pwfile, "bob", "two")
    run("-D", pwfile, "alice")
    assert list(entries(pwfile)) == ["bob"]
    with open(pwfile, "rb") as f:
        before = f.read()
    ino = os.stat(pwfile).st_ino
    p = run("-D", pwfile, "zed", rc=1)
    assert p.stderr == "Warning: User zed not found in password file.\n"
    with open(pwfile, "rb") as f:
        assert f.read() == before
    assert os.stat(pwfile).st_ino == ino


def test_upgrade_plain_text(pwfile):
    run("-b", "-c", pwfile, "hashed", "already")
    kept = entries(pwfile)["hashed"]
    with open(pwfile, "a") as f:
        f.write("# plain-text users follow\nu1:first\r\n  u2 :  spaced out  \n")
    run("-U", pwfile)
    with open(pwfile) as f:
        lines = f.read().splitlines()
    assert lines[1] == "# plain-text users follow"
    e = entries(pwfile)
    assert e["hashed"] == kept  # a line that is already a hash is not hashed again
    assert HASH_RE.match(e["u1"]) and verifies(e["u1"], "first")
    # Like mosquitto_passwd, blanks around the user name and password are trimmed.
    assert HASH_RE.match(e["u2"]) and verifies(e["u2"], "spaced out")
    assert mode(pwfile) == 0o600


def test_corrupt_file_is_left_alone(pwfile):
    with open(pwfile, "w") as f:
        f.write("alice:pw\nno colon here\n")
    p = run("-b", pwfile, "bob", "x", rc=1)
    assert p.stderr == "Error: Corrupt password file at line 2.\n"
    run("-U", pwfile, rc=1)
    with open(pwfile) as f:
        assert f.read() == "alice:pw\nno colon here\n"


# --------------------------------------------------------------------------------------
# How the file is written
# --------------------------------------------------------------------------------------

def test_atomic_replace(tmp_path, pwfile):
    run("-b", "-c", pwfile, "alice", "one")
    for args in (("-b", pwfile, "bob", "two"), ("-D", pwfile, "bob"), ("-U", pwfile),
                 ("-b", "-c", pwfile, "carol", "three")):
        ino = os.stat(pwfile).st_ino
        os.chmod(pwfile, 0o644)
        run(*args)
        # A new inode means the file was renamed into place, never rewritten in place.
        assert os.stat(pwfile).st_ino != ino, args
        assert mode(pwfile) == 0o600, args
        assert os.listdir(tmp_path) == ["passwd"], args  # no temp file left behind


def test_failed_rename_leaves_no_temp(tmp_path):
    """The last step fails (the target is a directory): the temp file must go too."""
    target = tmp_path / "adir"
    target.mkdir()
    (target / "inside").write_text("x")
    p = run("-b", "-c", str(target), "alice", "one", rc=1)
    assert p.stderr.startswith(f"Error: Unable to replace password file {target}:"), p.stderr
    assert os.listdir(tmp_path) == ["adir"]


def test_unwritable_directory_leaves_file_alone(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    path = str(d / "passwd")
    run("-b", "-c", path, "alice", "one")
    os.chmod(d, 0o500)
    try:
        if os.access(d, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        p = run("-b", path, "bob", "two", rc=1)
        assert p.stderr.startswith(f"Error: Unable to open file {path} for writing."), p.stderr
    finally:
        os.chmod(d, 0o700)
    assert os.listdir(d) == ["passwd"]
    assert list(entries(path)) == ["alice"]


def test_owner_is_kept(pwfile):
    """root editing the broker's file must not take it away from the broker."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the file to another user")
    run("-b", "-c", pwfile, "alice", "one")
    os.chown(pwfile, 65534, 65534)  # nobody:nogroup
    run("-b", pwfile, "bob", "two")
    st = os.stat(pwfile)
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert mode(pwfile) == 0o600


def test_symlink_target_is_updated(tmp_path):
    target = tmp_path / "real"
    link = tmp_path / "link"
    run("-b", "-c", str(target), "alice", "one")
    link.symlink_to(target)
    run("-b", str(link), "bob", "two")
    assert link.is_symlink()
    assert sorted(entries(str(target))) == ["alice", "bob"]


# --------------------------------------------------------------------------------------
# Password input
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stdin,ok", [
    ("s3cret\ns3cret\n", True),
    ("s3cret\n", True),          # one line from a script is enough
    ("s3cret", True),            # even without its newline
    ("s3cret\r\ns3cret\r\n", True),
    ("s3cret\nother\n", False),
    ("", False),
    ("\n\n", False),
])
def test_password_from_stdin(pwfile, stdin, ok):
    p = run("-c", pwfile, "alice", input=stdin, rc=0 if ok else 1)
    if ok:
        assert verifies(entries(pwfile)["alice"], "s3cret")
        assert p.stdout == ""  # no prompts when stdin is not a terminal
    else:
        assert p.stderr in ("Error: Passwords do not match.\n", "Error: Empty password.\n")
        assert not os.path.exists(pwfile)


def test_password_from_terminal_without_echo(pwfile):
    """Prompts twice on a pseudo-terminal; what is typed is never echoed back."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(TOOL, [TOOL, "-c", pwfile, "alice"])
    out = b""

    def read_until(marker):
        nonlocal out
        deadline = time.monotonic() + h.scaled(10)
        while marker not in out:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            assert r, f"no {marker!r} in {out!r}"
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                chunk = b""
            assert chunk, f"EOF before {marker!r}: {out!r}"
            out += chunk

    try:
        read_until(b"Password: ")
        os.write(fd, b"tty-secret\n")
        read_until(b"Reenter password: ")
        os.write(fd, b"tty-secret\n")
        _, status = os.waitpid(pid, 0)
        try:
            while True:
                chunk = os.read(fd, 1024)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"tty-secret" not in out
    assert verifies(entries(pwfile)["alice"], "tty-secret")


# --------------------------------------------------------------------------------------
# Usage errors
# --------------------------------------------------------------------------------------

def test_help():
    p = run("-h")
    assert p.stdout.startswith("midge-passwd is a tool for managing password files")
    assert "Usage: midge-passwd [-H sha512-pbkdf2] [-c | -D] passwordfile username" in p.stdout


@pytest.mark.parametrize("args,message", [
    ((), "Usage: midge-passwd"),
    (("-c", "-D", "f", "u"), "Error: -c and -D cannot be used together.\n"),
    (("-c", "-U", "f"), "Error: -c and -U cannot be used together.\n"),
    (("-D", "-U", "f"), "Error: -D and -U cannot be used together.\n"),
    (("-b", "-D", "f", "u"), "Error: -b and -D cannot be used together.\n"),
    (("-c", "f"), "Error: -c argument given but password file or username missing.\n"),
    (("-c", "-b", "f", "u"),
     "Error: -c argument given but password file, username, or password missing.\n"),
    (("-D", "f"), "Error: -D argument given but password file or username missing.\n"),
    (("-U",), "Error: -U argument given but password file missing.\n"),
    (("-b", "f", "u"), "Usage: midge-passwd"),
    (("f", "u", "extra"), "Usage: midge-passwd"),
    (("-H",), "Error: -H argument given but not enough other arguments.\n"),
    (("-H", "sha512", "-b", "f", "u", "p"), "Error: -H sha512 is not supported"),
    (("-H", "md5", "-b", "f", "u", "p"), "Error: Unknown hash type 'md5'\n"),
    (("-x", "f", "u"), "Error: Unknown option '-x'."),
    (("-b", "-c", "f", "a:b", "p"), "Error: Username must not contain the ':' character.\n"),
    (("-b", "-c", "f", "a\tb", "p"), "Error: Username must not contain control characters.\n"),
    (("-b", "-c", "f", "", "p"), "Error: Username must not be empty.\n"),
    (("-b", "-c", "f", "u", ""), "Error: Empty password.\n"),
    (("-b", "-c", "f", "u", "x" * 65536),
     "Error: Password must be less than 65536 characters long.\n"),
])
def test_usage_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    p = run(*args, rc=1)
    assert p.stderr.startswith(message) or message in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []  # nothing created


def test_missing_file(tmp_path):
    p = run("-b", str(tmp_path / "nope"), "u", "p", rc=1)
    assert p.stderr == f"Error: Unable to open password file {tmp_path / 'nope'}. " \
                       "No such file or directory.\n"
    run("-U", str(tmp_path / "nope"), rc=1)
    run("-D", str(tmp_path / "nope"), "u", rc=1)
    p = run("-b", "-c", str(tmp_path / "no" / "dir"), "u", "p", rc=1)
    assert p.stderr.startswith("Error: Unable to open file")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------
# Interoperability with the real Mosquitto
# --------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """/usr/sbin/mosquitto with a password file on a free loopback port."""

    def __init__(self, tmp_path, password_file):
        self.port = free_port()
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\n"
                        f"password_file {password_file}\n"
                        "allow_anonymous false\n"
                        # When run as root it would switch to user mosquitto, which cannot
                        # read a 0600 file owned by us.
                        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                        "log_dest stderr\n")
        self.log = open(tmp_path / "mosquitto.log", "w+")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + h.scaled(10)
        while True:
            assert self.proc.poll() is None, f"mosquitto exited: {self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"mosquitto not listening: {self.output()}"
                time.sleep(0.05)

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def pub(self, user, password):
        """mosquitto_pub as user/password; returns (exit status, stderr)."""
        p = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port),
                            "-V", "mqttv311", "-u", user, "-P", password, "-t", "t", "-m", "m"],
                           capture_output=True, text=True, timeout=h.scaled(15))
        return p.returncode, p.stderr

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def mosquitto(tmp_path):
    started = []

    def start(password_file):
        m = Mosquitto(tmp_path, password_file)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def assert_accepted(m, user, password):
    rc, err = m.pub(user, password)
    assert rc == 0, f"{user}: rc {rc}, {err}; mosquitto log:\n{m.output()}"


def assert_refused(m, user, password):
    rc, err = m.pub(user, password)
    assert rc != 0 and "not authorised" in err, f"{user}: rc {rc}, {err}"


@needs_mosquitto
def test_mosquitto_accepts_midge_file(tmp_path, pwfile, mosquitto):
    run("-b", "-c", pwfile, "alice", "correct horse")
    run("-b", pwfile, "bob", "p@ss w0rd:$x")
    run("-c", pwfile + "2", "x", input="y\ny\n")  # the prompt path writes the same format
    with open(pwfile, "a") as f, open(pwfile + "2") as g:
        f.write(g.read())
    with open(pwfile, "a") as f:
        f.write("carol:plain\n")
    run("-U", pwfile)
    m = mosquitto(pwfile)
    assert_accepted(m, "alice", "correct horse")
    assert_accepted(m, "bob", "p@ss w0rd:$x")
    assert_accepted(m, "carol", "plain")
    assert_accepted(m, "x", "y")
    assert_refused(m, "alice", "correct horsE")
    assert_refused(m, "alice", "")
    assert_refused(m, "bob", "correct horse")
    assert_refused(m, "nobody", "correct horse")


@needs_mosquitto
def test_midge_edits_mosquitto_file(tmp_path, pwfile, mosquitto):
    """A file made by mosquitto_passwd, then edited by midge-passwd, still works in Mosquitto."""
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", pwfile, "alice", "from-mosquitto"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-H", "sha512", "-b", pwfile, "old", "sha512-user"],
                   check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-b", pwfile, "gone", "x"], check=True)
    run("-b", pwfile, "bob", "from-midge")
    run("-D", pwfile, "gone")
    run("-U", pwfile)  # must not re-hash the existing hashes
    e = entries(pwfile)
    assert e["old"].startswith("$6$") and verifies(e["old"], "sha512-user")
    assert verifies(e["alice"], "from-mosquitto")
    m = mosquitto(pwfile)
    assert_accepted(m, "alice", "from-mosquitto")
    assert_accepted(m, "old", "sha512-user")
    assert_accepted(m, "bob", "from-midge")
    assert_refused(m, "gone", "x")
    assert_refused(m, "bob", "from-mosquitto")
