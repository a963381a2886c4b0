"""test_report.py - bench/report.py's verdicts on midge-bench's integrity counts.

report.py writes docs/benchmarks.md from compare.sh's raw results. What it says about
deliveries must come from the counts midge-bench's subscribers keep (lost, dup,
unexpected = misrouted, corrupt, foreign): a run with any of them non-zero (QoS 0 loss
aside, which the configuration allows) is flagged on the page and makes report.py exit 1
after writing it; a run that reported no counts is flagged and never counted as clean.
These tests feed it made-up results and read the page. Run by ctest (bench_report).
"""
import os
import subprocess
import sys

import pytest

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.py")
CLEAN = "lost=0 dup=0 reorder=0 unexpected=0 corrupt=0 foreign=0"


def result(qos=1, counts=CLEAN, status="ok", cpu=1.0, extra=""):
    return (f"RESULT mode=pubsub pubs=16 subs=16 topics=16 {extra}qos={qos} sent=1000 "
            f"received=1000 {counts} msgs_per_s=1000 broker_cpu_us_per_msg={cpu} "
            f"status={status}")


CONNS = "RESULT mode=conns requested=10 count=10 held=10 kib_per_conn=0.5 status=ok"


def run_report(tmp_path, rows, env_extra=None):
    """rows: (scenario, broker, rc, RESULT line), or (scenario, broker, rc, RESULT line,
    round). Returns (exit status, page, stderr)."""
    results = tmp_path / "results.tsv"
    results.write_text("".join(f"{r[0]}\t{r[1]}\t{r[4] if len(r) > 4 else 1}\t{r[2]}\t{r[3]}\n"
                               for r in rows))
    commands = tmp_path / "commands.txt"
    commands.write_text("".join(f"{sc}\tscenario {sc}\tmidge-bench ... --port PORT\n"
                                for sc in dict.fromkeys(r[0] for r in rows)))
    out = tmp_path / "benchmarks.md"
    env = dict(os.environ, RESULTS=str(results), COMMANDS=str(commands), OUT=str(out),
               ROUNDS="1", DURATION="1", WARMUP="0.5", SCALE_DURATION="1", SCALE_WARMUP="0.5",
               QUICK="1", FULL="0", ELAPSED="1", GIT_REV="test", NPROC="2", FD_LIMIT="1024",
               MOSQUITTO_WS="no", MIDGE_VERSION="midge test", MOSQUITTO_VERSION="mosquitto test",
               PINNING="", COMPARE_CMD="bench/compare.sh", COMPARE_CMD_EXPANDED="bench/compare.sh",
               PATH="/usr/bin:/bin")  # no gnuplot needed: the page is what is checked
    env.pop("GNUPLOT", None)
    env.pop("AB", None)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, REPORT], env=env, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, out.read_text() if out.exists() else "", p.stderr


def both(sc, midge_line, rc=0, mosq_line=None):
    return [(sc, "midge", rc, midge_line), (sc, "mosquitto", 0, mosq_line or result())]


def test_clean_runs_claim_no_loss_from_the_counts(tmp_path):
    rc, page, err = run_report(tmp_path, both("B", result()) + [("F", "midge", 0, CONNS),
                                                                  ("F", "mosquitto", 0, CONNS)])
    assert rc == 0, err
    assert "No run failed and no broker died." in page
    assert ("No message was lost, duplicated, misrouted or corrupted: over the 2 pubsub runs "
            "that reported their counts, the subscribers counted 0 lost, 0 duplicated, "
            "0 misrouted, 0 corrupt and 0 foreign messages.") in page


