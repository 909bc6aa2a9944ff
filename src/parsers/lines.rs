//! The strict generic line parser: the universal compiler format and MSBuild's.
//!
//! - `path:line[:col]: [severity:] message [[CODE]]` — gcc, clang, plain `go vet`
//!   and `go build`, `shellcheck -f gcc`, kotlinc, swiftc, javac's
//!   `path:line: warning: [kind] message`;
//! - `path(line,col): warning CODE: message [project]` — MSBuild (`dotnet build`);
//!   the `[project]` suffix is required, so tsc's similar lines are never taken.
//!
//! It runs only when no specific parser claimed the log, and it reports a line
//! only when its path is one of the files tracked at the job's commit (relative to
//! the subproject or the repository root, or absolute inside the worktree): a line
//! of prose that happens to hold a colon and a number is never a finding. Notes,
//! context lines, carets and summaries are skipped.

use std::collections::HashSet;

use super::{Parsed, RawFinding, clean_line};

/// The files of a job's commit, relative to the repository root, and where they
/// were checked out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Repository-relative paths.
    pub files: HashSet<String>,
    /// The worktree, absolute (without a trailing `/`).
    pub worktree: String,
    /// The subproject directory the command ran in (`.` for the root).
    pub subproject: String,
}

fn normalize(parts: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in parts.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

impl Tracked {
    /// The repository-relative path a tool's path names, if it is tracked.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let path = path.trim();
        if path.is_empty() {
            return None;
        }
        if let Some(rest) = path.strip_prefix(&self.worktree)
            && rest.starts_with('/')
        {
            let rel = normalize(rest);
            return self.files.contains(&rel).then_some(rel);
        }
        if path.starts_with('/') {
            return None;
        }
        let plain = !path.starts_with("./")
            && !path.contains("/./")
            && !path.contains("..")
            && !path.contains("//");
        if plain && (self.subproject == "." || self.subproject.is_empty()) {
            // The common case, without building a normalised copy first.
            return self.files.get(path).cloned();
        }
        if self.subproject != "." && !self.subproject.is_empty() {
            let under = normalize(&format!("{}/{path}", self.subproject));
            if self.files.contains(&under) {
                return Some(under);
            }
        }
        let rel = normalize(path);
        self.files.contains(&rel).then_some(rel)
    }
}

fn tool_for(file: &str, code: Option<&str>) -> &'static str {
    let ext = file.rsplit('.').next().unwrap_or("");
    match (code, ext) {
        (Some(c), _) if c.starts_with("SC") && c[2..].chars().all(|d| d.is_ascii_digit()) => {
            "shellcheck"
        }
        (_, "go") => "go",
        (_, "java") => "javac",
        (_, "kt" | "kts") => "kotlinc",
        (_, "swift") => "swiftc",
        (_, "cs" | "vb" | "fs") => "msbuild",
        (_, "c" | "h" | "cc" | "cpp" | "cxx" | "hpp" | "hh" | "m" | "mm") => "cc",
        (_, "sh" | "bash" | "zsh" | "ksh") => "shellcheck",
        _ => "compiler",
    }
}

fn severity_of(word: &str) -> Option<&'static str> {
    match word.trim().to_ascii_lowercase().as_str() {
        "error" | "fatal error" | "fatal" | "e" => Some("error"),
        "warning" | "warn" | "w" => Some("warn"),
        "note" | "info" | "information" | "style" | "remark" | "i" => Some("info"),
        _ => None,
    }
}

/// `path:line[:col]: rest` → (path, line, col, rest).
fn split_location(line: &str) -> Option<(&str, i64, Option<i64>, &str)> {
    let bytes = line.as_bytes();
    let mut search = 0;
    while let Some(i) = line[search..].find(':').map(|i| i + search) {
        // digits after the colon
        let mut j = i + 1;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > i + 1 && j < bytes.len() && bytes[j] == b':' {
            let path = &line[..i];
            let num: i64 = line[i + 1..j].parse().ok()?;
            // optional :col
            let mut k = j + 1;
            while k < bytes.len() && bytes[k].is_ascii_digit() {
                k += 1;
            }
            if k > j + 1 && k < bytes.len() && bytes[k] == b':' {
                let col: i64 = line[j + 1..k].parse().ok()?;
                return Some((path, num, Some(col), line[k + 1..].trim_start()));
            }
            return Some((path, num, None, line[j + 1..].trim_start()));
        }
        search = i + 1;
    }
    None
}

fn universal(line: &str, tracked: &Tracked) -> Option<RawFinding> {
    if line.starts_with(char::is_whitespace) {
        return None; // context lines and carets
    }
    let (path, l, col, rest) = split_location(line)?;
    if path.contains(": ") || path.is_empty() {
        return None;
    }
    let file = tracked.resolve(path)?;
    // `severity: message` or just `message` (go vet).
    let (severity, message) = match rest.split_once(':') {
        Some((word, msg)) if severity_of(word).is_some() => {
            (severity_of(word).unwrap_or("warn"), msg.trim())
        }
        _ => ("warn", rest.trim()),
    };
    if message.is_empty() {
        return None;
    }
    // A code: a trailing `[CODE]` (gcc's -Wflag, shellcheck's SCnnnn) or javac's
    // leading `[kind]`.
    let (mut code, mut message) = (None, message.to_owned());
    if let Some(open) = message.rfind(" [")
        && message.ends_with(']')
    {
        let inner = &message[open + 2..message.len() - 1];
        if !inner.is_empty() && !inner.contains(' ') {
            code = Some(inner.to_owned());
            message = message[..open].trim_end().to_owned();
        }
    } else if let Some(rest) = message.strip_prefix('[')
        && let Some((inner, after)) = rest.split_once("] ")
        && !inner.contains(' ')
    {
        code = Some(inner.to_owned());
        message = after.trim().to_owned();
    }
    if severity == "info" && code.is_none() {
        return None; // a compiler's note explains the finding above it
    }
    Some(RawFinding {
        tool: tool_for(&file, code.as_deref()).to_owned(),
        kind: "lint".into(),
        severity: severity.to_owned(),
        file: Some(file),
        line: Some(l),
        col,
        code,
        message,
        suggested_fix: None,
        raw_json: None,
    })
}

