"""Golden vectors for Rivulet's stream-sea codec (core/src/streamsea), from the real
stream-sea-client 0.7.0: what it sends, captured by servers on 127.0.0.1 this script runs.

    python host-tests/peers/streamsea_vectors.py > core/tests/data/streamsea_vectors.txt

Each line is `<kind> <text>`:
* `define <json>`: the body of `define_stream` (gzip undone) for a schema with every field type
  the client has (`SchemaDefinition.add_field`), and one with a numeric version;
* `header <name>: <value>`: the headers every REST call carries;
* `versions <json>`: the body of `get_schema_versions_vector`;
* `ws <json>`: the websocket messages of `StreamSeaConnection` (authenticate, two subscribes).

core/tests/streamsea.rs reads each with our codec; host-tests/tests/streamsea_vectors.rs checks
that this script still prints the committed file. A hard timeout ends it whatever happens.
"""

import asyncio
import gzip
import json
import sys

import websockets
from aiohttp import web
from stream_sea_client import api
from stream_sea_client.stream_sea_connection import StreamSeaConnection
from stream_sea_client.stream_sea_schema_definition import FieldType, SchemaDefinition

from peer_common import make_log, start_watchdog

log = make_log("streamsea_vectors")
out = []
HEADERS = ['Content-encoding', 'Content-type', 'Accept', 'Authorization']


def body(raw):
    """A request body; aiohttp has undone the client's gzip (Content-encoding) already."""
    return (gzip.decompress(raw) if raw[:2] == b'\x1f\x8b' else raw).decode()


def every_field_schema():
    schema = SchemaDefinition('boiler_data', '1', fields=[])
    for kind in FieldType:
        values = {'on': 'On', 'off': 'Off'} if kind == FieldType.ENUM else {}
        schema.add_field(kind.value.replace('<', '_').replace('>', ''), kind.value, values)
    return schema


async def main():
    start_watchdog(60, log)
    seen_headers = []

    async def define(request):
        out.append('define ' + body(await request.read()))
        if not seen_headers:
            seen_headers.extend(f'header {h}: {request.headers.get(h)}' for h in HEADERS)
        return web.json_response({}, status=200)

    async def versions(request):
        out.append('versions ' + body(await request.read()))
        return web.json_response({'versionsVector': ['1', None]})

    app = web.Application()
    app.router.add_post('/api/v1/streams/{stream}/define', define)
    app.router.add_post('/api/v1/schema-versions-vector', versions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]

    async def ws_handler(ws, _path):
        async for message in ws:
            out.append('ws ' + message)
            msg = json.loads(message)
            if msg['action'] == 'authenticate':
                await ws.send(json.dumps({'id': msg['id'], 'action': 'authenticate', 'success': True}))
            else:
                await ws.send(json.dumps({'id': msg['id'], 'action': 'subscription', 'success': True,
                                          'streamName': msg['payload'], 'payload': msg['id']}))

    ws_server = await websockets.serve(ws_handler, '127.0.0.1', 0)
    ws_port = ws_server.sockets[0].getsockname()[1]

    common = dict(remote_host='127.0.0.1', client_id='abc', client_secret='def123')
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: api.define_stream(remote_port=http_port, stream='boiler_data',
                                                              schema=every_field_schema(), **common))
    numeric = SchemaDefinition('counts', 2, fields=[])
    numeric.add_field('n', 'integer')
    await loop.run_in_executor(None, lambda: api.define_stream(remote_port=http_port, stream='counts',
                                                              schema=numeric, **common))
    await loop.run_in_executor(None, lambda: api.get_schema_versions_vector(
        remote_port=http_port, streams=['boiler_data', 'nothing'], **common))

    connection = await StreamSeaConnection(remote_port=ws_port, **common)
    await connection.subscribe('boiler_data')
    await connection.subscribe('counts')
    ws = await connection.ensure_ws
    await ws.close()
    ws_server.close()
    await runner.cleanup()
    for line in seen_headers + out:
        print(line)


if __name__ == '__main__':
    asyncio.run(main())
