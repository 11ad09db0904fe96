//! Feeds, read cursors and channel positions in one SQLite file: the embedded engine's
//! [`FeedStore`](herald_core::feeds::FeedStore) and [`CursorStore`](herald_core::cursors::CursorStore).
//!
//! Why one file and one thread: a feed change must be validated, published and stored as one step,
//! so that stored order is serial order. One thread owns the connection and runs every call as one
//! `IMMEDIATE` transaction; a feed change calls the hub's [`Publish`](herald_core::feeds::Publish)
//! from inside its transaction, so no other change can come between the serial and the write.
//! Answers go back through a tokio oneshot, so async callers never block a runtime thread.
//!
//! The file also books each feed's and counted channel's position (epoch and head), so that a
//! restarted node can carry on its serials ([`SqliteState::booked`]); [`SqliteState::close`] marks
//! a clean stop and [`SqliteState::was_clean`] tells the next process whether it had one. What to
//! do with a file that was not closed cleanly is the server's decision, not this store's: it keeps
//! what it has. It does not keep events (that is `SqliteHistory`) nor decide epochs.

mod cursors;
mod feeds;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::OpenError;

/// A channel whose position the file remembers: the epoch and the serial of its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booked {
    pub channel: String,
    pub epoch: String,
    pub head: u64,
}

/// Why a plain (non-trait) call on [`SqliteState`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store stopped")]
    Stopped,
    #[error("state database: {0}")]
    Database(#[from] rusqlite::Error),
}

