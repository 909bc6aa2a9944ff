//! Parsers on outputs captured from the real tools (tests/fixtures/captures, made
//! by tests/fixtures/regenerate.sh; versions in VERSIONS.txt): snapshots of the
//! findings, counts checked against each tool's own count, and robustness against
//! noise and truncation.

use std::path::Path;

use crafting_table::parsers::{Input, RawFinding, parse};

fn capture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(log: &str, language: &str, recipe: &str, exit: i64) -> Vec<RawFinding> {
    parse(&Input {
        language: Some(language),
        recipe,
        exit_code: Some(exit),
        timed_out: false,
        log,
        tracked: None,
    })
    .findings
}

fn render(findings: &[RawFinding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}:{}:{} {} — {}{}",
                f.tool,
                f.kind,
                f.severity,
                f.file.as_deref().unwrap_or("-"),
                f.line.map_or("-".into(), |l| l.to_string()),
                f.col.map_or("-".into(), |c| c.to_string()),
                f.code.as_deref().unwrap_or("-"),
                f.message.lines().next().unwrap_or(""),
                f.suggested_fix
                    .as_deref()
                    .map(|s| format!(" [fix: {s}]"))
                    .unwrap_or_default(),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (capture, language, recipe, exit code): every captured format.
const CASES: &[(&str, &str, &str, i64)] = &[
    ("clippy.log", "rust", "lint", 0),
    ("cargo-test.log", "rust", "test", 101),
    ("cargo-audit.log", "rust", "audit", 1),
    ("ruff.log", "python", "lint", 1),
    ("mypy.log", "python", "lint", 1),
    ("pytest.log", "python", "test", 1),
    ("pip-audit.log", "python", "audit", 1),
    ("go-vet.log", "go", "lint", 1),
    ("govulncheck.log", "go", "audit", 3),
    ("eslint.log", "javascript", "lint", 1),
    ("tsc.log", "typescript", "build", 2),
];

#[test]
fn snapshots_of_every_capture() {
    for (file, lang, recipe, exit) in CASES {
        let findings = run(&capture(file), lang, recipe, *exit);
        assert!(!findings.is_empty(), "{file}: no findings");
        assert!(
            findings.iter().all(|f| f.kind != "recipe_fail"),
            "{file}: fell back to generic"
        );
        insta::assert_snapshot!(file.replace('.', "_"), render(&findings));
    }
}

fn count_after(log: &str, marker: &str) -> Vec<i64> {
    log.match_indices(marker)
        .filter_map(|(i, _)| {
            let before = log[..i].trim_end();
            before.rsplit([' ', '(', ',', '\n']).next()?.parse().ok()
        })
        .collect()
}

#[test]
fn counts_match_the_tools_own_counts() {
    // clippy: cargo's "generated N warnings" from the same run in human format.
    let log = capture("clippy.log");
    let n: i64 = capture("clippy-human.log")
        .lines()
        .filter_map(|l| {
            l.split(" generated ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<i64>()
                .ok()
        })
        .sum();
    assert!(n > 0);
    assert_eq!(run(&log, "rust", "lint", 0).len() as i64, n, "clippy");

    // cargo test: "N failed" in the result line.
    let log = capture("cargo-test.log");
    let failed: i64 = count_after(&log, " failed;").iter().sum();
    assert_eq!(
        run(&log, "rust", "test", 101).len() as i64,
        failed,
        "cargo test"
    );

    // cargo audit: the report's own counts.
    let log = capture("cargo-audit.log");
    let v: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let warnings: usize = v["warnings"]
        .as_object()
        .unwrap()
        .values()
        .map(|w| w.as_array().unwrap().len())
        .sum();
    let f = run(&log, "rust", "audit", 1);
    assert_eq!(
        f.iter().filter(|x| x.kind == "cve").count() as u64,
        v["vulnerabilities"]["count"].as_u64().unwrap()
    );
    assert_eq!(f.iter().filter(|x| x.kind == "advisory").count(), warnings);

    // ruff: the JSON array's length.
    let log = capture("ruff.log");
    let arr: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(
        run(&log, "python", "lint", 1).len(),
        arr.as_array().unwrap().len(),
        "ruff"
    );

    // mypy: its error lines.
    let log = capture("mypy.log");
    let errors = log
        .lines()
        .filter(|l| l.contains("\"severity\": \"error\""))
        .count();
    assert_eq!(run(&log, "python", "lint", 1).len(), errors, "mypy");

    // pytest: "N failed, …, M errors".
    let log = capture("pytest.log");
    let summary = log.lines().rev().find(|l| l.contains(" failed")).unwrap();
    let failed = count_after(summary, " failed")
        .first()
        .copied()
        .unwrap_or(0);
    let errors = count_after(summary, " error").first().copied().unwrap_or(0);
    assert_eq!(
        run(&log, "python", "test", 1).len() as i64,
        failed + errors,
        "pytest: {summary}"
    );

    // pip-audit: vulnerabilities in the report.
    let log = capture("pip-audit.log");
    let v: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let vulns: usize = v["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["vulns"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(vulns > 0);
    assert_eq!(run(&log, "python", "audit", 1).len(), vulns, "pip-audit");

    // eslint: errorCount + warningCount over files.
    let log = capture("eslint.log");
    let v: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    let n: i64 = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["errorCount"].as_i64().unwrap() + f["warningCount"].as_i64().unwrap())
        .sum();
    assert_eq!(run(&log, "javascript", "lint", 1).len() as i64, n, "eslint");

    // tsc: one "error TS" per diagnostic.
    let log = capture("tsc.log");
    assert_eq!(
        run(&log, "typescript", "build", 2).len(),
        log.matches(": error TS").count(),
        "tsc"
    );

    // govulncheck: reached OSV ids only (GO-2023-1988 is imported, never called).
    let f = run(&capture("govulncheck.log"), "go", "audit", 3);
    let ids: Vec<&str> = f.iter().filter_map(|x| x.code.as_deref()).collect();
    assert_eq!(ids, ["GO-2023-2102"]);
    assert_eq!(run(&capture("go-vet.log"), "go", "lint", 1).len(), 3);
}

#[test]
fn pytest_junit_xml_adds_locations_without_duplicates() {
    // As a recipe `pytest …; cat junit.xml` prints it.
    let xml = capture("pytest-junit.xml");
    let log = format!("{}{xml}\n", capture("pytest.log"));
    let plain = run(&capture("pytest.log"), "python", "test", 1);
    let with_xml = run(&log, "python", "test", 1);
    assert_eq!(
        render(&with_xml),
        render(&plain),
        "the XML repeats the summary"
    );
    let xml_only = run(&format!("{xml}\n"), "python", "test", 1);
    let codes = |v: &[RawFinding]| v.iter().map(|f| f.code.clone()).collect::<Vec<_>>();
    assert_eq!(codes(&xml_only), codes(&plain), "{}", render(&xml_only));
    assert!(
        xml_only
            .iter()
            .all(|f| f.file.as_deref() == Some("tests/test_app.py")),
        "{}",
        render(&xml_only)
    );
}

#[test]
fn libtest_json_and_sarif_logs() {
    let log = concat!(
        "{ \"type\": \"suite\", \"event\": \"started\", \"test_count\": 2 }\n",
        "{ \"type\": \"test\", \"event\": \"started\", \"name\": \"tests::a\" }\n",
        "{ \"type\": \"test\", \"name\": \"tests::a\", \"event\": \"failed\", \"stdout\": \"\\nthread 'tests::a' panicked at src/lib.rs:12:9:\\nassertion failed: x\\n\" }\n",
        "{ \"type\": \"test\", \"name\": \"tests::b\", \"event\": \"ok\" }\n",
    );
    let f = run(log, "rust", "test", 101);
    assert_eq!(
        render(&f),
        "cargo-test test_fail error src/lib.rs:12:9 tests::a — assertion failed: x"
    );

    let sarif = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"semgrep"}},"results":[{"ruleId":"python.lang.security.eval","level":"error","message":{"text":"eval of user input"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"app/views.py"},"region":{"startLine":42,"startColumn":5}}}]}]}]}"#;
    let f = run(&format!("scanning...\n{sarif}\n"), "python", "lint", 1);
    assert_eq!(
        render(&f),
        "semgrep lint error app/views.py:42:5 python.lang.security.eval — eval of user input"
    );
}

