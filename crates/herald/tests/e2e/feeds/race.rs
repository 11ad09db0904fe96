//! Feed races: ten writers make 1,000 random changes to one feed through the signed routes while
//! five subscribers join at random moments, some leave and come back (with and without `resume`),
//! one asks for snapshots unprompted and one loses an event on purpose; and a snapshot sent in
//! pages while changes race between them. Every subscriber's copy must end equal to the server's
//! feed.
//!
//! Moments are counted in writer operations done, not in time, so the schedule holds however
//! fast the server is; nothing sleeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::follower::{Follower, LocalFeed};
use super::{change, whole_feed};
use crate::engines::Engine;
use crate::support::{APP_ID, KEY, SECRET, TestClient, TestServer, default_config};

const FEED: &str = "feed-race";
const WRITERS: u64 = 10;
const OPS: usize = 1000;
/// Item ids the writers pick from: few enough that publishes collide (409) and edits, moves and
/// retractions miss (404).
const IDS: u64 = 30;
/// How long a subscriber may take to catch up once the final serial is known.
const CATCH_UP: Duration = Duration::from_secs(4);

pub async fn racing_writers_and_reconnecting_snapshot_subscribers_end_with_the_servers_feed(engine: Engine) {
    let server = Arc::new(engine.serve(&default_config()).await);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let seed = std::env::var("HERALD_E2E_FEED_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(now);
    eprintln!("[{}] feed race seed {seed} (HERALD_E2E_FEED_SEED repeats the workload)", engine.name());
    let mut rng = Rng::new(seed);
    let (progress_tx, progress) = watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let (target_tx, target) = watch::channel(None);
    let followers: Vec<_> = scripts(&mut rng)
        .into_iter()
        .map(|script| tokio::spawn(follow(server.clone(), FEED, script, progress.clone(), target.clone())))
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let rng = Rng::new(seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tokio::spawn(write(server.clone(), w, rng, OPS / WRITERS as usize, progress_tx.clone()))
        })
        .collect();
    let mut answers = Vec::new();
    for writer in writers {
        answers.extend(tokio::time::timeout(Duration::from_secs(120), writer).await.expect("writers finish").unwrap());
    }

    let expected = LocalFeed::of(&whole_feed(&server, FEED).await);
    target_tx.send(Some(expected.serial)).unwrap();
    let mut seen = Vec::new();
    for follower in followers {
        seen.push(tokio::time::timeout(CATCH_UP * 2, follower).await.expect("subscriber finishes").unwrap());
    }

    let unexpected: Vec<&String> = answers
        .iter()
        .filter(|(status, _, _)| ![200, 201, 404, 409].contains(status))
        .map(|(_, _, what)| what)
        .collect();
    assert!(unexpected.is_empty(), "answers other than 200/201/404/409: {unexpected:#?}");
    let mut serials: Vec<u64> = answers.iter().filter_map(|(_, serial, _)| *serial).collect();
    serials.sort_unstable();
    let accepted = serials.len() as u64;
    assert!(accepted >= 300, "only {accepted} of {OPS} changes were accepted: the workload is too weak");
    assert_eq!(serials, (1..=accepted).collect::<Vec<_>>(), "one serial per accepted change, none shared");
    assert_eq!(expected.serial, accepted, "the feed's position is its last accepted change");
    for (n, follower) in seen.iter().enumerate() {
        eprintln!("[{}] subscriber {n}: {:?}", engine.name(), follower.seen);
        assert!(follower.problems.is_empty(), "subscriber {n} ({:?}): {:#?}", follower.seen, follower.problems);
        let copy = follower.copy.as_ref().expect("a copy");
        assert_eq!(copy.serial, expected.serial, "subscriber {n} is current at the final serial");
        assert_eq!(copy.ids(), expected.ids(), "subscriber {n}: the order");
        assert_eq!(copy, &expected, "subscriber {n}: ids, values and serial");
    }
    assert!(seen.iter().any(|f| !f.seen.recovered.is_empty()), "a subscriber came back with resume");
    assert!(seen[4].seen.lost == 1 && seen[4].seen.gaps >= 1, "the lost event was seen as a gap: {:?}", seen[4].seen);
    assert!(seen[3].seen.requests >= 2, "the unprompted requests were sent: {:?}", seen[3].seen);
}

