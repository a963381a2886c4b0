"""conftest.py - pytest fixtures for midge's integration tests.

Every test gets its own broker(s) on ephemeral loopback ports. At teardown each broker
is stopped with SIGTERM and must exit 0 within 10 s with no sanitizer report; when a
test fails, the broker logs are attached to the report. A test marked with
midge_harness.needs() is skipped when those files are missing, or fails under ctest.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import midge_harness as h  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "midge_needs(paths, reason): files the test needs "
                            "(midge_harness.needs): skipped by hand, a failure under ctest")


def pytest_runtest_setup(item):
    h.check_needs(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for i, br in enumerate(getattr(item, "_midge_brokers", [])):
            rep.sections.append((f"broker {i} log ({' '.join(br.args)})", br.log()))


@pytest.fixture
def start_broker(request):
    """start_broker(conf=[lines], anonymous=True, args=None, ...) -> Broker."""
    brokers = []
    request.node._midge_brokers = brokers
    if not os.path.exists(h.MIDGE_BIN):
        pytest.fail(f"broker binary {h.MIDGE_BIN} not found (set MIDGE_BIN)")

    def start(*args, **kw):
        br = h.Broker(*args, **kw)
        brokers.append(br)
        return br

    yield start
    errors = []
    for br in brokers:
        try:
            br.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("broker shutdown check failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def broker(start_broker):
    """A broker with the default test configuration."""
    return start_broker()
