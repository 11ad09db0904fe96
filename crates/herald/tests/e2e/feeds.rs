//! Feeds through the real binary: racing writers on the signed routes while snapshot subscribers
//! come and go, `modified_since`, the limits and refusals, and a graceful restart. Each subscriber
//! keeps its copy the way docs/protocol.md tells a client to (hold events until the snapshot, drop
//! those at or below it, ask again on a gap), and its copy must end equal to the server's feed.

mod follower;
mod race;

use serde_json::{Value, json};

use self::follower::LocalFeed;
use self::race::{
    a_paged_snapshot_with_changes_racing_its_pages_builds_the_feed,
    racing_writers_and_reconnecting_snapshot_subscribers_end_with_the_servers_feed,
};
use crate::engines::{Engine, on_both_engines};
use crate::support::{APP_ID, KEY, SECRET, TestServer, data_of, default_config};

on_both_engines!(
    racing_writers_and_reconnecting_snapshot_subscribers_end_with_the_servers_feed,
    a_paged_snapshot_with_changes_racing_its_pages_builds_the_feed,
    modified_since_answers_exactly_what_changed_after_a_serial,
    feed_routes_refuse_what_the_contract_refuses_and_change_nothing,
);

fn config(extra: &str) -> String {
    format!("[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{extra}\n")
}

/// A signed call under `/apps/{id}`; the answer parsed when it is JSON.
async fn api(server: &TestServer, method: &str, path: &str, params: &[(&str, &str)], body: Value) -> (u16, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, answer) = server.api(method, &format!("/apps/{APP_ID}{path}"), params, &text).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
}

/// `GET /apps/{id}/feeds/{channel}`.
async fn whole_feed(server: &TestServer, channel: &str) -> Value {
    let (status, feed) = api(server, "GET", &format!("/feeds/{channel}"), &[], Value::Null).await;
    assert_eq!(status, 200, "GET {channel}: {feed}");
    feed
}

/// A feed change through its route: the status and the answer.
async fn change(server: &TestServer, channel: &str, path: &str, body: Value) -> (u16, Value) {
    api(server, "POST", &format!("/feeds/{channel}/items{path}"), &[], body).await
}

/// `change`, which must succeed: the serial it took.
async fn changed(server: &TestServer, channel: &str, path: &str, body: Value) -> u64 {
    let (status, answer) = change(server, channel, path, body.clone()).await;
    assert!(status == 200 || status == 201, "{path} {body} answered {status}: {answer}");
    answer["position"]["serial"].as_u64().unwrap()
}

