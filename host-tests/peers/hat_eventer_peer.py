"""Real hat-event Eventer clients (hat-event 0.9.44) against a Rivulet gateway's hat front-end.

    hat_eventer_peer.py SCENARIO PORT [ARGS...]

Each scenario connects to 127.0.0.1:PORT with `hat.event.eventer.connect`, does what its name
says, checks what the real library got with asserts, and prints one JSON line of what it saw
(the Rust test, host-tests/tests/hat_gateway.rs, checks that too). An assert or an exception
exits non-zero; a hard timeout ends the script whatever happens.
"""

import asyncio
import json
import socket
import ssl
import sys

import hat.event.common as common
from hat.drivers import net
from hat.event.eventer import client as eventer

HARD_TIMEOUT = 60


def addr(port):
    return net.TcpAddress("127.0.0.1", int(port))


def event_json(event):
    payload = event.payload
    if isinstance(payload, common.EventPayloadJson):
        payload = {'json': payload.data}
    elif isinstance(payload, common.EventPayloadBinary):
        payload = {'binary': payload.type, 'data': payload.data.hex()}
    return {'id': [event.id.server, event.id.session, event.id.instance],
            'type': list(event.type), 'payload': payload}


async def collect(port, name, subscriptions, **kwargs):
    """A connected client whose notified events land in a list."""
    got = []

    async def on_events(_client, events):
        got.extend(events)

    client = await eventer.connect(addr(port), name, subscriptions=subscriptions, events_cb=on_events, **kwargs)
    return client, got


async def wait_for(predicate, what, seconds=10):
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f'{what}: not within {seconds} s')


def json_event(event_type, value):
    return common.RegisterEvent(type=tuple(event_type), source_timestamp=None,
                                payload=common.EventPayloadJson(value))


async def login(port, token):
    """The right token logs in; a wrong one and none are refused with hat's init error."""
    ok = await eventer.connect(addr(port), 'dev', client_token=token)
    status = ok.status.name
    await ok.async_close()
    refusals = []
    for wrong in ['00' * 32, None]:
        try:
            await eventer.connect(addr(port), 'dev', client_token=wrong)
            raise AssertionError(f'token {wrong!r} was taken')
        except eventer.EventerInitError as e:
            refusals.append(str(e))
    try:
        await eventer.connect(addr(port), 'ghost', client_token=token)
        raise AssertionError('an unknown name was taken')
    except eventer.EventerInitError as e:
        refusals.append(str(e))
    return {'status': status, 'refusals': refusals}


async def wildcards(port):
    """hat's `?` and `*` rules, through the gateway; a `*` not last is an init error."""
    patterns = {'star': [('*',)], 'a_star': [('a', '*')], 'a': [('a',)], 'q': [('?',)], 'none': []}
    clients = {}
    for name, subscriptions in patterns.items():
        clients[name] = await collect(port, name, subscriptions)
    publisher = await eventer.connect(addr(port), 'publisher')
    types = [(), ('a',), ('a', 'b'), ('b',)]
    await publisher.register([json_event(t, i) for i, t in enumerate(types)], with_response=True)
    # The notifications of one registration go out in one batch: wait for the widest.
    await wait_for(lambda: len(clients['star'][1]) == 4, 'everything for ("*",)')
    await asyncio.sleep(0.3)
    try:
        await eventer.connect(addr(port), 'invalid', subscriptions=[('a', '*', 'b')])
        raise AssertionError("('a', '*', 'b') was taken")
    except eventer.EventerInitError as e:
        invalid = str(e)
    got = {name: sorted(list(e.type) for e in events) for name, (_, events) in clients.items()}
    for client, _ in clients.values():
        await client.async_close()
    await publisher.async_close()
    return {'got': got, 'invalid': invalid}


