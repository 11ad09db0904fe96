//! Arbitrary signed HTTP requests (method, path, query pairs, body) into `SignedRequest::verify`,
//! and arbitrary `auth` values into `signature::verify_auth`.
//!
//! Nothing may panic. Round trips: a query string `request_signature::sign` builds verifies at any
//! clock within the timestamp window and fails outside it, under another secret, or with its body
//! stripped; a channel or sign-in `auth` computed with `Secret::sign` verifies, and under another
//! secret or key does not.

#![no_main]

use arbitrary::Arbitrary;
use herald_protocol::request_signature::{self, TIMESTAMP_WINDOW_SECS};
use herald_protocol::signature::{self, AuthError};
use herald_protocol::{RequestAuthError, Secret, SignedRequest, SocketId};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
    key: String,
    secret: String,
    other_secret: String,
    timestamp: u64,
    /// Where the server's clock is relative to `timestamp`.
    skew: i16,
    now: u64,
    auth: String,
    socket_id: (u64, u64),
    channel: String,
    channel_data: Option<String>,
}

fuzz_target!(|input: Input| {
    arbitrary_requests_never_panic(&input);
    signed_requests_verify(&input);
    auth_signatures_verify(&input);
});

fn arbitrary_requests_never_panic(input: &Input) {
    let request = SignedRequest { method: &input.method, path: &input.path, query: &input.query, body: &input.body };
    let _ = request.string_to_sign();
    let _ = request.auth_key();
    let _ = request.verify(&input.key, &Secret::new(input.secret.as_str()), input.now);
    let secret = Secret::new(input.secret.as_str());
    let _ = signature::verify_auth(&input.key, &secret, input.channel.as_bytes(), Some(&input.auth));
    let _ = secret.verify(input.body.as_slice(), &input.auth);
}

/// `sign` documents its parameters as plain tokens; keep what the fuzzer gives to that shape.
fn token(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '&' | '=')).collect()
}

fn is_auth_param(key: &str) -> bool {
    ["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"]
        .iter()
        .any(|name| key.eq_ignore_ascii_case(name))
}

/// Whether two secrets are different HMAC keys. HMAC pads a key shorter than the hash's block with
/// zero bytes, so secrets that differ only by trailing NULs are the same key (generated secrets hold
/// no NULs; this is HMAC, not a Herald bug).
fn distinct_keys(a: &str, b: &str) -> bool {
    a.trim_end_matches('\0') != b.trim_end_matches('\0')
}

fn signed_requests_verify(input: &Input) {
    let key = token(&input.key);
    let params: Vec<(String, String)> =
        input.query.iter().map(|(k, v)| (token(k), token(v))).filter(|(k, _)| !is_auth_param(k)).collect();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let secret = Secret::new(input.secret.as_str());
    let query =
        request_signature::sign(&input.method, &input.path, &params, &input.body, &key, &secret, input.timestamp);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .map(|pair| pair.split_once('=').expect("every pair has '='"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let request = SignedRequest { method: &input.method, path: &input.path, query: &pairs, body: &input.body };

    let skew = i64::from(input.skew).clamp(-(TIMESTAMP_WINDOW_SECS as i64), TIMESTAMP_WINDOW_SECS as i64);
    if let Some(now) = input.timestamp.checked_add_signed(skew) {
        assert_eq!(request.verify(&key, &secret, now), Ok(()), "{query:?} at {now}");
        if distinct_keys(&input.secret, &input.other_secret) {
            assert_eq!(
                request.verify(&key, &Secret::new(input.other_secret.as_str()), now),
                Err(RequestAuthError::BadSignature)
            );
        }
    }
    if !input.body.is_empty() {
        // The signed body_md5 binds the body: stripping it must not verify.
        let stripped = SignedRequest { body: &[], ..request };
        assert_eq!(stripped.verify(&key, &secret, input.timestamp), Err(RequestAuthError::BodyDigestMismatch));
    }
    if let Some(late) = input.timestamp.checked_add(TIMESTAMP_WINDOW_SECS + 1) {
        assert_eq!(request.verify(&key, &secret, late), Err(RequestAuthError::StaleTimestamp));
    }
    if let Some(early) = input.timestamp.checked_sub(TIMESTAMP_WINDOW_SECS + 1) {
        assert_eq!(request.verify(&key, &secret, early), Err(RequestAuthError::StaleTimestamp));
    }
}

fn auth_signatures_verify(input: &Input) {
    // An app key never holds ':' (it separates the key from the signature in `auth`).
    let key: String = input.key.chars().filter(|&c| c != ':').collect();
    let secret = Secret::new(input.secret.as_str());
    let other = Secret::new(input.other_secret.as_str());
    let socket_id = SocketId::new(input.socket_id.0, input.socket_id.1);
    let messages = [
        signature::channel_auth_message(socket_id, &input.channel, input.channel_data.as_deref()),
        signature::signin_message(socket_id, &input.channel),
    ];
    for message in messages {
        let auth = format!("{key}:{}", secret.sign(message.as_bytes()));
        assert_eq!(signature::verify_auth(&key, &secret, message.as_bytes(), Some(&auth)), Ok(()));
        if distinct_keys(&input.secret, &input.other_secret) {
            assert_eq!(
                signature::verify_auth(&key, &other, message.as_bytes(), Some(&auth)),
                Err(AuthError::BadSignature)
            );
        }
        let wrong_key = format!("{key}x:{}", secret.sign(message.as_bytes()));
        assert_eq!(
            signature::verify_auth(&key, &secret, message.as_bytes(), Some(&wrong_key)),
            Err(AuthError::WrongKey)
        );
    }
}
