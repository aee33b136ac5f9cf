//! Calling a connected client's request handler by name, whatever front-end it came through:
//! the broker checks the caller's ACL and asks each front-end, in the order they were attached,
//! for its newest client of that name.

use rivulet_tokio::packet::{CallError, PacketReply, PacketRequest};

use super::{Broker, BrokerError};
use crate::access::Principal;

impl Broker {
    /// `who` calls request `request` of the client named `target` and gets its answer.
    pub async fn call(
        &self,
        who: &Principal<'_>,
        target: &str,
        request: PacketRequest,
    ) -> Result<PacketReply, BrokerError> {
        self.denied(who, self.access.check_call(who, target))?;
        let calling = self.frontends().iter().find_map(|frontend| frontend.call(target, request.clone()));
        let calling = calling.ok_or_else(|| BrokerError::Unavailable(format!("no client {target:?} is connected")))?;
        calling.await.map_err(|e| match e {
            CallError::Disconnected | CallError::TimedOut => BrokerError::Unavailable(format!("{target}: {e}")),
            CallError::Refused(_) | CallError::TooLarge => BrokerError::Invalid(format!("{target}: {e}")),
        })
    }
}
