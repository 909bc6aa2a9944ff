//! Manifest loading: every malformed case names the exact problem and position, and
//! the positive case of every kind loads.

use crafting_table::manifest::{Kind, Loaded, Selector, SourceFile, Spec, load};

fn load_files(files: &[(&str, &str)]) -> Loaded {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(p, t)| SourceFile {
            path: (*p).to_owned(),
            text: (*t).to_owned(),
        })
        .collect();
    load(&files)
}

/// Loads the files and compares every diagnostic, rendered as the CLI prints it.
#[track_caller]
fn check(files: &[(&str, &str)], expected: &[&str]) {
    let loaded = load_files(files);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(got, expected, "diagnostics differ");
}

/// One file, one document.
#[track_caller]
fn check1(text: &str, expected: &str) {
    check(&[("m.yaml", text)], &[expected]);
}

const RECIPE: &str = "\
apiVersion: crafting-table/v1
kind: Recipe
metadata:
  name: rust-default
spec:
  language: rust
  test: cargo test
  lint: cargo clippy --message-format=json
";

fn project(spec_tail: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: ..\n{spec_tail}"
    )
}

fn schedule(spec: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Schedule\nmetadata:\n  name: nightly\nspec:\n{spec}"
    )
}

fn notify(spec: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: NotifyRule\nmetadata:\n  name: ops\nspec:\n{spec}"
    )
}

const SUB: &str = "  subprojects:\n    - path: .\n      test: make test\n";

// ---- positive cases -------------------------------------------------------------

#[test]
fn every_kind_loads() {
    let text = format!(
        "{RECIPE}---\n{}---\n{}---\n{}",
        project(
            "  default_branch: trunk\n  owners: [team-a]\n  subprojects:\n    - path: ./crates/core/\n      extends: rust-default\n      lint: cargo clippy -- -W clippy::pedantic\n      commands:\n        bench: cargo bench\n      timeout_secs: 900\n      env: {RUST_BACKTRACE: '1'}\n  notify:\n    email: [a@example.com, b@example.com]\n    on: [audit_fail, nightly_summary]\n    auto_patch: true\n  max_concurrent_jobs: 2\n  suspend: {reason: migrating, by: ops, until: '2026-12-01T00:00:00Z'}\n"
        ),
        schedule(
            "  cron: '0 2 * * *'\n  timezone: America/Los_Angeles\n  projects: [app]\n  subprojects: [crates/core]\n  recipe: audit\n  concurrency: replace\n"
        ),
        notify(
            "  projects: '*'\n  email: ops@example.com\n  digest: {time: '07:30', timezone: Europe/Paris}\n"
        ),
    );
    let loaded = load_files(&[("all.yaml", &text)]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.objects.len(), 4);
    for kind in Kind::ALL {
        assert_eq!(loaded.count(kind), 1, "{kind}");
    }
    let Spec::Project(p) = &loaded.objects[1].spec else {
        panic!("not a project")
    };
    assert_eq!(p.default_branch, "trunk");
    assert_eq!(p.subprojects[0].commands["bench"], "cargo bench");
    assert_eq!(p.max_concurrent_jobs, 2);
    assert_eq!(loaded.objects[1].line, 10, "document start line");
    let Spec::Schedule(s) = &loaded.objects[2].spec else {
        panic!("not a schedule")
    };
    assert_eq!(s.projects, Selector::Names(vec!["app".into()]));
    let Spec::NotifyRule(n) = &loaded.objects[3].spec else {
        panic!("not a rule")
    };
    assert_eq!(n.projects, Selector::All);
    assert_eq!(n.digest.time, "07:30");
}

