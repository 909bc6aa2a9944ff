//! When digests fire and what run-now and the preview do. Blocking functions over
//! the ledger (SQL only); the async loops that call them live in
//! [`super::service`].
//!
//! A unit fires like a schedule: its next fire (the unit's `HH:MM` in its own time
//! zone, DST-correct) is persisted; a tick at or after it records the fire under
//! the unique key (unit, fire time) in the same transaction as the digest, so a
//! restart or an overlapping tick never fires it twice; after downtime only the
//! latest missed fire runs. A new unit starts with its next occurrence.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sha2::{Digest as _, Sha256};

use super::content::{self, DigestContent, Window};
use super::render;
use super::units::{Unit, units};
use crate::ledger::{DigestStatus, Ledger, LedgerError, NewDigest, Snapshot};
use crate::manifest::check::{parse_cron, parse_hhmm, parse_timezone};

/// What the digest needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSettings {
    /// Digest time of projects' own `notify` blocks.
    pub default_time: String,
    /// Their time zone.
    pub default_zone: String,
    /// Base URL for links.
    pub public_url: String,
    /// Whether an SMTP relay is configured (else every digest is a dry run).
    pub smtp_enabled: bool,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn cron_of(time: &str) -> Option<croner::Cron> {
    let (h, m) = parse_hhmm(time)?;
    parse_cron(&format!("{m} {h} * * *")).ok()
}

