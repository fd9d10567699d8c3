//! The sink's bounded queue: when full, the oldest alert is dropped.

use std::collections::VecDeque;

use super::payload::Alert;

/// Alerts waiting to be sent, oldest first, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<Alert>,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue { items: VecDeque::with_capacity(capacity.min(1024)), capacity: capacity.max(1) }
    }

    /// Appends `alert`; returns how many old alerts were dropped for room.
    pub(crate) fn push(&mut self, alert: Alert) -> u64 {
        self.items.push_back(alert);
        self.trim()
    }

    /// Takes up to `n` of the oldest alerts out (a batch to send).
    pub(crate) fn take(&mut self, n: usize) -> Vec<Alert> {
        let n = n.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// Puts a batch that could not be sent back in front of the newer
    /// alerts, then drops the oldest beyond the capacity; returns how many.
    pub(crate) fn put_back(&mut self, batch: Vec<Alert>) -> u64 {
        for alert in batch.into_iter().rev() {
            self.items.push_front(alert);
        }
        self.trim()
    }

    fn trim(&mut self) -> u64 {
        let mut dropped = 0;
        while self.items.len() > self.capacity {
            self.items.pop_front();
            dropped += 1;
        }
        dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    fn alert(i: u32) -> Alert {
        Alert {
            labels: [("n".to_string(), i.to_string())].into(),
            annotations: Default::default(),
            starts_at: UNIX_EPOCH,
            ends_at: None,
            generator_url: None,
        }
    }

    fn n(a: &Alert) -> u32 {
        a.labels["n"].parse().unwrap()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Take(usize),
        FailAndPutBack(usize),
    }

    proptest! {
        /// Whatever happens, the queue holds at most its capacity, nothing is
        /// lost without being counted (pushed = queued + taken + dropped), and
        /// what stays is the newest alerts, in order.
        #[test]
        fn bounded_counted_and_keeps_the_newest(
            capacity in 1usize..8,
            ops in prop::collection::vec(prop_oneof![
                4 => Just(Op::Push),
                1 => (1usize..5).prop_map(Op::Take),
                1 => (1usize..5).prop_map(Op::FailAndPutBack),
            ], 0..60),
        ) {
            let mut q = Queue::new(capacity);
            let (mut pushed, mut taken, mut dropped) = (0u32, 0u64, 0u64);
            for op in ops {
                match op {
                    Op::Push => { dropped += q.push(alert(pushed)); pushed += 1; }
                    Op::Take(k) => taken += q.take(k).len() as u64,
                    Op::FailAndPutBack(k) => { let b = q.take(k); dropped += q.put_back(b); }
                }
                prop_assert!(q.len() <= capacity);
                prop_assert_eq!(u64::from(pushed), q.len() as u64 + taken + dropped);
            }
            let rest: Vec<u32> = q.take(usize::MAX).iter().map(n).collect();
            prop_assert!(rest.windows(2).all(|w| w[0] < w[1]));
            if let Some(&last) = rest.last() {
                prop_assert_eq!(last + 1, pushed, "the newest alert is kept");
            }
        }
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = Queue::new(2);
        assert_eq!(q.push(alert(0)) + q.push(alert(1)), 0);
        assert_eq!(q.push(alert(2)), 1);
        let batch = q.take(1);
        assert_eq!(q.push(alert(3)), 0);
        // The batch failed: back in front, and the oldest goes.
        assert_eq!(q.put_back(batch), 1);
        assert_eq!(q.take(9).iter().map(n).collect::<Vec<_>>(), [2, 3]);
    }
}