#[test]
fn defaults_fill_in() {
    let loaded = load_files(&[
        ("p.yaml", &project(SUB)),
        (
            "s.yaml",
            &schedule("  cron: '*/15 * * * *'\n  projects: all\n  recipe: test\n"),
        ),
        (
            "n.yaml",
            &notify("  projects: [app]\n  email: ops@example.com\n"),
        ),
    ]);
    assert!(loaded.is_clean(), "{:?}", loaded.diagnostics);
    let Spec::Project(p) = &loaded.objects[0].spec else {
        panic!()
    };
    assert_eq!(p.default_branch, "main");
    assert_eq!(p.max_concurrent_jobs, 1);
    let Spec::Schedule(s) = &loaded.objects[1].spec else {
        panic!()
    };
    assert_eq!(s.timezone, "UTC");
    assert_eq!(s.subprojects, Selector::All);
    let Spec::NotifyRule(n) = &loaded.objects[2].spec else {
        panic!()
    };
    assert_eq!(
        (n.digest.time.as_str(), n.digest.timezone.as_str()),
        ("06:00", "America/Los_Angeles")
    );
}

#[test]
fn empty_files_and_documents_are_fine() {
    check(
        &[
            ("a.yaml", ""),
            ("b.yaml", "# nothing yet\n"),
            ("c.yaml", "---\n---\n"),
        ],
        &[],
    );
}

