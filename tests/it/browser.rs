//! The web pages in a real browser: Debian's headless Chromium driven over the
//! WebDriver protocol (Debian's `chromedriver`) by `fantoccini`. Log in with a
//! token, see the project in the farm grid, start a job from the page and watch
//! its log arrive while it runs, read its findings, check contrast and the phone
//! width, log out, and see that a second token gets a 404 page for the first
//! one's project. Screenshots of every page land in `target/ui-screenshots/`
//! (`CRAFTING_SCREENSHOTS` elsewhere).
//!
//! Runs when `/usr/bin/chromedriver` (or `CRAFTING_CHROMEDRIVER`) exists; says so
//! and passes without a browser, unless `CRAFTING_BROWSER_TESTS=required` (set by
//! `.ci/run`, which installs `chromium` and `chromium-driver`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

use crate::seams::{OneProject, job_ended};

/// The chromedriver to use, or why there is none.
fn chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("CRAFTING_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var("CRAFTING_BROWSER_TESTS").is_ok_and(|v| v == "required");
    assert!(
        !required,
        "CRAFTING_BROWSER_TESTS=required but there is no {}: install Debian's chromium and chromium-driver",
        path.display()
    );
    eprintln!(
        "browser tests SKIPPED: no {} (install Debian's chromium and chromium-driver to run them)",
        path.display()
    );
    None
}

