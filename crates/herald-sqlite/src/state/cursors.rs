//! [`CursorStore`] on [`SqliteState`]: one row per (user, channel) cursor and one per counted
//! serial (the newest `keep` of a channel), so an unread count is one indexed range count. It does
//! not know users or sign-ins; the caller says whose cursor moves.

use herald_core::cursors::{CursorError, CursorFuture, CursorStore, Unread};
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteState, book_position, immediate};

fn unavailable(error: rusqlite::Error) -> CursorError {
    CursorError::Unavailable(error.to_string())
}

impl CursorStore for SqliteState {
    fn count(&self, app: &str, channel: &str, epoch: &str, serial: u64, keep: usize) -> CursorFuture<'_, ()> {
        let (app, channel, epoch) = (app.to_owned(), channel.to_owned(), epoch.to_owned());
        Box::pin(self.ask(CursorError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                book_position(tx, &app, &channel, &epoch, serial).map_err(unavailable)?;
                if keep == 0 {
                    tx.execute("DELETE FROM counted WHERE app = ?1 AND channel = ?2", params![app, channel])
                        .map_err(unavailable)?;
                    return Ok(());
                }
                tx.execute(
                    "INSERT OR IGNORE INTO counted (app, channel, serial) VALUES (?1, ?2, ?3)",
                    params![app, channel, serial],
                )
                .map_err(unavailable)?;
                // The keep-th newest serial stays; everything older goes.
                tx.execute(
                    "DELETE FROM counted WHERE app = ?1 AND channel = ?2 AND serial < (
                        SELECT serial FROM counted WHERE app = ?1 AND channel = ?2
                        ORDER BY serial DESC LIMIT 1 OFFSET ?3)",
                    params![app, channel, keep as u64 - 1],
                )
                .map_err(unavailable)?;
                Ok(())
            })
        }))
    }

    fn mark_read(&self, app: &str, user: &str, channel: &str, serial: u64) -> CursorFuture<'_, (Unread, bool)> {
        let (app, user, channel) = (app.to_owned(), user.to_owned(), channel.to_owned());
        Box::pin(self.ask(CursorError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                let cursor = cursor(tx, &app, &user, &channel)?;
                let moved = serial > cursor;
                if moved {
                    tx.execute(
                        "INSERT OR REPLACE INTO cursors (app, user, channel, serial) VALUES (?1, ?2, ?3, ?4)",
                        params![app, user, channel, serial],
                    )
                    .map_err(unavailable)?;
                }
                let cursor = cursor.max(serial);
                let unread = unread_after(tx, &app, &channel, cursor)?;
                Ok((Unread { channel, cursor, unread }, moved))
            })
        }))
    }

    fn unread(&self, app: &str, user: &str, channels: Vec<String>) -> CursorFuture<'_, Vec<Unread>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        Box::pin(self.ask(CursorError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                let mut found = Vec::with_capacity(channels.len());
                for channel in channels {
                    let cursor = cursor(tx, &app, &user, &channel)?;
                    let unread = unread_after(tx, &app, &channel, cursor)?;
                    found.push(Unread { channel, cursor, unread });
                }
                Ok(found)
            })
        }))
    }
}

/// The user's cursor on the channel (0: nothing read).
fn cursor(conn: &Connection, app: &str, user: &str, channel: &str) -> Result<u64, CursorError> {
    conn.prepare_cached("SELECT serial FROM cursors WHERE app = ?1 AND user = ?2 AND channel = ?3")
        .and_then(|mut statement| statement.query_row(params![app, user, channel], |row| row.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
}

/// Counted serials of the channel after `cursor`.
fn unread_after(conn: &Connection, app: &str, channel: &str, cursor: u64) -> Result<u64, CursorError> {
    conn.prepare_cached("SELECT COUNT(*) FROM counted WHERE app = ?1 AND channel = ?2 AND serial > ?3")
        .and_then(|mut statement| statement.query_row(params![app, channel, cursor], |row| row.get(0)))
        .map_err(unavailable)
}
