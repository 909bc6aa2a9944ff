//! The digest end to end: real jobs, a real SMTP server (mailin-embedded), the
//! messages parsed with a MIME parser; STARTTLS with a private CA; a relay that is
//! down at first; DST days; immediate webhooks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use crafting_table::clock::ManualClock;
use crafting_table::farm::FarmOptions;
use crafting_table::ledger::Ledger;
use crafting_table::notify::digest::{DigestSettings, tick};
use crafting_table::reconciler::reconcile_once;
use crafting_table::registry::Registry;
use mailin_embedded::response::{OK, Response};
use serde_json::{Value, json};

use crate::helpers::Repo;
use crate::seams::{Client, start_with};

/// Messages a real SMTP server received.
#[derive(Clone, Default)]
struct Inbox {
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for Inbox {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.current.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let msg = std::mem::take(&mut self.current);
        self.received.lock().unwrap().push(msg);
        OK
    }
}

impl Inbox {
    fn messages(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// Starts mailin-embedded on `listener` (STARTTLS with `tls` = (cert, key)).
fn smtp_server(listener: std::net::TcpListener, tls: Option<(PathBuf, PathBuf)>) -> Inbox {
    let inbox = Inbox::default();
    let mut server = mailin_embedded::Server::new(inbox.clone());
    let ssl = match tls {
        Some((cert, key)) => mailin_embedded::SslConfig::SelfSigned {
            cert_path: cert.display().to_string(),
            key_path: key.display().to_string(),
        },
        None => mailin_embedded::SslConfig::None,
    };
    server
        .with_name("smtp.test")
        .with_ssl(ssl)
        .expect("tls config")
        .with_num_threads(4)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("smtp server: {e}");
        }
    });
    inbox
}

const CLEAN_AUDIT: &str = r#"{"database":{"advisory-count":1,"last-commit":null,"last-updated":null},"lockfile":{"dependency-count":3},"settings":{},"vulnerabilities":{"found":false,"count":0,"list":[]},"warnings":{}}"#;

fn audit_capture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures/cargo-audit.log"),
    )
    .unwrap()
}

/// A registry with `app` (subscribed) and `other` (not), both failing audits
/// printed from their repository, and a rule for ops@example.com at 06:00 LA.
fn registry(dir: &Path, app: &Repo, other: &Repo) {
    let project = |name: &str, repo: &Repo| {
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: {}\n  languages: [rust]\n  subprojects:\n    - path: .\n      language: rust\n      audit: 'cat report.json; exit $(cat code)'\n",
            repo.path.display()
        )
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("app.yaml"), project("app", app)).unwrap();
    std::fs::write(dir.join("other.yaml"), project("other", other)).unwrap();
    std::fs::write(
        dir.join("rule.yaml"),
        "apiVersion: crafting-table/v1\nkind: NotifyRule\nmetadata:\n  name: ops\nspec:\n  projects: [app]\n  email: ops@example.com\n  digest:\n    time: \"06:00\"\n    timezone: America/Los_Angeles\n",
    )
    .unwrap();
}

fn failing(repo: &Repo) {
    repo.write("report.json", &audit_capture())
        .write("code", "1\n")
        .commit("vulnerable lockfile");
}

