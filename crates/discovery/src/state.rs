//! The watcher's registry state: what a re-list or a watch event does to the
//! known instances. Pure (no I/O), so its rules are unit tested.
//!
//! Rules:
//! - a malformed value (bad JSON, failed validation, key and value disagree,
//!   empty) is skipped and counted; a key that held a valid value keeps it;
//! - a re-list that would leave no instance at all while some are known is
//!   rejected (the registry "blinked": restored from an empty snapshot, wrong
//!   prefix, half-written) and the last known instances are kept;
//! - watch events apply one by one: a delete removes its key.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::instance::Instance;

/// What one re-list did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The known instances changed.
    pub(crate) changed: bool,
    /// Malformed values skipped.
    pub(crate) malformed: u64,
    /// The whole push was rejected (kept the last known instances).
    pub(crate) rejected: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    prefix: String,
    entries: BTreeMap<Arc<str>, Arc<Instance>>,
}

impl State {
    pub(crate) fn new(prefix: String) -> Self {
        State { prefix, entries: BTreeMap::new() }
    }

    pub(crate) fn entries(&self) -> &BTreeMap<Arc<str>, Arc<Instance>> {
        &self.entries
    }

    /// Replaces the known instances by a full listing of the prefix.
    pub(crate) fn relist<'a>(&mut self, kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Outcome {
        let mut out = Outcome::default();
        let mut next = BTreeMap::new();
        for (key, value) in kvs {
            match Instance::decode(&self.prefix, key, value) {
                Ok(inst) => {
                    let key: Arc<str> = Arc::from(String::from_utf8_lossy(key).as_ref());
                    let inst = self.reuse(&key, inst);
                    next.insert(key, inst);
                }
                Err(e) => {
                    out.malformed += 1;
                    tracing::warn!(error = %e, "skipping malformed registration");
                    let key = String::from_utf8_lossy(key);
                    if let Some((k, v)) = self.entries.get_key_value(key.as_ref()) {
                        next.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if next.is_empty() && !self.entries.is_empty() {
            tracing::warn!(prefix = %self.prefix, known = self.entries.len(), "rejecting an empty registry listing; keeping the last known instances");
            out.rejected = true;
            return out;
        }
        out.changed = next != self.entries;
        self.entries = next;
        out
    }

    /// Applies a put event; `Err` (and no change) when the value is malformed.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<bool, crate::Error> {
        let inst = Instance::decode(&self.prefix, key, value)?;
        let key: Arc<str> = Arc::from(String::from_utf8_lossy(key).as_ref());
        if self.entries.get(&key).is_some_and(|old| **old == inst) {
            return Ok(false);
        }
        self.entries.insert(key, Arc::new(inst));
        Ok(true)
    }

    /// Applies a delete event.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        self.entries.remove(String::from_utf8_lossy(key).as_ref()).is_some()
    }

    /// Keeps the existing `Arc` when the instance did not change, so consumers
    /// can compare by pointer.
    fn reuse(&self, key: &str, inst: Instance) -> Arc<Instance> {
        match self.entries.get(key) {
            Some(old) if **old == inst => old.clone(),
            _ => Arc::new(inst),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn inst(cell: &str, port: u16) -> Instance {
        Instance::try_new("svc", cell.parse().unwrap(), format!("127.0.0.1:{port}")).unwrap()
    }

    fn kv(i: &Instance) -> (Vec<u8>, Vec<u8>) {
        (i.key("/r").into_bytes(), i.to_json())
    }

    fn state() -> State {
        State::new(crate::instance::service_prefix("/r", "svc"))
    }

    fn relist(s: &mut State, kvs: &[(Vec<u8>, Vec<u8>)]) -> Outcome {
        s.relist(kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    #[test]
    fn relist_replaces_and_reports_change() {
        let mut s = state();
        let (a, b) = (kv(&inst("a", 1)), kv(&inst("b", 2)));
        let out = relist(&mut s, &[a.clone(), b.clone()]);
        assert_eq!(out, Outcome { changed: true, malformed: 0, rejected: false });
        assert_eq!(s.entries().len(), 2);
        let out = relist(&mut s, &[a.clone(), b]);
        assert!(!out.changed);
        let out = relist(&mut s, &[a]);
        assert!(out.changed);
        assert_eq!(s.entries().len(), 1);
    }

    #[test]
    fn empty_relist_is_rejected_when_instances_are_known() {
        let mut s = state();
        // an empty registry at start is simply empty
        assert_eq!(relist(&mut s, &[]), Outcome::default());
        relist(&mut s, &[kv(&inst("a", 1))]);
        let out = relist(&mut s, &[]);
        assert!(out.rejected && !out.changed);
        assert_eq!(s.entries().len(), 1);
        // a listing where every value is malformed is as good as empty
        let (k, _) = kv(&inst("b", 2));
        let out = relist(&mut s, &[(k, b"garbage".to_vec())]);
        assert_eq!(out, Outcome { changed: false, malformed: 1, rejected: true });
        assert_eq!(s.entries().len(), 1);
    }

    #[test]
    fn malformed_value_keeps_the_previous_one() {
        let mut s = state();
        let a = inst("a", 1);
        let (k, v) = kv(&a);
        assert!(s.put(&k, &v).unwrap());
        assert!(!s.put(&k, &v).unwrap(), "same value is no change");
        assert!(s.put(&k, b"{").is_err());
        assert!(s.put(&k, b"").is_err());
        assert_eq!(*s.entries()[std::str::from_utf8(&k).unwrap()], a);
        // in a relist too: the key keeps its last valid value
        let other = kv(&inst("b", 2));
        let out = relist(&mut s, &[(k.clone(), b"nope".to_vec()), other]);
        assert_eq!(out, Outcome { changed: true, malformed: 1, rejected: false });
        assert_eq!(s.entries().len(), 2);
        assert!(s.delete(&k));
        assert!(!s.delete(&k));
        assert_eq!(s.entries().len(), 1);
    }
}