/// The first fire of (`time`, `zone`) strictly after `after` (ms).
pub fn next_fire(time: &str, zone: &str, after: DateTime<Utc>) -> Option<i64> {
    let tz = parse_timezone(zone).ok()?;
    cron_of(time)?
        .find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The latest fire of (`time`, `zone`) at or before `at` (ms).
pub fn latest_fire(time: &str, zone: &str, at: DateTime<Utc>) -> Option<i64> {
    let tz = parse_timezone(zone).ok()?;
    cron_of(time)?
        .find_previous_occurrence(&at.with_timezone(&tz), true)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The fire of (`time`, `zone`) on local date `date` (ms).
pub fn fire_on(time: &str, zone: &str, date: NaiveDate) -> Option<i64> {
    let tz = parse_timezone(zone).ok()?;
    let midnight = (0..3).find_map(|h| {
        tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
            .earliest()
    })?;
    let t = cron_of(time)?.find_next_occurrence(&midnight, true).ok()?;
    (t.date_naive() == date).then(|| t.with_timezone(&Utc).timestamp_millis())
}

/// The local date of `ms` in `zone`.
pub fn local_date(ms: i64, zone: &str) -> Option<NaiveDate> {
    let tz = parse_timezone(zone).ok()?;
    Some(
        Utc.timestamp_millis_opt(ms)
            .single()?
            .with_timezone(&tz)
            .date_naive(),
    )
}

/// The `Message-ID` of a unit's digest of `date`: the same for a resend, so a
/// duplicate after a crash is recognisable.
pub fn message_id(unit: &Unit, date: &str, public_url: &str) -> String {
    let h = Sha256::digest(unit.key().as_bytes());
    let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let host = public_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("crafting-table.invalid");
    format!("digest-{date}-{hex}@{host}")
}

/// The window a unit's digest of a day covers: from where its previous digest
/// stopped (else 24 h before `end`) to `end`.
pub fn window(ledger: &Ledger, unit: &Unit, end: i64) -> Result<Window, LedgerError> {
    let start = ledger
        .last_digest_window_end(&unit.recipient, &unit.time, &unit.zone, end)?
        .unwrap_or(end - DAY_MS);
    Ok(Window {
        start: start.min(end),
        end,
    })
}

/// Builds and renders a unit's digest; `status` says what is recorded (a digest
/// with nothing to say, for a recipient who wants no quiet-day message, is
/// `Empty`).
pub fn make(
    ledger: &Ledger,
    snapshot: &Snapshot,
    unit: &Unit,
    date: &str,
    win: Window,
    settings: &DigestSettings,
    dry_run: bool,
) -> Result<(NewDigest, DigestContent), LedgerError> {
    let c = content::build(ledger, snapshot, unit, date, win, &settings.public_url)?;
    let status = if c.is_empty() && !c.quiet_day_wanted {
        DigestStatus::Empty
    } else if dry_run || !settings.smtp_enabled {
        DigestStatus::DryRun
    } else {
        DigestStatus::Pending
    };
    let r = render::render(&c);
    let d = NewDigest {
        recipient: unit.recipient.clone(),
        time: unit.time.clone(),
        zone: unit.zone.clone(),
        date: date.to_owned(),
        status,
        message_id: message_id(unit, date, &settings.public_url),
        subject: r.subject,
        body_text: r.text,
        body_html: r.html,
        content: serde_json::to_value(&c).unwrap_or_default(),
        counts: c.counts(),
        window_start: win.start,
        window_end: win.end,
    };
    Ok((d, c))
}

/// What a tick did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    /// (unit key, local date, status) of each fire recorded.
    pub fired: Vec<(String, String, DigestStatus)>,
    /// Digests now waiting to be sent.
    pub pending: usize,
    /// The earliest next fire (ms).
    pub next_wake: Option<i64>,
}

/// Fires every due unit at `now`.
pub fn tick(
    ledger: &mut Ledger,
    settings: &DigestSettings,
    now: DateTime<Utc>,
) -> Result<TickReport, LedgerError> {
    let now_ms = now.timestamp_millis();
    let snapshot = ledger.snapshot()?;
    let mut report = TickReport::default();
    for unit in units(&snapshot, &settings.default_time, &settings.default_zone) {
        let key = unit.key();
        let Some(next_after_now) = next_fire(&unit.time, &unit.zone, now) else {
            continue;
        };
        report.next_wake = Some(
            report
                .next_wake
                .map_or(next_after_now, |w| w.min(next_after_now)),
        );
        let due = match ledger.digest_unit_next(&key)? {
            // A new unit starts with its next occurrence.
            None => {
                ledger.set_digest_unit_next(&key, next_after_now)?;
                continue;
            }
            Some(next) if next > now_ms => {
                report.next_wake = Some(report.next_wake.map_or(next, |w| w.min(next)));
                continue;
            }
            Some(_) => latest_fire(&unit.time, &unit.zone, now),
        };
        let Some(fire_time) = due else { continue };
        let Some(date) = local_date(fire_time, &unit.zone) else {
            continue;
        };
        let date = date.format("%Y-%m-%d").to_string();
        let win = window(ledger, &unit, fire_time)?;
        let (digest, _) = make(ledger, &snapshot, &unit, &date, win, settings, false)?;
        let status = digest.status;
        match ledger.fire_digest(&key, fire_time, next_after_now, Some(&digest), now_ms)? {
            None => {}
            Some(took_slot) => {
                if status == DigestStatus::Pending && took_slot {
                    report.pending += 1;
                }
                tracing::info!(unit = %key, date, status = status.as_str(), "digest fired");
                report.fired.push((key, date, status));
            }
        }
    }
    Ok(report)
}

/// What `run-now` did for one unit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunNowItem {
    /// Recipient.
    pub recipient: String,
    /// `HH:MM`.
    pub time: String,
    /// Zone.
    pub zone: String,
    /// Local date.
    pub date: String,
    /// `queued` (to be sent now), `already_sent`, `empty` or `dry_run`; the
    /// service turns `queued` into `sent`, `pending` or `failed`.
    pub status: String,
    /// The digest row, when one was recorded.
    pub digest_id: Option<i64>,
    /// `Message-ID`.
    pub message_id: String,
    /// Why it was not sent, when it was not.
    pub error: Option<String>,
    /// What it says.
    pub content: DigestContent,
}

