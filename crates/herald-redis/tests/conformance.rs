//! The engine contract against real Redis: a private `redis-server` on a Unix socket (or the
//! server named by `HERALD_TEST_REDIS_URL`), and a private 3-master Redis Cluster.
#![allow(clippy::unwrap_used, reason = "a test helper that panics is a clear test failure")]

use std::sync::Arc;
use std::time::Duration;

use herald_core::engine::conformance::{self, RETENTION, TestNode, message};

mod support;

use support::{Cluster, OnRedis, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_engine_contract_holds_on_redis() {
    let redis = Redis::start();
    conformance::run_all(&OnRedis { url: redis.url.clone() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_engine_contract_holds_on_a_redis_cluster() {
    let cluster = Cluster::start();
    let factory = OnRedis { url: cluster.url() };
    conformance::run_all(&factory).await;

    // A channel's keys and its sharded pub/sub name share one slot, and they live on the master
    // that owns it.
    let mut node = TestNode::new(&factory, "slots").await;
    node.listen("app", "presence-room").await;
    node.engine.publish("app", "presence-room", message("e"), RETENTION).await.unwrap();
    let tag = "slots:{app:presence-room}";
    let slot_of = |key: &str| Cluster::cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", key]).trim().to_owned();
    let slot = slot_of(tag);
    for suffix in ["meta", "hist", "pm", "subs"] {
        assert_eq!(slot_of(&format!("{tag}:{suffix}")), slot, "{suffix} is in the channel's slot");
    }
    let holders: Vec<u16> = cluster
        .ports
        .iter()
        .copied()
        .filter(|port| Cluster::cli(*port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim() != "0")
        .collect();
    assert_eq!(holders.len(), 1, "one master holds the channel's keys");
    let owner = Cluster::cli(holders[0], &["EXISTS", &format!("{tag}:meta")]);
    assert_eq!(owner.trim(), "1", "the meta key is on the slot's owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_moves_every_node_to_the_new_master() {
    let mut sentinels = support::Sentinels::start();
    let factory = OnRedis { url: sentinels.url() };
    conformance::serials_in_order_on_every_node(&factory).await;
    let mut a = TestNode::new(&factory, "failover").await;
    let mut b = TestNode::new(&factory, "failover").await;
    a.listen("app", "news").await;
    b.listen("app", "news").await;
    assert_eq!(a.engine.publish("app", "news", message("before"), RETENTION).await.unwrap(), 1);
    assert_eq!(b.serials("news", 1).await, vec![1]);

    sentinels.fail_over();
    // Each node loses its pub/sub connection, asks the Sentinel again, and re-snapshots.
    for node in [&mut a, &mut b] {
        node.wait_for(Duration::from_secs(30), "a snapshot from the new master", |seen| match seen {
            conformance::Seen::Installed { channel, .. } if channel == "news" => Some(()),
            _ => None,
        })
        .await;
        assert!(node.engine.is_ready());
    }
    let serial = a.engine.publish("app", "news", message("after"), RETENTION).await.unwrap();
    assert_eq!(b.serials("news", 1).await, vec![serial], "delivery works through the new master");
}

/// The master owning `slot`, and its node id.
fn owner_of(cluster: &Cluster, slot: &str) -> (u16, String) {
    let port = cluster
        .ports
        .iter()
        .copied()
        .find(|port| Cluster::cli(*port, &["CLUSTER", "COUNTKEYSINSLOT", slot]).trim() != "0")
        .unwrap();
    (port, Cluster::cli(port, &["CLUSTER", "MYID"]).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_moving_a_channels_slot_to_another_master() {
    let cluster = Cluster::start();
    let factory = OnRedis { url: cluster.url() };
    let mut a = TestNode::new(&factory, "mig").await;
    let mut b = TestNode::new(&factory, "mig").await;
    a.listen("app", "news").await;
    b.listen("app", "news").await;
    assert_eq!(a.engine.publish("app", "news", message("e"), RETENTION).await.unwrap(), 1);
    assert_eq!(b.serials("news", 1).await, vec![1]);

    let tag = "mig:{app:news}";
    let slot = Cluster::cli(cluster.ports[0], &["CLUSTER", "KEYSLOT", tag]).trim().to_owned();
    let (source, source_id) = owner_of(&cluster, &slot);
    let target = *cluster.ports.iter().find(|p| **p != source).unwrap();
    let target_id = Cluster::cli(target, &["CLUSTER", "MYID"]).trim().to_owned();
    Cluster::cli(target, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]);
    Cluster::cli(source, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]);
    let keys = Cluster::cli(source, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    let target_port = target.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &target_port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter());
    assert!(Cluster::cli(source, &migrate).contains("OK"), "keys migrated");
    for port in &cluster.ports {
        Cluster::cli(*port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }

    // The source drops its sharded subscribers; each node subscribes again at the new owner and
    // re-reads the channel.
    for node in [&mut a, &mut b] {
        node.wait_for(Duration::from_secs(20), "a new snapshot after the slot moved", |seen| match seen {
            conformance::Seen::Installed { channel, snapshot, .. } if channel == "news" => Some(snapshot.head),
            _ => None,
        })
        .await;
    }
    assert_eq!(owner_of(&cluster, &slot).0, target, "the channel's keys moved");
    assert_eq!(a.engine.publish("app", "news", message("e"), RETENTION).await.unwrap(), 2, "serials continue");
    assert_eq!(b.serials("news", 1).await, vec![2], "delivery continues from the new owner");
}

async fn job_store(url: &str, prefix: &str) -> Arc<dyn herald_core::jobs::JobStore> {
    Arc::new(support::engine(url, prefix).await.jobs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_job_store_contract_holds_on_redis() {
    let redis = Redis::start();
    herald_core::jobs::conformance::run_all(job_store(&redis.url, "jobs").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_the_job_store_contract_holds_on_a_redis_cluster() {
    let cluster = Cluster::start();
    herald_core::jobs::conformance::run_all(job_store(&cluster.url(), "jobs").await).await;
}
