//! CORS on the signed API: only origins in `cors_allowed_origins` may read answers or pass a
//! preflight; by default none may.

use crate::support::{APP_ID, KEY, SECRET, TestServer, default_config, signed_query, unix_now};

const ADMIN: &str = "https://admin.example";

fn allows(head: &str, origin: &str) -> bool {
    head.lines().any(|line| line.eq_ignore_ascii_case(&format!("access-control-allow-origin: {origin}")))
}

#[tokio::test]
async fn listed_origins_pass_preflight_and_read_answers_others_do_not() {
    let config = format!("{}\n[server]\ncors_allowed_origins = [\"{ADMIN}\"]\n", default_config());
    let server = TestServer::with_config(&config).await;
    let events = format!("/apps/{APP_ID}/events");
    let preflight = |origin: &'static str| {
        let events = events.clone();
        let server = &server;
        async move {
            let headers = [("Origin", origin), ("Access-Control-Request-Method", "POST")];
            server.request_with_head("OPTIONS", &events, &headers).await
        }
    };
    let (status, head, _) = preflight(ADMIN).await;
    assert_eq!(status, 204, "{head}");
    assert!(allows(&head, ADMIN), "{head}");
    let (status, head, _) = preflight("https://evil.example").await;
    assert_eq!(status, 403, "{head}");
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");

    let path = format!("/apps/{APP_ID}/channels");
    let target = format!("{path}?{}", signed_query("GET", &path, &[], "", KEY, SECRET, unix_now()));
    let (status, head, _) = server.request_with_head("GET", &target, &[("Origin", ADMIN)]).await;
    assert_eq!(status, 200, "{head}");
    assert!(allows(&head, ADMIN), "{head}");
    let (_, head, _) = server.request_with_head("GET", &target, &[("Origin", "https://evil.example")]).await;
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");
}

#[tokio::test]
async fn by_default_no_origin_may_read_the_api() {
    let server = TestServer::start().await;
    let path = format!("/apps/{APP_ID}/channels");
    let target = format!("{path}?{}", signed_query("GET", &path, &[], "", KEY, SECRET, unix_now()));
    let (status, head, _) = server.request_with_head("GET", &target, &[("Origin", ADMIN)]).await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");
}