#[test]
fn generic_fallback_only_when_nothing_fired() {
    let f = run("Segmentation fault\n", "cobol", "build", 139);
    assert_eq!(
        render(&f),
        "crafting-table recipe_fail error -:-:- exit_139 — recipe `build` exited with code 139"
    );
    assert!(run("all good\n", "cobol", "build", 0).is_empty());
    let timed = parse(&Input {
        language: None,
        recipe: "test",
        exit_code: None,
        timed_out: true,
        log: "",
        tracked: None,
    })
    .findings;
    assert_eq!(timed[0].code.as_deref(), Some("timeout"));
}

/// A tiny deterministic generator for the noise tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn key(f: &RawFinding) -> (String, String, Option<String>, Option<i64>, Option<String>) {
    (
        f.tool.clone(),
        f.kind.clone(),
        f.file.clone(),
        f.line,
        f.code.clone(),
    )
}

/// What a finding reports, whatever detail a cut log still had about it.
fn identity(f: &RawFinding) -> (String, String, Option<String>) {
    (f.tool.clone(), f.kind.clone(), f.code.clone())
}

#[test]
fn noise_ansi_crlf_do_not_change_findings() {
    for (file, lang, recipe, exit) in CASES {
        let log = capture(file);
        let clean = run(&log, lang, recipe, *exit);
        let mut noisy = String::new();
        for (i, line) in log.lines().enumerate() {
            // Between records, not inside a pretty-printed document (one process
            // writes a document at once).
            let boundary = !line.starts_with([' ', '\t', '}', ']']);
            if i % 3 == 0 && boundary {
                noisy.push_str("\u{1b}[32m   Compiling\u{1b}[0m noise v0.1.0 (/tmp/x)\r\n");
                noisy.push_str("npm WARN deprecated something@1.0.0\r\n");
                noisy.push_str("[2/7] ⠋ resolving\r\n");
            }
            noisy.push_str(line);
            noisy.push_str("\r\n");
        }
        let got = run(&noisy, lang, recipe, *exit);
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            clean.iter().map(key).collect::<Vec<_>>(),
            "{file}: noise changed the findings"
        );
    }
}

