//! TLS to PostgreSQL as libpq does it ([libpq: SSL support]), with rustls through
//! tokio-postgres-rustls (aurore's PostgreSQL TLS already; librdkafka keeps its own OpenSSL).
//!
//! | `sslmode` | tries | the server's certificate |
//! |---|---|---|
//! | `disable` | without TLS | – |
//! | `allow` | without TLS, then with TLS if the server refuses | as `require` |
//! | `prefer` | with TLS, then without if the server offers none or the handshake fails | as `require` |
//! | `require` | with TLS | chain verified only if a root certificate is set (then as `verify-ca`) |
//! | `verify-ca` | with TLS | chain verified against the root certificate |
//! | `verify-full` | with TLS | chain and host name verified |
//!
//! rustls has no "verify the chain but not the name" mode, so [`CaOnly`] runs webpki's verifier
//! and forgives only its name mismatch (webpki checks the chain first). [`Unverified`] still
//! checks the handshake's signatures, so the session is encrypted to whoever holds the
//! certificate's key, as with libpq's `require`.
//!
//! [libpq: SSL support]: https://www.postgresql.org/docs/current/libpq-ssl.html

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Socket;
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{RootCert, SslMode, TlsSettings};

/// A connection's I/O half, to be spawned.
pub type Connection = tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How connections are made for one connection string: built once, at start, from its
/// [`TlsSettings`] (reading the certificate files).
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    connector: MakeRustlsConnect,
}

/// A root or client certificate file that cannot be used; the message names the file and the
/// setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

impl Tls {
    pub fn new(settings: &TlsSettings) -> Result<Tls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &settings.root_cert {
            None => None,
            Some(RootCert::System) => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsSetupError(
                        "sslrootcert=system: this machine has no trusted root certificates (install ca-certificates, or give a file)".into(),
                    ));
                }
                Some(roots)
            }
            Some(RootCert::File(path)) => Some(root_file(path)?),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (roots, settings.mode) {
            (None, _) => Arc::new(Unverified(provider.clone())),
            (Some(roots), mode) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsSetupError(format!("sslrootcert: {e}")))?;
                if mode == SslMode::VerifyFull { webpki } else { Arc::new(CaOnly(webpki)) }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (certs, key) = client_files(cert, key)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsSetupError(format!("sslcert {} and sslkey {}: {e}", cert.display(), key_name(settings))))?
            }
        };
        Ok(Tls { mode: settings.mode, connector: MakeRustlsConnect::new(config) })
    }

    /// Connects as libpq would with this `sslmode`, trying a second time where libpq does.
    pub async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        let with = |wire: WireMode| {
            let mut c = config.clone();
            // The string resolved to Disable for a Unix socket: libpq never uses TLS there.
            if c.get_ssl_mode() != WireMode::Disable {
                c.ssl_mode(wire);
            }
            c
        };
        match self.mode {
            SslMode::Disable => with(WireMode::Disable).connect(self.connector.clone()).await,
            SslMode::Allow => match with(WireMode::Disable).connect(self.connector.clone()).await {
                // The server refused the connection without TLS (a `hostssl` line, say).
                Err(e) if e.as_db_error().is_some() => with(WireMode::Require).connect(self.connector.clone()).await,
                other => other,
            },
            SslMode::Prefer => match with(WireMode::Prefer).connect(self.connector.clone()).await {
                Err(e) if is_handshake_failure(&e) => with(WireMode::Disable).connect(self.connector.clone()).await,
                other => other,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                with(WireMode::Require).connect(self.connector.clone()).await
            }
        }
    }
}

fn key_name(settings: &TlsSettings) -> String {
    settings.client_cert.as_ref().map(|(_, k)| k.display().to_string()).unwrap_or_default()
}

fn root_file(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let what = |e: &dyn std::fmt::Display| TlsSetupError(format!("sslrootcert {}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
        roots.add(cert.map_err(|e| what(&e))?).map_err(|e| what(&e))?;
    }
    if roots.is_empty() {
        return Err(what(&"no certificate in it (a PEM file of the CA certificates is expected)"));
    }
    Ok(roots)
}

fn client_files(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError(format!("sslcert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!("sslcert {}: no certificate in it", cert.display())));
    }
    #[cfg(unix)]
    {
        // libpq's rule: a key others may read is refused.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(key).map_err(|e| TlsSetupError(format!("sslkey {}: {e}", key.display())))?;
        let limit = if meta.uid() == 0 { 0o037 } else { 0o077 };
        if meta.permissions().mode() & limit != 0 {
            return Err(TlsSetupError(format!(
                "sslkey {}: group or others may read it; libpq refuses such a key, and so does aurore (chmod 0600)",
                key.display()
            )));
        }
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError(format!("sslkey {}: {e}", key.display())))?;
    Ok((certs, key))
}

/// The failure of a TLS handshake (not of the connection, nor the server's refusal).
fn is_handshake_failure(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string().starts_with("error performing TLS handshake")
}

/// A TLS failure in words an operator can act on, with the setting that changes it; `None` if
/// `e` is not one.
pub fn describe_tls(e: &tokio_postgres::Error) -> Option<String> {
    if !is_handshake_failure(e) {
        return None;
    }
    let cause = std::error::Error::source(e)?;
    if cause.to_string() == "server does not support TLS" {
        return Some(
            "the server does not offer TLS (ssl = off in its postgresql.conf); sslmode=prefer or allow connect without it".into(),
        );
    }
    let rustls =
        cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<rustls::Error>());
    Some(match rustls {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "TLS: the server's certificate is not signed by a CA in sslrootcert (give sslrootcert the CA that signed it; \
             without a root certificate, sslmode=require encrypts without verifying)"
                .into()
        }
        Some(rustls::Error::InvalidCertificate(
            e @ (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
        )) => format!(
            "TLS: the server's certificate is not for the host name connected to ({e}); connect by a name it holds, or \
             sslmode=verify-ca to verify its CA only"
        ),
        Some(rustls::Error::InvalidCertificate(e @ (CertificateError::Expired | CertificateError::ExpiredContext { .. }))) => {
            format!("TLS: the server's certificate has expired ({e})")
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("TLS: the server ended the handshake ({alert:?}); if it wants a client certificate, set sslcert and sslkey")
        }
        Some(other) => format!("TLS: {other}"),
        None => format!("TLS handshake failed: {cause}"),
    })
}

/// `sslmode=require` (and `prefer`, `allow`) without a root certificate: the chain is not
/// verified, the handshake's signatures are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's verification, less the host name.
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
