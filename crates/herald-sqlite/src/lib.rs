//! Channel history kept in SQLite, so that a restart keeps epochs and serials and clients resume
//! across it.
//!
//! One writer thread owns the write connection and applies changes in batches, one transaction per
//! batch (group commit), so the hub's publish path only pushes onto a queue. The queue is not
//! bounded on purpose: dropping a change would let a restarted node reuse serials, which is the
//! silent gap this crate exists to prevent. WAL mode with `synchronous=NORMAL`: a process crash loses
//! nothing that was committed; a power loss can lose the last batches but never corrupts the file.
//! A graceful stop calls [`HistoryStore::close`], which writes everything and marks the file as
//! cleanly closed. A file that was not closed cleanly (the process was killed) may hold fewer events
//! than clients saw, and a restarted node would then hand out some serials a second time; so such a
//! file's channels are dropped on open, and every resuming client is told `recovered: false`.

mod jobs;
mod state;
mod transactor;
mod webhooks;

pub use jobs::SqliteJobs;
pub use state::{Booked, SqliteState, StateError};
pub use webhooks::SqliteWebhooks;

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use herald_core::{HistoryChange, HistoryStore, StoreError, StoredChannel, StoredEvent};
use rusqlite::{Connection, params};

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS channels (
        app TEXT NOT NULL, name TEXT NOT NULL, epoch TEXT NOT NULL, head INTEGER NOT NULL,
        PRIMARY KEY (app, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS events (
        app TEXT NOT NULL, channel TEXT NOT NULL, serial INTEGER NOT NULL, at_ms INTEGER NOT NULL,
        frame BLOB NOT NULL, PRIMARY KEY (app, channel, serial)) WITHOUT ROWID;
";

enum Command {
    Change(HistoryChange),
    Flush(mpsc::SyncSender<()>),
    /// Everything before this was written: the file may be trusted on the next open.
    MarkClean,
}

/// Channel history in one SQLite file.
#[derive(Debug)]
pub struct SqliteHistory {
    commands: mpsc::Sender<Command>,
    reader: std::sync::Mutex<Connection>,
    writer: Option<JoinHandle<()>>,
}

/// The database could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot open history database {path}: {source}")]
pub struct OpenError {
    path: String,
    source: rusqlite::Error,
}

impl SqliteHistory {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let open = || -> rusqlite::Result<(Connection, Connection)> {
            let writer = Connection::open(path)?;
            writer.execute_batch(SCHEMA)?;
            distrust_unless_closed_cleanly(&writer)?;
            let reader = Connection::open(path)?;
            Ok((writer, reader))
        };
        let (writer, reader) = open().map_err(|source| OpenError { path: path.display().to_string(), source })?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("herald-history".into())
            .spawn(move || write_loop(writer, receiver))
            .map_err(|e| OpenError {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(e.into()),
            })?;
        Ok(Self { commands: sender, reader: std::sync::Mutex::new(reader), writer: Some(thread) })
    }
}

impl HistoryStore for SqliteHistory {
    fn record(&self, change: HistoryChange) {
        if self.commands.send(Command::Change(change)).is_err() {
            tracing::error!("history writer is gone; a change was not saved");
        }
    }

    fn load(&self, app_id: &str) -> Result<Vec<StoredChannel>, StoreError> {
        let reader = self.reader.lock().map_err(|_| StoreError("reader lock poisoned".into()))?;
        load(&reader, app_id).map_err(|e| StoreError(e.to_string()))
    }

    fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn close(&self) {
        let _ = self.commands.send(Command::MarkClean);
        self.flush();
    }
}

/// Drops all channels of a file that was not closed cleanly, then marks it as in use.
fn distrust_unless_closed_cleanly(connection: &Connection) -> rusqlite::Result<()> {
    let clean: Option<i64> =
        connection.query_row("SELECT value FROM meta WHERE key = 'clean'", [], |row| row.get(0)).ok();
    let channels: i64 = connection.query_row("SELECT count(*) FROM channels", [], |row| row.get(0))?;
    if clean != Some(1) && channels > 0 {
        tracing::warn!(channels, "history was not closed cleanly; starting new epochs (clients will refetch)");
        connection.execute_batch("DELETE FROM channels; DELETE FROM events;")?;
    }
    connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', 0)", [])?;
    Ok(())
}

impl Drop for SqliteHistory {
    fn drop(&mut self) {
        self.close();
        // Closing the queue ends the writer loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn load(connection: &Connection, app_id: &str) -> rusqlite::Result<Vec<StoredChannel>> {
    let mut channels = connection.prepare("SELECT name, epoch, head FROM channels WHERE app = ?1")?;
    let mut events = connection
        .prepare("SELECT serial, at_ms, frame FROM events WHERE app = ?1 AND channel = ?2 ORDER BY serial")?;
    let rows = channels.query_map(params![app_id], |row| {
        Ok(StoredChannel {
            name: row.get(0)?,
            epoch: row.get(1)?,
            head: row.get::<_, i64>(2)? as u64,
            events: Vec::new(),
        })
    })?;
    let mut kept = Vec::new();
    for channel in rows {
        let mut channel = channel?;
        channel.events = events
            .query_map(params![app_id, channel.name], |row| {
                Ok(StoredEvent {
                    serial: row.get::<_, i64>(0)? as u64,
                    at_unix_ms: row.get::<_, i64>(1)? as u64,
                    frame: Bytes::from(row.get::<_, Vec<u8>>(2)?),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let contiguous = channel.events.windows(2).all(|pair| pair[1].serial == pair[0].serial + 1);
        let ends_at_head = channel.events.last().is_none_or(|last| last.serial == channel.head);
        if contiguous && ends_at_head {
            kept.push(channel);
        } else {
            tracing::warn!(channel = %channel.name, "stored history has a hole; starting the channel anew");
        }
    }
    Ok(kept)
}

/// Applies queued changes in batches until the queue closes.
fn write_loop(mut connection: Connection, commands: mpsc::Receiver<Command>) {
    // Once a batch is lost, this run's file is incomplete: it must never be marked clean.
    let mut dirty = false;
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Err(error) = apply(&mut connection, &batch, dirty) {
            dirty = true;
            tracing::error!(
                "history batch of {} changes not saved ({error}); history will not be trusted after a restart",
                batch.len()
            );
        }
        for command in batch {
            if let Command::Flush(done) = command {
                let _ = done.send(());
            }
        }
    }
}

fn apply(connection: &mut Connection, batch: &[Command], dirty: bool) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for command in batch {
        let change = match command {
            Command::Change(change) => change,
            Command::MarkClean if dirty => continue,
            Command::MarkClean => {
                transaction.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', 1)", [])?;
                continue;
            }
            Command::Flush(_) => continue,
        };
        match change {
            HistoryChange::Created { app, channel, epoch } => {
                transaction.execute(
                    "INSERT OR REPLACE INTO channels (app, name, epoch, head) VALUES (?1, ?2, ?3, 0)",
                    params![&**app, &**channel, &**epoch],
                )?;
                transaction
                    .execute("DELETE FROM events WHERE app = ?1 AND channel = ?2", params![&**app, &**channel])?;
            }
            HistoryChange::Event { app, channel, serial, frame, at_unix_ms, keep } => {
                let serial = *serial as i64;
                transaction.execute(
                    "INSERT OR REPLACE INTO events (app, channel, serial, at_ms, frame) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![&**app, &**channel, serial, *at_unix_ms as i64, &frame[..]],
                )?;
                transaction.execute(
                    "UPDATE channels SET head = ?3 WHERE app = ?1 AND name = ?2",
                    params![&**app, &**channel, serial],
                )?;
                transaction.execute(
                    "DELETE FROM events WHERE app = ?1 AND channel = ?2 AND serial <= ?3",
                    params![&**app, &**channel, serial.saturating_sub(i64::try_from(*keep).unwrap_or(i64::MAX))],
                )?;
            }
            HistoryChange::Removed { app, channel } => {
                transaction
                    .execute("DELETE FROM channels WHERE app = ?1 AND name = ?2", params![&**app, &**channel])?;
                transaction
                    .execute("DELETE FROM events WHERE app = ?1 AND channel = ?2", params![&**app, &**channel])?;
            }
        }
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("herald-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("history.sqlite3")
    }

    fn event(channel: &str, serial: u64, keep: usize) -> HistoryChange {
        HistoryChange::Event {
            app: Arc::from("1"),
            channel: Arc::from(channel),
            serial,
            frame: Bytes::from(format!("frame {serial}")),
            at_unix_ms: 1000 + serial,
            keep,
        }
    }

    #[test]
    fn a_file_not_closed_cleanly_is_not_trusted() {
        let path = temp_db("crash");
        let store = SqliteHistory::open(&path).unwrap();
        store.record(HistoryChange::Created { app: Arc::from("1"), channel: Arc::from("c"), epoch: Arc::from("e") });
        store.flush();
        std::mem::forget(store); // as if the process were killed: no clean close
        let reopened = SqliteHistory::open(&path).unwrap();
        assert!(reopened.load("1").unwrap().is_empty());
    }

    #[test]
    fn keeps_epoch_head_and_the_last_events_across_reopen() {
        let path = temp_db("reopen");
        {
            let store = SqliteHistory::open(&path).unwrap();
            let created =
                HistoryChange::Created { app: Arc::from("1"), channel: Arc::from("news"), epoch: Arc::from("e1") };
            store.record(created);
            for serial in 1..=5 {
                store.record(event("news", serial, 3));
            }
            let gone =
                HistoryChange::Created { app: Arc::from("1"), channel: Arc::from("old"), epoch: Arc::from("e0") };
            store.record(gone);
            store.record(HistoryChange::Removed { app: Arc::from("1"), channel: Arc::from("old") });
        }
        let store = SqliteHistory::open(&path).unwrap();
        let kept = store.load("1").unwrap();
        assert_eq!(kept.len(), 1, "removed channels are forgotten");
        assert_eq!((kept[0].name.as_str(), kept[0].epoch.as_str(), kept[0].head), ("news", "e1", 5));
        assert_eq!(kept[0].events.iter().map(|e| e.serial).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(kept[0].events[2].frame, Bytes::from("frame 5"));
        assert!(store.load("2").unwrap().is_empty(), "apps never see each other's history");
    }
}
