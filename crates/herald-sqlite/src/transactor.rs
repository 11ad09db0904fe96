//! One SQLite connection owned by one thread, which runs each call as an immediate transaction.
//!
//! The job store and the webhook outbox both want the same shape: SQLite calls block, so they run
//! off the async runtime, one at a time (SQLite has one writer anyway), each answered through a
//! oneshot. Dropping the transactor closes its channel and joins the thread, so every call already
//! queued finishes before the file is released.

use std::future::Future;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::OpenError;

type Call = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Debug)]
pub(crate) struct Transactor {
    calls: mpsc::Sender<Call>,
    thread: Option<JoinHandle<()>>,
}

impl Transactor {
    /// Opens `path`, applies `schema`, and starts the thread named `name`.
    pub fn open(path: &Path, schema: &str, name: &str) -> Result<Self, OpenError> {
        let error = |source| OpenError { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(error)?;
        conn.execute_batch(schema).map_err(error)?;
        let (calls, receiver) = mpsc::channel::<Call>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(call) = receiver.recv() {
                    call(&mut conn);
                }
            })
            .map_err(|e| error(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self { calls, thread: Some(thread) })
    }

    /// Runs `op` in one immediate transaction on the thread, committed when `op` succeeds.
    /// `unavailable` turns SQLite errors, and a thread that has stopped, into the caller's error.
    pub fn call<T: Send + 'static, E: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        unavailable: fn(String) -> E,
    ) -> impl Future<Output = Result<T, E>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |conn: &mut Connection| {
            let sqlite = |error: rusqlite::Error| unavailable(error.to_string());
            let result =
                conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite).and_then(|tx| {
                    let value = op(&tx)?;
                    tx.commit().map_err(sqlite)?;
                    Ok(value)
                });
            let _ = reply.send(result);
        });
        let sent = self.calls.send(call);
        async move {
            let stopped = || unavailable("store stopped".into());
            sent.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }
}

impl Drop for Transactor {
    fn drop(&mut self) {
        let (calls, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.calls, calls));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