/// Feeds, read cursors and channel positions in one SQLite file.
#[derive(Debug)]
pub struct SqliteState {
    calls: mpsc::Sender<Call>,
    thread: Option<JoinHandle<()>>,
    was_clean: bool,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS feeds (
        app TEXT NOT NULL, channel TEXT NOT NULL, epoch TEXT NOT NULL, head INTEGER NOT NULL,
        horizon INTEGER NOT NULL, PRIMARY KEY (app, channel)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS feed_items (
        app TEXT NOT NULL, channel TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL,
        serial INTEGER NOT NULL, pos REAL NOT NULL, PRIMARY KEY (app, channel, id));
    CREATE INDEX IF NOT EXISTS feed_items_order ON feed_items (app, channel, pos);
    CREATE TABLE IF NOT EXISTS feed_retracted (
        app TEXT NOT NULL, channel TEXT NOT NULL, id TEXT NOT NULL, serial INTEGER NOT NULL,
        PRIMARY KEY (app, channel, id)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS feed_retracted_serial ON feed_retracted (app, channel, serial);
    CREATE TABLE IF NOT EXISTS cursors (
        app TEXT NOT NULL, user TEXT NOT NULL, channel TEXT NOT NULL, serial INTEGER NOT NULL,
        PRIMARY KEY (app, user, channel)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS cursors_channel ON cursors (app, channel);
    CREATE TABLE IF NOT EXISTS counted (
        app TEXT NOT NULL, channel TEXT NOT NULL, serial INTEGER NOT NULL,
        PRIMARY KEY (app, channel, serial)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS positions (
        app TEXT NOT NULL, channel TEXT NOT NULL, epoch TEXT NOT NULL, head INTEGER NOT NULL,
        PRIMARY KEY (app, channel)) WITHOUT ROWID;
";

/// The `meta` row saying the last process closed the file (its own key: the history store may
/// share the file and keeps its own flag in the same table).
const CLEAN_KEY: &str = "state_clean";

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

impl SqliteState {
    /// Opens (or creates) the file and marks it in use until [`close`](Self::close).
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let error = |source| OpenError { path: path.display().to_string(), source };
        let mut conn = Connection::open(path).map_err(error)?;
        conn.execute_batch(SCHEMA).map_err(error)?;
        let was_clean = take_clean_flag(&mut conn).map_err(error)?;
        let (calls, receiver) = mpsc::channel::<Call>();
        let thread = std::thread::Builder::new()
            .name("herald-state".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(call) = receiver.recv() {
                    // A feed change runs the hub's publish here; if that panics, the transaction
                    // rolls back, that caller hears "stopped", and the store keeps serving.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut conn)));
                    if ran.is_err() {
                        tracing::error!("a state store call panicked; its transaction was rolled back");
                    }
                }
            })
            .map_err(|e| error(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self { calls, thread: Some(thread), was_clean })
    }

    /// Whether the process before this one closed the file with [`close`](Self::close) (a new
    /// file counts as clean: it holds nothing to distrust).
    pub fn was_clean(&self) -> bool {
        self.was_clean
    }

    /// Marks the file as closed cleanly; call it last, at a graceful stop. Waits for the write.
    pub fn close(&self) {
        let marked = self.ask_blocking(|tx| {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, 1)", params![CLEAN_KEY])?;
            Ok(())
        });
        if let Err(error) = marked {
            tracing::error!(%error, "state file not marked clean; the next start will distrust it");
        }
    }

    /// Every channel of `app` whose position the file remembers: feeds and counted or saved
    /// channels, one entry per channel (the greater head when both know it). Blocks until read.
    pub fn booked(&self, app: &str) -> Result<Vec<Booked>, StateError> {
        let app = app.to_owned();
        self.ask_blocking(move |tx| {
            let mut found: BTreeMap<String, (String, u64)> = BTreeMap::new();
            for table in ["feeds", "positions"] {
                let mut statement = tx.prepare(&format!("SELECT channel, epoch, head FROM {table} WHERE app = ?1"))?;
                let rows = statement.query_map(params![app], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                for row in rows {
                    let (channel, epoch, head): (String, String, u64) = row?;
                    match found.get(&channel) {
                        Some((_, known)) if *known >= head => {}
                        _ => {
                            found.insert(channel, (epoch, head));
                        }
                    }
                }
            }
            Ok(found.into_iter().map(|(channel, (epoch, head))| Booked { channel, epoch, head }).collect())
        })
    }

    /// Remembers channel positions (at a graceful stop): a channel's head only grows within its
    /// epoch; another epoch replaces the entry (and drops what was counted in the old one). Blocks
    /// until written; a failure is logged.
    pub fn save_positions(&self, app: &str, positions: Vec<Booked>) {
        let app = app.to_owned();
        let count = positions.len();
        let saved = self.ask_blocking(move |tx| {
            for booked in &positions {
                book_position(tx, &app, &booked.channel, &booked.epoch, booked.head)?;
            }
            Ok(())
        });
        if let Err(error) = saved {
            tracing::error!(%error, count, "channel positions not saved; their serials may restart");
        }
    }

    /// Runs `op` on the store's thread and answers through a oneshot (for async callers).
    fn ask<T, E>(
        &self,
        stopped: fn(String) -> E,
        op: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let sent = self.calls.send(Box::new(move |conn: &mut Connection| {
            let _ = reply.send(op(conn));
        }));
        async move {
            sent.map_err(|_| stopped("state store stopped".into()))?;
            answer.await.map_err(|_| stopped("state store stopped".into()))?
        }
    }

    /// Runs `op` in one immediate transaction on the store's thread and waits for it, without
    /// tokio (safe to call from inside a runtime, where a blocking oneshot receive would panic).
    fn ask_blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Transaction<'_>) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let call: Call = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(immediate(conn, StateError::Database, op));
        });
        self.calls.send(call).map_err(|_| StateError::Stopped)?;
        answer.recv().map_err(|_| StateError::Stopped)?
    }
}

impl Drop for SqliteState {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has run every call already sent.
        let (calls, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.calls, calls));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `op` in one immediate transaction and commits it when `op` succeeds.
fn immediate<T, E>(
    conn: &mut Connection,
    db: fn(rusqlite::Error) -> E,
    op: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let value = op(&tx)?;
    tx.commit().map_err(db)?;
    Ok(value)
}

/// Reads whether the last process closed the file cleanly, then marks it in use.
fn take_clean_flag(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let clean: Option<i64> =
        tx.query_row("SELECT value FROM meta WHERE key = ?1", params![CLEAN_KEY], |row| row.get(0)).optional()?;
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, 0)", params![CLEAN_KEY])?;
    tx.commit()?;
    Ok(clean.is_none_or(|value| value == 1))
}

/// Books `channel` at (`epoch`, `head`): the head only grows within an epoch. A new epoch starts
/// the channel's serials over, so the serials counted in the old one and the cursors pointing into
/// it mean nothing any more: they are dropped (cursors go back to 0).
fn book_position(tx: &Transaction<'_>, app: &str, channel: &str, epoch: &str, head: u64) -> rusqlite::Result<()> {
    // A booked channel's serials continue across epochs (after an unclean stop the hub starts a
    // new epoch at the kept head), so counted serials and cursors stay comparable: keep them.
    tx.execute(
        "INSERT INTO positions (app, channel, epoch, head) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app, channel) DO UPDATE SET epoch = excluded.epoch, head = max(head, excluded.head)",
        params![app, channel, epoch, head],
    )?;
    Ok(())
}
