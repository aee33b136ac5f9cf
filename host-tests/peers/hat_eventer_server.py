"""A hat Eventer server on the real library's `hat.event.eventer.listen` (hat-event 0.9.44), for
the tests of Rivulet's hat client and `rivulet ... --hat` (host-tests/tests/hat_client.rs).

    hat_eventer_server.py [PING_DELAY]

Binds 127.0.0.1:0 and prints `listening PORT`, then serves until its hard timeout (or until it
is killed). What it does is what a test needs to see from a real server:

* A client named `intruder` is refused: its init gets hat's `('error', reason)`.
* Registrations get ids (server 1, session 1, instance 1, 2, ...) and the time; a registration
  with an event type starting `refuse` is answered `failure` (nothing stored). Stored events are
  notified with ack, as hat's Event Server does: to non-persisted subscribers at once, to
  persisted ones after that.
* An event of type `('status', S)` sets the server's status to S after it is answered; one of
  type `('exit',)` ends the server (status 0) once notified.
* Queries (latest, timeseries, server) page with maxResults and lastEventId.
* PING_DELAY (seconds, default 20) is the listener's chatter ping delay and ping timeout.

Each notification acked by a client prints `acked N` (N events) on stdout.
"""

import asyncio
import sys

import hat.event.common as common
from hat.drivers import net
from hat.event.eventer import server as eventer

from peer_common import make_log, start_watchdog

HARD_TIMEOUT = 120
log = make_log("hat_eventer_server")


class Store:
    def __init__(self):
        self.events = []
        self.server = None

    async def connected(self, info):
        if info.client_name == 'intruder':
            raise Exception('intruders are not welcome')

    async def register(self, _info, register_events):
        if any(e.type and e.type[0].startswith('refuse') for e in register_events):
            return None
        now = common.now()
        events = [common.Event(id=common.EventId(1, 1, len(self.events) + i + 1), type=e.type, timestamp=now,
                               source_timestamp=e.source_timestamp, payload=e.payload)
                  for i, e in enumerate(register_events)]
        self.events.extend(events)
        asyncio.get_running_loop().create_task(self.after_register(events))
        return events

    async def after_register(self, events):
        for persisted in (False, True):
            await self.server.notify_events(events, persisted, with_ack=True)
        print(f'acked {len(events)}', flush=True)
        for e in events:
            if len(e.type) == 2 and e.type[0] == 'status':
                await self.server.set_status(common.Status(e.type[1]))
            if e.type == ('exit',):
                self.server.close()

    async def query(self, _info, params):
        if isinstance(params, common.QueryLatestParams):
            latest = {}
            sub = common.create_subscription(params.event_types or [('*',)])
            for e in self.events:
                if sub.matches(e.type):
                    latest[e.type] = e
            return common.QueryResult(events=list(latest.values()), more_follows=False)
        if isinstance(params, common.QueryServerParams):
            events = [e for e in self.events if e.id.server == params.server_id]
        else:
            sub = common.create_subscription(params.event_types or [('*',)])
            events = [e for e in self.events if sub.matches(e.type)
                      and (params.t_from is None or e.timestamp >= params.t_from)
                      and (params.t_to is None or e.timestamp <= params.t_to)]
            if params.order == common.Order.DESCENDING:
                events.reverse()
        if params.last_event_id is not None:
            ids = [e.id for e in events]
            events = events[ids.index(params.last_event_id) + 1:] if params.last_event_id in ids else []
        limit = params.max_results if params.max_results is not None else len(events)
        return common.QueryResult(events=events[:max(limit, 0)], more_follows=len(events) > max(limit, 0))


async def main(argv):
    ping_delay = float(argv[0]) if argv else 20
    start_watchdog(HARD_TIMEOUT, log)
    store = Store()
    store.server = await eventer.listen(net.TcpAddress('127.0.0.1', 0), status=common.Status.OPERATIONAL,
                                        connected_cb=store.connected, register_cb=store.register,
                                        query_cb=store.query, ping_delay=ping_delay,
                                        ping_timeout=ping_delay)
    port = store.server._srv.info.addresses[0].port
    print(f'listening {port}', flush=True)
    await store.server.wait_closing()
    print('closed', flush=True)


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1:]))
