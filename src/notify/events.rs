//! Which notify events a finished job raises. Pure.

use crate::ledger::JobStatus;
use crate::manifest::NotifyEvent;

/// What the events of one job depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOutcome<'a> {
    /// The command's name (`audit`, `test`, `lint`, any other).
    pub recipe: &'a str,
    /// How the job ended.
    pub status: JobStatus,
    /// Whether its findings include a `cve`.
    pub has_cve: bool,
    /// Whether its findings include one of warning (or error) severity.
    pub has_warning: bool,
}

/// Whether a job's end counts as a failure (it ran and did not pass).
pub fn is_failure(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Failed | JobStatus::TimedOut | JobStatus::Error
    )
}

/// The events a finished job raises, as the original defines them:
/// `audit_pass` / `audit_fail` for a passing / failing `audit` job, `test_fail` for
/// a failing `test` job, `lint_warn` for a `lint` job with warning-severity
/// findings, `cve_found` for any job whose findings include a `cve`, and
/// `nightly_summary`, the catch-all every finished job raises. (`patch_drafted`
/// comes from the patch loop, not from a job.)
pub fn job_events(o: &JobOutcome<'_>) -> Vec<NotifyEvent> {
    let mut out = Vec::new();
    match o.recipe {
        "audit" if o.status == JobStatus::Succeeded => out.push(NotifyEvent::AuditPass),
        "audit" if is_failure(o.status) => out.push(NotifyEvent::AuditFail),
        "test" if is_failure(o.status) => out.push(NotifyEvent::TestFail),
        "lint" if o.has_warning => out.push(NotifyEvent::LintWarn),
        _ => {}
    }
    if o.has_cve {
        out.push(NotifyEvent::CveFound);
    }
    if o.status.is_terminal() {
        out.push(NotifyEvent::NightlySummary);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;
    use NotifyEvent::*;

    #[test]
    fn the_table() {
        // (recipe, status, has_cve, has_warning) → events
        let table: &[(&str, JobStatus, bool, bool, &[NotifyEvent])] = &[
            (
                "audit",
                Succeeded,
                false,
                false,
                &[AuditPass, NightlySummary],
            ),
            (
                "audit",
                Failed,
                true,
                false,
                &[AuditFail, CveFound, NightlySummary],
            ),
            (
                "audit",
                TimedOut,
                false,
                false,
                &[AuditFail, NightlySummary],
            ),
            ("audit", Error, false, false, &[AuditFail, NightlySummary]),
            ("audit", Cancelled, false, false, &[NightlySummary]),
            ("test", Failed, false, true, &[TestFail, NightlySummary]),
            ("test", Succeeded, false, false, &[NightlySummary]),
            ("lint", Failed, false, true, &[LintWarn, NightlySummary]),
            ("lint", Succeeded, false, true, &[LintWarn, NightlySummary]),
            ("lint", Succeeded, false, false, &[NightlySummary]),
            ("build", Failed, true, true, &[CveFound, NightlySummary]),
            ("deps", Succeeded, true, false, &[CveFound, NightlySummary]),
            ("test", Running, false, false, &[]),
        ];
        for (recipe, status, has_cve, has_warning, want) in table {
            let got = job_events(&JobOutcome {
                recipe,
                status: *status,
                has_cve: *has_cve,
                has_warning: *has_warning,
            });
            assert_eq!(
                &got, want,
                "{recipe} {status:?} cve={has_cve} warn={has_warning}"
            );
        }
    }
}