async fn modified_since_answers_exactly_what_changed_after_a_serial(engine: Engine) {
    let server = engine.serve(&config("feed_max_items = 8")).await;
    let feed = "feed-since";
    for id in ["a", "b", "c", "d", "g"] {
        changed(&server, feed, "", json!({"id": id, "value": {"v": id}})).await;
    }
    let base = whole_feed(&server, feed).await;
    let (since, epoch) = (base["position"]["serial"].as_u64().unwrap(), base["position"]["epoch"].clone());
    assert_eq!(since, 5);

    let b = changed(&server, feed, "/b/edit", json!({"value": {"v": "B"}})).await;
    changed(&server, feed, "/c/retract", json!({})).await;
    let a = changed(&server, feed, "/a/move", json!({})).await;
    let e = changed(&server, feed, "", json!({"id": "e", "value": [1, 2], "index": 0})).await;
    changed(&server, feed, "", json!({"id": "f", "value": null})).await;
    changed(&server, feed, "/f/retract", json!({})).await;
    changed(&server, feed, "/d/retract", json!({})).await;
    let d = changed(&server, feed, "", json!({"id": "d", "value": {"v": "D2"}, "after": "b"})).await;
    let head = whole_feed(&server, feed).await;
    assert_eq!(head["position"]["serial"], 13);

    let since_text = since.to_string();
    let (status, changes) =
        api(&server, "GET", &format!("/feeds/{feed}"), &[("modified_since", &since_text)], Value::Null).await;
    assert_eq!(status, 200, "{changes}");
    let items: Vec<(&str, &Value, u64)> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), &i["value"], i["serial"].as_u64().unwrap()))
        .collect();
    let expected_items = [
        ("e", &json!([1, 2]), e),
        ("b", &json!({"v": "B"}), b),
        ("d", &json!({"v": "D2"}), d),
        ("a", &json!({"v": "a"}), a),
    ];
    assert_eq!(items, expected_items, "changed items in feed order, g unchanged: {changes}");
    let mut retracted: Vec<&str> =
        changes["retracted"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    retracted.sort_unstable();
    assert_eq!(retracted, ["c", "f"], "retracted after {since} and not back: {changes}");
    assert_eq!(changes["order"], json!(["e", "b", "d", "g", "a"]));
    assert_eq!((&changes["position"], &changes["complete"]), (&head["position"], &json!(false)));

    // A client at `since` that applies the answer holds the feed.
    let mut copy = LocalFeed::of(&base);
    for (id, value, _) in &items {
        match copy.index(id) {
            Some(at) => copy.items[at].1 = (*value).clone(),
            None => copy.items.push(((*id).to_owned(), (*value).clone())),
        }
    }
    copy.items.retain(|(id, _)| !retracted.contains(&id.as_str()));
    let order: Vec<&str> = changes["order"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    copy.items.sort_by_key(|(id, _)| order.iter().position(|o| o == id));
    copy.serial = changes["position"]["serial"].as_u64().unwrap();
    assert_eq!(copy, LocalFeed::of(&head));

    let same_epoch = [("modified_since", since_text.as_str()), ("epoch", epoch.as_str().unwrap())];
    let (_, with_epoch) = api(&server, "GET", &format!("/feeds/{feed}"), &same_epoch, Value::Null).await;
    assert_eq!(with_epoch, changes, "the feed's own epoch changes nothing");

    let (_, nothing) = api(&server, "GET", &format!("/feeds/{feed}"), &[("modified_since", "13")], Value::Null).await;
    assert_eq!(
        (&nothing["items"], &nothing["retracted"], &nothing["complete"]),
        (&json!([]), &json!([]), &json!(false))
    );
    assert_eq!(nothing["order"], changes["order"]);

    let stale = [("modified_since", since_text.as_str()), ("epoch", "0000000000000000")];
    let (_, complete) = api(&server, "GET", &format!("/feeds/{feed}"), &stale, Value::Null).await;
    assert_eq!(complete["complete"], true, "another epoch gets the whole feed: {complete}");
    assert_eq!(complete["items"], head["items"]);
    assert_eq!(complete["order"], changes["order"]);

    // Retractions are remembered as many as feed_max_items (8): a serial before a forgotten one
    // gets the whole feed.
    let churn = "feed-churn";
    for n in 0..9 {
        changed(&server, churn, "", json!({"id": format!("t{n}"), "value": n})).await;
        changed(&server, churn, &format!("/t{n}/retract"), json!({})).await;
    }
    changed(&server, churn, "", json!({"id": "kept", "value": true})).await;
    let (_, old) = api(&server, "GET", &format!("/feeds/{churn}"), &[("modified_since", "1")], Value::Null).await;
    assert_eq!((&old["complete"], &old["order"]), (&json!(true), &json!(["kept"])), "{old}");
    assert_eq!(old["items"], whole_feed(&server, churn).await["items"]);
}

async fn feed_routes_refuse_what_the_contract_refuses_and_change_nothing(engine: Engine) {
    let server = engine.serve(&config("feed_max_items = 3\nfeed_max_item_bytes = 64")).await;
    let feed = "feed-limits";
    let (status, first) = change(&server, feed, "", json!({"id": "a", "value": {"t": "a"}})).await;
    assert_eq!((status, &first["id"], &first["position"]["serial"]), (201, &json!("a"), &json!(1)), "{first}");
    let (status, made_up) = change(&server, feed, "", json!({"value": 2})).await;
    assert_eq!(status, 201, "{made_up}");
    let made_up = made_up["id"].as_str().unwrap().to_owned();
    let (status, item) = api(&server, "GET", &format!("/feeds/{feed}/items/{made_up}"), &[], Value::Null).await;
    assert_eq!((status, &item["value"], &item["serial"]), (200, &json!(2), &json!(2)), "{item}");

    let big = "x".repeat(100);
    // The patch alone fits in 64 bytes; merged into {"t":"a"} it is 66.
    let growing = json!({"u": "y".repeat(50)});
    assert!(growing.to_string().len() <= 64);
    let refused: Vec<(&str, Value, u16)> = vec![
        ("", json!({"id": "a", "value": 1}), 409),
        ("/zz/edit", json!({"value": 1}), 404),
        ("/zz/move", json!({}), 404),
        ("/zz/retract", json!({}), 404),
        ("", json!({"id": "n", "value": 1, "after": "zz"}), 404),
        ("/a/move", json!({"before": "zz"}), 404),
        ("", json!({"id": "n", "value": big}), 413),
        ("/a/edit", json!({"value": big}), 413),
        ("/a/edit", json!({"value": growing, "merge": true}), 413),
        ("", json!({"id": "", "value": 1}), 400),
        ("", json!({"id": "n", "value": 1, "index": 0, "after": "a"}), 400),
        ("/a/move", json!({"after": "a"}), 400),
    ];
    for (path, body, expected) in &refused {
        let (status, answer) = change(&server, feed, path, body.clone()).await;
        assert_eq!(status, *expected, "{path} {body}: {answer}");
    }
    let (status, _) = api(&server, "GET", &format!("/feeds/{feed}/items/zz"), &[], Value::Null).await;
    assert_eq!(status, 404);

    changed(&server, feed, "", json!({"id": "b", "value": 3})).await;
    let (status, full) = change(&server, feed, "", json!({"id": "c", "value": 4})).await;
    assert_eq!(status, 409, "the feed holds feed_max_items: {full}");
    assert_eq!(changed(&server, feed, "/b/move", json!({"index": 0})).await, 4, "a full feed still moves");
    let now = whole_feed(&server, feed).await;
    assert_eq!(now["position"]["serial"], 4, "refusals took no serial: {now}");
    assert_eq!(LocalFeed::of(&now).ids(), ["b", "a", made_up.as_str()]);
    assert_eq!(now["items"][1]["value"], json!({"t": "a"}), "refused edits changed nothing");

    for (method, path) in [("POST", "/feeds/news/items"), ("GET", "/feeds/news"), ("GET", "/feeds/news/items/a")] {
        let body = if method == "POST" { json!({"value": 1}) } else { Value::Null };
        let (status, answer) = api(&server, method, path, &[], body).await;
        assert_eq!(status, 400, "{method} {path} on a channel that is not a feed: {answer}");
    }
    for channel in [feed, "private-feed-x"] {
        let (status, answer) = server.publish(json!({"name": "e", "channel": channel, "data": "{}"})).await;
        assert_eq!(status, 400, "/events to {channel}: {answer}");
    }
    let batch =
        json!({"batch": [{"name": "e", "channel": "news", "data": "1"}, {"name": "e", "channel": feed, "data": "2"}]});
    let (status, answer) = server.api("POST", &format!("/apps/{APP_ID}/batch_events"), &[], &batch.to_string()).await;
    assert_eq!(status, 400, "/batch_events naming a feed: {answer}");
    assert_eq!(whole_feed(&server, feed).await["position"]["serial"], 4);

    let mut client = server.client().await;
    let answer = client.subscribe_signed("private-feed-x", None).await;
    assert_eq!(answer["event"], "pusher_internal:subscription_succeeded", "{answer}");
    assert_eq!(client.subscribe_signed("private-chat", None).await["event"], "pusher_internal:subscription_succeeded");
    client.send(json!({"event": "client-typing", "channel": "private-chat", "data": {}})).await;
    client.expect_nothing_pending().await;
    client.send(json!({"event": "client-typing", "channel": "private-feed-x", "data": {}})).await;
    client.expect_error(4306).await;
    for channel in ["feed-not-subscribed", "private-chat"] {
        client.send(json!({"event": "herald:feed_snapshot_request", "data": {"channel": channel}})).await;
        client.expect_error(4306).await;
    }
    client.send(json!({"event": "herald:feed_snapshot_request", "data": {"channel": "private-feed-x"}})).await;
    let snapshot = client.expect_event("herald:feed_snapshot").await;
    assert_eq!((&snapshot["channel"], &data_of(&snapshot)["items"]), (&json!("private-feed-x"), &json!([])));
}

/// Embedded only: feeds and unread counts live in the data dir, and a graceful restart keeps the
/// feed's items, epoch and serials, and every count.
#[tokio::test]
async fn feeds_and_unread_counts_survive_a_graceful_restart() {
    let dir = TestServer::fresh_dir();
    let server = TestServer::in_dir(&dir, &default_config(), &[]).await;
    let feed = "feed-kept";
    for id in ["a", "b", "c"] {
        changed(&server, feed, "", json!({"id": id, "value": {"v": id}})).await;
    }
    changed(&server, feed, "/b/edit", json!({"value": {"w": 1}, "merge": true})).await;
    changed(&server, feed, "/c/move", json!({"index": 0})).await;
    changed(&server, feed, "/a/retract", json!({})).await;
    let before = whole_feed(&server, feed).await;
    assert_eq!(before["position"]["serial"], 6);
    for n in 0..13 {
        let counted = n % 4 != 3;
        let (status, answer) = server
            .publish(json!({"name": "m", "channel": "room", "data": n.to_string(), "count_unread": counted}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let read = json!({"channel": "room", "serial": 4});
    let (status, answer) = api(&server, "POST", "/users/ann/read", &[], read).await;
    assert_eq!((status, &answer["cursor"], &answer["unread"]), (200, &json!(4), &json!(7)), "{answer}");
    let unread_body = json!({"channels": ["room"]});
    let (_, counts) = api(&server, "POST", "/users/ann/unread", &[], unread_body.clone()).await;
    assert_eq!(counts["channels"]["room"], json!({"cursor": 4, "unread": 7}));
    server.stop().await;

    let server = TestServer::in_dir(&dir, &default_config(), &[]).await;
    assert_eq!(whole_feed(&server, feed).await, before, "items, values, serials and position kept");
    let since = [("modified_since", "6"), ("epoch", before["position"]["epoch"].as_str().unwrap())];
    let (_, changes) = api(&server, "GET", &format!("/feeds/{feed}"), &since, Value::Null).await;
    assert_eq!((&changes["items"], &changes["complete"]), (&json!([]), &json!(false)), "same epoch: {changes}");
    let (status, answer) = change(&server, feed, "", json!({"id": "d", "value": 4})).await;
    assert_eq!(status, 201);
    assert_eq!(answer["position"], json!({"epoch": before["position"]["epoch"], "serial": 7}), "serials continue");
    let mut client = server.client().await;
    client.send(json!({"event": "pusher:subscribe", "data": {"channel": feed, "snapshot": true}})).await;
    client.expect_event("pusher_internal:subscription_succeeded").await;
    let snapshot = data_of(&client.expect_event("herald:feed_snapshot").await);
    assert_eq!(LocalFeed::of(&snapshot), LocalFeed::of(&whole_feed(&server, feed).await));

    let (_, counts) = api(&server, "POST", "/users/ann/unread", &[], unread_body.clone()).await;
    assert_eq!(counts["channels"]["room"], json!({"cursor": 4, "unread": 7}), "the count survived");
    let (_, published) =
        server.publish(json!({"name": "m", "channel": "room", "data": "new", "count_unread": true})).await;
    let published: Value = serde_json::from_str(&published).unwrap();
    assert_eq!(published["serials"]["room"], 14, "the channel's serials continue: {published}");
    let (_, counts) = api(&server, "POST", "/users/ann/unread", &[], unread_body).await;
    assert_eq!(counts["channels"]["room"], json!({"cursor": 4, "unread": 8}));
}
