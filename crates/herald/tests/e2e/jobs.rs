//! Durable jobs through the real binary: HTTP workers, browser-side submission over the socket,
//! live `herald:job_update`s on the user stream, leases, and a `kill -9` with jobs queued.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::redis_server::RedisServer;
use crate::support::{APP_ID, KEY, SECRET, TestClient, TestServer, data_of, hmac_hex};

/// Where the jobs live: SQLite in the data dir (memory engine), or a private Redis.
enum Engine {
    Embedded,
    Redis(Box<RedisServer>),
}

impl Engine {
    async fn redis() -> Self {
        Self::Redis(Box::new(RedisServer::start().await))
    }

    async fn serve(&self, toml: &str) -> TestServer {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::in_dir(&TestServer::fresh_dir(), toml, &args).await
    }

    fn args(&self) -> Vec<String> {
        match self {
            Self::Embedded => Vec::new(),
            Self::Redis(redis) => ["--engine", "redis", "--redis-url", &redis.url(), "--redis-prefix", "jobs-e2e"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Runs each listed test body on both engines.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::Embedded).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Engine::redis().await).await;
            })*
        }
    };
}

on_both_engines!(
    a_job_goes_from_submit_to_result_and_its_user_sees_every_step_in_order,
    a_worker_that_dies_mid_job_loses_only_its_lease,
    a_thousand_queued_jobs_survive_kill_9_and_each_finishes_once,
    a_payload_that_breaks_the_schema_is_rejected_with_the_failing_path,
    a_client_submits_as_itself_whatever_user_id_it_claims,
    a_client_offline_while_its_job_finishes_sees_the_result_after_reconnecting,
);

fn config(lease_secs: u64) -> String {
    format!(
        "[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nclient_events_per_second = 1000\n\
         [[apps.queues]]\nname = \"reports\"\nlease_secs = {lease_secs}\nmax_attempts = 3\nretry_backoff_secs = 1\n\
         client_submit = true\nmax_length = 5000\n\
         schema = '{{\"type\":\"object\",\"required\":[\"from\"],\"properties\":{{\"from\":{{\"type\":\"integer\"}}}}}}'\n"
    )
}

async fn api(server: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = if method == "GET" { String::new() } else { body.to_string() };
    let (status, answer) = server.api(method, &format!("/apps/{APP_ID}{path}"), &[], &text).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
}

async fn submit(server: &TestServer, payload: Value, user: Option<&str>) -> Value {
    let (status, body) =
        api(server, "POST", "/queues/reports/jobs", json!({"payload": payload, "user_id": user})).await;
    assert_eq!(status, 201, "{body}");
    body["job"].clone()
}

async fn claim(server: &TestServer, wait_secs: u64) -> Option<Value> {
    let (status, body) = api(server, "POST", "/queues/reports/claim", json!({"wait_secs": wait_secs})).await;
    match status {
        200 => Some(body["job"].clone()),
        204 => None,
        other => panic!("claim answered {other}: {body}"),
    }
}

async fn fetched_version(server: &TestServer, id: &str) -> u64 {
    api(server, "GET", &format!("/jobs/{id}"), Value::Null).await.1["job"]["version"].as_u64().unwrap_or(0)
}