@pytest.mark.parametrize("counts,rc_bench,flag", [
    ("lost=0 dup=0 reorder=0 unexpected=0 corrupt=1 foreign=0", 6, "1 corrupt message(s)"),
    ("lost=0 dup=0 reorder=0 unexpected=3 corrupt=0 foreign=0", 6, "3 misrouted message(s)"),
    ("lost=0 dup=0 reorder=0 unexpected=0 corrupt=0 foreign=2", 0, "2 foreign message(s)"),
    ("lost=4 dup=0 reorder=0 unexpected=0 corrupt=0 foreign=0", 6,
     "QoS 1 guarantee broken**: lost 4, duplicated 0"),
    ("lost=0 dup=5 reorder=0 unexpected=0 corrupt=0 foreign=0", 6,
     "QoS 1 guarantee broken**: lost 0, duplicated 5"),
])
def test_a_nonzero_count_is_flagged_and_fails(tmp_path, counts, rc_bench, flag):
    status = "integrity" if rc_bench == 6 else "ok"
    rc, page, err = run_report(tmp_path, both("B", result(1, counts, status), rc_bench))
    assert rc == 1, f"report.py exit {rc} for {counts}"
    assert f"midge round 1: **{flag}" in page, page
    assert "No message was lost" not in page
    assert "integrity problems" in err and flag.replace("**", "") in err, err


def test_qos0_loss_is_noted_but_a_qos0_duplicate_fails(tmp_path):
    loss = "lost=7 dup=0 reorder=0 unexpected=0 corrupt=0 foreign=0"
    rc, page, err = run_report(tmp_path, both("A", result(0, loss), mosq_line=result(0)))
    assert rc == 0, err
    assert "midge round 1: QoS 0 loss: lost 7" in page
    assert "No message was lost" not in page
    assert "counted 7 lost, 0 duplicated" in page
    dup = "lost=0 dup=2 reorder=0 unexpected=0 corrupt=0 foreign=0"
    rc, page, err = run_report(tmp_path, both("A", result(0, dup), mosq_line=result(0)))
    assert rc == 1
    assert "midge round 1: **QoS 0 messages duplicated**: 2" in page


def test_integrity_exit_status_alone_is_not_success(tmp_path):
    rc, page, err = run_report(tmp_path, both("B", result(1, CLEAN, "integrity"), 6))
    assert rc == 1
    assert "**midge-bench reported an integrity failure** (exit 6, status=integrity)" in page


def test_a_run_without_counts_is_never_clean(tmp_path):
    rc, page, err = run_report(tmp_path, both("B", "RESULT status=error exit=5", 5))
    assert "midge round 1: the run failed (midge-bench exit 5)" in page
    assert "midge round 1: no message counts" in page
    assert "No message was lost" not in page
    assert "1 of 2 pubsub runs reported no message counts" in page
    # A RESULT line from before the foreign count existed is not clean either.
    old = "lost=0 dup=0 reorder=0 unexpected=0 corrupt=0"
    rc, page, err = run_report(tmp_path, both("B", result(1, old)))
    assert "midge round 1: no message counts" in page
    assert "No message was lost" not in page


MQTT5 = "mqtt=5 topic_alias=0 shared=1 "


def test_mqtt5_and_shared_rows_are_judged_by_the_same_counts(tmp_path):
    """A5, SH and F5 rows: the MQTT 5 and shared-subscription fields change nothing in the
    verdict; a shared run's loss (no member got the message) fails like any QoS 1 loss."""
    conns5 = CONNS.replace("mode=conns", "mode=conns mqtt=5")
    rows = (both("A5", result(0, extra=MQTT5), mosq_line=result(0, extra=MQTT5)) +
            both("SH", result(1, extra=MQTT5)) +
            [("F5", "midge", 0, conns5), ("F5", "mosquitto", 0, conns5)])
    rc, page, err = run_report(tmp_path, rows)
    assert rc == 0, err
    assert "## MQTT 5 clients (issue 13)" in page
    assert "No message was lost, duplicated, misrouted or corrupted: over the 4 pubsub runs" in page
    assert "F5" in page and "no message counts" not in page
    lost = "lost=3 dup=0 reorder=0 unexpected=0 corrupt=0 foreign=0"
    rc, page, err = run_report(tmp_path, both("SH", result(1, lost, "integrity", extra=MQTT5), 6))
    assert rc == 1
    assert "midge round 1: **QoS 1 guarantee broken**: lost 3, duplicated 0" in page


def test_mqtt5_rows_give_each_broker_its_ratio_to_its_own_31_row(tmp_path):
    rows = (both("A", result(0, cpu=0.2), mosq_line=result(0, cpu=20)) +
            both("A5", result(0, cpu=0.22, extra=MQTT5), mosq_line=result(0, cpu=30, extra=MQTT5)))
    rc, page, err = run_report(tmp_path, rows)
    assert rc == 0, err
    assert "| A5 | CPU µs/msg | 30.000 | 0.220 | 0.007 | 1.50 | 1.10 |" in page, page


