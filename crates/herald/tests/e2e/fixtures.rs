//! Replays every golden wire fixture in `fixtures/wire` against the real binary.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{Closed, TestClient, TestServer};

/// Values captured by `"<capture:NAME>"` and used by `"<var:NAME>"`.
type Vars = HashMap<String, Value>;

/// Whether `actual` matches `expected` under the fixture rules (see fixtures/wire/README.md).
pub fn matches(expected: &Value, actual: &Value, vars: &mut Vars) -> bool {
    match (expected, actual) {
        (Value::String(e), _) if e == "<any>" => true,
        (Value::String(e), _) if e.starts_with("<capture:") => {
            vars.insert(e.trim_start_matches("<capture:").trim_end_matches('>').to_owned(), actual.clone());
            true
        }
        (Value::String(e), Value::String(a)) if e == "<socket_id>" => a.split_once('.').is_some_and(|(h, l)| {
            !h.is_empty() && !l.is_empty() && h.bytes().chain(l.bytes()).all(|b| b.is_ascii_digit())
        }),
        (Value::String(e), Value::String(a)) => {
            match (serde_json::from_str::<Value>(e), serde_json::from_str::<Value>(a)) {
                (Ok(ej @ (Value::Object(_) | Value::Array(_))), Ok(aj)) => matches(&ej, &aj, vars),
                _ => e == a,
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len() && e.iter().all(|(k, ev)| a.get(k).is_some_and(|av| matches(ev, av, vars)))
        }
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a, vars)),
        _ => expected == actual,
    }
}

/// Replaces every `"<var:NAME>"` with the captured value.
fn substitute(value: &Value, vars: &Vars) -> Value {
    match value {
        Value::String(s) if s.starts_with("<var:") => {
            vars.get(s.trim_start_matches("<var:").trim_end_matches('>')).cloned().unwrap_or(Value::Null)
        }
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), substitute(v, vars))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, vars)).collect()),
        other => other.clone(),
    }
}

async fn replay(server: &TestServer, fixture: &Value, name: &str) {
    let mut clients: HashMap<String, TestClient> = HashMap::new();
    let mut vars = Vars::new();
    for (index, step) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        let at = format!("{name} step {index}");
        if let Some(publish) = step.get("publish") {
            let (status, body) = server.publish(substitute(publish, &vars)).await;
            assert_eq!(Some(u64::from(status)), step["status"].as_u64(), "{at}: {body}");
            if let Some(expected) = step.get("response") {
                let actual: Value = serde_json::from_str(&body).unwrap();
                let expected = substitute(expected, &vars);
                assert!(matches(&expected, &actual, &mut vars), "{at}: expected {expected}, got {actual}");
            }
            continue;
        }
        let id = step["client"].as_str().unwrap().to_owned();
        if let Some(connect) = step.get("connect") {
            let key = connect["key"].as_str().unwrap_or(crate::support::KEY);
            let query = connect["query"].as_str().unwrap_or("protocol=7");
            clients.insert(id, server.connect(key, query).await);
            continue;
        }
        let client = clients.get_mut(&id).unwrap();
        if let Some(frame) = step.get("send") {
            client.send(substitute(frame, &vars)).await;
        } else if let Some(text) = step.get("send_text") {
            client.send_text(text.as_str().unwrap()).await;
        } else if let Some(expected) = step.get("recv") {
            let actual = client.recv().await;
            let expected = substitute(expected, &vars);
            assert!(matches(&expected, &actual, &mut vars), "{at}: expected {expected}, got {actual}");
        } else if let Some(code) = step.get("closed") {
            let closed = client.expect_close().await;
            assert_eq!(closed, Closed::Code(code.as_u64().unwrap() as u16), "{at}");
        } else {
            panic!("{at}: unknown step {step}");
        }
    }
}

#[tokio::test]
async fn every_golden_fixture_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wire");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "fixtures missing in {}", dir.display());
    for file in files {
        let server = TestServer::start().await;
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        replay(&server, &fixture, &file.file_name().unwrap().to_string_lossy()).await;
    }
}

#[test]
fn matcher_rules() {
    use serde_json::json;
    let vars = &mut Vars::new();
    assert!(matches(&json!({"data": "{\"a\":1,\"b\":2}"}), &json!({"data": "{\"b\":2, \"a\":1}"}), vars));
    assert!(!matches(&json!({"data": "{\"a\":1}"}), &json!({"data": "{\"a\":2}"}), vars));
    assert!(matches(&json!({"id": "<socket_id>"}), &json!({"id": "12.34"}), vars));
    assert!(!matches(&json!({"id": "<socket_id>"}), &json!({"id": "12.x"}), vars));
    assert!(!matches(&json!({"a": 1}), &json!({"a": 1, "extra": 2}), vars));
    assert!(matches(&json!({"p": {"epoch": "<capture:e>"}}), &json!({"p": {"epoch": "ab12"}}), vars));
    assert_eq!(substitute(&json!({"resume": {"epoch": "<var:e>"}}), vars), json!({"resume": {"epoch": "ab12"}}));
}
