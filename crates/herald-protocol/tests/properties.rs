//! Property tests for the rules herald-protocol enforces at the edge: channel-name validation and
//! classification, and the two signature schemes (channel/sign-in `auth`, signed HTTP requests).
//!
//! The unit tests beside the code pin Pusher's published vectors and each named failure; these
//! check the same rules over generated inputs. The fuzz targets in `fuzz/` cover arbitrary bytes
//! (never panicking); these cover meaning (what is accepted, what is refused).
//!
//! Constant time: `Secret::verify` hands the decoded tag to `hmac`'s `Mac::verify_slice`, which
//! compares with `subtle::ConstantTimeEq`; `verify_auth` compares the app key with `ct_eq` too. A
//! timing property cannot be asserted reliably in a test, so it is noted here rather than measured.

use herald_protocol::request_signature::{self, TIMESTAMP_WINDOW_SECS, body_md5};
use herald_protocol::signature::{self, AuthError};
use herald_protocol::{ChannelKind, ChannelName, ChannelNameError, RequestAuthError, Secret, SignedRequest, SocketId};
use proptest::prelude::*;
use proptest::sample::Index;

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=@,.;";

/// Pusher's documented limit is 164; Herald accepts 200 by default (PUSHER-PROTOCOL.md).
const MAX_LENGTHS: [usize; 2] = [164, 200];

/// The reserved prefixes and what each selects: (prefix, kind, cache).
const PREFIXES: [(&str, ChannelKind, bool); 8] = [
    ("", ChannelKind::Public, false),
    ("cache-", ChannelKind::Public, true),
    ("private-", ChannelKind::Private, false),
    ("private-cache-", ChannelKind::Private, true),
    ("private-encrypted-", ChannelKind::PrivateEncrypted, false),
    ("private-encrypted-cache-", ChannelKind::PrivateEncrypted, true),
    ("presence-", ChannelKind::Presence, false),
    ("presence-cache-", ChannelKind::Presence, true),
];

fn name_chars(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALPHABET.chars().collect::<Vec<_>>()), 1..=max)
        .prop_map(|chars| chars.into_iter().collect())
}

/// A character outside the alphabet (any Unicode scalar, including `#`, space, quotes, controls).
fn foreign_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("outside the alphabet", |c| !ALPHABET.contains(*c))
}

