#!/usr/bin/env python3
"""Raw-socket checks of a cs.packetstream server's shutdown and rejections.

Standard library only (no cs import); written from the wire notes in
shared/reference/peers.md section 1.

Usage: ps_raw_shutdown.py --port PORT [--after-erq | --bad-channel] [--timeout SECS]

default        C>S echo request tag 2 "hello"      08 02 02 01 68656c6c6f
               S>C ok response                     07 02 04 68656c6c6f
               C>S ERQ, EOF                        03 01 02 00 03 00 02 00
               S>C ERQ, EOF, then end of stream    03 01 02 00 03 00 02 00
--after-erq    C>S ERQ, then echo request tag 3    03 01 02 00 / 08 03 02 01 68656c6c6f
               S>C failure for tag 3               1c 03 00 "requests no longer allowed"
               C>S EOF; S>C ERQ, EOF, end of stream
--bad-channel  C>S request tag 2 on channel 5      09 02 03 05 01 68656c6c6f
               S>C failure on channel 5, tag 2     <len> 02 01 05 "unknown channel..."
               C>S ERQ, EOF; S>C ERQ, EOF, end of stream

Each read must complete within 5 s. Prints `ok <mode>` to stdout on success;
exits 1 on a mismatch with hex dumps of expected vs got on stderr, 3 on the hard
timeout (default 60 s).
"""

import argparse
import socket
import sys
import time

from peer_common import make_log, start_watchdog

READ_TIMEOUT = 5.0

ERQ = bytes.fromhex("03010200")
EOF = bytes.fromhex("03000200")


log = make_log("ps_raw_shutdown")


class Mismatch(Exception):
    pass


def hexs(bs):
    return bs.hex(" ") if bs else "(nothing)"


# --- minimal codec from peers.md -------------------------------------------------

def bsuint(n):
    """BSUInt: big-endian 7-bit groups, 0x80 on every byte but the last."""
    groups = [n & 0x7F]
    n >>= 7
    while n:
        groups.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(groups))


def packet(tag, is_request, flags=0, channel=0, wire_rq_type=None, payload=b""):
    fw = (0x01 if channel else 0) | (0x02 if is_request else 0) | (flags << 2)
    body = bsuint(tag) + bsuint(fw)
    if channel:
        body += bsuint(channel)
    if is_request:
        body += bsuint(wire_rq_type)
    body += payload
    return bsuint(len(body)) + body