#[test]
fn flow_style_and_multiple_files_load() {
    let loaded = load_files(&[
        ("recipes.yaml", RECIPE),
        (
            "p.yaml",
            "{apiVersion: crafting-table/v1, kind: Project, metadata: {name: flow}, spec: {git_url: 'file:///srv/x.git', subprojects: [{path: ., extends: rust-default}]}}\n",
        ),
    ]);
    assert!(loaded.is_clean(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.objects.len(), 2);
}

// ---- syntax and shape -----------------------------------------------------------

#[test]
fn bad_yaml_syntax() {
    check1(
        "apiVersion: [crafting-table/v1\nkind: Recipe\n",
        "m.yaml:2:5: invalid YAML: illegal placement of ':' indicator",
    );
}

#[test]
fn bad_yaml_tab_indentation() {
    check1(
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n\tname: x\n",
        "m.yaml:4:2: invalid YAML: tabs disallowed within this context (block indentation)",
    );
}

#[test]
fn document_is_not_a_mapping() {
    check1(
        "- just\n- a list\n",
        "m.yaml:1:1: a manifest document must be a mapping with apiVersion, kind, metadata and spec",
    );
}

#[test]
fn missing_kind() {
    check1(
        "apiVersion: crafting-table/v1\nmetadata: {name: x}\nspec: {}\n",
        "m.yaml:1:1: missing field `kind`",
    );
}

#[test]
fn unknown_kind() {
    check1(
        "apiVersion: crafting-table/v1\nkind: Pipeline\nmetadata: {name: x}\nspec: {}\n",
        "m.yaml:2:7: unknown kind `Pipeline`, expected one of Project, Recipe, Schedule, NotifyRule",
    );
}

#[test]
fn wrong_api_version() {
    check1(
        "apiVersion: crafting-table/v2\nkind: Recipe\nmetadata: {name: x}\nspec: {test: t}\n",
        "m.yaml:1:13: apiVersion: unknown variant `crafting-table/v2`, expected `crafting-table/v1`",
    );
}

#[test]
fn missing_spec() {
    check1(
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: x\n",
        "m.yaml:1:1: missing field `spec`",
    );
}

#[test]
fn missing_required_field_git_url() {
    check1(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata: {name: x}\nspec:\n  subprojects: []\n",
        "m.yaml:5:3: spec: missing field `git_url`",
    );
}

#[test]
fn unknown_top_level_field() {
    check1(
        &format!("{RECIPE}status: {{}}\n"),
        "m.yaml:9:1: unknown field `status`, expected one of `apiVersion`, `kind`, `metadata`, `spec`",
    );
}

#[test]
fn unknown_spec_field_typo() {
    check1(
        &project("  subprojects:\n    - path: .\n      tset: make test\n"),
        "m.yaml:9:7: spec.subprojects[0]: unknown field `tset`, expected one of `path`, `language`, `extends`, `build`, `test`, `lint`, `audit`, `commands`, `timeout_secs`, `network`, `workspace`, `secrets`, `env`",
    );
}

#[test]
fn unknown_metadata_field() {
    check1(
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: x\n  namespace: prod\nspec: {test: t}\n",
        "m.yaml:5:3: metadata: unknown field `namespace`, expected one of `name`, `description`, `labels`",
    );
}

#[test]
fn wrong_type_timeout() {
    check1(
        &project("  subprojects:\n    - path: .\n      test: t\n      timeout_secs: ten\n"),
        "m.yaml:10:21: spec.subprojects[0].timeout_secs: invalid type: string \"ten\", expected u64",
    );
}

#[test]
fn wrong_type_subprojects_not_a_list() {
    check1(
        &project("  subprojects: .\n"),
        "m.yaml:7:16: spec.subprojects: invalid type: string \".\", expected a sequence",
    );
}

#[test]
fn wrong_type_auto_patch() {
    check1(
        &project(&format!("{SUB}  notify:\n    auto_patch: sometimes\n")),
        "m.yaml:11:17: spec.notify.auto_patch: invalid type: string \"sometimes\", expected a boolean",
    );
}

#[test]
fn negative_timeout() {
    check1(
        &project("  subprojects:\n    - path: .\n      test: t\n      timeout_secs: -5\n"),
        "m.yaml:10:21: spec.subprojects[0].timeout_secs: invalid type: integer `-5`, expected u64",
    );
}

#[test]
fn duplicate_key_points_at_the_repeat() {
    check1(
        &format!("{RECIPE}  test: cargo nextest run\n"),
        "m.yaml:9:3: duplicate key `test` (first set at line 7)",
    );
}

// ---- names ----------------------------------------------------------------------

#[test]
fn bad_name_uppercase() {
    check1(
        &RECIPE.replace("rust-default", "Rust_Default"),
        "m.yaml:4:9: metadata.name `Rust_Default` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
    );
}

#[test]
fn bad_name_trailing_dash() {
    check1(
        &RECIPE.replace("rust-default", "rust-"),
        "m.yaml:4:9: metadata.name `rust-` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
    );
}

#[test]
fn bad_name_too_long() {
    let long = "a".repeat(64);
    check1(
        &RECIPE.replace("rust-default", &long),
        &format!(
            "m.yaml:4:9: metadata.name `{long}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
        ),
    );
}

#[test]
fn duplicate_name_in_two_files_names_both() {
    check(
        &[
            ("a.yaml", RECIPE),
            ("b/c.yaml", &format!("# moved\n{RECIPE}")),
        ],
        &[
            "a.yaml:4:9: duplicate Recipe `rust-default`: also defined at b/c.yaml:5:9",
            "b/c.yaml:5:9: duplicate Recipe `rust-default`: also defined at a.yaml:4:9",
        ],
    );
}

#[test]
fn same_name_in_different_kinds_is_fine() {
    let text = format!(
        "{RECIPE}---\n{}",
        project(SUB).replace("name: app", "name: rust-default")
    );
    check(&[("m.yaml", &text)], &[]);
}

// ---- references -----------------------------------------------------------------

#[test]
fn unknown_recipe_reference() {
    check(
        &[
            ("r.yaml", RECIPE),
            (
                "p.yaml",
                &project("  subprojects:\n    - path: .\n      extends: rust-defualt\n"),
            ),
        ],
        &["p.yaml:9:16: recipe `rust-defualt` does not exist; defined recipes: rust-default"],
    );
}

#[test]
fn unknown_recipe_reference_without_any_recipe() {
    check1(
        &project("  subprojects:\n    - path: .\n      extends: python\n"),
        "m.yaml:9:16: recipe `python` does not exist: no Recipe is defined in this registry",
    );
}

#[test]
fn recipe_cycle() {
    let a = "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata: {name: a}\nspec:\n  extends: b\n  test: t\n";
    let b =
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata: {name: b}\nspec:\n  extends: a\n";
    check(
        &[("a.yaml", a), ("b.yaml", b)],
        &[
            "a.yaml:5:12: recipe `a` extends itself: a → b → a",
            "b.yaml:5:12: recipe `b` extends itself: b → a → b",
        ],
    );
}

#[test]
fn subproject_without_commands() {
    check1(
        &project("  subprojects:\n    - path: docs\n      language: markdown\n"),
        "m.yaml:8:7: subproject `docs` has no commands: set build, test, lint, audit or commands, or `extends` a recipe",
    );
}

#[test]
fn project_without_subprojects() {
    check1(
        &project("  subprojects: []\n"),
        "m.yaml:7:16: a project needs at least one subproject (use `path: .` for the repository root)",
    );
}

// ---- paths ----------------------------------------------------------------------

#[test]
fn path_escaping_the_repo() {
    check1(
        &project("  subprojects:\n    - path: ../x\n      test: t\n"),
        "m.yaml:8:13: subproject path `../x` leaves the repository",
    );
}

#[test]
fn path_escaping_after_descending() {
    check1(
        &project("  subprojects:\n    - path: a/../../etc\n      test: t\n"),
        "m.yaml:8:13: subproject path `a/../../etc` leaves the repository",
    );
}

#[test]
fn absolute_path() {
    check1(
        &project("  subprojects:\n    - path: /etc\n      test: t\n"),
        "m.yaml:8:13: subproject path `/etc` is absolute: give it relative to the repository root",
    );
}

#[test]
fn duplicate_subproject_path_after_normalising() {
    check1(
        &project(
            "  subprojects:\n    - path: sdk/go\n      test: t\n    - path: ./sdk//go/\n      test: t\n",
        ),
        "m.yaml:10:13: subproject path `sdk/go` is already used by subprojects[0]",
    );
}

#[test]
fn schedule_subproject_path_escaping() {
    check1(
        &schedule(
            "  cron: '0 2 * * *'\n  projects: '*'\n  subprojects: [../up]\n  recipe: audit\n",
        ),
        "m.yaml:8:17: subproject path `../up` leaves the repository",
    );
}

// ---- cron and time zones --------------------------------------------------------

#[test]
fn cron_with_seconds_field() {
    check1(
        &schedule("  cron: '0 0 2 * * *'\n  projects: '*'\n  recipe: audit\n"),
        "m.yaml:6:9: cron `0 0 2 * * *` has 6 fields; expected 5 (minute hour day-of-month month day-of-week)",
    );
}

#[test]
fn cron_out_of_range() {
    check1(
        &schedule("  cron: '0 25 * * *'\n  projects: '*'\n  recipe: audit\n"),
        "m.yaml:6:9: cron `0 25 * * *` is not valid: Component error: Number out of bounds",
    );
}

#[test]
fn cron_garbage() {
    check1(
        &schedule("  cron: 'every night'\n  projects: '*'\n  recipe: audit\n"),
        "m.yaml:6:9: cron `every night` has 2 fields; expected 5 (minute hour day-of-month month day-of-week)",
    );
}

#[test]
fn cron_nickname_is_accepted() {
    check(
        &[(
            "m.yaml",
            &schedule("  cron: '@daily'\n  projects: '*'\n  recipe: audit\n"),
        )],
        &[],
    );
}

#[test]
fn bad_time_zone() {
    check1(
        &schedule(
            "  cron: '0 2 * * *'\n  timezone: Pacific/Springfield\n  projects: '*'\n  recipe: audit\n",
        ),
        "m.yaml:7:13: time zone `Pacific/Springfield` is not an IANA time zone name (e.g. `America/Los_Angeles`, `UTC`)",
    );
}

#[test]
fn bad_digest_time_zone_and_time() {
    check(
        &[(
            "m.yaml",
            &notify(
                "  projects: '*'\n  email: ops@example.com\n  digest: {time: '25:00', timezone: PST}\n",
            ),
        )],
        &[
            "m.yaml:8:18: digest.time `25:00` is not a time of day: use HH:MM, 24-hour clock",
            "m.yaml:8:37: time zone `PST` is not an IANA time zone name (e.g. `America/Los_Angeles`, `UTC`)",
        ],
    );
}

#[test]
fn bad_concurrency() {
    check1(
        &schedule("  cron: '0 2 * * *'\n  projects: '*'\n  recipe: audit\n  concurrency: never\n"),
        "m.yaml:9:16: spec.concurrency: unknown variant `never`, expected one of `forbid`, `allow`, `replace`",
    );
}

#[test]
fn bad_selector_word() {
    check1(
        &schedule("  cron: '0 2 * * *'\n  projects: everything\n  recipe: audit\n"),
        "m.yaml:7:13: spec.projects: `everything` is not a selector: use \"*\", `all` or a list such as [everything]",
    );
}

#[test]
fn schedule_recipe_is_not_a_command_name() {
    check1(
        &schedule("  cron: '0 2 * * *'\n  projects: '*'\n  recipe: 'cargo audit'\n"),
        "m.yaml:8:11: recipe `cargo audit` is not a command name: use the name of a command such as `audit` or `test`",
    );
}

#[test]
fn schedule_for_unknown_project_is_a_warning() {
    let loaded = load_files(&[(
        "m.yaml",
        &schedule("  cron: '0 2 * * *'\n  projects: [api-only]\n  recipe: audit\n"),
    )]);
    let got: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "m.yaml:7:14: warning: project `api-only` is not defined in this registry (fine if it is registered through the API)"
        ]
    );
    assert!(loaded.is_clean());
    assert_eq!(loaded.objects.len(), 1);
}

