//! The in-memory [`WebhookOutbox`]: the reference for the conformance checks, and the outbox of
//! engines that have no durable one yet (nothing survives a restart).

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{DeadLetter, OutboxFuture, Queued, Replay, WebhookOutbox};

#[derive(Debug, Default)]
pub struct MemoryOutbox {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// id → (app, url, event)
    queued: BTreeMap<u64, (String, String, String)>,
    /// id → (app, letter)
    dead: BTreeMap<u64, (String, DeadLetter)>,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl WebhookOutbox for MemoryOutbox {
    fn append(&self, app: &str, url: &str, events: Vec<String>) -> OutboxFuture<'_, ()> {
        let mut inner = self.inner.lock();
        for event in events {
            let id = inner.next();
            inner.queued.insert(id, (app.to_owned(), url.to_owned(), event));
        }
        Box::pin(async { Ok(()) })
    }

    fn pending(&self, app: &str, url: &str, limit: usize) -> OutboxFuture<'_, Vec<Queued>> {
        let found = self
            .inner
            .lock()
            .queued
            .iter()
            .filter(|(_, (a, u, _))| a == app && u == url)
            .take(limit)
            .map(|(id, (_, _, event))| Queued { id: *id, event: event.clone() })
            .collect();
        Box::pin(async { Ok(found) })
    }

    fn pending_count(&self, app: &str, url: &str) -> OutboxFuture<'_, u64> {
        let count = self.inner.lock().queued.values().filter(|(a, u, _)| a == app && u == url).count() as u64;
        Box::pin(async move { Ok(count) })
    }

    fn delivered(&self, app: &str, url: &str, ids: Vec<u64>) -> OutboxFuture<'_, ()> {
        let mut inner = self.inner.lock();
        for id in ids {
            if inner.queued.get(&id).is_some_and(|(a, u, _)| a == app && u == url) {
                inner.queued.remove(&id);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn bury(&self, app: &str, url: &str, ids: Vec<u64>, reason: &str, at_ms: u64) -> OutboxFuture<'_, ()> {
        let mut inner = self.inner.lock();
        for id in ids {
            if !inner.queued.get(&id).is_some_and(|(a, u, _)| a == app && u == url) {
                continue;
            }
            if let Some((app, url, event)) = inner.queued.remove(&id) {
                let letter = DeadLetter { id, url, event, failed_at_ms: at_ms, reason: reason.to_owned() };
                inner.dead.insert(id, (app, letter));
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn dead_letters(&self, app: &str, limit: usize) -> OutboxFuture<'_, Vec<DeadLetter>> {
        let found = self
            .inner
            .lock()
            .dead
            .values()
            .filter(|(a, _)| a == app)
            .take(limit)
            .map(|(_, letter)| letter.clone())
            .collect();
        Box::pin(async { Ok(found) })
    }

    fn replay(&self, app: &str, which: Replay) -> OutboxFuture<'_, u64> {
        let mut inner = self.inner.lock();
        let ids: Vec<u64> = inner
            .dead
            .iter()
            .filter(|(id, (a, _))| {
                a == app
                    && match &which {
                        Replay::All => true,
                        Replay::Ids(ids) => ids.contains(id),
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some((app, letter)) = inner.dead.remove(id) {
                let new_id = inner.next();
                inner.queued.insert(new_id, (app, letter.url, letter.event));
            }
        }
        let count = ids.len() as u64;
        Box::pin(async move { Ok(count) })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conforms() {
        super::super::conformance::run_all(&super::MemoryOutbox::default()).await;
    }
}
