//! What the connection's machine reports, copied out of its buffers ([`LinkEvent`]) so the
//! machine is free for the next packet while the task acts on it.

use rivulet_core::session::{Incoming, InitRequest, LinkEnd, Reply, RequestId, ServerEvent};

use crate::model::{EventPath, Query, RegisterEvent};
use crate::packet::{CallError, PacketReply, PacketRequest};

/// A client's init, copied out of the packet.
pub(super) struct Init {
    pub(super) client_name: String,
    pub(super) credential: Option<Vec<u8>>,
    pub(super) subscriptions: Vec<EventPath>,
    pub(super) server_id: Option<u64>,
    pub(super) persisted: bool,
    pub(super) session: Option<u64>,
    pub(super) first_seq: u32,
    pub(super) keepalive_ms: u32,
    pub(super) max_packet: u32,
}

impl From<&InitRequest<'_>> for Init {
    fn from(request: &InitRequest<'_>) -> Self {
        Init {
            client_name: request.client_name.into(),
            credential: request.credential.map(<[u8]>::to_vec),
            subscriptions: request.subscriptions.iter().map(EventPath::from).collect(),
            server_id: request.server_id,
            persisted: request.persisted,
            session: request.session,
            first_seq: request.first_seq,
            keepalive_ms: request.keepalive_ms,
            max_packet: request.limits.max_packet,
        }
    }
}

/// An event of the connection's machine, with what it borrowed copied out.
pub(super) enum LinkEvent {
    Init(Incoming, Init),
    Subscribe(Incoming, Vec<EventPath>),
    Register(u32, RegisterEvent),
    RegisterRequest(Incoming, Vec<RegisterEvent>),
    Query(Incoming, Query),
    Request(Incoming, PacketRequest),
    Acked(u32),
    Answer(RequestId, Result<PacketReply, CallError>),
    Ended(LinkEnd),
    Other,
}

impl From<ServerEvent<'_>> for LinkEvent {
    fn from(event: ServerEvent<'_>) -> Self {
        match event {
            ServerEvent::Init { from, request } => LinkEvent::Init(from, Init::from(&request)),
            ServerEvent::Subscribe { from, subscriptions } => {
                LinkEvent::Subscribe(from, subscriptions.iter().map(EventPath::from).collect())
            }
            ServerEvent::Register { seq, event } => LinkEvent::Register(seq, event.into()),
            ServerEvent::RegisterRequest { from, events } => {
                LinkEvent::RegisterRequest(from, events.iter().map(RegisterEvent::from).collect())
            }
            ServerEvent::Query { from, params } => LinkEvent::Query(from, Query::from(&params)),
            ServerEvent::Request { from, rq_type, flags, payload } => {
                LinkEvent::Request(from, PacketRequest { rq_type, flags, payload: payload.to_vec() })
            }
            ServerEvent::Acked { count } => LinkEvent::Acked(count),
            ServerEvent::Response { id, reply: Reply::App { flags, payload } } => {
                LinkEvent::Answer(id, Ok(PacketReply::new(flags, payload)))
            }
            ServerEvent::Response { .. } => LinkEvent::Other,
            ServerEvent::RequestFailed { id, error } => LinkEvent::Answer(id, Err(error.into())),
            ServerEvent::LinkEnded(end) => LinkEvent::Ended(end),
        }
    }
}
