//! Generic fallback: one `recipe_fail` when nothing else reported anything and the
//! command failed.
//!
//! Emits: kind `recipe_fail`, code `exit_<n>` (or `timeout`), severity `error`.

use super::{Input, RawFinding};

/// The fallback finding, if the command failed.
pub fn parse(input: &Input<'_>) -> Option<RawFinding> {
    let (code, message) = if input.timed_out {
        (
            "timeout".to_owned(),
            format!("recipe `{}` timed out", input.recipe),
        )
    } else {
        match input.exit_code {
            Some(n) if n != 0 => (
                format!("exit_{n}"),
                format!("recipe `{}` exited with code {n}", input.recipe),
            ),
            _ => return None,
        }
    };
    Some(RawFinding {
        tool: "crafting-table".into(),
        kind: "recipe_fail".into(),
        severity: "error".into(),
        file: None,
        line: None,
        col: None,
        code: Some(code),
        message,
        suggested_fix: None,
        raw_json: None,
    })
}
