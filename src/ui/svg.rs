//! Pictures drawn on the server: the status badge and the findings trend chart.

use maud::{Markup, html};

use crate::ledger::{JobStatus, TrendPoint};

/// The badge text and colour of a last status (`None`: never ran). Colours keep
/// white text at WCAG AA contrast (4.5:1 or more).
pub fn badge_status(status: Option<JobStatus>) -> (&'static str, &'static str) {
    match status {
        Some(JobStatus::Succeeded) => ("passing", "#116329"),
        Some(JobStatus::Failed) => ("failing", "#a40e26"),
        Some(JobStatus::TimedOut) => ("timed out", "#a40e26"),
        Some(JobStatus::Error) => ("error", "#a40e26"),
        Some(JobStatus::Cancelled) => ("cancelled", "#57606a"),
        Some(JobStatus::Running) => ("running", "#0550ae"),
        Some(JobStatus::Queued) => ("queued", "#57606a"),
        None => ("never run", "#57606a"),
    }
}

/// Width of `text` in the badge's 11 px sans-serif, roughly (no font metrics on
/// the server; wide enough for the common glyphs).
fn text_width(text: &str) -> usize {
    text.chars().count() * 7 + 12
}

/// A flat badge: the command on the left, its last status on the right.
pub fn badge(command: &str, status: Option<JobStatus>) -> String {
    let (label, colour) = badge_status(status);
    let (lw, rw) = (text_width(command), text_width(label));
    let w = lw + rw;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height="20" role="img"
            aria-label=(format!("{command}: {label}")) {
            title { (command) ": " (label) }
            rect width=(lw) height="20" fill="#24292f" {}
            rect x=(lw) width=(rw) height="20" fill=(colour) {}
            g fill="#ffffff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x=(lw / 2) y="14" { (command) }
                text x=(lw + rw / 2) y="14" { (label) }
            }
        }
    }
    .into_string()
}

/// The findings trend of a project: open findings per run as a line, new (red)
/// and fixed (green) as bars above and below the axis.
pub fn trend(points: &[TrendPoint]) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const PAD_L: f64 = 40.0;
    const PAD_R: f64 = 10.0;
    const PAD_T: f64 = 12.0;
    const PAD_B: f64 = 24.0;
    let max_open = points.iter().map(|p| p.open).max().unwrap_or(0).max(1) as f64;
    let max_bar = points
        .iter()
        .map(|p| p.new.max(p.fixed))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = points.len().max(1) as f64;
    let step = (W - PAD_L - PAD_R) / n;
    let x = |i: usize| PAD_L + step * (i as f64 + 0.5);
    // Upper two thirds: open findings; lower third: new above its axis, fixed below.
    let open_h = (H - PAD_T - PAD_B) * 0.62;
    let y_open = |v: i64| PAD_T + open_h - open_h * (v as f64 / max_open);
    let bar_axis = PAD_T + open_h + (H - PAD_T - PAD_B - open_h) / 2.0 + 4.0;
    let bar_h = (H - PAD_T - PAD_B - open_h) / 2.0 - 4.0;
    let bar_w = (step * 0.6).max(1.0);
    let line: String = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y_open(p.open)))
        .collect::<Vec<_>>()
        .join(" ");
    let last = points.last();
    let summary = match last {
        Some(p) => format!(
            "Findings over the last {} runs: {} open now ({} new, {} fixed in the last run).",
            points.len(),
            p.open,
            p.new,
            p.fixed
        ),
        None => "No finished runs yet.".to_owned(),
    };
    html! {
        figure.trend {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(summary)
                xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet" {
                title { (summary) }
                line x1=(PAD_L) x2=(W - PAD_R) y1=(PAD_T + open_h) y2=(PAD_T + open_h)
                    stroke="#8c959f" stroke-width="1" {}
                line x1=(PAD_L) x2=(W - PAD_R) y1=(bar_axis) y2=(bar_axis)
                    stroke="#8c959f" stroke-width="1" {}
                text x=(PAD_L - 6.0) y=(PAD_T + 8.0) text-anchor="end" font-size="11" fill="#24292f" {
                    (max_open as i64)
                }
                text x=(PAD_L - 6.0) y=(PAD_T + open_h) text-anchor="end" font-size="11" fill="#24292f" { "0" }
                @for (i, p) in points.iter().enumerate() {
                    @if p.new > 0 {
                        @let h = bar_h * (p.new as f64 / max_bar);
                        rect x=(format!("{:.1}", x(i) - bar_w / 2.0)) y=(format!("{:.1}", bar_axis - h))
                            width=(format!("{bar_w:.1}")) height=(format!("{h:.1}")) fill="#a40e26" {
                            title { (p.new) " new in run " (p.job_id) }
                        }
                    }
                    @if p.fixed > 0 {
                        @let h = bar_h * (p.fixed as f64 / max_bar);
                        rect x=(format!("{:.1}", x(i) - bar_w / 2.0)) y=(format!("{bar_axis:.1}"))
                            width=(format!("{bar_w:.1}")) height=(format!("{h:.1}")) fill="#116329" {
                            title { (p.fixed) " fixed in run " (p.job_id) }
                        }
                    }
                }
                @if points.len() > 1 {
                    polyline points=(line) fill="none" stroke="#0550ae" stroke-width="2" {}
                }
                @for (i, p) in points.iter().enumerate() {
                    circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y_open(p.open))) r="3" fill="#0550ae" {
                        title { (p.open) " open after run " (p.job_id) " (" (p.recipe) ")" }
                    }
                }
                text x=(PAD_L) y=(H - 6.0) font-size="11" fill="#24292f" { "older" }
                text x=(W - PAD_R) y=(H - 6.0) font-size="11" fill="#24292f" text-anchor="end" { "newest" }
            }
            figcaption {
                span.key.open { "open" } " "
                span.key.new { "new" } " "
                span.key.fixed { "fixed" } " — " (summary)
            }
        }
    }
}
