#!/usr/bin/env python3
"""A cs.packetstream 20240630 client built on the real `PacketConnection`.

Usage: ps_client.py --port PORT [--timeout SECS]

Connects to 127.0.0.1:PORT, a server implementing the four user request types
(0 echo with response flags 0, 1 reverse with response flags 0, 2 always fails,
3 flags+1 and the payload length in ASCII), runs the checks below and prints one
line per check to stdout: `ok <name>` or `FAIL <name>: <reason>`. Then it leaves
`with conn` (the library sends ERQ and EOF) and checks that the server answered
with ERQ and EOF and that the library's receive loop ended.

Exit status: 0 if every check passed, 1 if any failed, 3 on the hard timeout
(default 60 s). Diagnostics and the library's log output go to stderr.
"""

import argparse
import logging
import os
import random
import socket
import sys
import threading
import time

from cs.packetstream import PacketConnection

from peer_common import make_log, start_watchdog

RESULT_TIMEOUT = 20.0


log = make_log("ps_client")


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def short(bs, n=32):
    bs = bytes(bs)
    if len(bs) <= n:
        return repr(bs)
    return "%r... (%d bytes)" % (bs[:n], len(bs))


# every submitted Result, so that unanswered ones can be cancelled before shutdown
SUBMITTED = []
TRACE = None  # the connection's Trace, set in main()


def submit(conn, rq_type, flags, payload):
    if TRACE.recv_loop_ended:
        raise CheckFailed("the connection's receive loop has already ended")
    R = conn.submit(rq_type, flags, payload)
    SUBMITTED.append(R)
    return R


def wait(R):
    """Await a request's `Result`: `(ok, flags, payload)`."""
    done = threading.Event()
    R.notify(lambda _R: done.set())
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not done.wait(0.05):
        # The library leaves requests submitted after its receive loop ended
        # pending forever; do not wait for them.
        if TRACE.recv_loop_ended and not done.wait(0.2):
            raise CheckFailed("no response and the receive loop ended (server closed?) (%s)" % R)
        if time.monotonic() > deadline:
            raise CheckFailed("no response within %s s (%s)" % (RESULT_TIMEOUT, R))
    return R()


def rq(conn, rq_type, flags, payload):
    return wait(submit(conn, rq_type, flags, payload))


def expect_result(got, ok, flags, payload):
    want = (ok, flags, payload)
    expect(
        tuple(got) == want,
        "expected (ok=%s, flags=%s, payload=%s), got (ok=%s, flags=%s, payload=%s)"
        % (ok, flags, short(payload), got[0], got[1], short(got[2])),
    )


def check_echo(conn):
    expect_result(rq(conn, 0, 0, b"hello"), True, 0, b"hello")


def check_reverse(conn):
    expect_result(rq(conn, 1, 0, b"abcdef"), True, 0, b"fedcba")


def check_fail(conn):
    ok, flags, payload = rq(conn, 2, 0, b"x")
    expect(ok is False, "expected ok=False, got ok=%r flags=%r payload=%s" % (ok, flags, short(payload)))
    expect(len(payload) > 0, "failure reason payload is empty")
    try:
        reason = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckFailed("failure reason is not UTF-8: %s (%s)" % (short(payload), e))
    log("fail reason: %r (flags %d)", reason, flags)


def check_flags_len(conn):
    expect_result(rq(conn, 3, 5, b"12345"), True, 6, b"5")


def check_empty_echo(conn):
    expect_result(rq(conn, 0, 0, b""), True, 0, b"")


def check_echo_flags(conn):
    # request flags are not echoed: rq 0 and rq 1 answer with response flags 0
    expect_result(rq(conn, 0, 7, b"flagged"), True, 0, b"flagged")
    expect_result(rq(conn, 1, 3, b"xy"), True, 0, b"yx")


def check_pipelined(conn):
    n = 100
    payloads = [("burst-%03d-" % i).encode() + bytes([i]) * (i % 17) for i in range(n)]
    results = [submit(conn, 0, 0, p) for p in payloads]  # all submitted before any await
    bad = []
    for i, (p, R) in enumerate(zip(payloads, results)):
        got = wait(R)
        if tuple(got) != (True, 0, p):
            bad.append("#%d expected %s got %r" % (i, short(p), (got[0], got[1], short(got[2]))))
    expect(not bad, "%d of %d mismatched: %s" % (len(bad), n, "; ".join(bad[:5])))


