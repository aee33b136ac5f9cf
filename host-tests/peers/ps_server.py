#!/usr/bin/env python3
"""A cs.packetstream 20240630 server built on the real `PacketConnection`.

Usage: ps_server.py --port PORT [--connections N] [--close-first] [--timeout SECS]

Binds 127.0.0.1:PORT (0 = any free port) and prints exactly one line
`listening <port>` to stdout once listening. Everything else (our diagnostics and
the library's log output) goes to stderr.

Request handler, by user rq_type (the library subtracts the wire +1):
  0  echo the payload (response flags 0). A payload starting with b"slow:" sleeps
     0.5 s first, so later requests overtake it (handlers run on a 4-thread pool).
  1  the payload reversed (response flags 0)
  2  always fails: raises, so the library answers "exception during handler"
  3  response flags = request flags + 1, payload = len(request payload) in ASCII
  other: raises (failure response)

Serves N connections (default 1) one after another. Each is served until the
peer's EOF packet or end of stream; then leaving `with conn` makes the library
send ERQ then EOF, and the socket is closed. With --close-first the server starts
that shutdown itself as soon as the first response of the connection has been
queued (the response is written before the ERQ), then waits for the peer's EOF
(or end of stream) as the library does. Exits 0 when done; a hard timeout
(default 60 s) makes it exit 3.
"""

import argparse
import logging
import os
import socket
import sys
import threading
import time

from cs.packetstream import PacketConnection

from peer_common import make_log, start_watchdog


log = make_log("ps_server")


def handler(rq_type, flags, payload):
    if rq_type == 0:
        if payload.startswith(b"slow:"):
            time.sleep(0.5)
        return payload
    if rq_type == 1:
        return payload[::-1]
    if rq_type == 2:
        raise ValueError("rq_type 2 always fails")
    if rq_type == 3:
        return (flags + 1, str(len(payload)).encode("ascii"))
    raise ValueError("unknown rq_type %d" % rq_type)


class HookedConnection(PacketConnection):
    """A `PacketConnection` that signals when its first response is queued."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.first_response_queued = threading.Event()
        self.responses = 0

    def _respond(self, channel, tag, flags, payload):
        super()._respond(channel, tag, flags, payload)
        self.responses += 1
        self.first_response_queued.set()

    def _reject(self, channel, tag, payload=b""):
        super()._reject(channel, tag, payload)
        self.responses += 1
        self.first_response_queued.set()


def serve_one(sock, index, close_first):
    # The library closes the receive fd when it shuts down, so give it a dup of
    # the socket's fd; the send side is a buffered file the library does not close.
    recv_fd = os.dup(sock.fileno())
    sendf = sock.makefile("wb")
    conn = HookedConnection(
        (recv_fd, sendf),
        "ps_server-%d" % index,
        request_handler=handler,
        packet_grace=0,
    )
    started = time.monotonic()
    with conn:
        if close_first:
            conn.first_response_queued.wait()
            log("connection %d: first response queued; closing first", index)
        else:
            conn.join_recv()
            log("connection %d: peer finished (EOF packet or end of stream)", index)
    # leaving `with conn` queued ERQ, wrote EOF, flushed, and joined the receive loop
    log(
        "connection %d: shut down after %.3f s, %d responses sent",
        index, time.monotonic() - started, conn.responses,
    )
    try:
        sendf.close()
    except OSError as e:
        log("connection %d: closing send file: %s", index, e)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--close-first", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    start_watchdog(args.timeout, log)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING,
        format="ps_server[lib] %(levelname)s %(threadName)s: %(message)s",
    )

    # Keep the real stdout for the one `listening` line; anything else printed to
    # stdout (e.g. by the library) goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    out.write("listening %d\n" % port)
    out.flush()
    log("listening on 127.0.0.1:%d for %d connection(s)%s",
        port, args.connections, " (close-first)" if args.close_first else "")

    for i in range(args.connections):
        sock, peer = lsock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log("connection %d from %s:%d", i, peer[0], peer[1])
        serve_one(sock, i, args.close_first)
    lsock.close()
    log("done, served %d connection(s)", args.connections)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
