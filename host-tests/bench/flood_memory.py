#!/usr/bin/env python3
"""Floods of silent connections against a running gateway, and its memory (docs/RELIABILITY.md,
"Memory after floods, and the allocator").

    rivulet gateway --listen 127.0.0.1:7798 &        # LD_PRELOAD=... to try another allocator
    python3 host-tests/bench/flood_memory.py 7798 [CONNECTIONS] [ROUNDS]

Each round opens CONNECTIONS TCP connections that send nothing, holds them 1.5 s, closes them,
and prints the gateway's RSS (MB) held and 1, 3, 6 and 12 s after. Raise `ulimit -n` first.
"""

import socket
import subprocess
import sys
import time


def main():
    port = int(sys.argv[1])
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    pid = subprocess.check_output(["pgrep", "-f", f"listen 127.0.0.1:{port}"]).split()[0].decode()

    def rss_mb():
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
        return int(line.split()[1]) // 1024

    print(f"at start: {rss_mb()} MB")
    for n in range(1, rounds + 1):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
        time.sleep(1.5)
        at_peak = rss_mb()
        for connection in held:
            connection.close()
        after, waited = [], 0
        for at in (1, 3, 6, 12):
            time.sleep(at - waited)
            waited = at
            after.append(f"{rss_mb()} MB at {at} s")
        print(f"round {n}: {connections} held {at_peak} MB; after: {', '.join(after)}")


if __name__ == "__main__":
    main()