/// The prefix a name starts with that decides its kind: the longest match wins.
fn classify(name: &str) -> (ChannelKind, bool) {
    PREFIXES
        .iter()
        .filter(|(prefix, _, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|&(_, kind, cache)| (kind, cache))
        .unwrap_or((ChannelKind::Public, false))
}

proptest! {
    #[test]
    fn names_from_the_alphabet_within_the_limit_are_accepted(
        name in name_chars(200),
        max in proptest::sample::select(MAX_LENGTHS.to_vec()),
    ) {
        let parsed = ChannelName::parse(&name, max);
        if name.len() > max {
            prop_assert_eq!(parsed, Err(ChannelNameError::TooLong { max }));
        } else {
            let channel = parsed.expect("a valid name");
            prop_assert_eq!(channel.as_str(), name.as_str());
            prop_assert_eq!((channel.kind(), channel.is_cache()), classify(&name));
            prop_assert_eq!(channel.user_id(), None);
        }
    }

    #[test]
    fn prefixes_classify(
        prefix in 0..PREFIXES.len(),
        rest in name_chars(100),
        max in proptest::sample::select(MAX_LENGTHS.to_vec()),
    ) {
        let (prefix, kind, cache) = PREFIXES[prefix];
        let name = format!("{prefix}{rest}");
        let channel = ChannelName::parse(&name, max).expect("a valid name");
        // `rest` may itself start with `cache-` (or spell another prefix), which only matters
        // when nothing longer was given: the longest matching prefix decides.
        prop_assert_eq!((channel.kind(), channel.is_cache()), classify(&name));
        if !["cache-", "encrypted-", "private-", "presence-"].iter().any(|p| rest.starts_with(p)) {
            prop_assert_eq!((channel.kind(), channel.is_cache()), (kind, cache));
        }
        prop_assert_eq!(channel.kind().requires_auth(), !matches!(classify(&name).0, ChannelKind::Public));
    }

    #[test]
    fn a_foreign_character_anywhere_is_refused(
        name in name_chars(150),
        bad in foreign_char(),
        at in any::<Index>(),
        max in proptest::sample::select(MAX_LENGTHS.to_vec()),
    ) {
        let mut chars: Vec<char> = name.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad);
        let name: String = chars.into_iter().collect();
        let expected = if name.len() > max {
            ChannelNameError::TooLong { max }
        } else if name.starts_with('#') {
            ChannelNameError::Reserved
        } else {
            ChannelNameError::InvalidCharacter
        };
        prop_assert_eq!(ChannelName::parse(&name, max), Err(expected));
    }

    #[test]
    fn too_long_names_are_refused(extra in 1usize..100, max in proptest::sample::select(MAX_LENGTHS.to_vec())) {
        let name = "a".repeat(max + extra);
        prop_assert_eq!(ChannelName::parse(&name, max), Err(ChannelNameError::TooLong { max }));
        let user = format!("#server-to-user-{}", "u".repeat(max));
        prop_assert_eq!(ChannelName::parse(&user, max), Err(ChannelNameError::TooLong { max }));
    }

    #[test]
    fn server_to_user_names_round_trip(user in name_chars(100), other in "#[^s].*") {
        let name = format!("#server-to-user-{user}");
        let channel = ChannelName::parse(&name, 200).expect("a valid user stream");
        prop_assert_eq!(channel.kind(), ChannelKind::ServerToUser);
        prop_assert_eq!(channel.user_id(), Some(user.as_str()));
        prop_assert_eq!(ChannelName::server_to_user(&user), channel);
        prop_assert!(ChannelName::parse(&other, 200).is_err());
    }
}

// --- channel auth and sign-in -------------------------------------------------------------------

fn secret() -> impl Strategy<Value = String> {
    "[a-f0-9]{20}"
}

fn key() -> impl Strategy<Value = String> {
    "[a-f0-9]{20}"
}

/// Replaces the character at `at` with a different one that is not the same hex digit in the
/// other case (hex decoding, like Pusher's, is case-insensitive: `A` and `a` are one byte).
fn flip_hex(signature: &str, at: Index, to: Index) -> String {
    let mut chars: Vec<char> = signature.chars().collect();
    let i = at.index(chars.len());
    let choices: Vec<char> = "0123456789abcdefg!".chars().filter(|c| !c.eq_ignore_ascii_case(&chars[i])).collect();
    chars[i] = choices[to.index(choices.len())];
    chars.into_iter().collect()
}

fn flip_byte(bytes: &[u8], at: Index, mask: u8) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let i = at.index(bytes.len());
    bytes[i] ^= mask;
    bytes
}

