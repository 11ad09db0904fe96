//! The in-process half of the hot path: encode one event and queue it for N subscribers.
//!
//! Run with: cargo bench -p herald-core --bench fanout
//! Socket writes are not included (see BENCHMARKS.md for end-to-end figures).
#![allow(clippy::unwrap_used, reason = "benchmark setup")]

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{App, AppConfig, Publish, Session};
use herald_protocol::{ChannelName, FrameData, server_frame};
use tokio::time::Instant;

fn sessions(app: &Arc<App>, n: usize) -> Vec<Session> {
    (0..n)
        .map(|_| {
            let mut session = Session::open(app.clone(), 64 << 20, 120, Instant::now()).unwrap();
            session.handle_text(r#"{"event":"pusher:subscribe","data":{"channel":"room"}}"#, Instant::now());
            session
        })
        .collect()
}

fn drain(sessions: &[Session]) {
    let mut out = Vec::new();
    for session in sessions {
        session.connection().outbox.drain(&mut out);
        out.clear();
    }
}

use std::future::Future;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanout");
    for n in [100, 10_000] {
        let app = Arc::new(App::new(AppConfig { max_connections: 0, ..AppConfig::new("1", "k", "s") }));
        let subscribers = sessions(&app, n);
        drain(&subscribers);
        let channels = [ChannelName::parse("room", 200).unwrap()];
        let data = r#"{"message":"hello, this is a typical chat message of about a hundred bytes","user":42}"#;
        let publish = Publish {
            event: "message",
            channels: &channels,
            data,
            exclude: None,
            idempotency_key: None,
            count_unread: false,
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // Without an engine a publish completes on its first poll.
                let mut publishing = std::pin::pin!(app.publish(&publish, Instant::now()));
                let polled = publishing.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
                assert!(matches!(polled, std::task::Poll::Ready(Ok(_))));
                drain(&subscribers);
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let data = r#"{"message":"hello, this is a typical chat message of about a hundred bytes","user":42}"#;
    c.bench_function("encode_channel_event", |b| {
        b.iter(|| server_frame::channel_event("message", "presence-room-42", FrameData::Text(data), None, 42));
    });
}

criterion_group!(benches, fanout, encode);
criterion_main!(benches);
