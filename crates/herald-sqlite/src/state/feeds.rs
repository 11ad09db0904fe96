//! [`FeedStore`] on [`SqliteState`]: a change is validated, published (through the hub's
//! [`Publish`]) and written in one transaction on the store's thread, so stored order is serial
//! order.
//!
//! Item order is a real `pos` per item: an insert takes the midpoint of its neighbours (the head
//! `min - 1`, the end `max + 1`), and when neighbours get too close the feed is numbered 1, 2, …
//! again. Retractions are kept as tombstones, at most `max_items` per feed; the newest forgotten
//! one's serial is the feed's horizon, and a `changes` from before it gets the whole feed. This
//! module does not check who may change a feed, nor publish anything itself.

use herald_core::feeds::{
    Applied, FeedChange, FeedChanges, FeedError, FeedFuture, FeedItem, FeedPosition, FeedRef, FeedSnapshot, FeedStore,
    Publish, check_change, check_size, event_data, merge, resolve_place,
};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde_json::value::RawValue;

use super::{SqliteState, immediate};

/// Closest two neighbours' positions may get before the feed is numbered again.
const MIN_GAP: f64 = 1e-9;

impl FeedStore for SqliteState {
    fn apply(&self, feed: FeedRef, change: FeedChange, publish: Publish) -> FeedFuture<'_, Applied> {
        Box::pin(self.ask(FeedError::Unavailable, move |conn| apply(conn, &feed, &change, publish)))
    }

    fn snapshot(&self, feed: FeedRef) -> FeedFuture<'_, FeedSnapshot> {
        Box::pin(self.ask(FeedError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                let head = head(tx, &feed)?;
                let items = items(tx, &feed, None)?;
                Ok(FeedSnapshot { items, position: FeedPosition { epoch: head.epoch, serial: head.head } })
            })
        }))
    }

    fn changes(&self, feed: FeedRef, since: u64, epoch: Option<String>) -> FeedFuture<'_, FeedChanges> {
        Box::pin(self.ask(FeedError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                let head = head(tx, &feed)?;
                // Another epoch, forgotten retractions, or a serial this file never reached (it
                // lost changes): a difference cannot be told.
                let complete =
                    epoch.is_some_and(|epoch| epoch != head.epoch) || since < head.horizon || since > head.head;
                let items = items(tx, &feed, (!complete).then_some(since))?;
                let retracted = if complete { Vec::new() } else { retracted_after(tx, &feed, since)? };
                let order = order(tx, &feed)?.into_iter().map(|slot| slot.id).collect();
                let position = FeedPosition { epoch: head.epoch, serial: head.head };
                Ok(FeedChanges { items, retracted, order, position, complete })
            })
        }))
    }

    fn item(&self, feed: FeedRef, id: String) -> FeedFuture<'_, Option<FeedItem>> {
        Box::pin(self.ask(FeedError::Unavailable, move |conn| {
            immediate(conn, unavailable, |tx| {
                tx.query_row(
                    "SELECT id, value, serial FROM feed_items WHERE app = ?1 AND channel = ?2 AND id = ?3",
                    params![feed.app, feed.channel, id],
                    item_of,
                )
                .optional()
                .map_err(unavailable)
            })
        }))
    }
}

fn unavailable(error: rusqlite::Error) -> FeedError {
    FeedError::Unavailable(error.to_string())
}

/// One item's place in the feed's order.
struct Slot {
    id: String,
    pos: f64,
}

/// A feed's row: its position, and the serial of the newest retraction it forgot.
#[derive(Default)]
struct Head {
    epoch: String,
    head: u64,
    horizon: u64,
}

/// What a validated change does, worked out before it is published.
enum Plan {
    /// Publish: the new item goes to `index` of `order`.
    Insert {
        value: Box<RawValue>,
        order: Vec<Slot>,
        index: usize,
    },
    /// Edit: the item's whole value after the change.
    Replace {
        value: Box<RawValue>,
    },
    /// Move: the item goes to `index` of `order` (the other items).
    Place {
        order: Vec<Slot>,
        index: usize,
    },
    Remove,
}

