//! The channels one session is subscribed to, kept small because most connections hold one or two
//! and an idle connection should cost little: a vector sorted by name, grown one slot at a time
//! and searched by bisection (a session holds at most `max_channels_per_connection`). A hash map
//! allocated a table of several slots for the first subscription (measured in BENCHMARKS.md).

use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Subscriptions<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for Subscriptions<V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<V> Subscriptions<V> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, channel: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(name, _)| (**name).cmp(channel))
    }

    pub(crate) fn contains_key(&self, channel: &str) -> bool {
        self.find(channel).is_ok()
    }

    pub(crate) fn get(&self, channel: &str) -> Option<&V> {
        self.find(channel).ok().map(|at| &self.entries[at].1)
    }

    /// Adds or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, channel: Arc<str>, value: V) -> Option<V> {
        match self.find(&channel) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                self.entries.reserve_exact(1);
                self.entries.insert(at, (channel, value));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, channel: &str) -> Option<V> {
        let at = self.find(channel).ok()?;
        let (_, value) = self.entries.remove(at);
        if self.entries.capacity() > 2 * self.entries.len() + 4 {
            self.entries.shrink_to_fit();
        }
        Some(value)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_in_name_order() {
        let mut subscriptions = Subscriptions::default();
        for name in ["b", "a", "c"] {
            assert_eq!(subscriptions.insert(Arc::from(name), name.len()), None);
        }
        assert_eq!(subscriptions.insert(Arc::from("a"), 7), Some(1));
        assert_eq!(subscriptions.get("a"), Some(&7));
        assert!(subscriptions.contains_key("c") && !subscriptions.contains_key("d"));
        assert_eq!(subscriptions.keys().map(|k| &**k).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(subscriptions.remove("b"), Some(1));
        assert_eq!(subscriptions.remove("b"), None);
        assert_eq!(subscriptions.len(), 2);
    }

    #[test]
    fn one_subscription_takes_one_slot() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.insert(Arc::from("only"), ());
        assert_eq!(subscriptions.entries.capacity(), 1);
    }
}
