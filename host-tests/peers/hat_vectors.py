"""Golden vectors of hat-event's Eventer protocol, encoded by the real library.

Prints one vector a line, `KIND NAME HEX`:

* `integer VALUE HEX`: an SBS Integer (hat.sbs, the default C serializer).
* `message TYPE.LABEL HEX`: the data of one HatEventer message, as `hat.event.eventer.common.
  send_msg` encodes it: the value made from hat's own types by hat.event.common's `*_to_sbs`
  functions, then `hat.event.common.sbs_repo.encode(TYPE, value)`.
* `frame LABEL HEX`: a whole chatter frame, written by `hat.drivers.chatter.Connection._write`
  (the library's framing and `HatChatter.Msg` encoding) for a message dict as
  `Connection.send` builds it.

core/tests/data/hat_vectors.txt is this script's output; host-tests/tests/hat_vectors.rs checks
that it still is. Regenerate with

    $RIVULET_PEERS_VENV/bin/python host-tests/peers/hat_vectors.py > core/tests/data/hat_vectors.txt

Offline and deterministic: no sockets, no clock.
"""

import asyncio
import types

from hat import sbs
from hat.drivers import chatter
from hat.event import common
from hat.event.eventer import common as eventer_common

assert eventer_common.sbs_repo is common.sbs_repo, 'the eventer encodes with the common repository'

Ts = common.Timestamp
Id = common.EventId


def event(eid, etype, ts, source_ts=None, payload=None):
    return common.Event(id=eid, type=etype, timestamp=ts, source_timestamp=source_ts, payload=payload)


def register(etype, source_ts=None, payload=None):
    return common.RegisterEvent(type=etype, source_timestamp=source_ts, payload=payload)


# The events of the vectors; core/tests/hat.rs builds the same ones.
E1 = event(Id(1, 2, 3), ('a', 'b'), Ts(1700000000, 5), payload=common.EventPayloadJson(42))
E2 = event(Id(7, 123456789, 2**40), ('sensor', 'room 1', 'temp'), Ts(-1, 999999),
           source_ts=Ts(-62135596800, 0),
           payload=common.EventPayloadBinary(type='u8', data=bytes(range(256))))
E3 = event(Id(2**62, 0, 1), (), Ts(0, 0), source_ts=Ts(2**40, 1),
           payload=common.EventPayloadJson({'k': [1, 2.5, 'x'], 'n': None}))
E4 = event(Id(3, 4, 5), ('x' * 300, 'k\u00e4se', '\U0001F600', ''), Ts(-2**62, 123456))
E5 = event(Id(9, 9, 9), ('?', '*'), Ts(1, 1), payload=common.EventPayloadBinary(type='', data=b''))
EVENTS = [E1, E2, E3, E4, E5]

R1 = register(('a', 'b'))
R2 = register(('sensor', 'x'), source_ts=Ts(-5, 500000),
              payload=common.EventPayloadBinary(type='raw', data=b'\x00\xff\x80'))
R3 = register(('j',), payload=common.EventPayloadJson([True, False, None, 'str\u00e9', -1.5e300]))
R4 = register(('long', 'y' * 200), payload=common.EventPayloadJson('z' * 150))

STATUSES = [common.Status.STANDBY, common.Status.STARTING, common.Status.OPERATIONAL, common.Status.STOPPING]


def optional(value):
    return ('value', value) if value is not None else ('none', None)


def init_req(name, token, subscriptions, server_id, persisted):
    # As hat.event.eventer.client.connect builds it.
    return {'clientName': name,
            'clientToken': optional(token),
            'subscriptions': [list(i) for i in subscriptions],
            'serverId': optional(server_id),
            'persisted': persisted}


