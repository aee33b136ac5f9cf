"""The same hat-client load against any hat Eventer server: N clients register with response,
one client subscribed to everything counts what it is notified.

    hat_load.py PORT [--clients N] [--events E] [--batch B]

Each publisher registers E events in requests of B (awaiting each response, as hat clients do)
with a small JSON payload. Prints one JSON line: published, notified, seconds (from the first
request to the last notification), events per second, and this process's own CPU seconds (all
clients run in it, on one core: what the load itself costs bounds the rate it can reach). Hard
timeout: 600 s.
"""

import argparse
import asyncio
import json
import time

import hat.event.common as common
from hat.drivers import net
from hat.event.eventer import client as eventer


async def publisher(port, index, events, batch):
    client = await eventer.connect(net.TcpAddress('127.0.0.1', port), f'load-{index}')
    sent = 0
    while sent < events:
        count = min(batch, events - sent)
        request = [common.RegisterEvent(type=('load', str(index)), source_timestamp=None,
                                        payload=common.EventPayloadJson(sent + i)) for i in range(count)]
        result = await client.register(request, with_response=True)
        assert result is not None, 'registration failed'
        sent += count
    await client.async_close()
    return sent


async def main(args):
    notified = 0
    done = asyncio.Event()
    total = args.clients * args.events
    last = [0.0]

    async def on_events(_client, events):
        nonlocal notified
        notified += len(events)
        last[0] = time.monotonic()
        if notified >= total:
            done.set()

    subscriber = await eventer.connect(net.TcpAddress('127.0.0.1', args.port), 'load-subscriber',
                                       subscriptions=[('load', '*')], events_cb=on_events)
    started = time.monotonic()
    cpu_started = time.process_time()
    published = sum(await asyncio.gather(*[publisher(args.port, i, args.events, args.batch)
                                           for i in range(args.clients)]))
    try:
        await asyncio.wait_for(done.wait(), 30)
    except asyncio.TimeoutError:
        pass
    seconds = (last[0] or time.monotonic()) - started
    load_cpu_s = time.process_time() - cpu_started
    await subscriber.async_close()
    print(json.dumps({'published': published, 'notified': notified, 'seconds': round(seconds, 3),
                      'events_per_s': round(published / seconds, 1) if seconds > 0 else None,
                      'load_cpu_s': round(load_cpu_s, 3)}), flush=True)


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('port', type=int)
    parser.add_argument('--clients', type=int, default=4)
    parser.add_argument('--events', type=int, default=5000)
    parser.add_argument('--batch', type=int, default=100)
    asyncio.run(asyncio.wait_for(main(parser.parse_args()), 600))
