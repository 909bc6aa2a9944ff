//! Parser throughput on a ~100 MB clippy JSON log and a ~100 MB ruff JSON report,
//! beside the floor: plain `serde_json` deserialisation of the same bytes into
//! `serde_json::Value`.
//!
//! Run: `cargo bench --bench parsers`

use std::time::Instant;

fn line(i: usize) -> String {
    format!(
        r#"{{"reason":"compiler-message","package_id":"path+file:///w/app#0.1.0","manifest_path":"/w/app/Cargo.toml","target":{{"kind":["lib"],"crate_types":["lib"],"name":"app","src_path":"/w/app/src/lib.rs","edition":"2024","doc":true,"doctest":true,"test":true}},"message":{{"rendered":"warning: unneeded `return` statement\n --> src/m{m}.rs:{l}:5\n","$message_type":"diagnostic","children":[{{"children":[],"code":null,"level":"help","message":"remove `return`","rendered":null,"spans":[{{"byte_end":10,"byte_start":3,"column_end":12,"column_start":5,"expansion":null,"file_name":"src/m{m}.rs","is_primary":true,"label":null,"line_end":{l},"line_start":{l},"suggested_replacement":"x","suggestion_applicability":"MachineApplicable","text":[]}}]}}],"code":{{"code":"clippy::needless_return","explanation":null}},"level":"warning","message":"unneeded `return` statement","spans":[{{"byte_end":10,"byte_start":3,"column_end":12,"column_start":5,"expansion":null,"file_name":"src/m{m}.rs","is_primary":true,"label":null,"line_end":{l},"line_start":{l},"suggested_replacement":null,"suggestion_applicability":null,"text":[]}}]}}}}"#,
        m = i % 97,
        l = i % 5000 + 1
    )
}

fn main() {
    let mut log = String::new();
    let mut i = 0;
    while log.len() < 100 * 1024 * 1024 {
        log.push_str(&line(i));
        log.push('\n');
        if i % 50 == 0 {
            log.push_str("   Compiling app v0.1.0 (/w/app)\n");
        }
        i += 1;
    }
    let mb = log.len() as f64 / (1024.0 * 1024.0);

    let t = Instant::now();
    let mut n = 0usize;
    for l in log.lines() {
        if l.starts_with('{') && serde_json::from_str::<serde_json::Value>(l).is_ok() {
            n += 1;
        }
    }
    let floor = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let parsed = crafting_table::parsers::clippy::parse(&log);
    let ours = t.elapsed().as_secs_f64();

    println!(
        "clippy JSON log: {mb:.1} MiB, {n} messages, {} unique findings",
        parsed.findings.len()
    );
    println!(
        "  floor: serde_json::Value per line  {:>8.1} MiB/s",
        mb / floor
    );
    println!(
        "  parsers::clippy::parse             {:>8.1} MiB/s  ({:.2}x the floor's time)",
        mb / ours,
        ours / floor
    );
    drop(log);

    // ruff: one pretty-printed JSON array, as `ruff check --output-format=json` prints.
    let mut report = String::from("[\n");
    let mut i = 0usize;
    while report.len() < 100 * 1024 * 1024 {
        if i > 0 {
            report.push_str(",\n");
        }
        report.push_str(&format!(
            "  {{\n    \"cell\": null,\n    \"code\": \"F401\",\n    \"end_location\": {{\n      \"column\": 10,\n      \"row\": {r}\n    }},\n    \"filename\": \"/w/app/pkg{m}/mod.py\",\n    \"fix\": {{\n      \"applicability\": \"safe\",\n      \"edits\": [],\n      \"message\": \"Remove unused import: `os`\"\n    }},\n    \"location\": {{\n      \"column\": 8,\n      \"row\": {r}\n    }},\n    \"message\": \"`os` imported but unused\",\n    \"noqa_row\": {r},\n    \"url\": \"https://docs.astral.sh/ruff/rules/unused-import\"\n  }}",
            r = i % 4000 + 1,
            m = i % 89
        ));
        i += 1;
    }
    report.push_str("\n]\n");
    let mb = report.len() as f64 / (1024.0 * 1024.0);
    let t = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&report).expect("json");
    let floor = t.elapsed().as_secs_f64();
    let n = v.as_array().map_or(0, Vec::len);
    drop(v);
    let t = Instant::now();
    let parsed = crafting_table::parsers::parse(&crafting_table::parsers::Input {
        language: Some("python"),
        recipe: "lint",
        exit_code: Some(1),
        timed_out: false,
        log: &report,
        tracked: None,
    });
    let ours = t.elapsed().as_secs_f64();
    println!(
        "ruff JSON report: {mb:.1} MiB, {n} diagnostics, {} findings",
        parsed.findings.len()
    );
    println!(
        "  floor: serde_json::Value, whole     {:>8.1} MiB/s",
        mb / floor
    );
    println!(
        "  parsers::parse (python)            {:>8.1} MiB/s  ({:.2}x the floor's time)",
        mb / ours,
        ours / floor
    );
    line_parser();
}

/// The line parser on a ~100 MB mixed log (gcc warnings with context and carets,
/// go vet lines, prose, MSBuild lines), as a C/Go/.NET job prints it.
fn line_parser() {
    let mut files = std::collections::HashSet::new();
    for m in 0..97 {
        files.insert(format!("src/m{m}.c"));
        files.insert(format!("pkg/p{m}.go"));
        files.insert(format!("App/C{m}.cs"));
    }
    let tracked = crafting_table::parsers::lines::Tracked {
        files,
        worktree: "/w/app".into(),
        subproject: ".".into(),
    };
    let mut log = String::new();
    let mut i = 0usize;
    while log.len() < 100 * 1024 * 1024 {
        let m = i % 97;
        let l = i % 5000 + 1;
        log.push_str(&format!(
            "src/m{m}.c: In function 'f{i}':\nsrc/m{m}.c:{l}:9: warning: unused variable 'x{i}' [-Wunused-variable]\n  {l} |     int x{i};\n      |         ^~\npkg/p{m}.go:{l}:2: unreachable code\nApp/C{m}.cs({l},17): warning CS0168: The variable 'e' is declared but never used [/w/app/App/App.csproj]\n[{i}] 12:30:01 building target {m} of 97: 3 warnings so far\n"
        ));
        i += 1;
    }
    let mb = log.len() as f64 / (1024.0 * 1024.0);
    let t = Instant::now();
    let n = log.lines().filter(|l| !l.is_empty()).count();
    let floor = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let parsed = crafting_table::parsers::lines::parse(&log, &tracked);
    let ours = t.elapsed().as_secs_f64();
    println!(
        "line parser, mixed compiler log: {mb:.1} MiB, {n} lines, {} findings",
        parsed.findings.len()
    );
    println!(
        "  floor: splitting into lines          {:>8.1} MiB/s",
        mb / floor
    );
    println!(
        "  parsers::lines::parse                {:>8.1} MiB/s  (target >= 100 MiB/s)",
        mb / ours
    );
}
