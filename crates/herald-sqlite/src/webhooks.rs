//! The webhook outbox in SQLite (`webhooks.sqlite3`): the embedded engine's [`WebhookOutbox`].
//!
//! Queued events are on disk before any delivery is tried, so a restart (graceful or not) sends
//! what was pending. One thread owns the connection; every call is one `IMMEDIATE` transaction,
//! and the dispatcher appends everything that arrived together in one call (a group commit). Two
//! tables: `outbox` (one row per queued event, read in id order per endpoint through an index on
//! (app, url, id)) and `dead_letters` (given up, kept until replayed). A replay moves a row back to
//! `outbox` under a new id, so it goes at the end of its endpoint's queue. WAL with
//! `synchronous=NORMAL`: a killed process loses nothing committed.

use std::path::Path;

use herald_core::webhooks::{DeadLetter, OutboxError, OutboxFuture, Queued, Replay, WebhookOutbox};
use rusqlite::{Connection, params};

use crate::OpenError;
use crate::transactor::Transactor;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, url TEXT NOT NULL,
        event TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS outbox_endpoint ON outbox (app, url, id);
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY, app TEXT NOT NULL, url TEXT NOT NULL, event TEXT NOT NULL,
        failed_at_ms INTEGER NOT NULL, reason TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS dead_letters_app ON dead_letters (app, id);
";

/// Webhook events waiting for delivery, and dead letters, in one SQLite file.
#[derive(Debug)]
pub struct SqliteWebhooks {
    store: Transactor,
}

fn unavailable(error: rusqlite::Error) -> OutboxError {
    OutboxError::Unavailable(error.to_string())
}

impl SqliteWebhooks {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Ok(Self { store: Transactor::open(path, SCHEMA, "herald-webhooks")? })
    }

    /// Runs `op` in one immediate transaction on the store's thread.
    fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, OutboxError> + Send + 'static,
    ) -> OutboxFuture<'_, T> {
        Box::pin(self.store.call(op, OutboxError::Unavailable))
    }
}

/// `?,?,…` for `n` ids.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",")
}

impl WebhookOutbox for SqliteWebhooks {
    fn append(&self, app: &str, url: &str, events: Vec<String>) -> OutboxFuture<'_, ()> {
        let (app, url) = (app.to_owned(), url.to_owned());
        self.call(move |conn| {
            let mut insert =
                conn.prepare_cached("INSERT INTO outbox (app, url, event) VALUES (?1, ?2, ?3)").map_err(unavailable)?;
            for event in &events {
                insert.execute(params![app, url, event]).map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn pending(&self, app: &str, url: &str, limit: usize) -> OutboxFuture<'_, Vec<Queued>> {
        let (app, url) = (app.to_owned(), url.to_owned());
        self.call(move |conn| {
            let mut select = conn
                .prepare_cached("SELECT id, event FROM outbox WHERE app = ?1 AND url = ?2 ORDER BY id LIMIT ?3")
                .map_err(unavailable)?;
            let rows = select
                .query_map(params![app, url, limit as i64], |row| Ok(Queued { id: row.get(0)?, event: row.get(1)? }))
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    fn pending_count(&self, app: &str, url: &str) -> OutboxFuture<'_, u64> {
        let (app, url) = (app.to_owned(), url.to_owned());
        self.call(move |conn| {
            // Answered from the `outbox_endpoint` index alone: no event text is read.
            let mut count =
                conn.prepare_cached("SELECT COUNT(*) FROM outbox WHERE app = ?1 AND url = ?2").map_err(unavailable)?;
            count.query_row(params![app, url], |row| row.get::<_, i64>(0)).map(|n| n as u64).map_err(unavailable)
        })
    }

    fn delivered(&self, app: &str, url: &str, ids: Vec<u64>) -> OutboxFuture<'_, ()> {
        let (app, url) = (app.to_owned(), url.to_owned());
        self.call(move |conn| {
            let mut delete = conn
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND app = ?2 AND url = ?3")
                .map_err(unavailable)?;
            for id in ids {
                delete.execute(params![id, app, url]).map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn bury(&self, app: &str, url: &str, ids: Vec<u64>, reason: &str, at_ms: u64) -> OutboxFuture<'_, ()> {
        let (app, url, reason) = (app.to_owned(), url.to_owned(), reason.to_owned());
        self.call(move |conn| {
            let mut copy = conn
                .prepare_cached(
                    "INSERT INTO dead_letters (id, app, url, event, failed_at_ms, reason)
                     SELECT id, app, url, event, ?4, ?5 FROM outbox WHERE id = ?1 AND app = ?2 AND url = ?3",
                )
                .map_err(unavailable)?;
            let mut delete = conn
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND app = ?2 AND url = ?3")
                .map_err(unavailable)?;
            for id in ids {
                copy.execute(params![id, app, url, at_ms, reason]).map_err(unavailable)?;
                delete.execute(params![id, app, url]).map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn dead_letters(&self, app: &str, limit: usize) -> OutboxFuture<'_, Vec<DeadLetter>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, url, event, failed_at_ms, reason FROM dead_letters WHERE app = ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = select
                .query_map(params![app, limit as i64], |row| {
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        url: row.get(1)?,
                        event: row.get(2)?,
                        failed_at_ms: row.get(3)?,
                        reason: row.get(4)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    fn replay(&self, app: &str, which: Replay) -> OutboxFuture<'_, u64> {
        let app = app.to_owned();
        self.call(move |conn| {
            let filter = match &which {
                Replay::All => String::new(),
                Replay::Ids(ids) if ids.is_empty() => return Ok(0),
                Replay::Ids(ids) => format!(" AND id IN ({})", placeholders(ids.len(), 2)),
            };
            let mut values: Vec<rusqlite::types::Value> = vec![app.into()];
            if let Replay::Ids(ids) = &which {
                values.extend(ids.iter().map(|id| rusqlite::types::Value::Integer(*id as i64)));
            }
            let moved = conn
                .execute(
                    &format!(
                        "INSERT INTO outbox (app, url, event)
                         SELECT app, url, event FROM dead_letters WHERE app = ?1{filter} ORDER BY id"
                    ),
                    rusqlite::params_from_iter(values.iter()),
                )
                .map_err(unavailable)?;
            conn.execute(
                &format!("DELETE FROM dead_letters WHERE app = ?1{filter}"),
                rusqlite::params_from_iter(values.iter()),
            )
            .map_err(unavailable)?;
            Ok(moved as u64)
        })
    }
}