fn msbuild(line: &str, tracked: &Tracked) -> Option<RawFinding> {
    let line = line.trim_start();
    // path(line,col): warning CODE: message [project]
    let close = line.find("): ")?;
    let open = line[..close].rfind('(')?;
    let (l, c) = line[open + 1..close].split_once(',')?;
    let (l, c): (i64, i64) = (l.trim().parse().ok()?, c.trim().parse().ok()?);
    let rest = &line[close + 3..];
    let (head, msg) = rest.split_once(": ")?;
    let (sev, code) = head.rsplit_once(' ')?;
    let severity = severity_of(sev)?;
    let msg = msg.trim_end();
    if !msg.ends_with(']') {
        return None;
    }
    let bracket = msg.rfind(" [")?;
    let project = &msg[bracket + 2..msg.len() - 1];
    if !project.contains("proj") && !project.contains('.') {
        return None;
    }
    let file = tracked.resolve(&line[..open].replace('\\', "/"))?;
    Some(RawFinding {
        tool: "msbuild".into(),
        kind: "lint".into(),
        severity: severity.to_owned(),
        file: Some(file),
        line: Some(l),
        col: Some(c),
        code: Some(code.to_owned()),
        message: msg[..bracket].trim().to_owned(),
        suggested_fix: None,
        raw_json: None,
    })
}

/// Findings of the log's universal-format and MSBuild lines whose paths are tracked.
pub fn parse(log: &str, tracked: &Tracked) -> Parsed {
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    for raw in log.lines() {
        let line = clean_line(raw);
        if let Some(f) = msbuild(&line, tracked) {
            // MSBuild prints each diagnostic twice (as it happens and in the summary).
            let key = (
                f.file.clone(),
                f.line,
                f.col,
                f.code.clone(),
                f.message.clone(),
            );
            if seen.insert(key) {
                out.findings.push(f);
            }
        } else if let Some(f) = universal(&line, tracked) {
            // Two findings on one line may print alike (javac has no columns).
            out.findings.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(files: &[&str]) -> Tracked {
        Tracked {
            files: files.iter().map(|s| (*s).to_owned()).collect(),
            worktree: "/w/job".into(),
            subproject: "svc".into(),
        }
    }

    #[test]
    fn the_formats() {
        let t = tracked(&[
            "svc/main.c",
            "svc/run.sh",
            "svc/A.java",
            "svc/main.go",
            "svc/Program.cs",
            "README.md",
        ]);
        let log = "\
main.c: In function 'main':
main.c:4:9: warning: unused variable 'x' [-Wunused-variable]
    4 |     int x;
      |         ^
main.c:4:5: note: declared here
/w/job/svc/main.c:9:1: error: expected ';' before '}' token
run.sh:3:6: warning: Double quote to prevent globbing and word splitting. [SC2086]
run.sh:7:1: note: Not following: ./lib.sh was not specified as input. [SC1091]
A.java:12: warning: [rawtypes] found raw type: List
# example.com/svc
./main.go:7:2: fmt.Printf format %d has arg s of wrong type string
Program.cs(10,17): warning CS0168: The variable 'e' is declared but never used [/w/job/svc/app.csproj]
src/a.ts(3,5): error TS2322: Type 'string' is not assignable to type 'number'.
notes.txt:1:2: warning: not tracked
Build succeeded: 3 warnings at 12:30:01: done
";
        let got: Vec<String> = parse(log, &t)
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}:{}:{:?} {:?} {}",
                    f.tool,
                    f.severity,
                    f.file.as_deref().unwrap_or(""),
                    f.line.unwrap_or(0),
                    f.col,
                    f.code,
                    f.message
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "cc warn svc/main.c:4:Some(9) Some(\"-Wunused-variable\") unused variable 'x'",
                "cc error svc/main.c:9:Some(1) None expected ';' before '}' token",
                "shellcheck warn svc/run.sh:3:Some(6) Some(\"SC2086\") Double quote to prevent globbing and word splitting.",
                "shellcheck info svc/run.sh:7:Some(1) Some(\"SC1091\") Not following: ./lib.sh was not specified as input.",
                "javac warn svc/A.java:12:None Some(\"rawtypes\") found raw type: List",
                "go warn svc/main.go:7:Some(2) None fmt.Printf format %d has arg s of wrong type string",
                "msbuild warn svc/Program.cs:10:Some(17) Some(\"CS0168\") The variable 'e' is declared but never used",
            ]
        );
    }
}