def parse_uint(bs, i):
    n = 0
    while True:
        if i >= len(bs):
            raise ValueError("truncated BSUInt")
        b = bs[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i


def describe(pkt):
    """Decode one whole packet (with its length prefix) for diagnostics."""
    try:
        length, i = parse_uint(pkt, 0)
        body = pkt[i:i + length]
        tag, j = parse_uint(body, 0)
        fw, j = parse_uint(body, j)
        channel = 0
        if fw & 1:
            channel, j = parse_uint(body, j)
        rq = None
        if fw & 2:
            rq, j = parse_uint(body, j)
        return "len=%d tag=%d request=%s flags=%d channel=%d rq_type=%s payload=%r" % (
            length, tag, bool(fw & 2), fw >> 2, channel, rq, bytes(body[j:]))
    except ValueError as e:
        return "undecodable (%s)" % e


# --- socket helpers ----------------------------------------------------------------

class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False

    def send(self, what, bs):
        log("C>S %-22s %s", what, hexs(bs))
        self.sock.sendall(bs)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
        self.buf += chunk

    def expect_exact(self, what, want):
        """Read exactly len(want) bytes (5 s) and compare."""
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while len(self.buf) < len(want) and not self.closed:
                self._fill(deadline)
        except socket.timeout:
            pass
        except OSError as e:
            log("read error: %s", e)
        got, self.buf = self.buf[:len(want)], self.buf[len(want):]
        log("S>C %-22s %s", what, hexs(got))
        if got != want:
            raise Mismatch("%s:\n  expected %s\n  got      %s%s" % (
                what, hexs(want), hexs(got),
                " (then end of stream)" if self.closed else
                " (timed out after %s s)" % READ_TIMEOUT if len(got) < len(want) else ""))

    def read_packet(self, what):
        """Read one whole packet (length prefix + body) within 5 s."""
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while True:
                try:
                    length, i = parse_uint(self.buf, 0)
                    if len(self.buf) >= i + length:
                        pkt, self.buf = self.buf[:i + length], self.buf[i + length:]
                        log("S>C %-22s %s", what, hexs(pkt))
                        return pkt
                except ValueError:
                    pass
                if self.closed:
                    break
                self._fill(deadline)
        except socket.timeout:
            pass
        raise Mismatch("%s: no whole packet; got %s%s" % (
            what, hexs(self.buf), " then end of stream" if self.closed else
            " then nothing for %s s" % READ_TIMEOUT))

    def expect_end_of_stream(self):
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            while not self.closed:
                self._fill(deadline)
        except socket.timeout:
            raise Mismatch("server did not close the stream within %s s after its EOF; "
                           "extra bytes: %s" % (READ_TIMEOUT, hexs(self.buf)))
        except ConnectionResetError:
            log("connection reset by server (treated as closed)")
            self.closed = True
        if self.buf:
            raise Mismatch("unexpected bytes after the server's EOF: %s" % hexs(self.buf))
        log("S>C end of stream")


def expect_shutdown_reply(c):
    c.expect_exact("ERQ, EOF", ERQ + EOF)
    c.expect_end_of_stream()


def mode_default(c):
    c.send("echo tag 2 'hello'", bytes.fromhex("0802020168656c6c6f"))
    c.expect_exact("ok response tag 2", bytes.fromhex("07020468656c6c6f"))
    c.send("ERQ, EOF", ERQ + EOF)
    expect_shutdown_reply(c)


def mode_after_erq(c):
    c.send("ERQ", ERQ)
    c.send("echo tag 3 'hello'", packet(3, True, wire_rq_type=1, payload=b"hello"))
    want = packet(3, False, flags=0, payload=b"requests no longer allowed")
    c.expect_exact("failure tag 3", want)
    c.send("EOF", EOF)
    expect_shutdown_reply(c)


def mode_bad_channel(c):
    req = packet(2, True, channel=5, wire_rq_type=1, payload=b"hello")
    assert req == bytes.fromhex("090203050168656c6c6f"), req.hex()
    c.send("echo ch 5 tag 2", req)
    got = c.read_packet("failure ch 5 tag 2")
    prefix = bytes.fromhex("020105")  # tag 2, flagword has_channel (not ok, not a request), channel 5
    length, i = parse_uint(got, 0)
    body = got[i:]
    reason = body[len(prefix):]
    if not (body.startswith(prefix) and reason.startswith(b"unknown channel")):
        raise Mismatch("failure ch 5 tag 2:\n  expected <len> %s %s...\n  got      %s\n  decoded  %s"
                       % (hexs(prefix), hexs(b"unknown channel"), hexs(got), describe(got)))
    log("reason: %r", reason.decode("utf-8", "replace"))
    c.send("ERQ, EOF", ERQ + EOF)
    expect_shutdown_reply(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--after-erq", action="store_true")
    g.add_argument("--bad-channel", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    start_watchdog(args.timeout, log)
    if args.after_erq:
        name, fn = "after_erq", mode_after_erq
    elif args.bad_channel:
        name, fn = "bad_channel", mode_bad_channel
    else:
        name, fn = "shutdown", mode_default
    c = Conn(args.port)
    log("connected to 127.0.0.1:%d, mode %s", args.port, name)
    try:
        fn(c)
    except Mismatch as e:
        print("FAIL %s" % name, flush=True)
        log("FAIL %s: %s", name, e)
        return 1
    finally:
        c.sock.close()
    print("ok %s" % name, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
