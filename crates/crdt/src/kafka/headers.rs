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

fn header<'a, M: Message>(msg: &'a M, name: &'static str) -> Result<&'a str, CrdtError>
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