// ---- ranges, events, addresses --------------------------------------------------

#[test]
fn timeout_zero() {
    check1(
        &project("  subprojects:\n    - path: .\n      test: t\n      timeout_secs: 0\n"),
        "m.yaml:10:21: timeout_secs 0 is out of range: use 1 to 86400 seconds",
    );
}

#[test]
fn timeout_too_long_in_recipe() {
    check1(
        &format!("{RECIPE}  timeout_secs: 100000\n"),
        "m.yaml:9:17: timeout_secs 100000 is out of range: use 1 to 86400 seconds",
    );
}

#[test]
fn max_concurrent_jobs_zero() {
    check1(
        &project(&format!("{SUB}  max_concurrent_jobs: 0\n")),
        "m.yaml:10:24: max_concurrent_jobs 0 is out of range: use 1 to 64",
    );
}

#[test]
fn unknown_notify_event() {
    check1(
        &project(&format!(
            "{SUB}  notify:\n    on: [audit_fail, lint_warning]\n"
        )),
        "m.yaml:11:22: spec.notify.on[1]: unknown variant `lint_warning`, expected one of `audit_pass`, `audit_fail`, `test_fail`, `lint_warn`, `cve_found`, `patch_drafted`, `nightly_summary`",
    );
}

#[test]
fn bad_email_in_project() {
    check1(
        &project(&format!("{SUB}  notify:\n    email: ops.example.com\n")),
        "m.yaml:11:12: `ops.example.com` is not an e-mail address",
    );
}

