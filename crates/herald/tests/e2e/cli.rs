//! The command line itself: publish, check-config, print-default-config, help.

use serde_json::json;

use crate::support::{APP_ID, KEY, SECRET, TestServer};

fn herald(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald")).args(args).output().unwrap()
}

#[tokio::test]
async fn publish_sends_a_signed_event_and_reports_failures() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.subscribe("cli").await;
    let url = format!("http://{}", server.addr);
    let base = ["publish", "--url", &url, "--app-id", APP_ID, "--key", KEY, "--channel", "cli", "--event", "hi"];
    let ok = tokio::task::spawn_blocking({
        let args: Vec<String> = base.iter().map(|s| s.to_string()).chain(["--secret".into(), SECRET.into()]).collect();
        move || herald(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap(), json!({"serials": {"cli": 1}}));
    assert_eq!(a.expect_event("hi").await["serial"], 1);
    let args: Vec<String> = base.iter().map(|s| s.to_string()).chain(["--secret".into(), "wrong".into()]).collect();
    let bad = tokio::task::spawn_blocking(move || herald(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("invalid signature"));
}

#[test]
fn print_default_config_passes_check_config() {
    let printed = herald(&["print-default-config"]);
    assert!(printed.status.success());
    let dir = std::env::temp_dir().join(format!("herald-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("default.toml");
    std::fs::write(&path, &printed.stdout).unwrap();
    let checked = herald(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("configuration OK: 1 app(s)"));
    std::fs::write(&path, "[server]\nbindd = 1").unwrap();
    let refused = herald(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.matches("unknown field `bindd`").count(), 1, "said once: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_every_command_and_serve_option() {
    let help = String::from_utf8(herald(&["--help"]).stdout).unwrap();
    for command in ["serve", "print-default-config", "check-config", "publish", "bench"] {
        assert!(help.contains(command), "{command} missing from --help");
    }
    let serve = String::from_utf8(herald(&["serve", "--help"]).stdout).unwrap();
    for option in
        ["--config", "--bind", "--app", "--data-dir", "--durable-history", "--activity-timeout", "--log-format"]
    {
        assert!(serve.contains(option), "{option} missing from serve --help");
    }
    // Under `timeout`, so that a regression that did serve ends the test instead of hanging it.
    let refused = std::process::Command::new("timeout")
        .args(["10", env!("CARGO_BIN_EXE_herald"), "serve", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the development app is never served beyond loopback");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a loopback address"));
}
