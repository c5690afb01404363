//! Coalescing of repeated calls: while a call for a key is in flight, asking for it again only
//! marks it to run once more when it ends, so a burst of commits costs each member one
//! notification in flight and one after it, and a burst of notifications one pull in flight and
//! one after it (which then fetches everything the burst announced).

use std::collections::HashMap;
use std::hash::Hash;

/// The calls in flight, by key, each with whether it was asked for again meanwhile.
pub(crate) struct Coalescer<K> {
    calls: parking_lot::Mutex<HashMap<K, bool>>,
}

impl<K: Eq + Hash + Clone> Coalescer<K> {
    pub(crate) fn new() -> Self {
        Self {
            calls: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Whether the caller is to make the call for `key` now: true when none is in flight;
    /// otherwise the one in flight is marked to run once more, and the caller does nothing.
    pub(crate) fn begin(&self, key: &K) -> bool {
        let mut calls = self.calls.lock();
        match calls.get_mut(key) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                calls.insert(key.clone(), false);
                true
            }
        }
    }

    /// After the call for `key`: whether to make it once more (it was asked for while it ran);
    /// otherwise `key` is free again.
    pub(crate) fn finish(&self, key: &K) -> bool {
        let mut calls = self.calls.lock();
        match calls.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                calls.remove(key);
                false
            }
        }
    }

    /// Frees `key` whatever was asked for meanwhile (the call cannot be made again).
    pub(crate) fn release(&self, key: &K) {
        self.calls.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::Coalescer;

    /// A burst of requests while one call is in flight runs it exactly once more; other keys are
    /// independent; a finished key starts afresh.
    #[test]
    fn a_burst_during_a_call_runs_it_once_more() {
        let calls = Coalescer::new();
        assert!(calls.begin(&"b"));
        for _ in 0..10 {
            assert!(!calls.begin(&"b"));
        }
        assert!(calls.begin(&"c"), "another key is not held back");
        assert!(calls.finish(&"b"), "asked for meanwhile: once more");
        assert!(!calls.finish(&"b"), "and no more");
        assert!(calls.begin(&"b"), "free again");
        assert!(!calls.finish(&"b"));
        assert!(!calls.finish(&"c"));
        assert!(calls.begin(&"d"));
        assert!(!calls.begin(&"d"));
        calls.release(&"d");
        assert!(calls.begin(&"d"), "released whatever was asked");
    }
}
