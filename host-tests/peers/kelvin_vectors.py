"""Golden vectors for Rivulet's Kelvin codec (core/src/kelvin), from the real kelvin-python-sdk
0.5.0: each input line as `in <line>`, then what the SDK makes of it as `out <line>` (its
`Message.model_validate_json(line).encode()`) or `out invalid` (it refuses the line).

    python host-tests/peers/kelvin_vectors.py > core/tests/data/kelvin_vectors.txt

core/tests/kelvin.rs reads every pair with our codec and must write the same bytes (or refuse);
host-tests/tests/kelvin_vectors.rs checks that this script still prints the committed file. The
inputs: every message type of the SDK (built with its own classes and encoded by it), the forms
it accepts for timestamps, ids, types and KRNs, and lines it refuses. Every input has an id and a
timestamp: the SDK fills missing ones with a random UUID and the time now. Runs with TZ=UTC (a
timestamp without an offset is local time to the SDK and UTC to us).
"""

import json
import os
import sys
import time

os.environ['TZ'] = 'UTC'
time.tzset()

from kelvin.message import Message  # noqa: E402

U = '39a7520a-a351-49c1-92f5-c0b5f4dc4881'
T = '2024-01-02T03:04:05Z'


def msg(type_, payload=None, **fields):
    line = {'type': type_, 'id': U, 'timestamp': T, **fields}
    if payload is not None:
        line['payload'] = payload
    return json.dumps(line, separators=(',', ':'))


def sdk(type_, payload, **fields):
    """A line as the SDK itself writes a message of this type and payload."""
    return Message.model_validate({'type': type_, 'id': U, 'timestamp': T, 'payload': payload, **fields}).encode().decode()


control = {'payload': 42.5, 'expiration_date': '2024-01-03T00:00:00Z', 'timeout': 30, 'retries': 2,
           'from_value': {'value': 40, 'timestamp': '2024-01-02T00:00:00Z'}}
status = {'state': 'applied', 'message': 'done', 'control_change_id': U,
          'reported': {'before': {'value': 40, 'timestamp': T}, 'after': {'value': 42.5, 'timestamp': T}}}
recommendation = {'source': 'krn:wlappv:node/work:app/1.0', 'resource': 'krn:asset:pump', 'type': 'speed',
                  'description': 'slow down', 'expiration_date': '2024-01-03T00:00:00Z',
                  'actions': {'control_changes': [{'resource': 'krn:ad:pump/speed', 'expiration_date': '2024-01-03T00:00:00Z',
                                                   'payload': 10}]},
                  'metadata': {'k': 'v'}}
action = {'title': 'Reboot', 'expiration_date': '2024-01-03T00:00:00Z', 'description': 'now', 'payload': {'force': True}}
manifest = {'resources': [{'resource': 'krn:asset:pump', 'parameters': {'max': 10},
                           'datastreams': {'temp': {'map_to': 'temperature'}}}],
            'configuration': {'threshold': 3},
            'datastreams': [{'name': 'temp', 'primitive_type_name': 'number', 'unit_name': 'degC'}],
            'custom_actions': [{'type': 'reboot', 'way': 'input-ca'}]}

lines = [
    # Every kind of message, as the SDK writes it.
    sdk('data;pt=number', 21.5, resource='krn:ad:asset1/temp'),
    sdk('data;pt=number', 7, resource='krn:ad:asset1/count', source='krn:wl:node/work', trace_id='trace-1'),
    sdk('data;pt=string', 'on "fire"\n', resource='krn:ad:asset1/state'),
    sdk('data;pt=boolean', True, resource='krn:ad:asset1/ok'),
    sdk('data;icd=acme.reading', {'b': 1, 'a': [1, 2.5, None], 'nested': {'x': 'é'}}, resource='krn:ad:asset1/raw'),
    sdk('data;icd=kelvin.sensor_data', {'data': [1.5, 2.5], 'sample_rate': 100.0}, resource='krn:ad:asset1/vib'),
    sdk('parameter;pt=number', 3, resource='krn:ap:asset1/max'),
    sdk('parameter;pt=string', 'fast', resource='krn:ap:asset1/mode'),
    sdk('parameter;pt=boolean', False, resource='krn:ap:asset1/enabled'),
    sdk('control', control, resource='krn:ad:asset1/speed'),
    sdk('control-status', status, resource='krn:ad:asset1/speed'),
    sdk('control-ack', status, resource='krn:ad:asset1/speed'),
    sdk('recommendation', recommendation, resource='krn:asset:pump'),
    sdk('custom-action-create;type=reboot', action, resource='krn:asset:pump'),
    sdk('runtime_manifest', manifest),
    sdk('weird-kind;x=1', {'free': 'form'}, resource='krn:zz:anything:here'),
    # Timestamps in every form the SDK reads.
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04:05.678901Z'),
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04:05+02:00'),
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04:05.5-0130'),
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04:05.1234567Z'),
    msg('data;pt=number', 1, timestamp='2024-01-02 03:04:05Z'),
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04:05'),
    msg('data;pt=number', 1, timestamp='2024-01-02T03:04Z'),
    msg('data;pt=number', 1, timestamp='2024-01-02'),
    msg('data;pt=number', 1, timestamp=1700000000),
    msg('data;pt=number', 1, timestamp=1700000000.25),
    msg('data;pt=number', 1, timestamp='1700000000'),
    msg('data;pt=number', 1, timestamp=1700000000123),
    msg('data;pt=number', 1, timestamp='2024-13-02T03:04:05Z'),
    msg('data;pt=number', 1, timestamp='yesterday'),
    # Ids.
    msg('data;pt=number', 1, id='39A7520AA35149C192F5C0B5F4DC4881'),
    msg('data;pt=number', 1, id='urn:uuid:' + U),
    msg('data;pt=number', 1, id='{' + U + '}'),
    msg('data;pt=number', 1, id='not-a-uuid'),
    # Types.
    msg('data;icd=x;pt=number', 1),
    msg('data;pt=object;icd=foo', {'a': 1}),
    msg('data', {'a': 1}),
    msg('data;pt=number;icd=x', 'loose'),
    msg('weird;x=1;y;z=', None),
    # Components dropped from a control type; its payload as the SDK writes it (the SDK rewrites
    # the payloads of its typed messages, which we pass through as they come: docs/KELVIN.md).
    json.dumps({**json.loads(sdk('control-status', status)), 'type': 'control-status;x=1'}, separators=(',', ':')),
    msg('', None),
    msg('data;pt=float', 1),
    # Payloads of strictly typed primitives.
    msg('data;pt=number', '1'),
    msg('data;pt=number', True),
    msg('data;pt=boolean', 1),
    msg('parameter;pt=string', 5),
    msg('data;pt=number', 12345678901234567890),
    msg('data;pt=number', -0.5),
    # KRNs.
    msg('weird', None, resource='krn:ad:noslash'),
    msg('weird', None, resource='urn:ad:a/b'),
    msg('weird', None, source='krn:wlappv:node/work:app/1.0'),
    msg('weird', None, source='krn:wlappv:node/work'),
    # Not messages.
    '[1]',
    'nope',
    '{"id":"%s","timestamp":"%s","payload":3}' % (U, T),
]

for line in lines:
    try:
        out = Message.model_validate_json(line).encode().decode()
    except Exception:  # noqa: BLE001 - any refusal is what the vector records
        out = 'invalid'
    print('in ' + line)
    print('out ' + out)
