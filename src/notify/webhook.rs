//! Immediate webhooks: a `NotifyRule` with `webhook: {url, secret_env}` hears its
//! events as they happen, as a signed JSON POST, without waiting for the digest.
//!
//! Body: `{"event", "events", "project", "job": {id, recipe, subproject, sha,
//! status, exit_code}, "findings": {new, fixed, total}, "url"}`; header
//! `X-Crafting-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` when the
//! rule names a secret. Deliveries go through a bounded queue (a full queue drops
//! the newest and logs it) and are retried three times with backoff.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::events::{JobOutcome, job_events};
use super::units::webhooks;
use crate::events::{Events, FarmEvent};
use crate::ledger::{Db, Trigger};
use crate::manifest::NotifyEvent;

/// Deliveries waiting at most.
pub const QUEUE: usize = 256;
/// Attempts per delivery.
pub const ATTEMPTS: u32 = 3;
/// Deadline of one POST.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a secret from the farm's environment.
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One POST to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Target URL.
    pub url: String,
    /// The raw body.
    pub body: String,
    /// `sha256=<hex>`, when signed.
    pub signature: Option<String>,
}

/// The signature header's value for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The most telling event first: what a chat bridge shows as the headline.
fn rank(e: NotifyEvent) -> u8 {
    match e {
        NotifyEvent::CveFound => 0,
        NotifyEvent::AuditFail => 1,
        NotifyEvent::TestFail => 2,
        NotifyEvent::PatchDrafted => 3,
        NotifyEvent::LintWarn => 4,
        NotifyEvent::AuditPass => 5,
        NotifyEvent::NightlySummary => 6,
    }
}

fn event_name(e: NotifyEvent) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Turns farm events into deliveries and delivers them; forever.
pub async fn run(db: Db, events: Events, secrets: SecretLookup, public_url: String) -> String {
    let (tx, rx) = mpsc::channel::<Delivery>(QUEUE);
    tokio::spawn(deliver(rx));
    let mut rx_events = events.subscribe();
    loop {
        let e = match rx_events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "webhooks fell behind the farm's events");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return "the event channel closed".to_owned();
            }
        };
        let FarmEvent::JobFinished { job, findings, .. } = &*e else {
            continue;
        };
        if job.trigger == Trigger::PatchVerify.as_str() {
            continue;
        }
        let (id, project) = (job.id.clone(), job.project.clone());
        let looked = db
            .read(move |l| Ok((l.snapshot()?, l.findings_of_job(&id)?)))
            .await;
        let Ok((snapshot, rows)) = looked else {
            continue;
        };
        let subs = webhooks(&snapshot);
        if subs.is_empty() {
            continue;
        }
        let raised = job_events(&JobOutcome {
            recipe: &job.recipe,
            status: job.status,
            has_cve: rows.iter().any(|f| f.f.kind == "cve"),
            has_warning: rows
                .iter()
                .any(|f| matches!(f.f.severity.as_str(), "warn" | "error")),
        });
        for sub in subs.iter().filter(|s| s.projects.matches(&project)) {
            let mut matched: Vec<NotifyEvent> = raised
                .iter()
                .copied()
                .filter(|e| sub.events.contains(e))
                .collect();
            if matched.is_empty() {
                continue;
            }
            matched.sort_by_key(|e| rank(*e));
            let body = serde_json::json!({
                "event": event_name(matched[0]),
                "events": matched.iter().map(|e| event_name(*e)).collect::<Vec<_>>(),
                "project": project,
                "rule": sub.rule,
                "job": {
                    "id": job.id, "recipe": job.recipe, "subproject": job.subproject,
                    "sha": job.sha, "status": job.status.as_str(), "exit_code": job.exit_code,
                },
                "findings": {"new": findings.new, "fixed": findings.fixed, "total": findings.total},
                "url": format!("{public_url}/jobs/{}", job.id),
            })
            .to_string();
            let signature = sub
                .webhook
                .secret_env
                .as_deref()
                .and_then(|name| {
                    let s = secrets(name);
                    if s.is_none() {
                        tracing::warn!(rule = %sub.rule, variable = name, "webhook secret variable is not set; sending unsigned");
                    }
                    s
                })
                .map(|s| sign(&s, body.as_bytes()));
            let d = Delivery {
                url: sub.webhook.url.clone(),
                body,
                signature,
            };
            if tx.try_send(d).is_err() {
                tracing::warn!(rule = %sub.rule, "webhook queue full; event dropped");
            }
        }
    }
}

async fn deliver(mut rx: mpsc::Receiver<Delivery>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client");
            return;
        }
    };
    while let Some(d) = rx.recv().await {
        for attempt in 1..=ATTEMPTS {
            let mut req = client
                .post(&d.url)
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("crafting-table/", env!("CARGO_PKG_VERSION")),
                )
                .body(d.body.clone());
            if let Some(sig) = &d.signature {
                req = req.header("X-Crafting-Signature-256", sig);
            }
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if attempt == ATTEMPTS {
                tracing::warn!(url = %d.url, error = %why, "webhook not delivered; giving up");
            } else {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        }
    }
}