def ab_rows(sc, before, after, line=lambda cpu: result(1, cpu=cpu)):
    """A/B rows: (before, after) figures per round."""
    rows = []
    for rnd, (b, a) in enumerate(zip(before, after), 1):
        rows += [(sc, "before", 0, line(b), rnd), (sc, "midge", 0, line(a), rnd)]
    return rows


AB_ENV = {"AB": "1", "AB_REV": "911bbc2", "AB_VERSION": "midge old", "ROUNDS": "3"}


def test_ab_section_says_new_over_old_and_keeps_the_page(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nthe rest of the page\n\n<!-- persistence.py: begin -->\n"
                   "persistence\n<!-- persistence.py: end -->\n")
    conns = lambda kib: CONNS.replace("kib_per_conn=0.5", f"kib_per_conn={kib}")
    rows = (ab_rows("A", [1.0, 1.0, 1.0], [1.01, 0.98, 1.03]) +
            ab_rows("B", [1.0, 1.0, 1.0], [1.10, 1.08, 1.12]) +
            ab_rows("C", [1.0, 1.0, 1.0], [1.10, 1.00, 1.12]) +
            ab_rows("F", [0.356, 0.356, 0.356], [0.358, 0.357, 0.36], conns))
    rc, page, err = run_report(tmp_path, rows, AB_ENV)
    assert rc == 0, err
    assert page.startswith("# Benchmarks\n\nthe rest of the page\n")
    assert page.index("<!-- compare.sh --ab: begin -->") < page.index(
        "<!-- persistence.py: begin -->")
    assert "## A/B: midge test against 911bbc2" in page
    assert "| A: scenario A | CPU µs/msg | 1.000 [1.000..1.000] | 1.010 [0.980..1.030] | " \
           "1.01 [0.98..1.03] | yes |" in page, page
    assert "| 1.10 [1.08..1.12] | **no**: slower in every round |" in page
    assert "| 1.10 [1.00..1.12] | **no** (median; not in every round) |" in page
    assert "| 1.01 [1.00..1.01] | yes; ≤ 0.40 KiB: yes |" in page
    # A second A/B run replaces the section; a midge-vs-Mosquitto run keeps it.
    rc, page, err = run_report(tmp_path, ab_rows("A", [1.0], [1.0]), AB_ENV)
    assert page.count("<!-- compare.sh --ab: begin -->") == 1 and "| B: scenario B" not in page
    rc, page, err = run_report(tmp_path, both("A", result(0), mosq_line=result(0)))
    assert rc == 0, err
    assert "# Benchmarks: midge vs Mosquitto" in page
    assert page.count("## A/B: midge test against 911bbc2") == 1
    assert page.index("<!-- compare.sh --ab: end -->") < page.index(
        "<!-- persistence.py: begin -->")


def test_ab_integrity_problems_fail(tmp_path):
    dup = "lost=0 dup=1 reorder=0 unexpected=0 corrupt=0 foreign=0"
    rows = ab_rows("B", [1.0], [1.0], lambda cpu: result(1, dup, "integrity", cpu=cpu))
    rc, page, err = run_report(tmp_path, rows, AB_ENV)
    assert rc == 1
    assert "before round 1: **QoS 1 guarantee broken**: lost 0, duplicated 1" in page


TLS = "tls=1 "
TLS_CONNS = ("RESULT mode=conns mqtt=4 requested=10 count=10 held=10 kib_per_conn={kib} "
             "broker_cpu_us_per_conn={cpu} tls=1 tls_handshakes=10 tls_resumed=0 hs_secs=0.01 "
             "status=ok")