async def filters(port):
    """The serverId filter and the persisted flag: each subscriber gets each event once."""
    live, live_got = await collect(port, 'live', [('f', '*')])
    persisted, persisted_got = await collect(port, 'persisted', [('f', '*')], persisted=True)
    mine, mine_got = await collect(port, 'server-1', [('f', '*')], server_id=1)
    other, other_got = await collect(port, 'server-2', [('f', '*')], server_id=2)
    publisher = await eventer.connect(addr(port), 'publisher')
    await publisher.register([json_event(('f', str(i)), i) for i in range(5)], with_response=True)
    await wait_for(lambda: len(persisted_got) == 5 and len(live_got) == 5 and len(mine_got) == 5, 'five each')
    await asyncio.sleep(0.3)
    result = {name: [e.id.instance for e in got] for name, got in
              [('live', live_got), ('persisted', persisted_got), ('server_1', mine_got), ('server_2', other_got)]}
    for client in [live, persisted, mine, other, publisher]:
        await client.async_close()
    return result


async def register(port, token):
    """Register with and without response; a type outside the ACL fails whole, storing nothing."""
    client = await eventer.connect(addr(port), 'dev', client_token=token)
    without = await client.register([json_event(('sensor', 'quiet'), 1)])
    assert without is None, without
    events = await client.register([json_event(('sensor', 'a'), 2), json_event(('sensor', 'b'), 3)],
                                   with_response=True)
    assert [list(e.type) for e in events] == [['sensor', 'a'], ['sensor', 'b']], events
    failed = await client.register([json_event(('sensor', 'c'), 4), json_event(('secret', 'door'), 5)],
                                   with_response=True)
    assert failed is None, f'a denied type must fail the whole request: {failed}'
    result = await client.query(common.QueryTimeseriesParams(order=common.Order.ASCENDING))
    stored = [list(e.type) for e in result.events]
    await client.async_close()
    return {'registered': [event_json(e) for e in events], 'stored': stored}


async def paging(port, count):
    """`count` events registered, then paged through in both orders, by timeseries and server
    queries with maxResults and lastEventId: each once, in order."""
    count = int(count)
    client = await eventer.connect(addr(port), 'pager')
    for start in range(0, count, 1000):
        batch = [json_event(('p', 'x'), i) for i in range(start, min(count, start + 1000))]
        await client.register(batch, with_response=True)
    pages = {}
    for order in [common.Order.ASCENDING, common.Order.DESCENDING]:
        seen, last = [], None
        while True:
            res = await client.query(common.QueryTimeseriesParams(
                event_types=[('p', '*')], order=order, max_results=1000, last_event_id=last))
            seen.extend(e.payload.data for e in res.events)
            if not res.more_follows:
                break
            last = res.events[-1].id
        pages[order.name] = seen
    server_seen, last = [], None
    while True:
        res = await client.query(common.QueryServerParams(server_id=1, max_results=700, last_event_id=last))
        server_seen.extend(e.payload.data for e in res.events)
        if not res.more_follows:
            break
        last = res.events[-1].id
    latest = await client.query(common.QueryLatestParams(event_types=[('p', '?')]))
    await client.async_close()
    assert pages['ASCENDING'] == list(range(count)), 'ascending, each once'
    assert pages['DESCENDING'] == list(reversed(range(count))), 'descending, each once'
    assert server_seen == list(range(count)), 'the server query, each once'
    assert [e.payload.data for e in latest.events] == [count - 1], 'latest: the newest'
    return {'ascending': len(pages['ASCENDING']), 'descending': len(pages['DESCENDING']),
            'server': len(server_seen)}


async def keepalive(port):
    """A client that pings after 0.2 s of silence gets its pongs; then the gateway's own pings
    (its ping delay is short in this test) keep the link up while the client is silent."""
    client = await eventer.connect(addr(port), 'pinger', ping_delay=0.2, ping_timeout=1)
    await asyncio.sleep(2)
    assert client.is_open, 'our pings were answered'
    quiet = await eventer.connect(addr(port), 'quiet', ping_delay=0)
    await asyncio.sleep(2)
    assert quiet.is_open, 'the gateway pinged and the library answered'
    res = await quiet.query(common.QueryLatestParams(event_types=None))
    await client.async_close()
    await quiet.async_close()
    return {'open': True, 'latest': len(res.events)}