impl Plan {
    /// The item's value after the change, for the event (publish and edit).
    fn value(&self) -> Option<&RawValue> {
        match self {
            Self::Insert { value, .. } | Self::Replace { value } => Some(value),
            Self::Place { .. } | Self::Remove => None,
        }
    }

    /// The id the item follows after the change (publish and move; `None`: the head).
    fn after(&self) -> Option<&str> {
        match self {
            Self::Insert { order, index, .. } | Self::Place { order, index } => {
                index.checked_sub(1).and_then(|i| order.get(i)).map(|slot| slot.id.as_str())
            }
            Self::Replace { .. } | Self::Remove => None,
        }
    }
}

/// Validates, publishes and stores one change in one transaction.
fn apply(conn: &mut Connection, feed: &FeedRef, change: &FeedChange, publish: Publish) -> Result<Applied, FeedError> {
    check_change(change, feed.limits)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    let plan = plan(&tx, feed, change)?;
    let event = change.event();
    let data = event_data(change, plan.value(), plan.after());
    let position = publish(event, &data);
    if let Err(error) = store(&tx, feed, change.id(), plan, &position).and_then(|()| tx.commit()) {
        tracing::error!(
            app = %feed.app, channel = %feed.channel, serial = position.serial, %error,
            "a feed change was published but not stored; the stored feed now lags its channel"
        );
        return Err(FeedError::Unavailable(format!("the change was published but not stored: {error}")));
    }
    Ok(Applied { event, data, position })
}

/// Checks the change against the feed and works out what it does; writes nothing.
fn plan(tx: &Transaction<'_>, feed: &FeedRef, change: &FeedChange) -> Result<Plan, FeedError> {
    let place_in = |order: &[Slot], place| {
        let ids: Vec<&str> = order.iter().map(|slot| slot.id.as_str()).collect();
        resolve_place(&ids, place)
    };
    match change {
        FeedChange::Publish { id, value, place } => {
            let order = order(tx, feed)?;
            if order.iter().any(|slot| slot.id == *id) {
                return Err(FeedError::ItemExists(id.clone()));
            }
            if order.len() >= feed.limits.max_items {
                return Err(FeedError::FeedFull { max: feed.limits.max_items });
            }
            let index = place_in(&order, place)?;
            Ok(Plan::Insert { value: value.clone(), order, index })
        }
        FeedChange::Edit { id, value, merge } => {
            let Some(current) = item_value(tx, feed, id)? else {
                return Err(FeedError::UnknownItem(id.clone()));
            };
            let value = if *merge { merge::merge_patch(&current, value)? } else { value.clone() };
            check_size(&value, feed.limits)?;
            Ok(Plan::Replace { value })
        }
        FeedChange::Retract { id } => match item_value(tx, feed, id)? {
            Some(_) => Ok(Plan::Remove),
            None => Err(FeedError::UnknownItem(id.clone())),
        },
        FeedChange::Move { id, place } => {
            let mut order = order(tx, feed)?;
            let Some(from) = order.iter().position(|slot| slot.id == *id) else {
                return Err(FeedError::UnknownItem(id.clone()));
            };
            order.remove(from);
            let index = place_in(&order, place)?;
            Ok(Plan::Place { order, index })
        }
    }
}

/// Writes a published change at `position`.
fn store(tx: &Transaction<'_>, feed: &FeedRef, id: &str, plan: Plan, position: &FeedPosition) -> rusqlite::Result<()> {
    advance(tx, feed, position)?;
    let (app, channel, serial) = (&feed.app, &feed.channel, position.serial);
    match plan {
        Plan::Insert { value, order, index } => {
            let pos = pos_at(tx, feed, &order, index)?;
            tx.execute(
                "DELETE FROM feed_retracted WHERE app = ?1 AND channel = ?2 AND id = ?3",
                params![app, channel, id],
            )?;
            tx.execute(
                "INSERT INTO feed_items (app, channel, id, value, serial, pos) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![app, channel, id, value.get(), serial, pos],
            )?;
        }
        Plan::Replace { value } => {
            tx.execute(
                "UPDATE feed_items SET value = ?4, serial = ?5 WHERE app = ?1 AND channel = ?2 AND id = ?3",
                params![app, channel, id, value.get(), serial],
            )?;
        }
        Plan::Place { order, index } => {
            let pos = pos_at(tx, feed, &order, index)?;
            tx.execute(
                "UPDATE feed_items SET pos = ?4, serial = ?5 WHERE app = ?1 AND channel = ?2 AND id = ?3",
                params![app, channel, id, pos, serial],
            )?;
        }
        Plan::Remove => {
            tx.execute(
                "DELETE FROM feed_items WHERE app = ?1 AND channel = ?2 AND id = ?3",
                params![app, channel, id],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO feed_retracted (app, channel, id, serial) VALUES (?1, ?2, ?3, ?4)",
                params![app, channel, id, serial],
            )?;
            forget_old_retractions(tx, feed)?;
        }
    }
    Ok(())
}