/// A snapshot larger than a page (the connection's queue is small) comes in several
/// `herald:feed_snapshot` frames; changes made while the pages go out reach the subscriber as
/// events, and the copy built from the pages and the events is the feed.
pub async fn a_paged_snapshot_with_changes_racing_its_pages_builds_the_feed(engine: Engine) {
    const PAGED: &str = "feed-pages";
    let config = format!(
        "[server]\nmax_queued_bytes = 16384\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n"
    );
    let server = Arc::new(engine.serve(&config).await);
    let pad = "p".repeat(900);
    for n in 0..24 {
        let (status, answer) =
            change(&server, PAGED, "", json!({"id": format!("p{n:02}"), "value": {"n": n, "pad": pad}})).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (progress_tx, progress) = watch::channel(0usize);
    let (target_tx, target) = watch::channel(None);
    let follower = tokio::spawn(follow(server.clone(), PAGED, vec![(0, Step::Join)], progress, target));
    for n in 0..30usize {
        let path = if n % 3 == 2 { format!("/p{:02}/move", n % 24) } else { format!("/p{:02}/edit", n % 24) };
        let body = if n % 3 == 2 { json!({"index": n % 5}) } else { json!({"value": {"edit": n, "pad": pad}}) };
        let (status, answer) = change(&server, PAGED, &path, body).await;
        assert_eq!(status, 200, "{answer}");
        progress_tx.send_modify(|done| *done += 1);
    }
    let expected = LocalFeed::of(&whole_feed(&server, PAGED).await);
    target_tx.send(Some(expected.serial)).unwrap();
    let follower = tokio::time::timeout(CATCH_UP * 2, follower).await.expect("subscriber finishes").unwrap();
    eprintln!("[{}] paged subscriber: {:?}", engine.name(), follower.seen);
    assert!(follower.problems.is_empty(), "{:?}: {:#?}", follower.seen, follower.problems);
    assert!(follower.seen.pages >= 3 && follower.seen.snapshots == 1, "one snapshot in pages: {:?}", follower.seen);
    assert_eq!(follower.copy.as_ref(), Some(&expected));
}

/// xorshift64*: enough randomness for a workload, from a printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }
}

/// What a subscriber does once the writers have done so many operations.
#[derive(Debug, Clone, Copy)]
enum Step {
    Join,
    /// Closes the connection (once it has had a copy, so a resume has somewhere to start).
    Leave,
    /// A new connection; `resume` from the copy's position or not.
    Back {
        resume: bool,
    },
    /// Asks for a snapshot unprompted.
    Request,
    /// Throws the next live event away, so that the following one shows a gap.
    Lose,
}

/// Five subscribers: two leave once (one resumes), one leaves twice, one asks for snapshots, one
/// loses an event. Every step is due before the last operations, so each can happen.
fn scripts(rng: &mut Rng) -> Vec<Vec<(usize, Step)>> {
    let last = OPS - 100;
    (0..5)
        .map(|n| {
            let mut at = rng.below(600) as usize;
            let mut script = vec![(at, Step::Join)];
            let mut then = |rng: &mut Rng, step, spread| {
                at = (at + 20 + rng.below(spread) as usize).min(last);
                script.push((at, step));
            };
            match n {
                0..=2 => {
                    let resumes: &[bool] = match n {
                        0 => &[true],
                        1 => &[false],
                        _ => &[true, false],
                    };
                    for &resume in resumes {
                        then(rng, Step::Leave, 150);
                        then(rng, Step::Back { resume }, 40);
                    }
                }
                3 => {
                    then(rng, Step::Request, 100);
                    then(rng, Step::Request, 100);
                }
                _ => then(rng, Step::Lose, 200),
            }
            script
        })
        .collect()
}

async fn join(server: &TestServer, follower: &mut Follower, resume: bool) -> TestClient {
    let mut client = server.client().await;
    client.send(follower.subscribe(resume)).await;
    client
}

