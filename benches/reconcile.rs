//! Reconcile of generated registries of 10, 100, 1,000 and 10,000 projects (or the
//! sizes in `CRAFTING_BENCH_PROJECTS`, comma-separated): from cold (empty ledger),
//! after one changed file, and with nothing changed. Prints figures; asserts
//! nothing about time.
//!
//! Run: `cargo bench --bench reconcile`

use std::time::Instant;

use crafting_table::ledger::Ledger;
use crafting_table::reconciler::{plan, reconcile_once};
use crafting_table::registry::Registry;

fn project(i: usize, test: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: project-{i:04}\nspec:\n  git_url: https://gitea.lan/org/project-{i:04}.git\n  owners: [team-{}]\n  subprojects:\n    - path: .\n      extends: rust-default\n      test: {test}\n    - path: sdk/python\n      language: python\n      test: pytest -q\n      lint: ruff check --output-format=json .\n",
        i % 17
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CRAFTING_BENCH_PROJECTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000, 10_000]);
    for n in sizes {
        one_size(n);
    }
}

fn one_size(projects: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(reg.join("projects")).expect("mkdir");
    std::fs::write(
        reg.join("recipes.yaml"),
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata: {name: rust-default}\nspec:\n  language: rust\n  test: cargo test\n  lint: cargo clippy --message-format=json\n  audit: cargo audit --json\n",
    )
    .expect("write");
    std::fs::write(
        reg.join("nightly.yaml"),
        "apiVersion: crafting-table/v1\nkind: Schedule\nmetadata: {name: nightly}\nspec:\n  cron: '0 2 * * *'\n  timezone: America/Los_Angeles\n  projects: '*'\n  recipe: audit\n",
    )
    .expect("write");
    for i in 0..projects {
        std::fs::write(
            reg.join(format!("projects/p{i:04}.yaml")),
            project(i, "cargo test"),
        )
        .expect("write");
    }
    let registry = Registry::Dir(reg.clone());
    let mut ledger = Ledger::open(&tmp.path().join("ledger.sqlite3")).expect("ledger");

    let t = Instant::now();
    let fetched = registry.fetch().expect("fetch");
    let read = t.elapsed();
    let t = Instant::now();
    let loaded = crafting_table::reconciler::load_fetched(&fetched);
    let parse = t.elapsed();
    assert!(loaded.is_clean());

    let t = Instant::now();
    let cold = reconcile_once(&registry, &mut ledger, 1).expect("reconcile");
    let cold_time = t.elapsed();

    let changed = projects / 2;
    std::fs::write(
        reg.join(format!("projects/p{changed:04}.yaml")),
        project(changed, "cargo nextest run"),
    )
    .expect("write");
    let t = Instant::now();
    let warm = reconcile_once(&registry, &mut ledger, 2).expect("reconcile");
    let one_change = t.elapsed();

    let t = Instant::now();
    let noop = reconcile_once(&registry, &mut ledger, 3).expect("reconcile");
    let no_change = t.elapsed();

    let snapshot = ledger.snapshot().expect("snapshot");
    let t = Instant::now();
    let p = plan(&loaded, &snapshot);
    let plan_time = t.elapsed();

    println!(
        "registry: {} projects, 1 recipe, 1 schedule, {} files",
        projects,
        fetched.files.len()
    );
    println!(
        "  read files               {:>8.1} ms",
        read.as_secs_f64() * 1e3
    );
    println!(
        "  parse + validate         {:>8.1} ms",
        parse.as_secs_f64() * 1e3
    );
    println!(
        "  plan (pure)              {:>8.1} ms  ({} lines)",
        plan_time.as_secs_f64() * 1e3,
        p.changes.len()
    );
    println!(
        "reconcile from cold       {:>8.1} ms  ({} created)",
        cold_time.as_secs_f64() * 1e3,
        cold.plan
            .count(|a| matches!(a, crafting_table::reconciler::Action::Create))
    );
    println!(
        "reconcile, one file changed {:>6.1} ms  ({} updated)",
        one_change.as_secs_f64() * 1e3,
        warm.plan
            .count(|a| matches!(a, crafting_table::reconciler::Action::Update(_)))
    );
    println!(
        "reconcile, nothing changed {:>7.1} ms  (has_changes = {})",
        no_change.as_secs_f64() * 1e3,
        noop.plan.has_changes()
    );
}
