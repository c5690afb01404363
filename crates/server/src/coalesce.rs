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

    /// [`Self::begin`] as a guard: `None` when a call for `key` is in flight (it was marked to
    /// run once more); otherwise the caller's turn, which frees `key` when dropped before
    /// [`Turn::again`] said the calls are over (an error, a panic, a cancelled task).
    pub(crate) fn turn(&self, key: &K) -> Option<Turn<'_, K>> {
        self.begin(key).then(|| Turn {
            calls: self,
            key: key.clone(),
            over: false,
        })
    }
}

/// The caller's turn to make the call for a key (see [`Coalescer::turn`]).
pub(crate) struct Turn<'a, K: Eq + Hash + Clone> {
    calls: &'a Coalescer<K>,
    key: K,
    over: bool,
}

impl<K: Eq + Hash + Clone> Turn<'_, K> {
    /// After a call: whether to make it once more ([`Coalescer::finish`]).
    pub(crate) fn again(&mut self) -> bool {
        let again = self.calls.finish(&self.key);
        self.over = !again;
        again
    }
}

impl<K: Eq + Hash + Clone> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        if !self.over {
            self.calls.release(&self.key);
        }
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

    /// A turn dropped before its calls are over (an error, a panic) frees its key; one whose
    /// calls are over leaves alone the key a later caller took.
    #[test]
    fn a_turn_frees_its_key_unless_its_calls_are_over() {
        let calls = Coalescer::new();
        {
            let turn = calls.turn(&"b").expect("free");
            assert!(calls.turn(&"b").is_none(), "in flight");
            drop(turn);
        }
        let mut turn = calls.turn(&"b").expect("freed by the drop");
        assert!(!turn.again());
        let later = calls.turn(&"b").expect("free once the calls are over");
        drop(turn);
        assert!(calls.turn(&"b").is_none(), "the later turn still holds it");
        drop(later);
    }
}