async fn signed_in(server: &TestServer, user: &str) -> TestClient {
    let mut client = server.client().await;
    client.signin(&format!(r#"{{"id":"{user}"}}"#)).await;
    client.expect_event("pusher:signin_success").await;
    client
}

/// The next job update's state (and the update itself).
async fn next_update(client: &mut TestClient) -> (String, Value) {
    let frame = client.expect_event("herald:job_update").await;
    let job = data_of(&frame);
    (job["state"].as_str().unwrap_or_default().to_owned(), frame)
}

async fn a_job_goes_from_submit_to_result_and_its_user_sees_every_step_in_order(engine: Engine) {
    let server = engine.serve(&config(30)).await;
    let mut user = signed_in(&server, "ann").await;
    let job = submit(&server, json!({"from": 1}), Some("ann")).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let claimed = claim(&server, 0).await.expect("a job");
    let lease = claimed["lease"].as_str().unwrap().to_owned();
    assert_eq!((claimed["id"].as_str(), claimed["attempts"].as_u64()), (Some(&*id), Some(1)));
    let (status, _) =
        api(&server, "POST", &format!("/jobs/{id}/progress"), json!({"lease": lease, "progress": {"pct": 50}})).await;
    assert_eq!(status, 200);
    let (status, _) =
        api(&server, "POST", &format!("/jobs/{id}/progress"), json!({"lease": "stale", "progress": 1})).await;
    assert_eq!(status, 409, "a report without the lease is refused");
    let (status, done) =
        api(&server, "POST", &format!("/jobs/{id}/finish"), json!({"lease": lease, "result": {"rows": 3}})).await;
    assert_eq!((status, done["job"]["state"].as_str()), (200, Some("succeeded")));

    let mut states = Vec::new();
    let mut serials = Vec::new();
    for _ in 0..4 {
        let (state, frame) = next_update(&mut user).await;
        assert_eq!(frame["channel"], "#server-to-user-ann");
        serials.push(frame["serial"].as_u64().unwrap());
        states.push(state);
    }
    assert_eq!(states, ["queued", "running", "running", "succeeded"]);
    assert_eq!(fetched_version(&server, &id).await, 4, "submit, claim, progress, finish");
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "updates in serial order: {serials:?}");
    let (status, fetched) = api(&server, "GET", &format!("/jobs/{id}"), Value::Null).await;
    assert_eq!((status, fetched["job"]["result"].clone()), (200, json!({"rows": 3})));
    assert!(fetched["job"].get("lease").is_none(), "the lease token is not shown to readers");
}

async fn a_worker_that_dies_mid_job_loses_only_its_lease(engine: Engine) {
    let server = engine.serve(&config(1)).await;
    let id = submit(&server, json!({"from": 2}), None).await["id"].as_str().unwrap().to_owned();
    let first = claim(&server, 0).await.expect("claimed");
    // The worker dies: it never reports. After the lease (1 s) another worker gets the job.
    let second = claim(&server, 10).await.expect("claimed again after the lease");
    assert_eq!((second["id"].as_str(), second["attempts"].as_u64()), (Some(&*id), Some(2)));
    let stale = json!({"lease": first["lease"], "result": 1});
    assert_eq!(
        api(&server, "POST", &format!("/jobs/{id}/finish"), stale).await.0,
        409,
        "the dead worker's lease is void"
    );
    let fresh = json!({"lease": second["lease"], "result": {"ok": true}});
    assert_eq!(api(&server, "POST", &format!("/jobs/{id}/finish"), fresh).await.0, 200);
}

async fn a_thousand_queued_jobs_survive_kill_9_and_each_finishes_once(engine: Engine) {
    let dir = TestServer::fresh_dir();
    let args = engine.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::in_dir(&dir, &config(30), &args).await;
    let mut submitted = HashSet::new();
    for i in 0..1000 {
        submitted.insert(submit(&server, json!({"from": i}), None).await["id"].as_str().unwrap().to_owned());
    }
    server.crash().await;
    let server = TestServer::in_dir(&dir, &config(30), &args).await;
    let (_, queue) = api(&server, "GET", "/queues/reports", Value::Null).await;
    assert_eq!(queue["counts"]["queued"], 1000, "every acknowledged submit survived: {queue}");
    let mut finished = HashSet::new();
    while let Some(job) = claim(&server, 0).await {
        let id = job["id"].as_str().unwrap().to_owned();
        let body = json!({"lease": job["lease"], "result": null});
        assert_eq!(api(&server, "POST", &format!("/jobs/{id}/finish"), body).await.0, 200);
        assert!(finished.insert(id), "a job was handed out twice");
    }
    assert_eq!(finished, submitted, "each job finished exactly once");
    let (_, queue) = api(&server, "GET", "/queues/reports", Value::Null).await;
    assert_eq!(queue["counts"]["succeeded"], 1000);
}

async fn a_payload_that_breaks_the_schema_is_rejected_with_the_failing_path(engine: Engine) {
    let server = engine.serve(&config(30)).await;
    let (status, body) = api(&server, "POST", "/queues/reports/jobs", json!({"payload": {"from": "yesterday"}})).await;
    assert_eq!(status, 400);
    let text = body.as_str().unwrap_or_default();
    assert!(text.contains("/from") && text.contains("integer"), "{text}");
    let (status, _) = api(&server, "POST", "/queues/nope/jobs", json!({"payload": {}})).await;
    assert_eq!(status, 404);
    let mut client = signed_in(&server, "bob").await;
    client
        .send(json!({"event": "herald:job_submit", "data": {"queue": "reports", "payload": {}, "request_id": "r1"}}))
        .await;
    let rejected = client.expect_event("herald:job_rejected").await;
    let data = data_of(&rejected);
    assert_eq!(data["request_id"], "r1");
    assert!(data["reason"].as_str().unwrap().contains("from"), "{data}");
}

async fn a_client_submits_as_itself_whatever_user_id_it_claims(engine: Engine) {
    let server = engine.serve(&config(30)).await;
    let mut mallory = signed_in(&server, "mallory").await;
    let forged = json!({"queue": "reports", "payload": {"from": 1}, "user_id": "alice", "request_id": "x"});
    mallory.send(json!({"event": "herald:job_submit", "data": forged})).await;
    let accepted = data_of(&mallory.expect_event("herald:job_accepted").await);
    assert_eq!(accepted["job"]["user_id"], "mallory", "{accepted}");
    assert_eq!(accepted["request_id"], "x");
    let id = accepted["job"]["id"].as_str().unwrap().to_owned();
    let (_, stored) = api(&server, "GET", &format!("/jobs/{id}"), Value::Null).await;
    assert_eq!(stored["job"]["user_id"], "mallory");
    let (state, _) = next_update(&mut mallory).await;
    assert_eq!(state, "queued");
    mallory.send(json!({"event": "herald:job_get", "data": {"id": id, "request_id": "g"}})).await;
    let state = data_of(&mallory.expect_event("herald:job_state").await);
    assert_eq!(state["job"]["state"], "queued");

    let mut anonymous = server.client().await;
    anonymous.send(json!({"event": "herald:job_submit", "data": {"queue": "reports", "payload": {"from": 1}}})).await;
    let refused = data_of(&anonymous.expect_event("herald:job_rejected").await);
    assert!(refused["reason"].as_str().unwrap().contains("sign in"), "{refused}");
}

async fn a_client_offline_while_its_job_finishes_sees_the_result_after_reconnecting(engine: Engine) {
    let server = engine.serve(&config(30)).await;
    let mut client = server.client().await;
    let user_data = r#"{"id":"carol"}"#;
    client.signin(user_data).await;
    let success = client.expect_event("pusher:signin_success").await;
    let position = success["position"].clone();
    let id = submit(&server, json!({"from": 3}), Some("carol")).await["id"].as_str().unwrap().to_owned();
    let (state, frame) = next_update(&mut client).await;
    assert_eq!(state, "queued");
    let last_serial = frame["serial"].as_u64().unwrap();
    client.close().await;

    let job = claim(&server, 0).await.expect("claimed");
    let body = json!({"lease": job["lease"], "result": {"answer": 42}});
    assert_eq!(api(&server, "POST", &format!("/jobs/{id}/finish"), body).await.0, 200);

    let mut back = server.client().await;
    let auth = format!("{KEY}:{}", hmac_hex(SECRET, &format!("{}::user::{user_data}", back.socket_id)));
    let resume = json!({"epoch": position["epoch"], "serial": last_serial});
    back.send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data, "resume": resume}}))
        .await;
    let success = back.expect_event("pusher:signin_success").await;
    assert_eq!(success["recovered"], true);
    let (running, _) = next_update(&mut back).await;
    let (finished, frame) = next_update(&mut back).await;
    assert_eq!((running.as_str(), finished.as_str()), ("running", "succeeded"));
    assert_eq!(data_of(&frame)["result"], json!({"answer": 42}));
}