#[test]
fn truncation_never_panics_or_invents() {
    let mut rng = Lcg(7);
    for (file, lang, recipe, exit) in CASES {
        let log = capture(file);
        let full: std::collections::HashSet<_> = run(&log, lang, recipe, *exit)
            .iter()
            .map(identity)
            .collect();
        for _ in 0..60 {
            let mut cut = (rng.next() as usize) % (log.len() + 1);
            while !log.is_char_boundary(cut) {
                cut -= 1;
            }
            let part = &log[..cut];
            for f in run(part, lang, recipe, *exit) {
                if f.kind == "recipe_fail" {
                    continue;
                }
                assert!(
                    full.contains(&identity(&f)),
                    "{file} cut at {cut}: invented {f:?}"
                );
            }
        }
    }
}

#[test]
fn edge_cases_from_real_projects() {
    // pytest: parametrized ids with spaces and " - " inside the brackets.
    let log = "FAILED tests/test_calc.py::test_sub[10 - 3 - 7] - assert 6 == 7\nFAILED tests/test_calc.py::test_ok[a b] - AssertionError\nFAILED tests/test_calc.py::test_list - assert [1] == [2]\n";
    let f = run(log, "python", "test", 1);
    let codes: Vec<&str> = f.iter().filter_map(|x| x.code.as_deref()).collect();
    assert_eq!(
        codes,
        [
            "tests/test_calc.py::test_sub[10 - 3 - 7]",
            "tests/test_calc.py::test_ok[a b]",
            "tests/test_calc.py::test_list"
        ]
    );
    assert_eq!(f[2].message, "assert [1] == [2]");
    assert_eq!(f[0].message, "assert 6 == 7");

    // tsc: parentheses in directory names (Next.js route groups), and --pretty.
    let log = "app/(shop)/cart/page.tsx(12,5): error TS2339: Property 'x' does not exist on type 'Y'.\nsrc/a.ts:3:7 - error TS2322: Type 'string' is not assignable to type 'number'.\n";
    let f = run(log, "typescript", "build", 2);
    assert_eq!(
        render(&f),
        "tsc lint error app/(shop)/cart/page.tsx:12:5 TS2339 — Property 'x' does not exist on type 'Y'.\ntsc lint error src/a.ts:3:7 TS2322 — Type 'string' is not assignable to type 'number'."
    );

    // mypy: a note on its own (no error before it) is kept as an info finding.
    let log = "{\"file\": \"a.py\", \"line\": 1, \"column\": 0, \"message\": \"Revealed type is int\", \"hint\": null, \"code\": \"misc\", \"severity\": \"note\"}\n";
    let f = run(log, "python", "lint", 0);
    assert_eq!(
        render(&f),
        "mypy lint info a.py:1:1 misc — Revealed type is int"
    );

    // eslint output glued to the farm's next line still parses.
    let log = "[{\"filePath\":\"/w/a.js\",\"messages\":[{\"ruleId\":\"semi\",\"severity\":1,\"message\":\"Missing semicolon.\",\"line\":1,\"column\":9}],\"errorCount\":0,\"warningCount\":1}]\n[crafting-table] exit 1 after 0.4s\n";
    assert_eq!(run(log, "javascript", "lint", 1).len(), 1);
}

