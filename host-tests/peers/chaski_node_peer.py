"""A real Chaski node (chaski-confluent 0.1a5's ChaskiStreamer, with the JSON codec of
chaski_json.py) against a Rivulet gateway's Chaski listener (host-tests/tests/chaski_gateway.rs).

    chaski_node_peer.py dial PORT PUSHES WANTED
    chaski_node_peer.py listen PUSHES WANTED
    chaski_node_peer.py file PORT PATH
    chaski_node_peer.py discover PORT NAME wait|seek

`dial`: connects to the gateway at 127.0.0.1:PORT; `listen`: prints `listening <port>` and waits
for the gateway to dial it (`--chaski-peer`). Either way (subscribed to `topic1`) it asks the
gateway's status over UDP (at the port of the gateway's handshake_back),
pushes PUSHES messages on `topic1` (bytes `py-<i>`), one object and one on `other`, then waits for
WANTED messages from the gateway on its message stream. Prints one JSON line: the status answer
and every message received (topic, data, ttl, uuid). An assert or an exception exits non-zero,
and a hard timeout ends it whatever happens.

`file`: connects to the gateway at 127.0.0.1:PORT and sends the file at PATH with
`push_file('topic1', ...)` (ChaskiFile chunks of the node's chunk size, each with the running
SHA-256, an empty one last); prints one JSON line with the file's SHA-256 as chaski computes it.

`discover`: node NAME (subscribed to `topic1`) connects to the gateway at 127.0.0.1:PORT and runs
chaski's `discovery()`. `wait` gives up its own search after a second (it counts as paired, so it
answers others' searches), prints `listening <its port>`, and waits for a node to link to it;
`seek` searches until a node that shares `topic1` links with it. Either way it prints one JSON
line: the names of its edges.
"""

import asyncio
import base64
import json
import os
import sys

import chaski_json
from chaski.streamer import ChaskiStreamer
from peer_common import make_log, start_watchdog

log = make_log("chaski_node_peer")


def plain(value):
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(value).decode()}
    return value


async def linked(name, port):
    """A node subscribed to topic1, linked with the gateway: dialing 127.0.0.1:PORT, or, with
    PORT None, listening (it prints its port) until the gateway dials it."""
    node = ChaskiStreamer(ip="127.0.0.1", name=name, subscriptions=["topic1"],
                          serializer=chaski_json.dumps, deserializer=chaski_json.loads)
    await asyncio.sleep(0.2)
    if port is None:
        print(f"listening {node.port}")
        sys.stdout.flush()
    else:
        await node.connect("127.0.0.1", port)
    for _ in range(1500):
        if node.edges:
            break
        await asyncio.sleep(0.02)
    assert node.edges, "no handshake_back from the gateway"
    return node


async def main(port, pushes, wanted):
    node = await linked("py-node", port)
    edge = node.edges[0]
    log("linked with %s (%s:%s)", edge.name, edge.ip, edge.port)
    status = await asyncio.wait_for(node._request_status("127.0.0.1", edge.port), 10)
    for i in range(pushes):
        await node.push("topic1", f"py-{i}".encode())
    await node.push("topic1", {"t": 21.5, "raw": b"\x00\x01"})
    await node.push("other", b"not for topic1 subscribers")
    got = []
    async with node as stream:
        async for message in stream:
            got.append({"topic": message.topic, "data": plain(message.data), "ttl": message.ttl,
                        "uuid": message.uuid, "command": message.command})
            if len(got) >= wanted:
                break
    print(json.dumps({"edge": {"name": edge.name, "port": edge.port},
                      "status": {k: v for k, v in status.data.items() if k != "id"},
                      "status_command": status.command, "got": got}))
    sys.stdout.flush()
    # The node's tasks keep asyncio.run from ever returning (peers.md §5): a hard exit.
    os._exit(0)


async def send_file(port, path):
    node = await linked("py-files", port)
    with open(path, "rb") as file:
        await node.push_file("topic1", file)
    # The frames are written; give them a moment to leave before the hard exit.
    await asyncio.sleep(0.5)
    print(json.dumps({"sha256": ChaskiStreamer.get_hash(path), "chunk_size": node.chunk_size}))
    sys.stdout.flush()
    os._exit(0)


async def discover(port, name, role):
    node = await linked(name, port)
    await node.discovery(timeout=1 if role == "wait" else 20)
    if role == "wait":
        print(f"listening {node.port}")
        sys.stdout.flush()
    for _ in range(1500):
        if any(edge.name != "rivulet" for edge in node.edges):
            break
        await asyncio.sleep(0.02)
    print(json.dumps({"edges": sorted(edge.name for edge in node.edges)}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    start_watchdog(60, log)
    if sys.argv[1] == "discover":
        asyncio.run(discover(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    if sys.argv[1] == "file":
        asyncio.run(send_file(int(sys.argv[2]), sys.argv[3]))
    if sys.argv[1] == "dial":
        port, pushes, wanted = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    else:
        port, pushes, wanted = None, int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(main(port, pushes, wanted))
