//! Checks on a model's diff before it touches anything. Pure.

/// Largest diff accepted.
pub const MAX_DIFF_BYTES: usize = 200 * 1024;

fn bad_path(p: &str) -> Option<String> {
    let p = p.trim();
    let p = p.split('\t').next().unwrap_or(p);
    if p == "/dev/null" {
        return None;
    }
    let rel = p
        .strip_prefix("a/")
        .or_else(|| p.strip_prefix("b/"))
        .unwrap_or(p);
    if rel.is_empty() {
        return Some("an empty path".to_owned());
    }
    if rel.starts_with('/') || p.starts_with('/') {
        return Some(format!("`{rel}` is an absolute path"));
    }
    if rel.contains('\\') {
        return Some(format!("`{rel}` has a backslash"));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.contains(&"..") {
        return Some(format!("`{rel}` leaves the repository (`..`)"));
    }
    if parts.iter().any(|c| c.eq_ignore_ascii_case(".git")) {
        return Some(format!("`{rel}` is inside .git/"));
    }
    None
}

/// Checks a unified diff: its size, that it has hunks, and that every path stays
/// inside the repository and out of `.git/`. Returns the files it changes.
pub fn check(diff: &str) -> Result<Vec<String>, String> {
    if diff.len() > MAX_DIFF_BYTES {
        return Err(format!(
            "the diff is {} bytes, more than the {} allowed",
            diff.len(),
            MAX_DIFF_BYTES
        ));
    }
    if diff.trim().is_empty() {
        return Err("the diff is empty".to_owned());
    }
    let mut files = Vec::new();
    let mut hunks = 0;
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            for p in rest.split_whitespace() {
                if let Some(why) = bad_path(p) {
                    return Err(why);
                }
            }
        } else if let Some(p) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            if let Some(why) = bad_path(p) {
                return Err(why);
            }
            let p = p.trim().split('\t').next().unwrap_or("");
            if line.starts_with("+++ ") && p != "/dev/null" {
                let rel = p.strip_prefix("b/").unwrap_or(p).to_owned();
                if !files.contains(&rel) {
                    files.push(rel);
                }
            }
        } else if let Some(p) = line
            .strip_prefix("rename to ")
            .or_else(|| line.strip_prefix("rename from "))
            .or_else(|| line.strip_prefix("copy to "))
            .or_else(|| line.strip_prefix("copy from "))
        {
            if let Some(why) = bad_path(p) {
                return Err(why);
            }
        } else if line.starts_with("@@") {
            hunks += 1;
        } else if line.starts_with("GIT binary patch") {
            return Err("binary patches are not accepted".to_owned());
        }
    }
    if hunks == 0 || files.is_empty() {
        return Err("not a unified diff: no `+++` file and `@@` hunk".to_owned());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "--- a/src/main.rs\n+++ b/src/main.rs\n@@ -1,2 +1 @@\n-use std::collections::HashMap;\n fn main() {}\n";

    #[test]
    fn accepts_a_plain_diff() {
        assert_eq!(check(GOOD).unwrap(), ["src/main.rs"]);
        let git = format!("diff --git a/src/main.rs b/src/main.rs\nindex 1..2 100644\n{GOOD}");
        assert_eq!(check(&git).unwrap(), ["src/main.rs"]);
    }

    #[test]
    fn refuses_escapes_git_dirs_huge_and_prose() {
        for (diff, why) in [
            (GOOD.replace("a/src/main.rs", "a/../etc/passwd"), ".."),
            (
                GOOD.replace("b/src/main.rs", "b/.git/hooks/post-checkout"),
                ".git",
            ),
            (
                GOOD.replace("+++ b/src/main.rs", "+++ /etc/passwd"),
                "absolute",
            ),
            ("Sure! Remove the import.".to_owned(), "not a unified diff"),
            (format!("{GOOD}{}", "+x\n".repeat(80_000)), "more than"),
            (
                "diff --git a/x b/x\nGIT binary patch\nliteral 0\n".to_owned(),
                "binary",
            ),
        ] {
            let e = check(&diff).unwrap_err();
            assert!(e.contains(why), "{e} (wanted {why})");
        }
    }
}