/// Every tracked path a log could name: the files its findings name and more.
fn tracking_everything(findings: &[RawFinding]) -> crafting_table::parsers::lines::Tracked {
    let mut files: std::collections::HashSet<String> =
        findings.iter().filter_map(|f| f.file.clone()).collect();
    files.extend(
        [
            "src/lib.rs",
            "src/main.rs",
            "app.py",
            "main.go",
            "README.md",
        ]
        .map(String::from),
    );
    crafting_table::parsers::lines::Tracked {
        files,
        worktree: "/tmp/crafting-table-fixtures".into(),
        subproject: ".".into(),
    }
}

#[test]
fn the_generic_line_parser_adds_nothing_to_claimed_logs() {
    for (file, lang, recipe, exit) in CASES {
        let log = capture(file);
        let before = run(&log, lang, recipe, *exit);
        let tracked = tracking_everything(&before);
        let after = parse(&Input {
            language: Some(lang),
            recipe,
            exit_code: Some(*exit),
            timed_out: false,
            log: &log,
            tracked: Some(&tracked),
        });
        assert!(after.claimed, "{file} is claimed by its parser");
        assert_eq!(after.findings, before, "{file}");
    }
    // Noise with colons and numbers, even naming tracked files, gives nothing but
    // the failed command.
    let tracked = tracking_everything(&[]);
    let noise = "12:30:01 INFO starting\nREADME.md:is fine: 3 times\nsrc/lib.rs: 44 bytes\nsee https://example.com:8080/x:1:2: here\n";
    let got = parse(&Input {
        language: Some("c"),
        recipe: "build",
        exit_code: Some(2),
        timed_out: false,
        log: noise,
        tracked: Some(&tracked),
    });
    assert_eq!(got.findings.len(), 1, "{:?}", got.findings);
    assert_eq!(got.findings[0].kind, "recipe_fail");
}

