//! `herald bench` against the real server: each scenario runs at a small size, ends by itself,
//! and reports what it measured in its JSON line; a target off loopback is refused.

use serde_json::Value;

use crate::support::{APP_ID, KEY, SECRET, TestServer};

/// Runs `herald bench` with the test app's credentials against `server`; returns its JSON line.
async fn bench(server: &TestServer, scenario: &[&str]) -> Value {
    let mut args: Vec<String> =
        ["bench", "--target", &server.addr, "--app-id", APP_ID, "--key", KEY, "--secret", SECRET]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--server-pid".to_string(), server.pid().to_string()]);
    args.extend(scenario.iter().map(|s| s.to_string()));
    let output = tokio::task::spawn_blocking(move || {
        // Bounded, so that a bench that failed to stop ends the test instead of hanging it.
        std::process::Command::new("timeout").arg("120").arg(env!("CARGO_BIN_EXE_herald")).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn fanout_delivers_every_event_to_every_subscriber() {
    let server = TestServer::start().await;
    let report = bench(&server, &["fanout", "--subscribers", "20", "--rate", "20", "--seconds", "1"]).await;
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["delivered"], 20 * 20, "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() > 0.0, "{report}");
    server.stop().await;
}

#[tokio::test]
async fn max_throughput_steps_through_the_rates_it_was_given() {
    let server = TestServer::start().await;
    let report = bench(
        &server,
        &["max-throughput", "--subscribers", "20", "--rates", "10,20", "--step-seconds", "1", "--drain-seconds", "5"],
    )
    .await;
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report}");
    for (step, rate) in steps.iter().zip([10, 20]) {
        assert_eq!(step["rate"], rate, "{report}");
        assert_eq!(step["lost"], 0, "{report}");
        assert_eq!(step["delivered"], 20 * rate, "{report}");
    }
    assert_eq!(report["sustained_rate"], 20, "{report}");
    server.stop().await;
}

#[tokio::test]
async fn many_channels_reaches_each_channel_in_order() {
    let server = TestServer::start().await;
    let report = bench(&server, &["many-channels", "--connections", "50", "--rate", "100", "--seconds", "1"]).await;
    for counter in ["lost", "gaps", "duplicates", "closed", "stuck"] {
        assert_eq!(report[counter], 0, "{counter}: {report}");
    }
    assert_eq!(report["delivered"], report["published"], "{report}");
    assert!(report["published"].as_u64().unwrap() >= 50, "{report}");
    server.stop().await;
}

#[test]
fn refuses_targets_off_loopback_and_documents_every_scenario() {
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().unwrap();
    let refused = run(&["bench", "--target", "192.0.2.1:6001", "idle", "--connections", "1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a loopback address"));
    let help = String::from_utf8(run(&["bench", "--help"]).stdout).unwrap();
    for scenario in ["idle", "fanout", "max-throughput", "many-channels", "jobs"] {
        assert!(help.contains(scenario), "{scenario} missing from bench --help");
    }
}