/// A chromedriver child, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(path: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    // It says when it listens.
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        let line = lines.next().expect("chromedriver said it started").unwrap();
        if line.contains("started successfully") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn open_browser(driver: &Driver, profile: &std::path::Path) -> Browser {
    let chromium =
        std::env::var("CRAFTING_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn shots_dir() -> PathBuf {
    let dir = std::env::var_os("CRAFTING_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &Browser, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn css(b: &Browser, selector: &str) -> fantoccini::elements::Element {
    b.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

/// Waits (a DOM mutation observer, not polling) until `#log` contains `text`.
async fn log_shows(b: &Browser, text: &str) {
    let found = b
        .execute_async(
            r#"const [want, done] = arguments;
               const log = document.getElementById('log');
               if (log.textContent.includes(want)) { done(true); return; }
               new MutationObserver((_, o) => {
                 if (log.textContent.includes(want)) { o.disconnect(); done(true); }
               }).observe(log, {childList: true, characterData: true, subtree: true});"#,
            vec![json!(text)],
        )
        .await
        .unwrap_or_else(|e| panic!("waiting for {text:?} in the log: {e}"));
    assert_eq!(found, json!(true));
}

/// Every text's contrast against its background, by WCAG's formula: the ones
/// under AA (4.5:1, 3:1 for large text).
const CONTRAST: &str = r#"
function lum(c) {
  const m = c.match(/rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)/);
  if (!m) return null;
  const ch = [m[1], m[2], m[3]].map(v => { v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return {l: 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2], a: m[4] === undefined ? 1 : +m[4]};
}
function bg(el) {
  for (; el; el = el.parentElement) {
    const c = lum(getComputedStyle(el).backgroundColor);
    if (c && c.a > 0) return c.l;
  }
  return 1;
}
const bad = [];
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('svg')) continue;
  const s = getComputedStyle(el);
  if (s.visibility === 'hidden' || s.display === 'none') continue;
  const fg = lum(s.color).l, b = bg(el);
  const ratio = (Math.max(fg, b) + 0.05) / (Math.min(fg, b) + 0.05);
  const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && +s.fontWeight >= 700);
  if (ratio < (large ? 3 : 4.5)) bad.push(el.tagName + ' "' + el.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
}
return bad;
"#;

async fn assert_contrast(b: &Browser, page: &str) {
    let bad = b.execute(CONTRAST, vec![]).await.unwrap();
    assert_eq!(bad, json!([]), "texts under WCAG AA contrast on {page}");
}

async fn path_of(b: &Browser) -> String {
    b.current_url().await.unwrap().path().to_owned()
}

async fn log_in(b: &Browser, base: &str, bearer: &str) {
    b.goto(&format!("{base}/ui/")).await.unwrap();
    assert_eq!(path_of(b).await, "/ui/login", "no session: the login form");
    shot(b, "login").await;
    css(b, "input[name=token]")
        .await
        .send_keys(bearer)
        .await
        .unwrap();
    css(b, "main form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // Only a logged-in page has the logout form.
    css(b, "form.logout").await;
    assert_eq!(path_of(b).await, "/ui/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_in_headless_chromium() {
    let Some(driver_path) = chromedriver() else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("go");
    let commands = format!(
        concat!(
            "      test: 'echo all good'\n",
            "      lint: \"echo \\\"src/a.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\\\"; exit 2\"\n",
            "      commands:\n",
            "        live: 'echo step-$((1)); while [ ! -e {} ]; do sleep 0.05; done; echo step-$((2))'\n",
        ),
        gate.display()
    );
    let s = OneProject::start_with(
        &commands,
        "  owners: [team-a]\n",
        &[(
            "CRAFTING_SANDBOX_WRITABLE",
            gates.path().display().to_string(),
        )],
    )
    .await;
    let base = s.api.base.clone();
    // Two teams' tokens, minted as an admin would: team-a owns the project.
    let mint = |name: &'static str| {
        let api = &s.api;
        async move {
            let (_, v) = api
                .call("POST", "/admin/tokens", Some(json!({"name": name})))
                .await;
            v["bearer"].as_str().unwrap().to_owned()
        }
    };
    let team_a = mint("team-a").await;
    let other = mint("team-b").await;

    let driver = start_driver(&driver_path);
    let profile = tempfile::tempdir().unwrap();
    let b = open_browser(&driver, profile.path()).await;

    // Log in with team-a's token; the farm grid shows its project.
    log_in(&b, &base, &team_a).await;
    css(&b, r#"#farm tr[data-project="app"]"#).await;
    assert_contrast(&b, "the farm").await;

    // Start a job from the page; its log arrives while it runs.
    css(&b, r#"button[data-run="app/./live"]"#)
        .await
        .click()
        .await
        .unwrap();
    css(&b, "pre#log").await;
    let job_path = path_of(&b).await;
    assert!(job_path.starts_with("/ui/jobs/"), "{job_path}");
    let job_id = job_path.trim_start_matches("/ui/jobs/").to_owned();
    log_shows(&b, "step-1").await;
    let log = css(&b, "pre#log").await.text().await.unwrap();
    assert!(!log.contains("step-2"), "the job is still waiting: {log}");
    let status = css(&b, "#status").await.attr("data-status").await.unwrap();
    assert_eq!(status.as_deref(), Some("running"));
    shot(&b, "job-running").await;
    assert_contrast(&b, "a running job").await;
    std::fs::write(&gate, "").unwrap();
    log_shows(&b, "step-2").await;
    // The end reloads the page with the final status.
    css(&b, r#"#status[data-status="succeeded"]"#).await;
    job_ended(&s.farm, &s.api, &job_id).await;

    // A job with findings: the table lists them.
    b.goto(&format!("{base}/ui/")).await.unwrap();
    css(&b, r#"button[data-run="app/./lint"]"#)
        .await
        .click()
        .await
        .unwrap();
    let table = css(&b, "table#findings").await.text().await.unwrap();
    assert!(table.contains("TS2322"), "{table}");
    assert!(table.contains("src/a.ts:1"), "{table}");
    assert!(table.contains("not assignable"), "{table}");
    css(&b, r#"#status[data-status="failed"]"#).await;
    shot(&b, "job-findings").await;
    assert_contrast(&b, "a job with findings").await;

    // Run again from the job page.
    let before = path_of(&b).await;
    // Mark this page, so the wait below can only find the next one.
    b.execute("document.body.dataset.old = '1'", vec![])
        .await
        .unwrap();
    css(&b, "#run-again").await.click().await.unwrap();
    css(&b, "body:not([data-old]) pre#log").await;
    assert_ne!(path_of(&b).await, before, "a new job");
    let again = path_of(&b).await.trim_start_matches("/ui/jobs/").to_owned();
    job_ended(&s.farm, &s.api, &again).await;

    // The other pages, and the farm with its results.
    for (path, name) in [
        ("/ui/", "farm"),
        ("/ui/projects/app", "project"),
        ("/ui/registry", "registry"),
        ("/ui/patches", "patches"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        css(&b, "h1").await;
        shot(&b, name).await;
        assert_contrast(&b, path).await;
    }
    b.goto(&format!("{base}/ui/projects/app")).await.unwrap();
    css(&b, "figure.trend svg").await;

    // A phone's width: nothing wider than the screen.
    b.set_window_size(390, 844).await.unwrap();
    for (path, name) in [("/ui/", "farm-phone"), (job_path.as_str(), "job-phone")] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        css(&b, "h1").await;
        let fits = b
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{path} fits a phone's width");
        shot(&b, name).await;
    }
    b.set_window_size(1280, 900).await.unwrap();

    // Log out: the session is gone.
    b.goto(&format!("{base}/ui/")).await.unwrap();
    css(&b, "form.logout button").await.click().await.unwrap();
    css(&b, "input[name=token]").await;
    assert_eq!(path_of(&b).await, "/ui/login");
    b.goto(&format!("{base}/ui/projects/app")).await.unwrap();
    css(&b, "input[name=token]").await;
    assert_eq!(path_of(&b).await, "/ui/login", "logged out");

    // A second token cannot open the first one's project: a 404 page.
    log_in(&b, &base, &other).await;
    let farm = css(&b, "main").await.text().await.unwrap();
    assert!(farm.contains("No project this token may see"), "{farm}");
    b.goto(&format!("{base}/ui/projects/app")).await.unwrap();
    let h1 = css(&b, "h1").await.text().await.unwrap();
    assert!(h1.starts_with("404"), "{h1}");
    b.goto(&format!("{base}{job_path}")).await.unwrap();
    let h1 = css(&b, "h1").await.text().await.unwrap();
    assert!(h1.starts_with("404"), "{h1}");
    shot(&b, "not-found").await;
    b.close().await.unwrap();
}