/// The tracked set a job of this capture would have: every path its lines name
/// with a source extension (the parser's own filter is tested on noise above).
fn tracked_of(log: &str, worktree: &str) -> crafting_table::parsers::lines::Tracked {
    // MSBuild's paths come before `(line,col)`; the others before `:`.
    let log = &log
        .lines()
        .map(|l| match l.split_once(".cs(") {
            Some((p, _)) => format!("{}.cs:", p.trim_start_matches("/home/dev/Shop/")),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let exts = [".c", ".go", ".java", ".kt", ".sh", ".init", ".rb", ".cs"];
    let mut files = std::collections::HashSet::new();
    for line in log.lines() {
        if let Some((path, _)) = line.split_once(':') {
            let p = path.trim_start_matches("./");
            if !p.contains(' ') && !p.is_empty() && !p.starts_with('/') {
                files.insert(p.to_owned());
            }
        }
    }
    let _ = exts;
    crafting_table::parsers::lines::Tracked {
        files,
        worktree: worktree.into(),
        subproject: ".".into(),
    }
}

/// (capture, language, exit code, the tool's own count): the toolchains of the
/// image, captured on Debian-shipped code (tests/fixtures/captures/TOOLCHAINS.md).
const TOOLCHAIN_CASES: &[(&str, &str, i64, usize)] = &[
    ("shellcheck-json1.log", "shell", 1, 51),
    ("shellcheck-gcc.log", "shell", 1, 51),
    ("rubocop.log", "ruby", 1, 44),
    ("gcc.log", "c", 0, 26),
    ("clang.log", "c", 0, 15),
    ("go-vet-plain.log", "go", 1, 28),
    ("go-vet-plain-sftp.log", "go", 1, 4),
    ("staticcheck.log", "go", 1, 22),
    ("javac.log", "java", 0, 66),
    ("kotlinc.log", "kotlin", 0, 11),
    ("cargo-deny.log", "rust", 7, 18),
    ("phpstan.log", "php", 1, 7),
    ("bundler-audit.log", "ruby", 1, 4),
    ("msbuild.log", "csharp", 1, 3),
    ("swiftc.log", "swift", 1, 3),
];

#[test]
fn every_toolchain_of_the_image_gives_its_own_count() {
    for (file, lang, exit, count) in TOOLCHAIN_CASES {
        let log = capture(file);
        let worktree = if *file == "msbuild.log" {
            "/home/dev/Shop"
        } else {
            "/tmp/fx"
        };
        let tracked = tracked_of(&log, worktree);
        let parsed = parse(&Input {
            language: Some(lang),
            recipe: "lint",
            exit_code: Some(*exit),
            timed_out: false,
            log: &log,
            tracked: Some(&tracked),
        });
        let findings: Vec<&RawFinding> = parsed
            .findings
            .iter()
            .filter(|f| f.kind != "recipe_fail")
            .collect();
        assert_eq!(
            findings.len(),
            *count,
            "{file}: {}",
            render(&parsed.findings)
        );
        insta::assert_snapshot!(
            format!("toolchain_{}", file.replace(['.', '-'], "_")),
            render(&parsed.findings)
        );
    }
    // The same shell scripts in both formats give the same findings (places and codes).
    let key = |f: &RawFinding| (f.file.clone(), f.line, f.col, f.code.clone());
    let json = parse(&Input {
        language: Some("shell"),
        recipe: "lint",
        exit_code: Some(1),
        timed_out: false,
        log: &capture("shellcheck-json1.log"),
        tracked: None,
    });
    let gcc_log = capture("shellcheck-gcc.log");
    let tracked = tracked_of(&gcc_log, "/tmp/fx/shell");
    let gcc = parse(&Input {
        language: Some("shell"),
        recipe: "lint",
        exit_code: Some(1),
        timed_out: false,
        log: &gcc_log,
        tracked: Some(&tracked),
    });
    let mut a: Vec<_> = json.findings.iter().map(key).collect();
    let mut b: Vec<_> = gcc.findings.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn ruff_report_keeps_each_diagnostic_as_printed() {
    let diag = "{\n    \"code\": \"F401\",\n    \"filename\": \"/w/a.py\",\n    \"location\": {\"row\": 2, \"column\": 8},\n    \"message\": \"`os` imported but unused\",\n    \"fix\": {\"message\": \"Remove it\"},\n    \"url\": null\n  }";
    let syntax = "{\"code\": null, \"filename\": \"/w/b.py\", \"location\": {\"row\": 1, \"column\": 1}, \"message\": \"SyntaxError: x\", \"fix\": null}";
    // A JSON array that is not ruff's (pip-audit's, say, or anything) before it,
    // prose around it: the report is found and nothing else is taken for it.
    let log = format!(
        "$ ruff check --output-format=json\n[1, 2, 3]\n[\n  {diag},\n  {syntax}\n]\nFound 2 errors.\n"
    );
    let parsed = parse(&Input {
        language: Some("python"),
        recipe: "lint",
        exit_code: Some(1),
        timed_out: false,
        log: &log,
        tracked: None,
    });
    let f = &parsed.findings;
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(
        f[0].raw_json.as_deref(),
        Some(diag),
        "the raw JSON as printed"
    );
    assert_eq!(
        (f[0].line, f[0].col, f[0].code.as_deref()),
        (Some(2), Some(8), Some("F401"))
    );
    assert_eq!(f[0].suggested_fix.as_deref(), Some("Remove it"));
    assert_eq!(
        (f[1].severity.as_str(), f[1].code.as_deref()),
        ("error", Some("syntax-error"))
    );
    let raw: serde_json::Value = serde_json::from_str(f[1].raw_json.as_deref().unwrap()).unwrap();
    assert_eq!(raw["filename"], "/w/b.py");
}
