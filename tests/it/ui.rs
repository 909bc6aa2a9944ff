//! The web pages over real HTTP: sessions, cookies, the same-origin rule, what a
//! token sees, the live log's events, badges. (The browser drives them in
//! `browser.rs`.)

use reqwest::header;
use serde_json::json;

use crate::seams::{Client, OneProject, job_ended};

const COMMANDS: &str = concat!(
    "      test: 'echo all good'\n",
    "      lint: \"echo \\\"src/a.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\\\"; exit 2\"\n",
);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn set_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Logs in with `bearer` and returns the `Cookie` header value.
pub async fn login(base: &str, bearer: &str) -> String {
    let r = http()
        .post(format!("{base}/ui/login"))
        .form(&[("token", bearer)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "login answers 303");
    assert_eq!(location(&r), "/ui/");
    let c = set_cookie(&r);
    c.split(';').next().unwrap().to_owned()
}

/// A request to `base` + `path` with the session `cookie`, sent.
async fn send(method: reqwest::Method, base: &str, cookie: &str, path: &str) -> reqwest::Response {
    http()
        .request(method, format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

pub async fn page(base: &str, cookie: &str, path: &str) -> (u16, String, String) {
    let r = send(reqwest::Method::GET, base, cookie, path).await;
    let status = r.status().as_u16();
    let to = location(&r);
    (status, to, r.text().await.unwrap())
}

async fn mint(api: &Client, name: &str) -> String {
    let (s, v) = api
        .call("POST", "/admin/tokens", Some(json!({"name": name})))
        .await;
    assert_eq!(s, 201, "{v}");
    v["bearer"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_and_login_sets_a_strict_cookie() {
    let s = OneProject::start(COMMANDS).await;
    let base = &s.api.base;
    // No session: every page sends the browser to the login form.
    for path in [
        "/ui/",
        "/ui/projects/app",
        "/ui/registry",
        "/ui/patches",
        "/ui/jobs/x",
    ] {
        let (status, to, _) = page(base, "", path).await;
        assert_eq!((status, to.as_str()), (303, "/ui/login"), "{path}");
    }
    let (status, _, form) = page(base, "", "/ui/login").await;
    assert_eq!(status, 200);
    assert!(form.contains(r#"name="token""#), "{form}");

    // A wrong token: the form again, with the reason, and no cookie.
    let r = http()
        .post(format!("{base}/ui/login"))
        .form(&[("token", "ct_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(set_cookie(&r).is_empty());
    assert!(r.text().await.unwrap().contains("unknown or revoked token"));

    let r = http()
        .post(format!("{base}/ui/login"))
        .form(&[("token", s.api.bearer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let c = set_cookie(&r);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(c.contains(attr), "{attr} in {c}");
    }
    assert!(!c.contains("Secure"), "plain HTTP: no Secure flag: {c}");
    let cookie = c.split(';').next().unwrap().to_owned();
    assert!(
        !cookie.contains(&s.api.bearer),
        "the cookie is not the bearer"
    );

    let (status, _, farm) = page(base, &cookie, "/ui/").await;
    assert_eq!(status, 200);
    assert!(farm.contains(r#"data-project="app""#), "{farm}");
    let (status, _, reg) = page(base, &cookie, "/ui/registry").await;
    assert_eq!(status, 200);
    assert!(reg.contains("app.yaml"), "{reg}");
    // A manifest error shows at file:line:col, and is counted on the farm page.
    std::fs::write(
        s._tmp.path().join("registry/broken.yaml"),
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: broken\nspec:\n  timeout_secs: many\n",
    )
    .unwrap();
    s.farm.reconcile.run_now().await.unwrap();
    let (_, _, reg) = page(base, &cookie, "/ui/registry").await;
    assert!(reg.contains("broken.yaml:6:"), "{reg}");
    assert!(reg.contains("error: "), "{reg}");
    let (_, _, farm) = page(base, &cookie, "/ui/").await;
    assert!(
        farm.contains(r#"<a class="error" href="/ui/registry">1</a>"#),
        "{farm}"
    );
    let (status, _, _) = page(base, &cookie, "/ui/patches").await;
    assert_eq!(status, 200);
    let (status, _, missing) = page(base, &cookie, "/ui/jobs/nope").await;
    assert_eq!(status, 404);
    assert!(missing.contains("no job"), "{missing}");
    let (status, _, _) = page(base, &cookie, "/ui/no-such-page").await;
    assert_eq!(status, 404);
    let (status, _, body) = page(base, &cookie, "/ui/logout").await;
    assert_eq!(status, 405, "logout is a form POST");
    assert!(body.contains("<h1>405"), "{body}");

    // Logout ends the session: the same cookie no longer opens a page.
    let r = send(reqwest::Method::POST, base, &cookie, "/ui/logout").await;
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/ui/login".into())
    );
    assert!(set_cookie(&r).contains("Max-Age=0"));
    let (status, to, _) = page(base, &cookie, "/ui/").await;
    assert_eq!((status, to.as_str()), (303, "/ui/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_forms_are_refused() {
    let s = OneProject::start(COMMANDS).await;
    let base = &s.api.base;
    let cookie = login(base, &s.api.bearer).await;
    let host = base.trim_start_matches("http://").to_owned();
    let post = |path: &str, headers: Vec<(&'static str, String)>| {
        let mut r = http()
            .post(format!("{base}{path}"))
            .header(header::COOKIE, &cookie)
            .form(&[("subproject", "."), ("recipe", "test")]);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    for headers in [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
    ] {
        let r = post("/ui/projects/app/run", headers.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{headers:?}");
        let r = http()
            .post(format!("{base}/ui/login"))
            .header(headers[0].0, &headers[0].1)
            .form(&[("token", s.api.bearer.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "login {headers:?}");
    }
    // Nothing was enqueued by the refused forms.
    let (_, jobs) = s.api.call("GET", "/jobs", None).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");

    // The browser's own pages: same-origin, by either header.
    let r = post(
        "/ui/projects/app/run",
        vec![("sec-fetch-site", "same-origin".to_owned())],
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let first = location(&r);
    assert!(first.starts_with("/ui/jobs/"), "{first}");
    let r = post(
        "/ui/projects/app/run",
        vec![("origin", format!("http://{host}"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    // Not a browser at all (a script): let through, so the login stays scriptable.
    let r = post("/ui/projects/app/run", vec![]).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let id = first.trim_start_matches("/ui/jobs/");
    job_ended(&s.farm, &s.api, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_behind_a_trusted_tls_proxy() {
    let s = OneProject::start_with(
        COMMANDS,
        "",
        &[("CRAFTING_TRUSTED_PROXIES", "127.0.0.1/32".into())],
    )
    .await;
    let r = http()
        .post(format!("{}/ui/login", s.api.base))
        .header("x-forwarded-for", "127.0.0.9")
        .header("x-forwarded-proto", "https")
        .form(&[("token", s.api.bearer.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(set_cookie(&r).contains("; Secure"), "{}", set_cookie(&r));
    // An untrusted peer's say-so is not believed.
    let plain = OneProject::start(COMMANDS).await;
    let r = http()
        .post(format!("{}/ui/login", plain.api.base))
        .header("x-forwarded-proto", "https")
        .form(&[("token", plain.api.bearer.as_str())])
        .send()
        .await
        .unwrap();
    assert!(!set_cookie(&r).contains("Secure"), "{}", set_cookie(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_shows_what_its_token_sees_and_revoking_ends_the_session() {
    let s = OneProject::start(COMMANDS).await;
    let base = &s.api.base;
    let (_, v) = s
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "lint"})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    job_ended(&s.farm, &s.api, &id).await;

    let other = mint(&s.api, "other-team").await;
    let cookie = login(base, &other).await;
    let (status, _, farm) = page(base, &cookie, "/ui/").await;
    assert_eq!(status, 200);
    assert!(!farm.contains(r#"data-project="app""#), "{farm}");
    assert!(farm.contains("No project this token may see"), "{farm}");
    for path in [
        "/ui/projects/app".to_owned(),
        format!("/ui/jobs/{id}"),
        format!("/ui/jobs/{id}/log.txt"),
        format!("/ui/jobs/{id}/events"),
    ] {
        let (status, _, body) = page(base, &cookie, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let r = send(
        reqwest::Method::POST,
        base,
        &cookie,
        &format!("/ui/jobs/{id}/run-again"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 404);

    // Revoking the token ends its session at once.
    let (s2, _) = s.api.call("DELETE", "/admin/tokens/other-team", None).await;
    assert_eq!(s2, 200);
    let (status, to, _) = page(base, &cookie, "/ui/").await;
    assert_eq!((status, to.as_str()), (303, "/ui/login"));

    // The admin sees the job: its findings table and the log.
    let admin = login(base, &s.api.bearer).await;
    let (status, _, job) = page(base, &admin, &format!("/ui/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(job.contains(r#"id="findings""#), "{job}");
    assert!(job.contains("TS2322"), "{job}");
    assert!(job.contains("src/a.ts:1"), "{job}");
    let (_, _, only_new) = page(base, &admin, &format!("/ui/jobs/{id}?state=unchanged")).await;
    assert!(only_new.contains("0 of 1 findings"), "{only_new}");
    // Another command's clean run leaves the project's open count as it was.
    let (_, v) = s
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    job_ended(&s.farm, &s.api, v["job_id"].as_str().unwrap()).await;
    let (status, _, project) = page(base, &admin, "/ui/projects/app").await;
    assert_eq!(status, 200);
    assert!(project.contains("<svg"), "the trend chart: {project}");
    assert!(project.contains("last 2 runs: 1 open now"), "{project}");
    // A schedule of the project, with its next fire in its own zone and in UTC
    // (which the page's script turns into the viewer's).
    std::fs::write(
        s._tmp.path().join("registry/nightly.yaml"),
        crate::helpers::schedule("nightly", "30 2 * * *", "Europe/Berlin", "[app]", ""),
    )
    .unwrap();
    s.farm.reconcile.run_now().await.unwrap();
    let (_, _, project) = page(base, &admin, "/ui/projects/app").await;
    assert!(project.contains("nightly"), "{project}");
    assert!(
        project.contains("<code>30 2 * * *</code> Europe/Berlin"),
        "{project}"
    );
    assert!(
        project.contains("02:30 CE"),
        "next fire in Berlin time: {project}"
    );
    assert!(project.contains("data-local"), "{project}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_log_is_a_stream_of_events_that_ends_with_the_status() {
    let s = OneProject::start(COMMANDS).await;
    let base = &s.api.base;
    let cookie = login(base, &s.api.bearer).await;
    let r = http()
        .post(format!("{base}/ui/projects/app/run"))
        .header(header::COOKIE, &cookie)
        .form(&[("subproject", "."), ("recipe", "test")])
        .send()
        .await
        .unwrap();
    let id = location(&r).trim_start_matches("/ui/jobs/").to_owned();
    // Subscribed before or after the end, the stream carries the whole log and
    // then the status.
    let r = send(
        reqwest::Method::GET,
        base,
        &cookie,
        &format!("/ui/jobs/{id}/events"),
    )
    .await;
    assert_eq!(
        r.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "text/event-stream"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("event: log"), "{body}");
    assert!(body.contains("all good"), "{body}");
    assert!(
        body.trim_end().ends_with("event: end\ndata: \"succeeded\""),
        "{body}"
    );
    // Each event's id is the offset it reaches; a reconnect (Last-Event-ID) or the
    // page's `?from=` resumes there: the last id gives only the end.
    let last_id = body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_owned();
    let size = std::fs::metadata(s.farm.config.logs_dir().join(format!("{id}.log")))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(last_id, size.to_string(), "the whole log was sent");
    for resume in [
        http()
            .get(format!("{base}/ui/jobs/{id}/events"))
            .header("last-event-id", &last_id),
        http().get(format!("{base}/ui/jobs/{id}/events?from={last_id}")),
    ] {
        let again = resume
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!again.contains("event: log"), "{again}");
        assert!(again.contains("event: end"), "{again}");
    }
    let r = send(
        reqwest::Method::GET,
        base,
        &cookie,
        &format!("/ui/jobs/{id}/events?from=abc"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);
    // Run again: a new job of the same command.
    let r = send(
        reqwest::Method::POST,
        base,
        &cookie,
        &format!("/ui/jobs/{id}/run-again"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let again = location(&r).trim_start_matches("/ui/jobs/").to_owned();
    assert_ne!(again, id);
    let v = job_ended(&s.farm, &s.api, &again).await;
    assert_eq!(v["job"]["recipe"], "test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badges_are_served_only_for_projects_that_opt_in() {
    let closed = OneProject::start(COMMANDS).await;
    let r = http()
        .get(format!("{}/badge/app/test.svg", closed.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let open = OneProject::start_with(COMMANDS, "  public_badges: true\n", &[]).await;
    let badge = |path: &str| {
        let url = format!("{}{path}", open.api.base);
        async move { http().get(url).send().await.unwrap() }
    };
    let r = badge("/badge/app/test.svg").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/svg+xml");
    assert!(r.text().await.unwrap().contains("never run"));
    let (_, v) = open
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    job_ended(&open.farm, &open.api, v["job_id"].as_str().unwrap()).await;
    let (_, v) = open
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "lint"})),
        )
        .await;
    job_ended(&open.farm, &open.api, v["job_id"].as_str().unwrap()).await;
    let svg = badge("/badge/app/test.svg").await.text().await.unwrap();
    assert!(svg.contains("passing") && svg.starts_with("<svg"), "{svg}");
    let svg = badge("/badge/app/lint.svg").await.text().await.unwrap();
    assert!(svg.contains("failing"), "{svg}");
    for missing in [
        "/badge/app/nope.svg",
        "/badge/app/test.png",
        "/badge/other/test.svg",
    ] {
        assert_eq!(badge(missing).await.status().as_u16(), 404, "{missing}");
    }
}

#[test]
fn the_live_log_splits_text_only_between_characters() {
    use crafting_table::ui::take_text;
    // "é" is two bytes: a chunk may end between them.
    let mut carry = b"caf\xc3".to_vec();
    assert_eq!(take_text(&mut carry, false), "caf");
    assert_eq!(carry, b"\xc3");
    carry.extend_from_slice(b"\xa9!");
    assert_eq!(take_text(&mut carry, false), "é!");
    assert!(carry.is_empty());
    // A byte that is no UTF-8 at all becomes U+FFFD, and an unfinished character
    // after it is still kept for the next chunk.
    let mut carry = b"a\xffb\xe2\x82".to_vec();
    assert_eq!(take_text(&mut carry, false), "a\u{fffd}b");
    assert_eq!(carry, b"\xe2\x82");
    carry.push(0xac);
    assert_eq!(take_text(&mut carry, false), "€");
    // At the end nothing is kept back.
    let mut carry = b"x\xe2\x82".to_vec();
    assert_eq!(take_text(&mut carry, true), "x\u{fffd}");
    assert!(carry.is_empty());
}
