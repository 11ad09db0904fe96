//! Pusher's signed HTTP requests: `auth_key`, `auth_timestamp`, `auth_version`, `body_md5` and
//! `auth_signature` over `METHOD\npath\nsorted-query`.
//!
//! The caller decodes the query string and finds the app; this module builds the string to sign,
//! checks the timestamp window and the body digest, and compares the signature in constant time.
//! It does not know which app a key belongs to, nor any HTTP framework.

use md5::{Digest, Md5};

use crate::signature::Secret;

/// How far `auth_timestamp` may be from the server's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// A request as received: decoded query pairs in any order, raw body.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Why a signed request was refused; each maps to HTTP 401 except where noted by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing query parameter {0}")]
    MissingParameter(&'static str),
    #[error("unknown auth_key")]
    UnknownKey,
    #[error("auth_version must be 1.0")]
    UnsupportedVersion,
    #[error("auth_timestamp is not a number")]
    InvalidTimestamp,
    #[error("auth_timestamp expired: it must be within {TIMESTAMP_WINDOW_SECS} s of the server clock")]
    StaleTimestamp,
    #[error("body_md5 does not match the body")]
    BodyDigestMismatch,
    #[error("invalid signature: check the app secret, the request path and the query")]
    BadSignature,
}

impl<'a> SignedRequest<'a> {
    /// The value of a query parameter, by exact (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `auth_key` the request claims, so the caller can find the app and its secret.
    pub fn auth_key(&self) -> Result<&'a str, RequestAuthError> {
        self.param("auth_key").ok_or(RequestAuthError::MissingParameter("auth_key"))
    }

    /// The canonical string Pusher signs: method, path, and every parameter but the signature,
    /// keys lowercased and sorted, joined unescaped.
    pub fn string_to_sign(&self) -> String {
        let mut pairs: Vec<(String, &str)> = self
            .query
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        pairs.sort_unstable();
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}\n{}\n{}", self.method.to_ascii_uppercase(), self.path, query.join("&"))
    }

    /// Checks everything but the key lookup: version, timestamp window, body digest, signature.
    pub fn verify(&self, key: &str, secret: &Secret, now_unix_secs: u64) -> Result<(), RequestAuthError> {
        if self.auth_key()? != key {
            return Err(RequestAuthError::UnknownKey);
        }
        let version = self.param("auth_version").ok_or(RequestAuthError::MissingParameter("auth_version"))?;
        if version != "1.0" {
            return Err(RequestAuthError::UnsupportedVersion);
        }
        let timestamp: u64 = self
            .param("auth_timestamp")
            .ok_or(RequestAuthError::MissingParameter("auth_timestamp"))?
            .parse()
            .map_err(|_| RequestAuthError::InvalidTimestamp)?;
        if timestamp.abs_diff(now_unix_secs) > TIMESTAMP_WINDOW_SECS {
            return Err(RequestAuthError::StaleTimestamp);
        }
        let signature = self.param("auth_signature").ok_or(RequestAuthError::MissingParameter("auth_signature"))?;
        // A signed `body_md5` binds the body even when the body arrives empty: otherwise a captured
        // request could be replayed with its body stripped and still verify.
        match self.param("body_md5") {
            Some(given) if !given.eq_ignore_ascii_case(&body_md5(self.body)) => {
                return Err(RequestAuthError::BodyDigestMismatch);
            }
            None if !self.body.is_empty() => return Err(RequestAuthError::MissingParameter("body_md5")),
            _ => {}
        }
        if secret.verify(self.string_to_sign().as_bytes(), signature) {
            Ok(())
        } else {
            Err(RequestAuthError::BadSignature)
        }
    }
}

/// The signed query string for a POST of `body` to `path`, as an SDK builds it (client side:
/// `herald publish` and `herald bench`). Values are plain tokens, so no URL-escaping is needed.
pub fn sign_post(path: &str, body: &[u8], key: &str, secret: &Secret, timestamp: u64) -> String {
    sign("POST", path, &[], body, key, secret, timestamp)
}

/// The signed query string for any request: `params` (plain tokens, no escaping needed) plus the
/// auth parameters; `body_md5` when there is a body.
pub fn sign(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    key: &str,
    secret: &Secret,
    timestamp: u64,
) -> String {
    let mut query: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        query.push(("body_md5".into(), body_md5(body)));
    }
    query.extend(params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let request = SignedRequest { method, path, query: &query, body };
    let signature = secret.sign(request.string_to_sign().as_bytes());
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}&auth_signature={signature}", pairs.join("&"))
}

/// Lowercase hex MD5 of a request body.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const SIG: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

    fn query(sig: &str, ts: &str) -> Vec<(String, String)> {
        [
            ("auth_signature", sig),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            ("auth_version", "1.0"),
            ("auth_key", KEY),
            ("auth_timestamp", ts),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn check(q: &[(String, String)], body: &str, now: u64) -> Result<(), RequestAuthError> {
        let request = SignedRequest { method: "POST", path: "/apps/3/events", query: q, body: body.as_bytes() };
        request.verify(KEY, &Secret::new("7ad3773142a6692b25b8"), now)
    }

    #[test]
    fn pusher_worked_vector() {
        assert_eq!(body_md5(BODY.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
        let q = query(SIG, "1353088179");
        let request = SignedRequest { method: "post", path: "/apps/3/events", query: &q, body: BODY.as_bytes() };
        assert_eq!(
            request.string_to_sign(),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(check(&q, BODY, 1353088179), Ok(()));
        assert_eq!(check(&q, BODY, 1353088179 + 600), Ok(()));
    }

    #[test]
    fn sign_post_produces_a_request_that_verifies() {
        let secret = Secret::new("7ad3773142a6692b25b8");
        let query = sign_post("/apps/3/events", BODY.as_bytes(), KEY, &secret, 1353088179);
        let pairs: Vec<(String, String)> =
            query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        assert!(query.ends_with(&format!("auth_signature={SIG}")), "{query}");
        assert_eq!(check(&pairs, BODY, 1353088179), Ok(()));
    }

    #[test]
    fn each_failure_is_named() {
        let q = query(SIG, "1353088179");
        assert_eq!(check(&q, BODY, 1353088179 + 601), Err(RequestAuthError::StaleTimestamp));
        assert_eq!(check(&q, BODY, 1353088179 - 601), Err(RequestAuthError::StaleTimestamp));
        assert_eq!(check(&q, "{}", 1353088179), Err(RequestAuthError::BodyDigestMismatch));
        assert_eq!(
            check(&query(&SIG.replace('d', "e"), "1353088179"), BODY, 1353088179),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(check(&query(SIG, "x"), BODY, 1353088179), Err(RequestAuthError::InvalidTimestamp));
        assert_eq!(check(&q, "", 1353088179), Err(RequestAuthError::BodyDigestMismatch), "body stripped");
        let no_sig: Vec<_> = q.iter().filter(|(k, _)| k != "auth_signature").cloned().collect();
        assert_eq!(check(&no_sig, BODY, 1353088179), Err(RequestAuthError::MissingParameter("auth_signature")));
    }
}