def check_large(conn):
    data = random.Random(1234).randbytes(1 << 20)
    ok, flags, payload = rq(conn, 0, 0, data)
    expect(ok is True and flags == 0, "expected ok=True flags=0, got ok=%r flags=%r" % (ok, flags))
    if payload != data:
        first = next((i for i in range(min(len(payload), len(data))) if payload[i] != data[i]),
                     min(len(payload), len(data)))
        raise CheckFailed("payload differs: got %d bytes, want %d, first difference at %d"
                          % (len(payload), len(data), first))


def check_big_flags(conn):
    expect_result(rq(conn, 3, 2 ** 40, b"ab"), True, 2 ** 40 + 1, b"2")


CHECKS = [
    ("echo", check_echo),
    ("reverse", check_reverse),
    ("fail", check_fail),
    ("flags_len", check_flags_len),
    ("empty_echo", check_empty_echo),
    ("echo_flags_zero", check_echo_flags),
    ("pipelined_100", check_pipelined),
    ("echo_1mib", check_large),
    ("big_flags", check_big_flags),
]


class Trace:
    """`trace_log` hook: records the library's receive-side markers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got_erq = False
        self.got_eof = False
        self.recv_loop_ended = False

    def __call__(self, msg, *a):
        with self.lock:
            if msg.startswith("==> ENDRQ"):
                self.got_erq = True
            elif msg.startswith("==> EOFDQ"):
                self.got_eof = True
            elif msg.startswith("::: END RECV LOOP"):
                self.recv_loop_ended = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    start_watchdog(args.timeout, log)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING,
        format="ps_client[lib] %(levelname)s %(threadName)s: %(message)s",
    )
    # Our result lines go to the real stdout; anything else printed there goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    failures = 0

    def report(name, err):
        nonlocal failures
        if err is None:
            out.write("ok %s\n" % name)
        else:
            failures += 1
            out.write("FAIL %s: %s\n" % (name, err))
        out.flush()

    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log("connected to 127.0.0.1:%d", args.port)
    recv_fd = os.dup(sock.fileno())  # the library closes the receive fd at shutdown
    sendf = sock.makefile("wb")
    global TRACE
    trace = TRACE = Trace()
    conn = PacketConnection((recv_fd, sendf), "ps_client", packet_grace=0, trace_log=trace)
    with conn:
        for name, fn in CHECKS:
            started = time.monotonic()
            try:
                fn(conn)
            except CheckFailed as e:
                report(name, str(e))
            except Exception as e:  # a library error is a failure too
                report(name, "%s: %s" % (type(e).__name__, e))
            else:
                report(name, None)
            log("%s took %.3f s", name, time.monotonic() - started)
        pending = [R for R in SUBMITTED if not R.ready]
        if pending:
            # unanswered requests keep the connection open; cancel them
            log("cancelling %d unanswered request(s)", len(pending))
            for R in pending:
                R.cancel()
        log("leaving `with conn` (sends ERQ, EOF)")
        closing = time.monotonic()
    # Shutdown joined the receive loop: it ended either at the server's EOF packet
    # or at end of stream.
    took = time.monotonic() - closing
    with trace.lock:
        err = []
        if not trace.got_erq:
            err.append("no ERQ packet from the server")
        if not trace.got_eof:
            err.append("no EOF packet from the server")
        if not trace.recv_loop_ended:
            err.append("receive loop did not end")
    report("clean_shutdown", "; ".join(err) if err else None)
    log("shutdown took %.3f s", took)
    try:
        sendf.close()
    except OSError:
        pass
    # After the server's EOF it should close the stream.
    sock.settimeout(5)
    try:
        rest = sock.recv(1)
        report("server_closed", None if rest == b"" else "unexpected bytes after EOF: %r" % rest)
    except OSError as e:
        report("server_closed", "%s: %s" % (type(e).__name__, e))
    sock.close()
    out.close()
    log("%d failure(s)", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
