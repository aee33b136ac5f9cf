"""Real Kelvin apps (kelvin-python-sdk 0.5.0: KelvinApp on KelvinStream) against a Rivulet
gateway's Kelvin listener (host-tests/tests/kelvin_gateway.rs).

    kelvin_app_peer.py SCENARIO PORT COUNT [VECTORS]

* `app`: connects (KELVIN_STREAM_IP/PORT as the SDK reads them), prints what `on_connect` saw
  of the runtime manifest, writes one message of each kind an app writes (number, string and
  boolean data on its output, a control change, a recommendation, an object message), then
  one of each type the SDK's golden vectors (VECTORS, core/tests/data/kelvin_vectors.txt) hold
  but the runtime manifest, as read by the SDK, then waits for COUNT messages (`on_message`: asset inputs and everything else) and prints
  everything it was sent, and which of it came as asset inputs.
* `reconnect`: connects, disconnects, connects again (on_connect fires twice), writes a number
  on its output as a sign it is back, then waits for INPUTS asset inputs and prints them.

Prints one JSON line at the end; an assert or an exception exits non-zero, and a hard timeout
ends it whatever happens.
"""

import asyncio
import json
import os
import sys
from datetime import timedelta

from kelvin.application import KelvinApp
from kelvin.krn import KRNAsset, KRNAssetDataStream
from kelvin.message import Boolean, ControlChange, Message, Number, Recommendation, String

from peer_common import make_log, start_watchdog

log = make_log("kelvin_app_peer")


def seen(msg):
    line = json.loads(msg.encode())
    return {'type': str(msg.type), 'resource': line.get('resource'), 'id': str(msg.id), 'payload': line.get('payload')}


async def wait_for(predicate, what, seconds=30):
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f'{what}: not within {seconds} s')


def sdk_messages(vectors):
    """One message of each type of the vectors (their SDK-written lines), but the manifest."""
    seen, out = set(), []
    for line in open(vectors) if vectors else []:
        if not line.startswith('out ') or line.strip() == 'out invalid':
            continue
        msg = Message.model_validate_json(line[4:])
        if str(msg.type) != 'runtime_manifest' and str(msg.type) not in seen:
            seen.add(str(msg.type))
            out.append(msg)
    return out


async def app_scenario(inputs_wanted, vectors=None):
    app = KelvinApp()
    connects = []
    inputs = []
    messages = []

    async def on_connect():
        connects.append({'configuration': app.app_configuration,
                         'inputs': sorted(i.name for i in app.inputs),
                         'outputs': sorted(o.name for o in app.outputs),
                         'assets': sorted(app.assets)})

    async def on_asset_input(msg):
        inputs.append(seen(msg))

    async def on_message(msg):
        messages.append(seen(msg))

    app.on_connect = on_connect
    app.on_asset_input = on_asset_input
    app.on_message = on_message
    await app.connect()
    log('connected: %s', connects)
    speed = KRNAssetDataStream('pump', 'speed')
    await app.publish(Number(resource=speed, payload=1500))
    await app.publish(String(resource=KRNAssetDataStream('pump', 'mode'), payload='eco "quiet"'))
    await app.publish(Boolean(resource=KRNAssetDataStream('pump', 'alarm'), payload=False))
    await app.publish(ControlChange(resource=KRNAssetDataStream('pump', 'valve'), payload=42,
                                    expiration_date=timedelta(minutes=5)))
    await app.publish(Recommendation(resource=KRNAsset('pump'), type='slow-down',
                                     control_changes=[ControlChange(resource=speed, payload=1000,
                                                                    expiration_date=timedelta(minutes=5))]))
    await app.publish(Message(type='data;icd=acme.reading', resource=KRNAssetDataStream('pump', 'raw'),
                              payload={'b': 1, 'a': [1, 2.5]}))
    for msg in sdk_messages(vectors):
        await app.publish(msg)
    await wait_for(lambda: len(messages) >= inputs_wanted, f'{inputs_wanted} messages')
    await app.disconnect()
    return {'connects': connects, 'inputs': inputs, 'messages': messages}


async def reconnect_scenario(inputs_wanted, _vectors=None):
    app = KelvinApp()
    connects = []
    inputs = []

    async def on_connect():
        connects.append(len(connects) + 1)

    async def on_asset_input(msg):
        inputs.append(seen(msg))

    app.on_connect = on_connect
    app.on_asset_input = on_asset_input
    await app.connect()
    await app.disconnect()
    await app.connect()
    await app.publish(Number(resource=KRNAssetDataStream('pump', 'speed'), payload=2))
    await wait_for(lambda: len(inputs) >= inputs_wanted, f'{inputs_wanted} asset inputs after reconnecting')
    await app.disconnect()
    return {'connects': connects, 'inputs': inputs}


async def main(argv):
    scenario, port, inputs_wanted, *vectors = argv
    start_watchdog(60, log)
    os.environ['KELVIN_STREAM_IP'] = '127.0.0.1'
    os.environ['KELVIN_STREAM_PORT'] = port
    run = {'app': app_scenario, 'reconnect': reconnect_scenario}[scenario]
    print(json.dumps(await run(int(inputs_wanted), *vectors)), flush=True)


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1:]))
