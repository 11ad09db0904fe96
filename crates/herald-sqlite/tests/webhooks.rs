//! The webhook outbox contract on SQLite, and that queued events and dead letters survive a reopen.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use herald_core::webhooks::{WebhookOutbox, conformance};
use herald_sqlite::SqliteWebhooks;

fn temp_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-webhooks-{:x}.sqlite3", rand::random::<u64>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_outbox_contract_holds_on_sqlite() {
    let path = temp_path();
    conformance::run_all(&SqliteWebhooks::open(&path).unwrap()).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_and_dead_letters_survive_a_reopen() {
    let path = temp_path();
    let url = "http://hook.test/";
    {
        let store = SqliteWebhooks::open(&path).unwrap();
        store.append("1", url, vec!["{\"n\":1}".into(), "{\"n\":2}".into()]).await.unwrap();
        let first = store.pending("1", url, 1).await.unwrap();
        store.bury("1", url, vec![first[0].id], "HTTP 500", 7).await.unwrap();
    }
    let store = SqliteWebhooks::open(&path).unwrap();
    let pending: Vec<String> = store.pending("1", url, 10).await.unwrap().into_iter().map(|q| q.event).collect();
    assert_eq!(pending, ["{\"n\":2}"]);
    let dead = store.dead_letters("1", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event, "{\"n\":1}");
    // Ids keep increasing across a reopen, so a replayed event goes after what is queued.
    store.replay("1", herald_core::webhooks::Replay::All).await.unwrap();
    let pending: Vec<String> = store.pending("1", url, 10).await.unwrap().into_iter().map(|q| q.event).collect();
    assert_eq!(pending, ["{\"n\":2}", "{\"n\":1}"]);
    drop(store);
    let _ = std::fs::remove_file(&path);
}