#[test]
fn bad_email_in_list() {
    check1(
        &notify("  projects: '*'\n  email: [ok@example.com, 'two@@example.com']\n"),
        "m.yaml:7:27: `two@@example.com` is not an e-mail address",
    );
}

#[test]
fn bad_env_name_and_empty_command() {
    check(
        &[(
            "m.yaml",
            &project("  subprojects:\n    - path: .\n      test: ''\n      env: {'BAD-NAME': x}\n"),
        )],
        &[
            "m.yaml:9:13: command `test` is empty",
            "m.yaml:10:13: environment variable name `BAD-NAME` is not valid: use letters, digits and `_`, not starting with a digit",
        ],
    );
}

#[test]
fn well_known_command_under_commands() {
    check1(
        &project("  subprojects:\n    - path: .\n      commands:\n        test: make test\n"),
        "m.yaml:10:9: command `test` belongs in its own field `test:`, not under `commands`",
    );
}

#[test]
fn bad_suspend_until() {
    check1(
        &project(&format!(
            "{SUB}  suspend: {{reason: upgrade, until: tomorrow}}\n"
        )),
        "m.yaml:10:37: suspend.until `tomorrow` is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)",
    );
}

#[test]
fn bad_git_url_scheme() {
    check1(
        &project(SUB).replace("git_url: ..", "git_url: ftp://host/repo.git"),
        "m.yaml:6:12: git_url scheme `ftp` is not supported: use http, https, ssh, git or file",
    );
}

// ---- many problems at once ------------------------------------------------------

