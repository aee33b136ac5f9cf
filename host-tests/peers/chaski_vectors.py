"""Golden vectors for Rivulet's Chaski codec (core/src/chaski), from the real chaski-confluent
0.1a5 with the JSON codec of chaski_json.py: every command a node writes, framed by the node's
own `serialize_message` (`frame <name> <hex>`), UDP datagrams as `_send_udp_message` writes them
(`udp <name> <hex>`: status request and answer, `_get_status`), and data the codec refuses (`bad <name> <hex>`).

    python host-tests/peers/chaski_vectors.py > core/tests/data/chaski_vectors.txt

core/tests/chaski.rs reads every frame with our codec and must write the same bytes back (and
refuse every `bad`); host-tests/tests/chaski_vectors.rs checks this script still prints the
committed file. Fields are filled as chaski's own methods fill them (see each command's
`_process_*`), with fixed ids and times.
"""

import os
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chaski_json  # noqa: E402
from chaski.node import ChaskiNode, Message  # noqa: E402

node = ChaskiNode(name="node-a", port=8511, subscriptions=["topic1", "topic2"], run=False,
                  serializer=chaski_json.dumps, deserializer=chaski_json.loads)
T = datetime(2026, 12, 7, 16, 20, 1, 123456)
T0 = datetime(2026, 12, 7, 16, 20, 2)
U = "0b7e4a56-3c1f-4f0a-9d1e-2a6f3c7e8d90"


def message(command, data, topic="All", timestamp=T, ttl=64, uuid=U):
    return Message(command=command, topic=topic, data=data, timestamp=timestamp, ttl=ttl, uuid=uuid)


frames = [
    ("handshake", message("handshake", {"handshake_id": U, "response": True, "back_delay": 0})),
    ("handshake-back", message("handshake_back", {"name": "node-a", "ip": "127.0.0.1", "port": 8511,
                                                  "subscriptions": {"topic2", "topic1"}, "handshake_id": U})),
    ("report-paired", message("report_paired", {"subscription": "topic1", "paired": True})),
    ("ping", message("ping", {"ping_id": U, "latency_update": True, "dummy_data": bytes(range(7)), "size": 7})),
    ("pong", message("pong", {"source_timestamp": T0, "name": "node-b", "ip": "127.0.0.1", "port": 8512,
                              "subscriptions": set(), "ping_id": U, "latency_update": False, "dummy_data": b""})),
    ("discovery", message("discovery", {"origin_ip": "127.0.0.1", "origin_port": 8511, "origin_name": "node-a",
                                        "previous_node": "node-b", "visited": {"node-b", "node-a"}, "on_pair": "none",
                                        "root_ip": None, "root_port": None, "origin_subscription": "topic1",
                                        "ttl": 63})),
    ("push-bytes", message("ChaskiMessage", b"hello", topic="topic1")),
    ("push-object", message("ChaskiMessage", {"t": 21.5, "ok": False, "n": [1, -2, 3e-05], "k\u00e4se": "\U0001f600\n"},
                            topic="topic1", ttl=63)),
    ("push-text", message("ChaskiMessage", "plain \"text\"", topic="sensor/room1", timestamp=T0, ttl=1)),
    ("file-chunk", message("ChaskiFile", {"filename": "fw.bin", "chunk": b"\x00\x01\xfe\xff",
                                          "hash": "a" * 64, "data": {}, "chunk_size": 8192, "size": 4},
                           topic="topic1")),
    ("file-end", message("ChaskiFile", {"filename": "fw.bin", "chunk": b"", "hash": "b" * 64, "data": {},
                                        "chunk_size": 8192, "size": 4}, topic="topic1")),
    ("defaults", Message(command="handshake")),
]
for name, m in frames:
    print("frame", name, node.serialize_message(m).hex())

# `_send_udp_message`: Message(command, data, timestamp), the other fields left at their defaults.
udp = [
    ("status", Message(command="status", data={"id": U}, timestamp=T)),
    ("response", Message(command="response", data={"name": "node-a", "paired": {"topic1": True, "topic2": False},
                                                    "serving": True, "reconnecting": False, "id": U},
                         timestamp=T)),
]
for name, m in udp:
    print("udp", name, node.serializer(m).hex())

bad = [
    ("no-command", b'{"$msg":{"topic":"x"}}'),
    ("unknown-field", b'{"$msg":{"command":"x","color":1}}'),
    ("bad-base64", b'{"$b64":"%%%"}'),
    ("bad-datetime", b'{"$dt":5}'),
    ("not-json", b'{"a":'),
]
for name, data in bad:
    try:
        chaski_json.loads(data)
    except Exception:
        print("bad", name, data.hex())
    else:
        raise SystemExit(f"{name}: the codec took it")
