//! `/console` on the real binary: the page, its assets and its Content-Security-Policy, and
//! `[server] console = false`. What the page does is tested in Chromium
//! (`tests/node/browser-console.test.mjs`).

use crate::support::{TestServer, default_config};

#[tokio::test]
async fn the_console_page_is_served_with_a_same_origin_policy() {
    let server = TestServer::start().await;
    let (status, head, body) = server.get_with_head("/console").await;
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    let csp = head.lines().find_map(|l| l.strip_prefix("content-security-policy: ")).expect("a CSP header");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' ws://{} wss://{};", server.addr, server.addr)), "{csp}");
    assert!(body.contains("<script src=\"/console/console.js\""), "{body}");
    assert!(!body.contains("http://") && !body.contains("https://"), "no external resources");

    let (status, head, script) = server.get_with_head("/console/console.js").await;
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/javascript"), "{head}");
    assert!(script.contains("crypto.subtle"));
    assert_eq!(server.get_with_head("/console/console.css").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn console_false_answers_404() {
    let server = TestServer::with_config(&format!("[server]\nconsole = false\n{}", default_config())).await;
    for path in ["/console", "/console/console.js", "/console/console.css"] {
        assert_eq!(server.get_with_head(path).await.0, 404, "{path}");
    }
    assert_eq!(server.get_with_head("/up").await.0, 200);
    server.stop().await;
}
