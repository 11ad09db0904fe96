//! Optional TLS termination (rustls), for a node that faces browsers without a proxy in front.
//!
//! Most deployments terminate TLS at a load balancer and speak plain HTTP to Herald; this exists so
//! that a single node can serve `wss://` and `https://` on its own. The certificate and key are
//! read once at start: a file that cannot be used stops the server with the path in the error,
//! rather than failing every handshake later. Handshakes run inside each connection's task under
//! the same deadline as request headers, so a client that stalls mid-handshake holds nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A certificate or key that cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate chain {path}: {source}")]
    Certificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("cannot read the TLS private key {path}: {source}")]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for the PEM certificate chain at `cert` and the PEM private key at `key`
/// (PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only, as the listener serves.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate { path: cert.to_path_buf(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.to_path_buf(), source })?;
    // ring (deprecated in rustls for lacking post-quantum key exchange) builds with a C compiler
    // alone; aws-lc-rs would add a long native build for a feature browsers negotiate optionally.
    #[allow(deprecated, reason = "ring's provider is still supported; see above")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn unusable_files_are_refused_with_their_path() {
        let dir = std::env::temp_dir().join(format!("herald-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = write(&dir, "empty.pem", "");
        let garbage = write(&dir, "garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        let missing = dir.join("missing.pem");
        assert!(matches!(acceptor(&empty, &empty), Err(TlsError::NoCertificate(path)) if path == empty));
        assert!(matches!(acceptor(&garbage, &empty), Err(TlsError::Certificate { path, .. }) if path == garbage));
        let message = acceptor(&missing, &missing).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("missing.pem"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
