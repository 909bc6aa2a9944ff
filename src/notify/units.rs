//! Who hears what: subscriptions from `NotifyRule` manifests and from projects'
//! own `notify` blocks, merged into digest units. Pure.
//!
//! A unit is (recipient, time, zone): every subscription of one recipient with the
//! same digest time and zone goes into one message; other times give other
//! messages. Retired rules and projects notify nobody.

use std::collections::{BTreeMap, BTreeSet};

use crate::ledger::Snapshot;
use crate::manifest::{Emails, Kind, NotifyEvent, NotifyRuleSpec, Selector, Webhook};

/// One recipient's interest in some projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Which projects.
    pub projects: Selector,
    /// The events reported (never empty: the default set is filled in).
    pub events: BTreeSet<NotifyEvent>,
    /// Where it comes from (`NotifyRule/<name>` or `Project/<name>`).
    pub source: String,
}

/// One digest message a day: a recipient at a time in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Recipient address.
    pub recipient: String,
    /// `HH:MM`.
    pub time: String,
    /// IANA time zone.
    pub zone: String,
    /// What the recipient subscribed to at that time.
    pub subscriptions: Vec<Subscription>,
}

impl Unit {
    /// The unit's key in the ledger.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.recipient, self.time, self.zone)
    }

    /// The events this unit reports for `project` (empty: the project is not
    /// covered).
    pub fn events_for(&self, project: &str) -> BTreeSet<NotifyEvent> {
        self.subscriptions
            .iter()
            .filter(|s| s.projects.matches(project))
            .flat_map(|s| s.events.iter().copied())
            .collect()
    }

    /// Whether the recipient asked for a message even on a quiet day.
    pub fn wants_quiet_days(&self) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.events.contains(&NotifyEvent::NightlySummary))
    }
}

/// A rule's webhook with what it listens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    /// The rule.
    pub rule: String,
    /// Where to POST.
    pub webhook: Webhook,
    /// Which projects.
    pub projects: Selector,
    /// Which events.
    pub events: BTreeSet<NotifyEvent>,
}

fn event_set(on: &[NotifyEvent]) -> BTreeSet<NotifyEvent> {
    if on.is_empty() {
        NotifyEvent::DEFAULT.into_iter().collect()
    } else {
        on.iter().copied().collect()
    }
}

fn addresses(e: &Emails) -> Vec<String> {
    match e {
        Emails::One(a) => vec![a.trim().to_owned()],
        Emails::Many(v) => v.iter().map(|a| a.trim().to_owned()).collect(),
    }
}

fn active_rules(snapshot: &Snapshot) -> impl Iterator<Item = (&str, NotifyRuleSpec)> {
    snapshot
        .values()
        .filter(|o| o.kind == Kind::NotifyRule && o.retired_at.is_none())
        .filter_map(|o| {
            Some((
                o.name.as_str(),
                serde_json::from_value::<NotifyRuleSpec>(o.spec.clone()).ok()?,
            ))
        })
}

/// The digest units of the ledger's current objects; a project's own `notify`
/// block is sent at `default_time` in `default_zone`.
pub fn units(snapshot: &Snapshot, default_time: &str, default_zone: &str) -> Vec<Unit> {
    let mut by_key: BTreeMap<(String, String, String), Vec<Subscription>> = BTreeMap::new();
    for (name, rule) in active_rules(snapshot) {
        let Some(emails) = &rule.email else { continue };
        for recipient in addresses(emails) {
            by_key
                .entry((
                    recipient,
                    rule.digest.time.clone(),
                    rule.digest.timezone.clone(),
                ))
                .or_default()
                .push(Subscription {
                    projects: rule.projects.clone(),
                    events: event_set(&rule.on),
                    source: format!("NotifyRule/{name}"),
                });
        }
    }
    let catalog = crate::enqueue::Catalog::new(snapshot.clone());
    for (o, spec) in catalog.active_projects() {
        let Ok(spec) = spec else { continue };
        let Some(notify) = &spec.notify else { continue };
        let Some(emails) = &notify.email else {
            continue;
        };
        for recipient in addresses(emails) {
            by_key
                .entry((recipient, default_time.to_owned(), default_zone.to_owned()))
                .or_default()
                .push(Subscription {
                    projects: Selector::Names(vec![o.name.clone()]),
                    events: event_set(&notify.on),
                    source: format!("Project/{}", o.name),
                });
        }
    }
    by_key
        .into_iter()
        .map(|((recipient, time, zone), subscriptions)| Unit {
            recipient,
            time,
            zone,
            subscriptions,
        })
        .collect()
}

/// The webhooks of the active rules.
pub fn webhooks(snapshot: &Snapshot) -> Vec<WebhookSubscription> {
    active_rules(snapshot)
        .filter_map(|(name, rule)| {
            Some(WebhookSubscription {
                rule: name.to_owned(),
                webhook: rule.webhook.clone()?,
                projects: rule.projects.clone(),
                events: event_set(&rule.on),
            })
        })
        .collect()
}
