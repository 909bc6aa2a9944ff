//! Findings across runs, with real repositories, real jobs and a real parser
//! (tsc's text format, printed by awk from the repository's own file).

use std::path::Path;

use crafting_table::ledger::Finding;

use crate::runner::{Farm, project_yaml};

const TOOL: &str = "awk '/TODO/ { printf \"src/app.ts(%d,%d): error TS9999: %s\\n\", NR, index($0, \"TODO\"), $0 }' src/app.ts; exit 1";

fn farm() -> Farm {
    let mut p = project_yaml(
        "app",
        Path::new("@SOURCE@"),
        1,
        &[(".", &[("check", TOOL)])],
        60,
    );
    p = p.replace(
        "      timeout_secs: 60\n",
        "      timeout_secs: 60\n      language: typescript\n",
    );
    let f = Farm::new(&[p], 1, 1 << 20);
    crafting_table::findings::install(&f.runner);
    f
}

async fn lint(f: &Farm) -> (Vec<Finding>, Vec<String>) {
    let (id, _) = f.enqueue("app", ".", "check");
    f.runner.wake();
    let job = f.finished(&id).await;
    let findings = f.ledger(|l| l.findings_of_job(&id).unwrap());
    assert_eq!(job.findings_count as usize, findings.len());
    let fixed = serde_json::from_value(job.fixed).unwrap();
    (findings, fixed)
}

fn states(f: &[Finding]) -> Vec<(Option<i64>, String)> {
    f.iter()
        .map(|x| (x.f.line, x.f.baseline_state.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_unchanged_fixed_over_three_commits() {
    let f = farm();
    let src = crate::helpers::Repo {
        _tmp: tempfile::tempdir().unwrap(),
        path: f.source_path(),
    };
    src.write(
        "src/app.ts",
        "let a = 1;\n\n// TODO: alpha\nlet b = 2;\n\n// TODO: beta\n",
    )
    .commit("c1");
    let _loop = f.start();

    let (first, fixed) = lint(&f).await;
    assert_eq!(
        states(&first),
        [(Some(3), "new".into()), (Some(6), "new".into())]
    );
    assert!(fixed.is_empty());
    assert!(
        first
            .iter()
            .all(|x| x.f.file.as_deref() == Some("src/app.ts") && x.f.tool == "tsc")
    );

    // The same commit again: same fingerprints, nothing new.
    let (again, fixed) = lint(&f).await;
    assert_eq!(
        again.iter().map(|x| &x.f.fingerprint).collect::<Vec<_>>(),
        first.iter().map(|x| &x.f.fingerprint).collect::<Vec<_>>()
    );
    assert_eq!(
        states(&again),
        [(Some(3), "unchanged".into()), (Some(6), "unchanged".into())]
    );
    assert!(fixed.is_empty());

    // Two lines inserted above: both findings moved, neither is new or fixed.
    src.write("src/app.ts", "import x from 'x';\nimport y from 'y';\nlet a = 1;\n\n// TODO: alpha\nlet b = 2;\n\n// TODO: beta\n").commit("c2");
    let (moved, fixed) = lint(&f).await;
    assert_eq!(
        states(&moved),
        [(Some(5), "unchanged".into()), (Some(8), "unchanged".into())]
    );
    assert_ne!(
        moved[0].f.fingerprint, first[0].f.fingerprint,
        "the fingerprint includes the line"
    );
    assert_eq!(
        moved[0].f.location_hash, first[0].f.location_hash,
        "the location hash does not"
    );
    assert!(fixed.is_empty(), "moved findings are not fixed: {fixed:?}");

    // One fixed, one new.
    src.write("src/app.ts", "import x from 'x';\nimport y from 'y';\nlet a = 1;\n\nlet b = 2;\n\n// TODO: beta\n// TODO: gamma\n").commit("c3");
    let (last, fixed) = lint(&f).await;
    assert_eq!(
        states(&last),
        [(Some(7), "unchanged".into()), (Some(8), "new".into())]
    );
    assert_eq!(fixed, [moved[0].f.fingerprint.clone()]);
}
