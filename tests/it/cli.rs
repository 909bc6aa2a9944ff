//! The `crafting-table validate` command, run as a real child process.

use std::path::Path;
use std::process::Command;

fn validate(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("validate")
        .arg(dir)
        .env_remove("CRAFTING_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn repo_dir(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn default_registry_is_valid() {
    let (code, out) = validate(&repo_dir("registry"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with(
            "valid, 4 objects in 1 file (1 Recipe, 1 Project, 1 Schedule, 1 NotifyRule)\n"
        ),
        "{out}"
    );
}

#[test]
fn example_registry_is_valid() {
    let (code, out) = validate(&repo_dir("examples/registry"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "valid, 20 objects in 4 files (13 Recipe, 3 Project, 3 Schedule, 1 NotifyRule)"
        ),
        "{out}"
    );
}

#[test]
fn example_projects_match_the_original_production_set() {
    let text = std::fs::read_to_string(repo_dir("examples/registry/clawdforge.yaml")).unwrap();
    assert_eq!(text.matches("- {path: ").count(), 14, "root + 13 SDKs");
    for name in ["clawdforge", "cauldron", "tradecraft"] {
        let t =
            std::fs::read_to_string(repo_dir(&format!("examples/registry/{name}.yaml"))).unwrap();
        assert!(
            t.contains("git_url: http://gitea.lan:3001/Sulkta-Coop/")
                && !t.contains(":REPLACE_WITH"),
            "{name} has no credential in its git_url"
        );
        assert!(
            t.contains("cron: \"0 2 * * *\""),
            "{name} audits nightly at 02:00"
        );
    }
    let trade = std::fs::read_to_string(repo_dir("examples/registry/tradecraft.yaml")).unwrap();
    assert!(trade.contains("auto_patch: false"));
}

#[test]
fn broken_registry_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/ignored.yaml"), "not: [valid\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not: [valid\n").unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata: {name: Bad}\nspec: {test: t}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("sub/b.yml"), "kind: [\n").unwrap();
    std::fs::write(dir.path().join("sub/c.yaml"), [0xff, 0xfe, b'\n']).unwrap();
    let (code, out) = validate(dir.path());
    assert_eq!(code, 1, "{out}");
    let d = dir.path().display();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "{d}/a.yaml:3:18: metadata.name `Bad` is not a valid name"
        )),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("{d}/sub/b.yml:2:1: invalid YAML: ")),
        "{out}"
    );
    assert_eq!(
        lines[2],
        format!("{d}/sub/c.yaml:1:1: file is not UTF-8 text")
    );
    assert_eq!(lines[3], format!("{d}: 3 errors in 3 of 3 files"));
}

#[test]
fn missing_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .args(["validate", "/nonexistent/registry"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "cannot read registry directory /nonexistent/registry: No such file or directory"
        ),
        "{err}"
    );
}
