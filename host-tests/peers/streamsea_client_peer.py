"""The real stream-sea client (stream-sea-client 0.7.0) against a Rivulet gateway's stream-sea
listener (host-tests/tests/streamsea_gateway.rs).

    streamsea_client_peer.py SCENARIO PORT CLIENT_ID CLIENT_SECRET [ARGS...]

* `schemas`: defines `boiler_data` version 1 (every field kind the test's payloads use), again
  unchanged, version 1 with other fields, then version 2; describes it and an unknown stream;
  asks the versions vector; defines with a wrong secret. Prints the status codes and answers.
* `describe STREAM`: prints what `describe_stream` returns (its `json_serialize()`), or null.
* `subscribe STREAM COUNT`: authenticates over the websocket (`StreamSeaConnection`),
  subscribes, and prints the first COUNT messages' payloads.
* `refused`: authenticates with a wrong secret; prints whether the client raised
  `CredentialsError`.
* `stall STREAM SECONDS`: subscribes and reads nothing for SECONDS (its queue fills, then its
  socket), then prints that it is done.
* `publish STREAM JSON`: the client's own `publish` is broken in 0.7.0 (NameError before
  sending), so this posts what it means to send, as it would: gzip `{"payload": JSON}` with its
  headers. Prints the status and the answer.

Prints one JSON line; an exception exits non-zero; a hard timeout ends it whatever happens.
"""

import asyncio
import gzip
import json
import sys
from base64 import b64encode

import requests
from stream_sea_client import api
from stream_sea_client.stream_sea_connection import CredentialsError, StreamSeaConnection
from stream_sea_client.stream_sea_schema_definition import SchemaDefinition

from peer_common import make_log, start_watchdog

log = make_log("streamsea_client_peer")


def boiler(version, with_pressure=True):
    schema = SchemaDefinition('boiler_data', version, fields=[])
    schema.add_field('temperature', 'float')
    if with_pressure:
        schema.add_field('pressure', 'float')
    schema.add_field('mode', 'enum', {'on': 'On', 'off': 'Off'})
    schema.add_field('at', 'date')
    schema.add_field('tags', 'array<string>')
    return schema


async def websocket(scenario, common, args):
    if scenario == 'refused':
        try:
            await StreamSeaConnection(**{**common, 'client_secret': 'wrong'})
            return {'refused': False}
        except CredentialsError:
            return {'refused': True}
    connection = await StreamSeaConnection(**common)
    messages = await connection.subscribe(args[0])
    log('subscribed to %s', args[0])
    got = []
    if scenario == 'stall':
        await asyncio.sleep(float(args[1]))
    else:
        async for payload in messages:
            got.append(payload)
            if len(got) >= int(args[1]):
                break
    ws = await connection.ensure_ws
    await ws.close()
    return {'got': got}


def main(argv):
    scenario, port, client_id, secret, *args = argv
    start_watchdog(60, log)
    common = dict(remote_host='127.0.0.1', remote_port=int(port), client_id=client_id, client_secret=secret)
    if scenario == 'schemas':
        define = lambda schema, **kw: api.define_stream(stream='boiler_data', schema=schema, **{**common, **kw})
        statuses = [define(boiler('1')).status_code, define(boiler('1')).status_code,
                    define(boiler('1', with_pressure=False)).status_code, define(boiler('2', with_pressure=False)).status_code]
        described = api.describe_stream(stream='boiler_data', **common)
        unknown = api.describe_stream(stream='nothing', **common)
        versions = api.get_schema_versions_vector(streams=['boiler_data', 'nothing'], **common)
        refused = define(boiler('3'), client_secret='wrong').status_code
        print(json.dumps({'statuses': statuses, 'described': described.json_serialize(),
                          'unknown': unknown, 'versions': versions, 'wrong_secret': refused}))
    elif scenario in ('subscribe', 'refused', 'stall'):
        print(json.dumps(asyncio.run(websocket(scenario, common, args))))
    elif scenario == 'describe':
        described = api.describe_stream(stream=args[0], **common)
        print(json.dumps(described.json_serialize() if described else None))
    elif scenario == 'publish':
        stream, payload = args
        token = b64encode(f'{client_id}:{secret}'.encode()).decode()
        headers = {'Content-encoding': 'gzip', 'Content-type': 'application/json', 'Accept': 'application/json',
                   'Authorization': f'Basic {token}'}
        body = gzip.compress(json.dumps({'payload': json.loads(payload)}).encode())
        response = requests.post(f'http://127.0.0.1:{port}/api/v1/streams/{stream}/publish', data=body,
                                 headers=headers, timeout=30)
        print(json.dumps({'status': response.status_code, 'answer': response.json()}))
    else:
        raise SystemExit(f'no scenario {scenario}')


if __name__ == '__main__':
    main(sys.argv[1:])
