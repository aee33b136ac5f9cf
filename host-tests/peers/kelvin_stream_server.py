"""A Kelvin stream server on the real SDK's message model (kelvin-python-sdk 0.5.0), for the
tests of Rivulet's Kelvin stream client (host-tests/tests/kelvin_client.rs).

    kelvin_stream_server.py

Binds 127.0.0.1:0 and prints `listening PORT`; takes one connection; writes, as the platform
would and encoded by the SDK, a runtime manifest, a number, a string and a control change; then
reads the client's lines until it closes, each validated by the SDK's `Message.model_validate_json`
and printed as `got <what the SDK encodes of it>` (or `invalid <line>`), then `done`. A hard
timeout ends it whatever happens.
"""

import asyncio

from kelvin.message import Message

from peer_common import make_log, start_watchdog

log = make_log("kelvin_stream_server")
U = '39a7520a-a351-49c1-92f5-c0b5f4dc4881'
T = '2024-01-02T03:04:05Z'

OUTGOING = [
    {'type': 'runtime_manifest', 'payload': {'resources': [{'resource': 'krn:asset:pump'}], 'configuration': {'k': 1}}},
    {'type': 'data;pt=number', 'resource': 'krn:ad:pump/temp', 'payload': 21.5},
    {'type': 'data;pt=string', 'resource': 'krn:ad:pump/state', 'payload': 'running'},
    {'type': 'control', 'resource': 'krn:ad:pump/speed',
     'payload': {'payload': 10, 'expiration_date': '2024-01-03T00:00:00Z', 'retries': 1}},
]


async def main():
    start_watchdog(60, log)
    done = asyncio.Event()

    async def on_client(reader, writer):
        for fields in OUTGOING:
            writer.write(Message.model_validate({'id': U, 'timestamp': T, **fields}).encode() + b'\n')
        await writer.drain()
        while line := await reader.readline():
            try:
                print('got ' + Message.model_validate_json(line).encode().decode(), flush=True)
            except Exception:  # noqa: BLE001 - a refusal is what the test looks for
                print('invalid ' + line.decode(errors='replace').rstrip('\n'), flush=True)
        writer.close()
        done.set()

    server = await asyncio.start_server(on_client, '127.0.0.1', 0, limit=2**22)
    print(f'listening {server.sockets[0].getsockname()[1]}', flush=True)
    await done.wait()
    server.close()
    print('done', flush=True)


if __name__ == '__main__':
    asyncio.run(main())