#[test]
fn all_problems_are_reported_and_good_objects_survive() {
    let broken = "apiVersion: crafting-table/v1\nkind: Schedule\nmetadata: {name: s}\nspec:\n  cron: '61 * * * *'\n  timezone: Mars/Olympus\n  projects: '*'\n  recipe: audit\n";
    let loaded = load_files(&[
        ("good.yaml", RECIPE),
        ("bad-syntax.yaml", "a: [\n"),
        ("bad.yaml", broken),
    ]);
    assert_eq!(loaded.error_count(), 3, "{:?}", loaded.diagnostics);
    assert_eq!(loaded.objects.len(), 1);
    assert_eq!(loaded.objects[0].name, "rust-default");
    let rejected: Vec<_> = loaded
        .rejected
        .iter()
        .map(|r| (r.file.as_str(), r.kind, r.name.as_deref()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("bad-syntax.yaml", None, None),
            ("bad.yaml", Some(Kind::Schedule), Some("s"))
        ]
    );
}

#[test]
fn rejected_document_keeps_its_identity_when_readable() {
    let loaded = load_files(&[("m.yaml", &project("  subprojects: 3\n"))]);
    assert_eq!(loaded.rejected.len(), 1);
    assert_eq!(loaded.rejected[0].kind, Some(Kind::Project));
    assert_eq!(loaded.rejected[0].name.as_deref(), Some("app"));
}

/// Mutations of a valid registry (bytes flipped, dropped, duplicated; lines cut)
/// never panic the loader, and every rejection has a position in its file.
#[test]
fn mutated_manifests_never_panic() {
    let base = format!(
        "{RECIPE}---\n{}---\n{}",
        project(
            "  subprojects:\n    - {path: ., extends: rust-default, env: {A: b}}\n  notify: {email: [a@b.c], on: [cve_found]}\n"
        ),
        schedule(
            "  cron: '0 2 * * *'\n  timezone: Europe/Paris\n  projects: [app]\n  recipe: test\n"
        )
    );
    let alphabet = b"{}[]:,-'\"#&*!|>%@`\t\n ?abc019";
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut bytes = base.clone().into_bytes();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                _ => bytes.truncate(at.max(1)),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let loaded = load_files(&[("m.yaml", &text)]);
        for d in &loaded.diagnostics {
            assert!(d.line >= 1 && d.col >= 1, "{d} for input {text:?}");
        }
    }
}

#[test]
fn bad_webhooks_and_a_rule_that_notifies_nobody() {
    check(
        &[(
            "m.yaml",
            &notify(
                "  projects: '*'\n  webhook: {url: 'ftp://chat.lan/hook', secret_env: 'bad name'}\n",
            ),
        )],
        &[
            "m.yaml:7:18: webhook.url `ftp://chat.lan/hook` is not an http:// or https:// URL",
            "m.yaml:7:53: webhook.secret_env `bad name` is not an environment variable name",
        ],
    );
    check1(
        &notify("  projects: '*'\n  on: [cve_found]\n"),
        "m.yaml:6:3: a NotifyRule needs `email`, `webhook` or both: it notifies nobody",
    );
    check(
        &[(
            "m.yaml",
            &notify(
                "  projects: '*'\n  webhook: {url: 'https://chat.lan/hook', secret_env: CHAT_KEY}\n",
            ),
        )],
        &[],
    );
}

#[test]
fn a_credential_in_git_url_is_refused() {
    check1(
        &project_with_url("https://ci:s3cr3t@gitea.lan/team/app.git"),
        "m.yaml:7:12: git_url `https://ci:***@gitea.lan/team/app.git` carries a credential: a token in a manifest is a token in a repository. Put `https://user:token@host` in the file named by CRAFTING_GIT_CREDENTIALS (git's credential-store format) and write the URL without it",
    );
    // A user name alone (ssh) is no credential.
    check(
        &[(
            "m.yaml",
            &project_with_url("ssh://git@gitea.lan/team/app.git"),
        )],
        &[],
    );
}

fn project_with_url(url: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  subprojects: [{{path: ., test: 'true'}}]\n  git_url: {url}\n"
    )
}