/// Plays one subscriber's script, reading frames throughout, until its copy is current at the
/// final serial (or `CATCH_UP` after that serial is known).
async fn follow(
    server: Arc<TestServer>,
    feed: &'static str,
    script: Vec<(usize, Step)>,
    mut progress: watch::Receiver<usize>,
    mut target: watch::Receiver<Option<u64>>,
) -> Follower {
    let mut follower = Follower::new(feed);
    let mut client: Option<TestClient> = None;
    let mut steps = script.into_iter().peekable();
    let mut deadline = None;
    loop {
        let (ops, last) = (*progress.borrow_and_update(), *target.borrow_and_update());
        while let Some(&(at, step)) = steps.peek() {
            // Leaving, asking and losing wait for a copy, so that each does what it is meant to.
            let has_copy = follower.copy.is_some() && !follower.awaiting;
            if at > ops || (!matches!(step, Step::Join | Step::Back { .. }) && !has_copy) {
                break;
            }
            steps.next();
            match step {
                Step::Join => client = Some(join(&server, &mut follower, false).await),
                Step::Leave => client.take().expect("connected").close().await,
                Step::Back { resume } => client = Some(join(&server, &mut follower, resume).await),
                Step::Request => {
                    if let (Some(request), Some(client)) = (follower.request(), client.as_mut()) {
                        client.send(request).await;
                    }
                }
                Step::Lose => follower.lose_next = true,
            }
        }
        if steps.peek().is_none() && last.is_some_and(|last| follower.current_at(last)) {
            return follower;
        }
        if deadline.is_none() && last.is_some() {
            deadline = Some(Instant::now() + CATCH_UP);
        }
        let frame = async {
            match client.as_mut() {
                Some(client) => client.recv().await,
                None => std::future::pending().await,
            }
        };
        let give_up = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = frame => {
                if let Some(request) = follower.on_frame(&frame) {
                    client.as_mut().expect("connected").send(request).await;
                }
            }
            _ = progress.changed() => {}
            _ = target.changed() => {}
            () = give_up => {
                let at = follower.copy.as_ref().map(|c| c.serial);
                let awaiting = follower.awaiting;
                follower.problems.push(format!("not current at {last:?} after {CATCH_UP:?}: copy at {at:?}, awaiting a snapshot: {awaiting}"));
                return follower;
            }
        }
    }
}

fn value(rng: &mut Rng, writer: u64, n: usize) -> Value {
    json!({"w": writer, "n": n, "text": format!("é \"{writer}\" \\ {n}\n"), "tags": [n % 3, "t"], "nested": {"k": n, "r": rng.below(100)}})
}

/// A JSON merge patch: sets, nested sets and removals.
fn patch(rng: &mut Rng, writer: u64, n: usize) -> Value {
    match rng.below(3) {
        0 => json!({"n": n, "text": null, "merged_by": writer}),
        1 => json!({"nested": {"k": null, "m": writer}, "tags": ["p", n]}),
        _ => json!({"extra": {"deep": {"n": n}}, "w": null}),
    }
}

/// Where an item goes: the end, an index (maybe past the end), or next to another item.
fn place(rng: &mut Rng, id: &str) -> Value {
    let other = loop {
        let other = format!("i{:02}", rng.below(IDS));
        if other != id {
            break other;
        }
    };
    match rng.below(4) {
        0 => json!({}),
        1 => json!({"index": rng.below(IDS + 5)}),
        2 => json!({"before": other}),
        _ => json!({"after": other}),
    }
}

/// One writer's operations: each answer's status, the serial it took when accepted, and what it
/// was (for the failure message).
async fn write(
    server: Arc<TestServer>,
    writer: u64,
    mut rng: Rng,
    ops: usize,
    progress: Arc<watch::Sender<usize>>,
) -> Vec<(u16, Option<u64>, String)> {
    let mut answers = Vec::with_capacity(ops);
    for n in 0..ops {
        let id = format!("i{:02}", rng.below(IDS));
        let (path, body) = match rng.below(20) {
            0..=6 => {
                let mut body = place(&mut rng, &id);
                body["id"] = json!(id);
                body["value"] = value(&mut rng, writer, n);
                (String::new(), body)
            }
            7..=9 => (format!("/{id}/edit"), json!({"value": value(&mut rng, writer, n)})),
            10..=12 => (format!("/{id}/edit"), json!({"value": patch(&mut rng, writer, n), "merge": true})),
            13..=15 => (format!("/{id}/retract"), json!({})),
            _ => (format!("/{id}/move"), place(&mut rng, &id)),
        };
        let (status, answer) = change(&server, FEED, &path, body.clone()).await;
        let serial = answer["position"]["serial"].as_u64().filter(|_| status < 300);
        answers.push((status, serial, format!("{path} {body} -> {status} {answer}")));
        progress.send_modify(|done| *done += 1);
    }
    answers
}
