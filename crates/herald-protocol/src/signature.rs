//! HMAC-SHA256 signatures over the strings Pusher defines, checked in constant time.
//!
//! Channel auth signs `socket_id:channel[:channel_data]`, sign-in signs `socket_id::user::user_data`,
//! each as `key:hex(hmac(secret, string))`. The strings are verified exactly as received: never
//! re-serialized, since any re-encoding would change what was signed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::socket_id::SocketId;

type HmacSha256 = Hmac<Sha256>;

/// An app secret. Its `Debug` form is redacted so that it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Lowercase hex HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.mac(message).finalize().into_bytes())
    }

    /// Whether `signature_hex` is the HMAC of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        self.mac(message).verify_slice(&signature).is_ok()
    }

    /// The secret's text, for code that must hand it to an SDK (tests, the CLI).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn mac(&self, message: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(self.0.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(message);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why an `auth` value was refused. The messages say what to fix, never what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth is missing")]
    Missing,
    #[error("auth must be \"<app key>:<signature>\"")]
    Malformed,
    #[error("auth key does not match the app key")]
    WrongKey,
    #[error("invalid signature")]
    BadSignature,
}

/// Checks `auth` (`key:signature`) over `message` for the app `(key, secret)`.
pub fn verify_auth(key: &str, secret: &Secret, message: &[u8], auth: Option<&str>) -> Result<(), AuthError> {
    let auth = auth.filter(|a| !a.is_empty()).ok_or(AuthError::Missing)?;
    let (given_key, signature) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if !bool::from(given_key.as_bytes().ct_eq(key.as_bytes())) {
        return Err(AuthError::WrongKey);
    }
    if secret.verify(message, signature) { Ok(()) } else { Err(AuthError::BadSignature) }
}

/// The string a channel subscription signs.
pub fn channel_auth_message(socket_id: SocketId, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string a user sign-in signs.
pub fn signin_message(socket_id: SocketId, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from Pusher's auth-signatures reference (PUSHER-PROTOCOL.md §1.10).
    const KEY: &str = "278d425bdf160c739803";
    fn secret() -> Secret {
        Secret::new("7ad3773142a6692b25b8")
    }
    fn sid() -> SocketId {
        "1234.1234".parse().unwrap()
    }

    #[test]
    fn pusher_vectors() {
        let private = channel_auth_message(sid(), "private-foobar", None);
        assert_eq!(
            secret().sign(private.as_bytes()),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let presence = channel_auth_message(sid(), "presence-foobar", Some(data));
        assert_eq!(
            secret().sign(presence.as_bytes()),
            "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
        );
        let signin = signin_message(sid(), r#"{"id":"12345"}"#);
        assert_eq!(
            secret().sign(signin.as_bytes()),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn verify_auth_outcomes() {
        let msg = channel_auth_message(sid(), "private-foobar", None);
        let good = format!("{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert_eq!(verify_auth(KEY, &secret(), msg.as_bytes(), Some(&good)), Ok(()));
        assert_eq!(verify_auth(KEY, &secret(), msg.as_bytes(), None), Err(AuthError::Missing));
        assert_eq!(verify_auth(KEY, &secret(), msg.as_bytes(), Some("nocolon")), Err(AuthError::Malformed));
        assert_eq!(
            verify_auth(KEY, &secret(), msg.as_bytes(), Some(&good.replace(KEY, "other"))),
            Err(AuthError::WrongKey)
        );
        assert_eq!(
            verify_auth(KEY, &secret(), msg.as_bytes(), Some(&format!("{KEY}:zz"))),
            Err(AuthError::BadSignature)
        );
        let other = channel_auth_message(sid(), "private-other", None);
        assert_eq!(verify_auth(KEY, &secret(), other.as_bytes(), Some(&good)), Err(AuthError::BadSignature));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
    }
}