proptest! {
    #[test]
    fn channel_auth_sign_then_verify(
        (key, secret) in (key(), secret()),
        socket in (any::<u64>(), any::<u64>()),
        channel in name_chars(200),
        channel_data in proptest::option::of(".*"),
        at in any::<Index>(),
        to in any::<Index>(),
        mask in 1u8..,
    ) {
        let secret = Secret::new(secret);
        let message = signature::channel_auth_message(SocketId::new(socket.0, socket.1), &channel, channel_data.as_deref());
        let signature = secret.sign(message.as_bytes());
        let auth = format!("{key}:{signature}");
        prop_assert_eq!(signature::verify_auth(&key, &secret, message.as_bytes(), Some(&auth)), Ok(()));
        // Hex is read case-insensitively: the upper-case spelling is the same signature.
        let upper = format!("{key}:{}", signature.to_ascii_uppercase());
        prop_assert_eq!(signature::verify_auth(&key, &secret, message.as_bytes(), Some(&upper)), Ok(()));

        let flipped = format!("{key}:{}", flip_hex(&signature, at, to));
        prop_assert_eq!(
            signature::verify_auth(&key, &secret, message.as_bytes(), Some(&flipped)),
            Err(AuthError::BadSignature)
        );
        let tampered = flip_byte(message.as_bytes(), at, mask);
        prop_assert_eq!(
            signature::verify_auth(&key, &secret, &tampered, Some(&auth)),
            Err(AuthError::BadSignature)
        );
        let truncated = format!("{key}:{}", &signature[..signature.len() - 2]);
        prop_assert_eq!(
            signature::verify_auth(&key, &secret, message.as_bytes(), Some(&truncated)),
            Err(AuthError::BadSignature)
        );
        let wrong_key = format!("{}:{signature}", flip_hex(&key, at, to));
        prop_assert_eq!(
            signature::verify_auth(&key, &secret, message.as_bytes(), Some(&wrong_key)),
            Err(AuthError::WrongKey)
        );
    }

    #[test]
    fn signin_sign_then_verify(
        (key, secret, other) in (key(), secret(), secret()),
        socket in (any::<u64>(), any::<u64>()),
        user_data in ".*",
    ) {
        let secret = Secret::new(secret);
        let message = signature::signin_message(SocketId::new(socket.0, socket.1), &user_data);
        let auth = format!("{key}:{}", secret.sign(message.as_bytes()));
        prop_assert_eq!(signature::verify_auth(&key, &secret, message.as_bytes(), Some(&auth)), Ok(()));
        if other != secret.expose() {
            prop_assert_eq!(
                signature::verify_auth(&key, &Secret::new(other), message.as_bytes(), Some(&auth)),
                Err(AuthError::BadSignature)
            );
        }
    }
}

// --- signed HTTP requests -----------------------------------------------------------------------

/// A query parameter as SDKs send them: lower-case names that are not auth parameters, plain values.
fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[a-z][a-z_]{0,11}", "[A-Za-z0-9_.,-]{0,16}"), 0..5)
        .prop_map(|params| params.into_iter().filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5").collect())
}

fn method() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["GET", "POST", "post", "DELETE", "PUT"])
}

