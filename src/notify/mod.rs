//! Notifications: which events a job raises, who hears about them, the daily
//! digest (built, rendered, sent over SMTP) and immediate webhooks.
//!
//! - [`events`] — pure: a finished job → its notify events.
//! - [`units`] — pure: `NotifyRule`s and projects' `notify` blocks → digest units
//!   (recipient, time, zone) and webhook subscriptions.
//! - [`content`] — what one digest says (reads the ledger).
//! - [`render`] — pure: subject, `text/plain` and `text/html`.
//! - [`digest`] — when units fire, run-now and the preview (blocking, SQL only).
//! - [`mail`] — sending one message with `lettre`.
//! - [`service`] — the farm's digest loops (fire, send with retries).
//! - [`webhook`] — matching events POSTed at once, signed.

pub mod content;
pub mod digest;
pub mod events;
pub mod mail;
pub mod render;
pub mod service;
pub mod units;
pub mod webhook;
