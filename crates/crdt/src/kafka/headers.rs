//! Header names of a replicated delta, and parsing a consumed message into an [`Event`].

use rdkafka::message::{Headers, Message};

use crate::error::CrdtError;
use crate::hlc::Timestamp;
use crate::replica::Event;

/// The origin cell of the delta.
pub const ORIGIN: &str = "x-crdt-origin";
/// The origin's outbox sequence number (decimal).
pub const SEQ: &str = "x-crdt-seq";
/// The HLC timestamp of the change (decimal, packed `u64`).
pub const HLC: &str = "x-crdt-hlc";
/// The delta kind (the outbox `type` column).
pub const TYPE: &str = "x-crdt-type";
/// The aggregate type (the outbox `aggregatetype` column).
pub const AGGREGATE_TYPE: &str = "x-crdt-aggregate-type";
/// Heartbeats only: the partition count of the topic when it was sent.
pub const PARTITIONS: &str = "x-crdt-partitions";
/// Heartbeats only: the sender's own acknowledged watermark (absent before it has one).
pub const ACK: &str = "x-crdt-ack";
/// The [`TYPE`] of a relay heartbeat (no payload): see [`Relay::with_heartbeat`](crate::kafka::Relay::with_heartbeat).
pub const TYPE_HEARTBEAT: &str = "crdt.heartbeat";

pub(crate) fn header<'a, M: Message>(msg: &'a M, name: &'static str) -> Result<&'a str, CrdtError>
where
    M::Headers: Headers,
{
    let h = msg.headers().ok_or(CrdtError::BadHeader(name))?;
    let mut found = None;
    for i in 0..h.count() {
        let Some(x) = h.try_get(i) else { break };
        if x.key == name {
            if found.is_some() {
                return Err(CrdtError::BadHeader(name));
            }
            found = x.value;
        }
    }
    let v = found.ok_or(CrdtError::BadHeader(name))?;
    std::str::from_utf8(v).map_err(|_| CrdtError::BadHeader(name))
}

/// A relay heartbeat read from a consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sending cell.
    pub origin: cellctx::CellId,
    /// Every write of `origin` stamped before this precedes the heartbeat in its partition.
    pub ts: Timestamp,
    /// The topic's partition count.
    pub partitions: i32,
    /// The sender's acknowledged watermark.
    pub ack: Option<Timestamp>,
}

/// Reads a [`Heartbeat`] from a message whose type header is [`TYPE_HEARTBEAT`].
pub fn heartbeat_from_message<M: Message>(msg: &M) -> Result<Heartbeat, CrdtError>
where
    M::Headers: Headers,
{
    let origin = header(msg, ORIGIN)?.parse().map_err(|_| CrdtError::BadHeader(ORIGIN))?;
    let ts = Timestamp(header(msg, HLC)?.parse().map_err(|_| CrdtError::BadHeader(HLC))?);
    let partitions = header(msg, PARTITIONS)?.parse().map_err(|_| CrdtError::BadHeader(PARTITIONS))?;
    if !(1..=100_000).contains(&partitions) {
        return Err(CrdtError::BadHeader(PARTITIONS));
    }
    let ack = match header(msg, ACK) {
        Ok(v) => Some(Timestamp(v.parse().map_err(|_| CrdtError::BadHeader(ACK))?)),
        Err(_) => None,
    };
    Ok(Heartbeat { origin, ts, partitions, ack })
}

/// Reads an [`Event`] from a consumed message: key = object id, payload = the
/// encoded delta, origin/sequence/HLC/type from the headers above.
pub fn event_from_message<M: Message>(msg: &M) -> Result<Event, CrdtError>
where
    M::Headers: Headers,
{
    let origin = header(msg, ORIGIN)?.parse().map_err(|_| CrdtError::BadHeader(ORIGIN))?;
    let seq = header(msg, SEQ)?.parse().map_err(|_| CrdtError::BadHeader(SEQ))?;
    let ts = Timestamp(header(msg, HLC)?.parse().map_err(|_| CrdtError::BadHeader(HLC))?);
    let event_type = header(msg, TYPE)?.to_string();
    let key = msg.key().ok_or(CrdtError::BadHeader("key"))?;
    let aggregate_id = std::str::from_utf8(key).map_err(|_| CrdtError::BadHeader("key"))?.to_string();
    let payload = msg.payload().unwrap_or_default().to_vec();
    Ok(Event { origin, seq, ts, aggregate_id, event_type, payload })
}
