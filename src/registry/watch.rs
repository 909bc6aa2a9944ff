//! Watches a directory registry and kicks a reconcile when a manifest changes.
//!
//! Only changes count: a file created, written, removed or renamed. Opens, reads
//! and closes without a write are not changes — the reconcile itself reads every
//! manifest, and reacting to that would reconcile forever.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_full::notify::EventKind;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};

use crate::reconciler::looped::Trigger;

/// Whether an event is a change to the registry's content.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        // A file opened for writing was closed: its content may have changed.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// The running watcher; dropping it stops watching.
pub type Watcher = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Starts watching `dir` (recursively); changes that settle for 300 ms kick one
/// reconcile.
pub fn watch_dir(dir: &Path, trigger: Trigger) -> Result<Watcher, String> {
    use notify_debouncer_full::new_debouncer;
    use notify_debouncer_full::notify::RecursiveMode;
    let mut debouncer = new_debouncer(
        Duration::from_millis(300),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| match res {
            Ok(events) => {
                if events.iter().any(|e| is_change(&e.kind)) {
                    trigger.kick();
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "registry watcher");
                }
            }
        },
    )
    .map_err(|e| e.to_string())?;
    debouncer
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(debouncer)
}