def test_tls_and_mqtt5_rows_on_one_page(tmp_path):
    """Issue 17's TLS rows and issue 13's MQTT 5 rows in one run: both sections, each row
    against its own base row of the same round (TA against A, A5 against A)."""
    rows = (both("A", result(0, cpu=0.2), mosq_line=result(0, cpu=20)) +
            both("A5", result(0, cpu=0.22, extra=MQTT5), mosq_line=result(0, cpu=30, extra=MQTT5)) +
            both("TA", result(0, cpu=0.25, extra=TLS), mosq_line=result(0, cpu=25, extra=TLS)) +
            [("TF", "midge", 0, TLS_CONNS.format(kib=1.0, cpu=900)),
             ("TF", "mosquitto", 0, TLS_CONNS.format(kib=16.0, cpu=1000))])
    rc, page, err = run_report(tmp_path, rows)
    assert rc == 0, err
    assert "## MQTT 5 clients (issue 13)" in page and "## TLS (issue 17)" in page
    assert "| A5 | CPU µs/msg | 30.000 | 0.220 | 0.007 | 1.50 | 1.10 |" in page, page
    assert "| TA: scenario TA | CPU µs/msg | 25.000 | 0.250 | 1.25 × midge A; 0.010 × " \
           "Mosquitto |" in page, page
    assert "| TF: scenario TF | KiB per connection | 16.000 | 1.000 | 0.062 |" in page, page
    assert "No message was lost, duplicated, misrouted or corrupted: over the 6 pubsub runs" \
        in page


def test_ab_tls_rows_use_their_own_figure(tmp_path):
    """compare.sh --ab with TLS rows named in SCENARIOS: a handshake row is compared on CPU
    per handshake, not on a per-message figure it does not have."""
    line = lambda cpu: TLS_CONNS.format(kib=1.0, cpu=cpu)
    rows = ab_rows("TH", [1000, 1000], [900, 950], line)
    rc, page, err = run_report(tmp_path, rows, dict(AB_ENV, ROUNDS="2"))
    assert rc == 0, err
    assert "| TH: scenario TH | CPU µs per handshake | 1,000.0 [1,000.0..1,000.0] | " \
           "925.0 [900.0..950.0] | 0.93 [0.90..0.95] | yes | – |" in page, page


def test_tls12_rows_set_resumption_against_their_own_full_handshake(tmp_path):
    """TH12/THR12 (TLS 1.2 clients): THR12's "× midge" figure and its 0.3 target are against
    TH12 of the same round, not TH (a TLS 1.3 full handshake costs more, so a ratio against
    it would flatter TLS 1.2 resumption); both are handshake rows, judged per handshake."""
    line = lambda cpu, resumed=0: TLS_CONNS.format(kib=1.0, cpu=cpu).replace(
        "tls_resumed=0", f"tls_resumed={resumed}")
    rows = []
    for sc, mosq, midge, resumed in (("TH", 1100, 1000, 0), ("THR", 700, 450, 10),
                                     ("TH12", 900, 800, 0), ("THR12", 400, 200, 10)):
        rows += [(sc, "midge", 0, line(midge, resumed)), (sc, "mosquitto", 0, line(mosq, resumed))]
    rc, page, err = run_report(tmp_path, rows)
    assert rc == 0, err
    assert "| TH12: scenario TH12 | CPU µs per handshake | 900.0 | 800.0 | 0.89 | ≤ 0.9 × | " \
           "yes | |" in page, page
    # 200 / 800 (TH12), not 200 / 1000 (TH); THR stays against TH.
    assert "| THR12: scenario THR12 | CPU µs per handshake | 400.0 | 200.0 | 0.25 × midge " \
           "TH12; 0.50 × Mosquitto | ≤ 0.3 × midge's full TLS 1.2 handshake (TH12) | yes | |" \
        in page, page
    assert "| THR: scenario THR | CPU µs per handshake | 700.0 | 450.0 | 0.45 × midge TH; " \
           "0.64 × Mosquitto | ≤ 0.3 × midge's full handshake (TH) | **no** | |" in page, page
    assert "| broker CPU µs per handshake | 400.0 | 200.0 | 0.50 |" in page
    assert "no message counts" not in page and "No run failed and no broker died." in page
    # Above 0.3 × TH12, THR12 misses its target.
    rows[-2:] = [("THR12", "midge", 0, line(300, 10)), ("THR12", "mosquitto", 0, line(400, 10))]
    rc, page, err = run_report(tmp_path, rows)
    assert "| 0.38 × midge TH12; 0.75 × Mosquitto | ≤ 0.3 × midge's full TLS 1.2 handshake " \
           "(TH12) | **no** | |" in page, page
