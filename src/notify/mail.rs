//! Sending one digest over SMTP with `lettre`: plain, STARTTLS or implicit TLS,
//! optional login, extra root certificates from `CRAFTING_SMTP_CA_FILE`, a hard
//! deadline on the whole exchange.

use std::time::Duration;

use lettre::message::{MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};
use crate::ledger::OutgoingDigest;

/// Deadline of one send: connect, TLS, every reply.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: refused or lost connection, a 4xx reply, a deadline.
    #[error("{0}")]
    Transient(String),
    /// The relay refused for good (a 5xx reply), or the message cannot be built.
    #[error("{0}")]
    Permanent(String),
}

/// A configured SMTP relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    describe: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Mailer {
    /// A mailer for the configured relay. Must be called inside a tokio runtime.
    /// Errors name the setting that is wrong.
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, String> {
        let from = cfg
            .from
            .parse()
            .map_err(|e| format!("CRAFTING_SMTP_FROM: `{}` is not an address: {e}", cfg.from))?;
        let tls = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("CRAFTING_SMTP_CA_FILE: cannot read {}: {e}", path.display())
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    format!(
                        "CRAFTING_SMTP_CA_FILE: {} is not a PEM certificate: {e}",
                        path.display()
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build()
                .map_err(|e| format!("SMTP TLS settings for {}: {e}", cfg.host))
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(30)));
        let builder = match cfg.tls {
            SmtpTls::None => builder,
            SmtpTls::StartTls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        let builder = match (&cfg.user, &cfg.pass) {
            (Some(u), Some(p)) => builder.credentials(Credentials::new(u.clone(), p.clone())),
            (Some(u), None) => builder.credentials(Credentials::new(u.clone(), String::new())),
            _ => builder,
        };
        Ok(Mailer {
            transport: builder.build(),
            from,
            describe: format!("smtp {}:{} ({:?})", cfg.host, cfg.port, cfg.tls),
        })
    }

    /// Builds the message of a digest: `multipart/alternative` with the text and
    /// HTML bodies, its deterministic `Message-ID`.
    pub fn message(&self, d: &OutgoingDigest) -> Result<Message, SendError> {
        let to = d.row.recipient.parse().map_err(|e| {
            SendError::Permanent(format!("`{}` is not an address: {e}", d.row.recipient))
        })?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(d.row.subject.clone().unwrap_or_default())
            .message_id(d.row.message_id.as_ref().map(|m| format!("<{m}>")))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(d.body_text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(d.body_html.clone()),
                    ),
            )
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }

    /// Sends one digest, within [`SEND_TIMEOUT`].
    pub async fn send(&self, d: &OutgoingDigest) -> Result<(), SendError> {
        let msg = self.message(d)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(msg)).await {
            Err(_) => Err(SendError::Transient(format!(
                "{}: no answer within {}s",
                self.describe,
                SEND_TIMEOUT.as_secs()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => {
                Err(SendError::Permanent(format!("{}: {e}", self.describe)))
            }
            Ok(Err(e)) => Err(SendError::Transient(format!("{}: {e}", self.describe))),
        }
    }
}