/// Runs `herald jobs ARGS` against `server` with the test app's credentials.
async fn herald_jobs(server: &TestServer, args: &[&str]) -> (bool, Value) {
    let url = format!("http://{}", server.addr);
    let mut all: Vec<String> = vec!["jobs".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["--url", &url, "--app-id", APP_ID, "--key", KEY, "--secret", SECRET].map(String::from));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald")).args(&all).output().unwrap()
    })
    .await
    .unwrap();
    let printed = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.success(), printed)
}

#[tokio::test]
async fn the_jobs_command_submits_lists_inspects_and_requeues_dead_jobs() {
    let toml = format!(
        "[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n[[apps.queues]]\nname = \"reports\"\nmax_attempts = 1\n"
    );
    let server = TestServer::with_config(&toml).await;
    let (ok, submitted) = herald_jobs(&server, &["submit", "--queue", "reports", "--payload", r#"{"from":1}"#]).await;
    assert!(ok, "{submitted}");
    let id = submitted["job"]["id"].as_str().unwrap().to_owned();
    let (ok, listed) = herald_jobs(&server, &["list", "--queue", "reports", "--state", "queued"]).await;
    assert!(ok);
    assert_eq!((listed["counts"]["queued"].as_u64(), listed["jobs"][0]["id"].as_str()), (Some(1), Some(&*id)));
    let job = claim(&server, 0).await.unwrap();
    let fail = json!({"lease": job["lease"], "error": "disk full", "retry": true});
    let (_, failed) = api(&server, "POST", &format!("/jobs/{id}/fail"), fail).await;
    assert_eq!(failed["job"]["state"], "dead", "one attempt only");
    let (ok, inspected) = herald_jobs(&server, &["inspect", &id]).await;
    assert!(ok);
    assert_eq!(
        (inspected["job"]["state"].as_str(), inspected["job"]["error"].as_str()),
        (Some("dead"), Some("disk full"))
    );
    let (ok, requeued) = herald_jobs(&server, &["requeue", &id]).await;
    assert!(ok);
    assert_eq!((requeued["job"]["state"].as_str(), requeued["job"]["attempts"].as_u64()), (Some("queued"), Some(0)));
    let (ok, _) = herald_jobs(&server, &["inspect", "no-such-job"]).await;
    assert!(!ok, "a missing job is an error");
}

#[tokio::test]
async fn on_redis_a_job_submitted_on_one_node_is_claimed_on_another_and_its_user_hears_everywhere() {
    let engine = Engine::redis().await;
    let a = engine.serve(&config(30)).await;
    let b = std::sync::Arc::new(engine.serve(&config(30)).await);
    let mut user_on_b = signed_in(&b, "dora").await;
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { claim(&b, 10).await }
    });
    let id = submit(&a, json!({"from": 7}), Some("dora")).await["id"].as_str().unwrap().to_owned();
    let claimed = waiting.await.unwrap().expect("the worker on node b gets the job submitted on node a");
    assert_eq!(claimed["id"].as_str(), Some(&*id));
    let body = json!({"lease": claimed["lease"], "result": {"done": true}});
    assert_eq!(api(&a, "POST", &format!("/jobs/{id}/finish"), body).await.0, 200, "any node takes the report");
    // Updates from two nodes may cross; each carries the job's version, which orders them.
    let mut updates = Vec::new();
    for _ in 0..3 {
        let (state, frame) = next_update(&mut user_on_b).await;
        updates.push((data_of(&frame)["version"].as_u64().unwrap(), state));
    }
    updates.sort();
    let expected = [(1, "queued"), (2, "running"), (3, "succeeded")].map(|(v, s)| (v, s.to_owned()));
    assert_eq!(updates, expected);
}