/// The end of the window of `unit`'s digest for `date` asked for at `now`: now,
/// for today (run-now sends what is there), or that day's fire for a past day.
fn end_for(unit: &Unit, date: NaiveDate, now_ms: i64) -> Option<i64> {
    let today = local_date(now_ms, &unit.zone)?;
    if date >= today {
        Some(now_ms)
    } else {
        fire_on(&unit.time, &unit.zone, date)
    }
}

fn date_of(unit: &Unit, date: Option<NaiveDate>, now_ms: i64) -> Option<NaiveDate> {
    date.or_else(|| local_date(now_ms, &unit.zone))
}

/// Renders (and records, unless `dry_run`) the digests of `date` (default: today
/// in each unit's zone) for every unit, or one recipient's.
pub fn run_now(
    ledger: &mut Ledger,
    settings: &DigestSettings,
    now: DateTime<Utc>,
    date: Option<NaiveDate>,
    recipient: Option<&str>,
    dry_run: bool,
) -> Result<Vec<RunNowItem>, LedgerError> {
    let now_ms = now.timestamp_millis();
    let snapshot = ledger.snapshot()?;
    let mut out = Vec::new();
    for unit in units(&snapshot, &settings.default_time, &settings.default_zone) {
        if recipient.is_some_and(|r| !r.eq_ignore_ascii_case(&unit.recipient)) {
            continue;
        }
        let Some(day) = date_of(&unit, date, now_ms) else {
            continue;
        };
        let Some(end) = end_for(&unit, day, now_ms) else {
            continue;
        };
        let day_s = day.format("%Y-%m-%d").to_string();
        let item = |status: &str, id: Option<i64>, d: &NewDigest, c: DigestContent| RunNowItem {
            recipient: unit.recipient.clone(),
            time: unit.time.clone(),
            zone: unit.zone.clone(),
            date: day_s.clone(),
            status: status.to_owned(),
            digest_id: id,
            message_id: d.message_id.clone(),
            error: None,
            content: c,
        };
        if let Some(sent) =
            ledger.digest_in_slot(&unit.recipient, &unit.time, &unit.zone, &day_s)?
        {
            let win = Window {
                start: sent.window_start,
                end: sent.window_end,
            };
            let (d, c) = make(ledger, &snapshot, &unit, &day_s, win, settings, true)?;
            out.push(item("already_sent", Some(sent.id), &d, c));
            continue;
        }
        let win = window(ledger, &unit, end)?;
        let (d, c) = make(ledger, &snapshot, &unit, &day_s, win, settings, dry_run)?;
        let id = ledger.insert_digest(&d, now_ms)?;
        let status = match d.status {
            DigestStatus::Pending if id.is_some() => "queued",
            DigestStatus::Pending => "already_sent",
            DigestStatus::Empty => "empty",
            _ => "dry_run",
        };
        out.push(item(status, id, &d, c));
    }
    Ok(out)
}

/// The digests of `date` as they would be sent, recording nothing.
pub fn preview(
    ledger: &Ledger,
    settings: &DigestSettings,
    now: DateTime<Utc>,
    date: NaiveDate,
) -> Result<Vec<DigestContent>, LedgerError> {
    let now_ms = now.timestamp_millis();
    let snapshot = ledger.snapshot()?;
    let mut out = Vec::new();
    for unit in units(&snapshot, &settings.default_time, &settings.default_zone) {
        let day = date.format("%Y-%m-%d").to_string();
        let win = match ledger.digest_in_slot(&unit.recipient, &unit.time, &unit.zone, &day)? {
            Some(sent) => Window {
                start: sent.window_start,
                end: sent.window_end,
            },
            None => {
                let Some(end) = end_for(&unit, date, now_ms) else {
                    continue;
                };
                window(ledger, &unit, end)?
            }
        };
        out.push(content::build(
            ledger,
            &snapshot,
            &unit,
            &day,
            win,
            &settings.public_url,
        )?);
    }
    Ok(out)
}