async fn run_audit(api: &Client, farm: &crafting_table::farm::Farm, project: &str) -> Value {
    let mut events = farm.events.subscribe();
    let (s, v) = api
        .call(
            "POST",
            &format!("/projects/{project}/jobs"),
            Some(json!({"recipe": "audit"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("job finished")
            .unwrap();
        if let crafting_table::events::FarmEvent::JobFinished { job, .. } = &*e
            && job.id == id
        {
            break;
        }
    }
    api.call("GET", &format!("/jobs/{id}"), None).await.1
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a MIME message")
}

/// 2026-11-25 05:00 in Los Angeles (13:00 UTC).
const DAY1: i64 = 1_795_611_600_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_cves_reach_the_subscriber_once_and_their_fix_the_next_day() {
    assert_eq!(
        Utc.timestamp_millis_opt(DAY1).unwrap().to_rfc3339(),
        "2026-11-25T13:00:00+00:00"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (app, other) = (Repo::new(), Repo::new());
    failing(&app);
    failing(&other);
    registry(&tmp.path().join("registry"), &app, &other);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = smtp_server(listener, None);
    let clock = ManualClock::at_ms(DAY1);
    let farm = start_with(
        &tmp.path().join("data"),
        &[
            (
                "CRAFTING_REGISTRY",
                tmp.path().join("registry").display().to_string(),
            ),
            ("CRAFTING_SMTP_HOST", "127.0.0.1".into()),
            ("CRAFTING_SMTP_PORT", port.to_string()),
            ("CRAFTING_SMTP_FROM", "farm@example.com".into()),
            ("CRAFTING_PUBLIC_URL", "http://farm.lan:8810".into()),
        ],
        FarmOptions {
            clock: clock.clone(),
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    let job = run_audit(&api, &farm, "app").await;
    assert_eq!(job["job"]["status"], "failed", "{job}");
    run_audit(&api, &farm, "other").await;
    clock.advance_ms(60_000);

    // A dry run renders and sends nothing.
    let (s, dry) = api
        .call(
            "POST",
            "/admin/digest/run-now",
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["digests"][0]["status"], "dry_run", "{dry}");
    assert!(inbox.messages().is_empty());

    // Run-now sends exactly one message to the subscriber.
    let (s, sent) = api
        .call("POST", "/admin/digest/run-now", Some(json!({})))
        .await;
    assert_eq!(s, 200, "{sent}");
    let items = sent["digests"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{sent}");
    assert_eq!(items[0]["status"], "sent", "{sent}");
    assert_eq!(items[0]["date"], "2026-11-25");
    assert_eq!(
        items[0]["content"], dry["digests"][0]["content"],
        "the dry run showed what was sent"
    );
    let msgs = inbox.messages();
    assert_eq!(msgs.len(), 1);
    let m = parse(&msgs[0]);
    assert_eq!(m.text_body_count(), 1);
    assert_eq!(m.html_body_count(), 1);
    let text = m.body_text(0).unwrap().into_owned();
    let html = m.body_html(0).unwrap().into_owned();
    assert_eq!(
        m.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("ops@example.com")
    );
    assert_eq!(m.message_id(), items[0]["message_id"].as_str());
    assert!(
        m.subject().unwrap().contains("new CVE"),
        "{:?}",
        m.subject()
    );
    for body in [&text, &html] {
        assert!(body.contains("RUSTSEC-2020-0071"), "{body}");
        assert!(body.contains("0.2.23"), "the fixed version: {body}");
        assert!(
            body.contains("== app ==") || body.contains("<h2>app</h2>"),
            "{body}"
        );
        assert!(!body.contains("other"), "an unsubscribed project: {body}");
        assert!(body.contains("http://farm.lan:8810/jobs/"), "{body}");
    }
    // CVEs come first among the new findings.
    let first_new = text
        .lines()
        .skip_while(|l| !l.starts_with("New findings"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_new.contains("[cve/"), "{text}");

    // Again: nothing is sent, and it says so.
    let (_, again) = api
        .call("POST", "/admin/digest/run-now", Some(json!({})))
        .await;
    assert_eq!(again["digests"][0]["status"], "already_sent", "{again}");
    assert_eq!(inbox.messages().len(), 1);
    let (_, list) = api.call("GET", "/digests", None).await;
    let statuses: Vec<&str> = list["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["sent", "dry_run"], "{list}");

    // The next day the lockfile is fixed: the finding is listed as fixed.
    clock.set_ms(DAY1 + DAY_MS);
    app.write("report.json", CLEAN_AUDIT)
        .write("code", "0\n")
        .commit("bump time to 0.2.23");
    let job = run_audit(&api, &farm, "app").await;
    assert_eq!(job["job"]["status"], "succeeded", "{job}");
    clock.advance_ms(60_000);
    let (_, preview) = api.call("GET", "/digests/2026-11-26", None).await;
    let (_, next) = api
        .call("POST", "/admin/digest/run-now", Some(json!({})))
        .await;
    assert_eq!(next["digests"][0]["status"], "sent", "{next}");
    assert_eq!(next["digests"][0]["date"], "2026-11-26");
    assert_eq!(preview["digests"][0], next["digests"][0]["content"]);
    let msgs = inbox.messages();
    assert_eq!(msgs.len(), 2);
    let text = parse(&msgs[1]).body_text(0).unwrap().into_owned();
    let fixed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Fixed ("))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .collect();
    assert!(
        fixed.iter().any(|l| l.contains("RUSTSEC-2020-0071")),
        "{text}"
    );
    assert!(!text.contains("New findings"), "{text}");

    // A bad date is a JSON 400.
    let (s, bad) = api.call("GET", "/digests/2026-13-40", None).await;
    assert_eq!(s, 400, "{bad}");
    assert_eq!(bad["error"]["code"], "bad_request");
    farm.stop("test over").await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert, key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "crafting-table test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

async fn wait_digest_status(api: &Client, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = api.call("GET", "/digests", None).await;
        if list["digests"][0]["status"] == want {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "digest never became {want}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_private_ca_and_a_relay_that_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(tmp.path());
    let (app, other) = (Repo::new(), Repo::new());
    failing(&app);
    failing(&other);
    registry(&tmp.path().join("registry"), &app, &other);
    // The relay's port is known, but nothing listens yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let farm = start_with(
        &tmp.path().join("data"),
        &[
            (
                "CRAFTING_REGISTRY",
                tmp.path().join("registry").display().to_string(),
            ),
            ("CRAFTING_SMTP_HOST", "127.0.0.1".into()),
            ("CRAFTING_SMTP_PORT", port.to_string()),
            ("CRAFTING_SMTP_TLS", "starttls".into()),
            ("CRAFTING_SMTP_CA_FILE", ca.display().to_string()),
            ("CRAFTING_SMTP_FROM", "farm@example.com".into()),
        ],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    run_audit(&api, &farm, "app").await;

    // The relay is down: the digest stays pending, with the reason.
    let (_, first) = api
        .call("POST", "/admin/digest/run-now", Some(json!({})))
        .await;
    assert_eq!(first["digests"][0]["status"], "pending", "{first}");
    assert!(
        first["digests"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "{first}"
    );
    // A second run-now neither sends nor queues another.
    let (_, again) = api
        .call("POST", "/admin/digest/run-now", Some(json!({})))
        .await;
    assert_eq!(again["digests"][0]["status"], "already_sent", "{again}");

    // The relay comes back (STARTTLS, certificate from the private CA): the pending
    // digest goes out by itself, once.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let inbox = smtp_server(listener, Some((cert, key)));
    let list = wait_digest_status(&api, "sent").await;
    assert_eq!(list["digests"].as_array().unwrap().len(), 1, "{list}");
    assert!(
        list["digests"][0]["attempts"].as_i64().unwrap() >= 2,
        "{list}"
    );
    let msgs = inbox.messages();
    assert_eq!(msgs.len(), 1);
    let m = parse(&msgs[0]);
    assert!(m.body_text(0).unwrap().contains("RUSTSEC-2020-0071"));
    farm.stop("test over").await;
}

#[test]
fn a_six_oclock_digest_fires_once_on_both_dst_days() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("rule.yaml"),
        "apiVersion: crafting-table/v1\nkind: NotifyRule\nmetadata:\n  name: ops\nspec:\n  projects: \"*\"\n  email: ops@example.com\n  on: [nightly_summary]\n",
    )
    .unwrap();
    let settings = DigestSettings {
        default_time: "06:00".into(),
        default_zone: "America/Los_Angeles".into(),
        public_url: "http://farm".into(),
        smtp_enabled: true,
    };
    let la = chrono_tz::America::Los_Angeles;
    for (y, m, d) in [(2026, 3, 8), (2026, 11, 1)] {
        let mut ledger = Ledger::open(&tmp.path().join(format!("ledger-{m}.sqlite3"))).unwrap();
        reconcile_once(&Registry::Dir(reg.clone()), &mut ledger, 0).unwrap();
        // Every 10 minutes from the day before to the day after the change.
        let eve = chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap() - chrono::Duration::days(1);
        let start = la
            .from_local_datetime(&eve.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc);
        let mut fired = Vec::new();
        for step in 0..(3 * 24 * 6) {
            let now = start + chrono::Duration::minutes(10 * step);
            let r = tick(&mut ledger, &settings, now).unwrap();
            fired.extend(r.fired.into_iter().map(|(_, date, _)| date));
        }
        let day = |offset: i64| {
            (eve + chrono::Duration::days(offset))
                .format("%Y-%m-%d")
                .to_string()
        };
        // The first tick (at midnight) learns the unit; then one fire a day, the
        // change day included.
        assert_eq!(fired, [day(0), day(1), day(2)], "{y}-{m}-{d}");
        let fires = ledger
            .digest_fires("ops@example.com|06:00|America/Los_Angeles")
            .unwrap();
        let local: Vec<String> = fires
            .iter()
            .map(|ms| {
                Utc.timestamp_millis_opt(*ms)
                    .unwrap()
                    .with_timezone(&la)
                    .format("%m-%d %H:%M")
                    .to_string()
            })
            .collect();
        assert_eq!(local.len(), 3, "{local:?}");
        assert!(local.iter().all(|s| s.ends_with("06:00")), "{local:?}");
        // A restart that ticks the same instant again fires nothing twice.
        let again = start + chrono::Duration::minutes(10 * (3 * 24 * 6 - 1));
        assert!(
            tick(&mut ledger, &settings, again)
                .unwrap()
                .fired
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_a_cve_at_once_signed() {
    use axum::routing::post;
    type Calls = Arc<Mutex<Vec<(Option<String>, String)>>>;
    let received: Calls = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (r2, a2) = (received.clone(), arrived.clone());
    let hook = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let (r, a) = (r2.clone(), a2.clone());
            async move {
                let sig = headers
                    .get("x-crafting-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                r.lock().unwrap().push((sig, body));
                a.notify_one();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let tmp = tempfile::tempdir().unwrap();
    let (app, other) = (Repo::new(), Repo::new());
    failing(&app);
    failing(&other);
    let reg = tmp.path().join("registry");
    registry(&reg, &app, &other);
    std::fs::write(
        reg.join("hook.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: NotifyRule\nmetadata:\n  name: chat\nspec:\n  projects: [app]\n  on: [cve_found]\n  webhook:\n    url: {hook_url}\n    secret_env: CHAT_HOOK_KEY\n"
        ),
    )
    .unwrap();
    let farm = start_with(
        &tmp.path().join("data"),
        &[("CRAFTING_REGISTRY", reg.display().to_string())],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            secrets: Arc::new(|name: &str| (name == "CHAT_HOOK_KEY").then(|| "s3cret".to_owned())),
            ..FarmOptions::default()
        },
    )
    .await;
    let outcome = farm.reconcile.run_now().await.unwrap();
    assert_eq!(outcome.error_count(), 0, "{:?}", outcome.diagnostics);
    let api = Client::of(&farm);
    let job = run_audit(&api, &farm, "app").await;
    run_audit(&api, &farm, "other").await;
    // The call arrives (notify_one keeps the wake-up if it came first).
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("a webhook call");
    let (sig, body) = received.lock().unwrap()[0].clone();
    assert_eq!(
        sig.as_deref(),
        Some(crafting_table::notify::webhook::sign("s3cret", body.as_bytes()).as_str())
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "cve_found", "{v}");
    assert_eq!(v["project"], "app");
    assert_eq!(v["job"]["id"], job["job"]["id"]);
    assert_eq!(v["job"]["status"], "failed");
    assert!(v["findings"]["new"].as_i64().unwrap() >= 1, "{v}");
    // `other` is not covered by the rule: one call only.
    assert_eq!(received.lock().unwrap().len(), 1);
    farm.stop("test over").await;
}

#[test]
fn rendering_is_stable() {
    use crafting_table::notify::content::*;
    use crafting_table::notify::render;
    let finding = |kind: &str, sev: &str, code: &str, msg: &str, fix: Option<&str>| FindingEntry {
        kind: kind.into(),
        severity: sev.into(),
        tool: if kind == "cve" {
            "cargo-audit"
        } else {
            "clippy"
        }
        .into(),
        recipe: if kind == "cve" { "audit" } else { "lint" }.into(),
        subproject: ".".into(),
        file: Some(
            if kind == "cve" {
                "Cargo.lock"
            } else {
                "src/main.rs"
            }
            .into(),
        ),
        line: (kind != "cve").then_some(12),
        code: Some(code.into()),
        message: msg.into(),
        suggested_fix: fix.map(str::to_owned),
        fingerprint: "0123456789abcdef".into(),
    };
    let c = DigestContent {
        recipient: "ops@example.com".into(),
        time: "06:00".into(),
        zone: "America/Los_Angeles".into(),
        date: "2026-11-25".into(),
        window_start: "2026-11-24T14:00:00Z".into(),
        window_end: "2026-11-25T14:00:00Z".into(),
        window_local: "2026-11-24 06:00 PST to 2026-11-25 06:00 PST".into(),
        projects: vec![ProjectSection {
            project: "webapp".into(),
            jobs: vec![JobEntry {
                id: "8f14e45fceea167a5a36dedd4bea2543".into(),
                recipe: "audit".into(),
                subproject: ".".into(),
                sha: Some("3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a".into()),
                status: "failed".into(),
                exit_code: Some(1),
                duration_secs: Some(12.25),
                events: vec![
                    crafting_table::manifest::NotifyEvent::AuditFail,
                    crafting_table::manifest::NotifyEvent::CveFound,
                ],
                url: "http://farm.lan:8810/jobs/8f14e45fceea167a5a36dedd4bea2543".into(),
            }],
            new_findings: vec![finding(
                "cve",
                "error",
                "RUSTSEC-2020-0071",
                "Potential segfault in the time crate (time 0.1.45)",
                Some("bump to 0.2.23"),
            )],
            fixed_findings: vec![finding(
                "lint",
                "warn",
                "clippy::needless_return",
                "unneeded `return` statement <here>",
                None,
            )],
            unchanged: 7,
            pull_requests: vec![PullRequestEntry {
                attempt: 3,
                url: Some("https://gitea.lan/team/webapp/pulls/42".into()),
                branch: Some("crafting-table/auto/41-1".into()),
            }],
        }],
        quiet_day_wanted: false,
        public_url: "http://farm.lan:8810".into(),
    };
    let r = render::render(&c);
    insta::assert_snapshot!("digest_subject", r.subject);
    insta::assert_snapshot!("digest_text", r.text);
    insta::assert_snapshot!("digest_html", r.html);
    assert!(r.html.contains("&lt;here&gt;"), "HTML is escaped");
}