/// Moves the feed's row to `position`. A new epoch starts serials over: the old epoch's
/// retractions and item serials mean nothing in it, so they are dropped (item serials become 0)
/// and any `changes` from before this change gets the whole feed.
fn advance(tx: &Transaction<'_>, feed: &FeedRef, position: &FeedPosition) -> rusqlite::Result<()> {
    let (app, channel, serial) = (&feed.app, &feed.channel, position.serial);
    let known: Option<(String, u64)> = tx
        .query_row("SELECT epoch, head FROM feeds WHERE app = ?1 AND channel = ?2", params![app, channel], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    match known {
        None => {
            tx.execute(
                "INSERT INTO feeds (app, channel, epoch, head, horizon) VALUES (?1, ?2, ?3, ?4, 0)",
                params![app, channel, position.epoch, serial],
            )?;
        }
        Some((epoch, head)) if epoch == position.epoch => {
            if serial <= head {
                tracing::warn!(%app, %channel, serial, head, "a feed change got a serial at or below the feed's head");
            }
            tx.execute(
                "UPDATE feeds SET head = max(head, ?3) WHERE app = ?1 AND channel = ?2",
                params![app, channel, serial],
            )?;
        }
        Some(_) => {
            tx.execute(
                "UPDATE feeds SET epoch = ?3, head = ?4, horizon = ?4 WHERE app = ?1 AND channel = ?2",
                params![app, channel, position.epoch, serial],
            )?;
            tx.execute("DELETE FROM feed_retracted WHERE app = ?1 AND channel = ?2", params![app, channel])?;
            tx.execute("UPDATE feed_items SET serial = 0 WHERE app = ?1 AND channel = ?2", params![app, channel])?;
        }
    }
    Ok(())
}

/// Keeps the newest `max_items` retractions; the newest forgotten one becomes the horizon.
fn forget_old_retractions(tx: &Transaction<'_>, feed: &FeedRef) -> rusqlite::Result<()> {
    let (app, channel) = (&feed.app, &feed.channel);
    let forgotten: Option<u64> = tx
        .query_row(
            "SELECT serial FROM feed_retracted WHERE app = ?1 AND channel = ?2 ORDER BY serial DESC LIMIT 1 OFFSET ?3",
            params![app, channel, feed.limits.max_items as u64],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(forgotten) = forgotten {
        tx.execute(
            "DELETE FROM feed_retracted WHERE app = ?1 AND channel = ?2 AND serial <= ?3",
            params![app, channel, forgotten],
        )?;
        tx.execute(
            "UPDATE feeds SET horizon = max(horizon, ?3) WHERE app = ?1 AND channel = ?2",
            params![app, channel, forgotten],
        )?;
    }
    Ok(())
}

/// The `pos` for an item going to `index` of `order` (the other items). When its neighbours are
/// too close, the other items are numbered 1, 2, … again, leaving `index + 1` for it.
fn pos_at(tx: &Transaction<'_>, feed: &FeedRef, order: &[Slot], index: usize) -> rusqlite::Result<f64> {
    let before = index.checked_sub(1).and_then(|i| order.get(i)).map(|slot| slot.pos);
    let after = order.get(index).map(|slot| slot.pos);
    if let Some(pos) = between(before, after) {
        return Ok(pos);
    }
    let mut renumber =
        tx.prepare_cached("UPDATE feed_items SET pos = ?4 WHERE app = ?1 AND channel = ?2 AND id = ?3")?;
    for (at, slot) in order.iter().enumerate() {
        let pos = if at < index { at + 1 } else { at + 2 };
        renumber.execute(params![feed.app, feed.channel, slot.id, pos as f64])?;
    }
    Ok((index + 1) as f64)
}

/// A position strictly between two neighbours (either may be missing), if they leave room.
fn between(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    let pos = match (before, after) {
        (None, None) => 1.0,
        (Some(a), None) => a + 1.0,
        (None, Some(b)) => b - 1.0,
        (Some(a), Some(b)) => a + (b - a) / 2.0,
    };
    let fits = before.is_none_or(|a| pos - a > MIN_GAP) && after.is_none_or(|b| b - pos > MIN_GAP);
    fits.then_some(pos)
}

fn head(conn: &Connection, feed: &FeedRef) -> Result<Head, FeedError> {
    conn.query_row(
        "SELECT epoch, head, horizon FROM feeds WHERE app = ?1 AND channel = ?2",
        params![feed.app, feed.channel],
        |row| Ok(Head { epoch: row.get(0)?, head: row.get(1)?, horizon: row.get(2)? }),
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(unavailable)
}

/// Every item id with its `pos`, in order.
fn order(conn: &Connection, feed: &FeedRef) -> Result<Vec<Slot>, FeedError> {
    let mut statement = conn
        .prepare_cached("SELECT id, pos FROM feed_items WHERE app = ?1 AND channel = ?2 ORDER BY pos")
        .map_err(unavailable)?;
    let rows = statement
        .query_map(params![feed.app, feed.channel], |row| Ok(Slot { id: row.get(0)?, pos: row.get(1)? }))
        .map_err(unavailable)?;
    rows.collect::<rusqlite::Result<_>>().map_err(unavailable)
}

/// Items in order: all of them, or those changed after `since`.
fn items(conn: &Connection, feed: &FeedRef, since: Option<u64>) -> Result<Vec<FeedItem>, FeedError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT id, value, serial FROM feed_items WHERE app = ?1 AND channel = ?2 AND (?3 IS NULL OR serial > ?3)
             ORDER BY pos",
        )
        .map_err(unavailable)?;
    let rows = statement.query_map(params![feed.app, feed.channel, since], item_of).map_err(unavailable)?;
    rows.collect::<rusqlite::Result<_>>().map_err(unavailable)
}

/// Ids retracted after `since`, oldest first.
fn retracted_after(conn: &Connection, feed: &FeedRef, since: u64) -> Result<Vec<String>, FeedError> {
    let mut statement = conn
        .prepare_cached("SELECT id FROM feed_retracted WHERE app = ?1 AND channel = ?2 AND serial > ?3 ORDER BY serial")
        .map_err(unavailable)?;
    let rows = statement.query_map(params![feed.app, feed.channel, since], |row| row.get(0)).map_err(unavailable)?;
    rows.collect::<rusqlite::Result<_>>().map_err(unavailable)
}

fn item_value(conn: &Connection, feed: &FeedRef, id: &str) -> Result<Option<Box<RawValue>>, FeedError> {
    conn.query_row(
        "SELECT value FROM feed_items WHERE app = ?1 AND channel = ?2 AND id = ?3",
        params![feed.app, feed.channel, id],
        |row| raw_value(row, 0),
    )
    .optional()
    .map_err(unavailable)
}

fn item_of(row: &Row<'_>) -> rusqlite::Result<FeedItem> {
    Ok(FeedItem { id: row.get(0)?, value: raw_value(row, 1)?, serial: row.get(2)? })
}

/// A stored value (JSON text, as it was given or merged) as a `RawValue`.
fn raw_value(row: &Row<'_>, column: usize) -> rusqlite::Result<Box<RawValue>> {
    RawValue::from_string(row.get(column)?)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_between_neighbours_or_none_when_they_are_too_close() {
        assert_eq!(between(None, None), Some(1.0));
        assert_eq!(between(Some(3.0), None), Some(4.0));
        assert_eq!(between(None, Some(3.0)), Some(2.0));
        assert_eq!(between(Some(1.0), Some(2.0)), Some(1.5));
        assert_eq!(between(Some(1.0), Some(1.0 + 1e-12)), None);
        assert_eq!(between(Some(1e17), None), None, "past f64's integers, +1 is no step");
    }
}
