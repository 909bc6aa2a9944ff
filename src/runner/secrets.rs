//! Secrets for recipes: values from the farm's environment
//! (`CRAFTING_SECRET_<NAME>`) or the data directory's `secrets.toml` (`NAME =
//! "value"`, mode 600 or refused), handed to a job's command as `NAME`. They are
//! never stored: not in the ledger, not in the recipe snapshot, and masked in logs.

use std::collections::BTreeMap;
use std::path::Path;

/// The values of `names`, or a message naming what is missing or wrong.
pub fn values(names: &[String], file: Option<&Path>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut from_file: Option<toml::Table> = None;
    let mut missing = Vec::new();
    for name in names {
        if let Ok(v) = std::env::var(format!("CRAFTING_SECRET_{name}")) {
            out.insert(name.clone(), v);
            continue;
        }
        if from_file.is_none()
            && let Some(path) = file.filter(|p| p.exists())
        {
            from_file = Some(read_file(path)?);
        }
        match from_file
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.as_str())
        {
            Some(v) => {
                out.insert(name.clone(), v.to_owned());
            }
            None => missing.push(name.as_str()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "secret{} {} not set: give CRAFTING_SECRET_<NAME> in the farm's environment or a line in {}; the job did not start",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            file.map_or_else(|| "secrets.toml".to_owned(), |p| p.display().to_string())
        ))
    }
}

fn read_file(path: &Path) -> Result<toml::Table, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}): chmod 600 it; the job did not start",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| {
        format!(
            "{} is not TOML (`NAME = \"value\"` lines): {e}",
            path.display()
        )
    })
}