async def cross(port):
    """Register through hat, then wait for what a native client registers."""
    client, got = await collect(port, 'hat-side', [('x', '*')])
    events = await client.register([
        json_event(('x', 'hat', 'json'), {'t': 21.5}),
        common.RegisterEvent(type=('x', 'hat', 'binary'), source_timestamp=common.Timestamp(1700000000, 5),
                             payload=common.EventPayloadBinary(type='blob', data=b'\x00\x01\xff')),
    ], with_response=True)
    print(json.dumps({'registered': [event_json(e) for e in events]}), flush=True)
    await wait_for(lambda: any(e.type[:2] == ('x', 'native') for e in got), 'the native event', 30)
    result = {'got': [event_json(e) for e in got]}
    await client.async_close()
    return result


async def mixed(port, name):
    """With a device and native clients on the same gateway: command the device's LED, and see
    the device's answer and the native events, each exactly once."""
    client, got = await collect(port, 'hat-mixed', [('device', name, '*'), ('command', name, '*'), ('mixed', '*')])
    registered = await client.register([json_event(('mixed', 'hat'), {'from': 'hat'}),
                                        json_event(('command', name, 'led'), False)], with_response=True)
    assert registered is not None and len(registered) == 2, registered
    await wait_for(lambda: any(e.type == ('mixed', 'end') for e in got), 'the native end marker', 50)
    await wait_for(lambda: any(e.type == ('device', name, 'telemetry', 'uptime') for e in got), 'telemetry', 10)
    await client.async_close()
    ids = [(e.id.server, e.id.session, e.id.instance) for e in got]
    assert ids == sorted(set(ids)), f'each event once, in the order of its id: {ids}'
    return {'registered': [event_json(e) for e in registered], 'got': [event_json(e) for e in got]}


async def over_tls(port, ca, token):
    """hat's chatter over TLS (`connect(..., ssl=context)`): a client trusting the gateway's CA
    logs in, registers and queries; one trusting only the system's CAs, and one speaking plain
    TCP to the TLS port, are refused."""
    trusted = ssl.create_default_context(cafile=ca)
    client = await eventer.connect(addr(port), 'dev', client_token=token, ssl=trusted)
    registered = await client.register([json_event(('sensor', 'tls'), {'t': 1})], with_response=True)
    assert registered is not None and len(registered) == 1, registered
    latest = await client.query(common.QueryLatestParams(event_types=[('sensor', 'tls')]))
    status = client.status.name
    await client.async_close()
    refusals = {}
    for name, kwargs in [('untrusted', {'ssl': ssl.create_default_context()}), ('plain', {})]:
        try:
            other = await asyncio.wait_for(eventer.connect(addr(port), 'dev', client_token=token, **kwargs), 20)
            await other.async_close()
            raise AssertionError(f'the {name} client got in')
        except AssertionError:
            raise
        except Exception as e:  # what the library raises is its business; that it fails is ours
            refusals[name] = type(e).__name__
    return {'status': status, 'registered': [event_json(e) for e in registered],
            'latest': [event_json(e) for e in latest.events], 'refusals': refusals}


async def malformed(port):
    """A frame that is no chatter message closes only its own connection."""
    good = await eventer.connect(addr(port), 'good')
    raw = socket.create_connection(('127.0.0.1', int(port)))
    raw.sendall(bytes([1, 5]) + b'\xff\xff\xff\xff\xff')
    raw.settimeout(10)
    closed = raw.recv(1) == b''
    raw.close()
    events = await good.register([json_event(('still', 'here'), 1)], with_response=True)
    await good.async_close()
    assert closed, 'the gateway closed the bad connection'
    return {'closed': closed, 'good_registered': len(events)}


SCENARIOS = {'login': login, 'wildcards': wildcards, 'filters': filters, 'register': register,
             'paging': paging, 'keepalive': keepalive, 'cross': cross, 'mixed': mixed, 'tls': over_tls,
             'malformed': malformed}


async def main(argv):
    scenario, port, *args = argv
    result = await asyncio.wait_for(SCENARIOS[scenario](port, *args), HARD_TIMEOUT)
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1:]))
