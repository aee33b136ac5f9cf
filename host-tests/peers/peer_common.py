"""What every peer script shares: stderr diagnostics and a hard timeout.

Scripts run as `python -u host-tests/peers/NAME.py`, so this directory is on sys.path.
"""

import os
import sys
import threading


def make_log(name):
    """A printf-style logger to stderr, prefixed with the script's name."""

    def log(msg, *a):
        sys.stderr.write(name + ": " + (msg % a if a else msg) + "\n")
        sys.stderr.flush()

    return log


def start_watchdog(seconds, log):
    """Exits the process with status 3 after `seconds`, whatever it is doing."""

    def expire():
        log("FAIL hard timeout of %s s expired; exiting 3", seconds)
        os._exit(3)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()