/// Splits a query string `sign` built (plain tokens, so no URL-decoding is needed).
fn decode(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').expect("key=value"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[derive(Debug)]
struct Signed {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    key: String,
    secret: Secret,
    timestamp: u64,
    query: Vec<(String, String)>,
}

impl Signed {
    fn verify(&self, query: &[(String, String)], body: &[u8], now: u64) -> Result<(), RequestAuthError> {
        let request = SignedRequest { method: self.method, path: &self.path, query, body };
        request.verify(&self.key, &self.secret, now)
    }
}

/// A request signed by `request_signature::sign`; GET requests have no body.
fn signed() -> impl Strategy<Value = Signed> {
    signed_with(".{0,200}")
}

/// As [`signed`], with the body (of any method but GET) drawn from `body`.
fn signed_with(body: &'static str) -> impl Strategy<Value = Signed> {
    (method(), "/apps/[0-9]{1,4}/[a-z_/]{1,20}", body, key(), secret(), 1_000_000u64..4_000_000_000, params()).prop_map(
        |(method, path, body, key, secret, timestamp, params)| {
            let body = if method == "GET" { Vec::new() } else { body.into_bytes() };
            let secret = Secret::new(secret);
            let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let query = request_signature::sign(method, &path, &borrowed, &body, &key, &secret, timestamp);
            Signed { method, path, body, key, secret, timestamp, query: decode(&query) }
        },
    )
}

proptest! {
    #[test]
    fn signed_requests_verify_within_the_window(
        s in signed(),
        skew in -(TIMESTAMP_WINDOW_SECS as i64)..=(TIMESTAMP_WINDOW_SECS as i64),
        reorder in any::<Index>(),
    ) {
        let now = s.timestamp.checked_add_signed(skew).expect("in range");
        prop_assert_eq!(s.verify(&s.query, &s.body, now), Ok(()));
        // Parameters may arrive in any order.
        let mut rotated = s.query.clone();
        let by = reorder.index(rotated.len());
        rotated.rotate_left(by);
        prop_assert_eq!(s.verify(&rotated, &s.body, now), Ok(()));
    }

    #[test]
    fn a_timestamp_outside_the_window_fails(s in signed(), beyond in 1u64..1_000_000) {
        let late = s.timestamp + TIMESTAMP_WINDOW_SECS + beyond;
        prop_assert_eq!(s.verify(&s.query, &s.body, late), Err(RequestAuthError::StaleTimestamp));
        let early = (s.timestamp - TIMESTAMP_WINDOW_SECS).saturating_sub(beyond);
        prop_assert_eq!(s.verify(&s.query, &s.body, early), Err(RequestAuthError::StaleTimestamp));
    }

    #[test]
    fn a_flipped_signature_fails(s in signed(), at in any::<Index>(), to in any::<Index>()) {
        let mut query = s.query.clone();
        let (_, signature) = query.iter_mut().find(|(k, _)| k == "auth_signature").expect("signed");
        *signature = flip_hex(signature, at, to);
        prop_assert_eq!(s.verify(&query, &s.body, s.timestamp), Err(RequestAuthError::BadSignature));
    }

    #[test]
    fn a_flipped_param_fails(s in signed(), which in any::<Index>(), at in any::<Index>(), to in any::<Index>()) {
        let mut query = s.query.clone();
        let signable: Vec<usize> = (0..query.len()).filter(|&i| query[i].0 != "auth_signature").collect();
        let i = signable[which.index(signable.len())];
        let (k, v) = &mut query[i];
        let field = k.clone();
        // Change the value (append when it is empty) to a different character, not a case variant.
        *v = if v.is_empty() { "x".to_owned() } else { flip_hex(v, at, to) };
        let result = s.verify(&query, &s.body, s.timestamp);
        let expected = match field.as_str() {
            "auth_key" => Err(RequestAuthError::UnknownKey),
            "auth_version" => Err(RequestAuthError::UnsupportedVersion),
            "body_md5" => Err(RequestAuthError::BodyDigestMismatch),
            _ => Err(RequestAuthError::BadSignature),
        };
        if field == "auth_timestamp" {
            // A flipped timestamp is either not a number, outside the window, or badly signed.
            prop_assert!(result.is_err(), "{result:?}");
        } else {
            prop_assert_eq!(result, expected);
        }
    }

    #[test]
    fn a_changed_body_fails(s in signed_with(".{1,200}"), at in any::<Index>(), mask in 1u8.., other in ".{0,50}") {
        prop_assume!(!s.body.is_empty()); // a GET
        let flipped = flip_byte(&s.body, at, mask);
        prop_assert_eq!(s.verify(&s.query, &flipped, s.timestamp), Err(RequestAuthError::BodyDigestMismatch));
        if other.as_bytes() != s.body.as_slice() {
            prop_assert_eq!(
                s.verify(&s.query, other.as_bytes(), s.timestamp),
                Err(RequestAuthError::BodyDigestMismatch)
            );
        }
    }

    #[test]
    fn a_body_added_to_a_bodiless_request_fails(s in signed_with(""), body in ".{1,50}") {
        prop_assert_eq!(
            s.verify(&s.query, body.as_bytes(), s.timestamp),
            Err(RequestAuthError::MissingParameter("body_md5"))
        );
        // Adding a matching body_md5 changes what was signed.
        let mut query = s.query.clone();
        query.push(("body_md5".to_owned(), body_md5(body.as_bytes())));
        prop_assert_eq!(s.verify(&query, body.as_bytes(), s.timestamp), Err(RequestAuthError::BadSignature));
    }

    #[test]
    fn another_secret_fails(s in signed(), other in secret()) {
        prop_assume!(other != s.secret.expose());
        let request = SignedRequest { method: s.method, path: &s.path, query: &s.query, body: &s.body };
        prop_assert_eq!(request.verify(&s.key, &Secret::new(other), s.timestamp), Err(RequestAuthError::BadSignature));
    }
}
