"""The JSON codec a Chaski node (chaski-confluent 0.1a5) uses to talk to a Rivulet gateway, in
place of pickle (unpickling network bytes lets a peer run code). Give it to the node:

    from chaski.streamer import ChaskiStreamer
    import chaski_json
    node = ChaskiStreamer(..., serializer=chaski_json.dumps, deserializer=chaski_json.loads)

A Message is {"$msg": {command, topic, data, timestamp, ttl, uuid}}, bytes {"$b64": base64},
datetimes {"$dt": isoformat} and sets {"$set": sorted list}; docs/CHASKI.md is the contract.
"""

import base64
import json
from datetime import datetime

from chaski.node import Message


def _tag(o):
    if isinstance(o, Message):
        return {"$msg": {"command": o.command, "topic": o.topic, "data": o.data,
                         "timestamp": o.timestamp, "ttl": o.ttl, "uuid": o.uuid}}
    if isinstance(o, (bytes, bytearray)):
        return {"$b64": base64.b64encode(o).decode()}
    if isinstance(o, datetime):
        return {"$dt": o.isoformat()}
    if isinstance(o, (set, frozenset)):
        return {"$set": sorted(o)}
    raise TypeError(f"chaski_json cannot encode {type(o).__name__}")


def _untag(d):
    if len(d) == 1:
        (key, value), = d.items()
        if key == "$msg":
            return Message(**value)
        if key == "$b64":
            return base64.b64decode(value, validate=True)
        if key == "$dt":
            return datetime.fromisoformat(value)
        if key == "$set":
            return set(value)
    return d


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), default=_tag).encode()


def loads(data):
    return json.loads(data, object_hook=_untag)