def messages():
    """(type, label, value) of every message vector, the value as send_msg gets it."""
    out = []
    add = lambda t, label, value: out.append(('HatEventer.' + t, label, value))  # NOQA

    add('MsgInitReq', 'captured', init_req('peer-client', 'tok', [('test', '*'), ('other', '?')], None, False))
    add('MsgInitReq', 'full', init_req('peer-client', 'tok', [('test', '*'), ('other', '?'), (), ('*',)], 5, True))
    add('MsgInitReq', 'minimal', init_req('', None, [], None, False))
    add('MsgInitReq', 'long', init_req('c' * 200, '\u00fc' * 100, [('a', 'b' * 130)], 2**62, False))

    for status in STATUSES:
        add('MsgInitRes', 'success-' + status.value, ('success', common.status_to_sbs(status)))
    add('MsgInitRes', 'error', ('error', 'invalid query event type'))

    for status in STATUSES:
        add('MsgStatusNotify', status.value, common.status_to_sbs(status))

    add('MsgEventsNotify', 'one', [common.event_to_sbs(E1)])
    add('MsgEventsNotify', 'all', [common.event_to_sbs(e) for e in EVENTS])
    add('MsgEventsNotify', 'empty', [])

    add('MsgEventsAck', 'ack', None)

    add('MsgRegisterReq', 'one', [common.register_event_to_sbs(R1)])
    add('MsgRegisterReq', 'all', [common.register_event_to_sbs(r) for r in (R1, R2, R3, R4)])
    add('MsgRegisterReq', 'empty', [])

    add('MsgRegisterRes', 'events', ('events', [common.event_to_sbs(e) for e in (E1, E2)]))
    add('MsgRegisterRes', 'no-events', ('events', []))
    add('MsgRegisterRes', 'failure', ('failure', None))

    q = common.query_params_to_sbs
    add('MsgQueryReq', 'latest-all', q(common.QueryLatestParams()))
    add('MsgQueryReq', 'latest-types', q(common.QueryLatestParams(event_types=[('a', '*'), ()])))
    add('MsgQueryReq', 'timeseries-defaults', q(common.QueryTimeseriesParams()))
    add('MsgQueryReq', 'timeseries-full', q(common.QueryTimeseriesParams(
        event_types=[('a', '?', 'c'), ('*',)],
        t_from=Ts(-100, 1), t_to=Ts(100, 999999),
        source_t_from=Ts(-2**40, 0), source_t_to=Ts(2**40, 500000),
        order=common.Order.ASCENDING, order_by=common.OrderBy.SOURCE_TIMESTAMP,
        max_results=100, last_event_id=Id(1, 2, 3))))
    add('MsgQueryReq', 'timeseries-negative-max', q(common.QueryTimeseriesParams(
        event_types=[], order=common.Order.DESCENDING, order_by=common.OrderBy.TIMESTAMP, max_results=-1)))
    add('MsgQueryReq', 'server-minimal', q(common.QueryServerParams(server_id=3)))
    add('MsgQueryReq', 'server-full', q(common.QueryServerParams(
        server_id=2**40, persisted=True, max_results=2**33, last_event_id=Id(2**40, 7, 2**50))))

    r = common.query_result_to_sbs
    add('MsgQueryRes', 'more', r(common.QueryResult(events=[E1, E3], more_follows=True)))
    add('MsgQueryRes', 'empty', r(common.QueryResult(events=[], more_follows=False)))
    return out


def frames():
    """(label, msg dict) of every frame vector: headers as Connection.send builds them."""

    def msg(msg_id, first, owner, last, msg_type, data):
        return {'id': msg_id, 'first': first, 'owner': owner, 'token': True, 'last': last,
                'data': {'type': msg_type, 'data': data}}

    def data(msg_type, value):
        return common.sbs_repo.encode(msg_type, value)

    init = init_req('peer-client', 'tok', [('test', '*'), ('other', '?')], None, False)
    return [
        ('init-req', msg(1, 1, True, False, 'HatEventer.MsgInitReq', data('HatEventer.MsgInitReq', init))),
        ('init-res', msg(1, 1, False, True, 'HatEventer.MsgInitRes',
                         data('HatEventer.MsgInitRes', ('success', ('starting', None)))),),
        ('status-notify', msg(9, 9, True, True, 'HatEventer.MsgStatusNotify',
                              data('HatEventer.MsgStatusNotify', ('operational', None)))),
        # Over 255 bytes: a two-byte length.
        ('events-notify-ll2', msg(2, 2, True, False, 'HatEventer.MsgEventsNotify',
                                  data('HatEventer.MsgEventsNotify', [common.event_to_sbs(E2)]))),
        ('events-ack', msg(5, 2, False, True, 'HatEventer.MsgEventsAck', data('HatEventer.MsgEventsAck', None))),
        ('register-req', msg(2**31, 2**31, True, True, 'HatEventer.MsgRegisterReq',
                             data('HatEventer.MsgRegisterReq', [common.register_event_to_sbs(R2)]))),
        ('ping', msg(7, 7, True, False, 'HatChatter.Ping', b'')),
        ('pong', msg(3, 7, False, True, 'HatChatter.Pong', b'')),
    ]


class _Capture:
    """What chatter.Connection._write needs of `self`: a `_conn` whose `write` keeps the bytes."""

    def __init__(self):
        self.written = bytearray()

        async def write(data):
            self.written.extend(data)

        self._conn = types.SimpleNamespace(write=write)


def frame_bytes(msg):
    capture = _Capture()
    asyncio.run(chatter.Connection._write(capture, msg))
    return bytes(capture.written)


HEADER = '''\
# Golden vectors of hat-event's Eventer protocol, encoded by the real library (hat-event 0.9.44,
# hat-drivers 0.10.10, hat-sbs 0.7.6): `KIND NAME HEX` a line, KIND integer / message / frame.
# Generated by host-tests/peers/hat_vectors.py (it says how each is made); do not edit. Regenerate:
#   $RIVULET_PEERS_VENV/bin/python host-tests/peers/hat_vectors.py > core/tests/data/hat_vectors.txt
# host-tests/tests/hat_vectors.rs checks that this file is the script's output; core/tests/hat.rs
# decodes and re-encodes every vector.'''


def vector(kind, name, data):
    print(kind, name, data.hex()) if data else print(kind, name)


def main():
    print(HEADER)
    integer_repo = sbs.Repository('module V\nI = Integer\n')
    for value in [0, 1, 63, 64, -64, -65, 8191, 8192, 1000000, 2**31, 2**62, -2**62, 2**63 - 1, -2**63]:
        vector('integer', str(value), integer_repo.encode('V.I', value))
    for msg_type, label, value in messages():
        vector('message', msg_type + '.' + label, common.sbs_repo.encode(msg_type, value))
    for label, msg in frames():
        vector('frame', label, frame_bytes(msg))


if __name__ == '__main__':
    main()
