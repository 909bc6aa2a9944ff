//! Property tests (the fallback for cargo-fuzz, which needs a nightly toolchain
//! that cannot be installed here): the parsers on mutated real captures, the
//! webhook verifier, the configuration loader and the log masker, seeded from the
//! fixtures. Each runs a bounded number of cases; a failure is shrunk and kept in
//! `proptest-regressions/` as a regression case.

use std::path::Path;

use crafting_table::parsers::{Input, lines::Tracked, parse};
use proptest::prelude::*;

fn captures() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..64).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'{'),
                    Just(b'}'),
                    Just(b'"'),
                    Just(b':'),
                    Just(b'\n'),
                    Just(b'['),
                    Just(b'('),
                    any::<u8>()
                ],
                0..24
            )
        )
            .prop_map(|(a, v)| Edit::Insert(a, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Edit::Insert(at, v) => {
                let at = at % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Edit::Flip(at, x) => {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] ^= x;
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_mutated_captures(which in 0usize..64, edits in prop::collection::vec(edit(), 1..12), lang in prop::sample::select(vec!["rust", "python", "go", "typescript", "shell", "ruby", "c", "java"])) {
        let all = captures();
        let (_, text) = &all[which % all.len()];
        let log = apply(text, &edits);
        let tracked = Tracked {
            files: ["src/lib.rs", "main.c", "app.py", "bashbug", "SwingSet2.java"].iter().map(|s| (*s).to_owned()).collect(),
            worktree: "/tmp/fx".into(),
            subproject: ".".into(),
        };
        let parsed = parse(&Input { language: Some(lang), recipe: "lint", exit_code: Some(1), timed_out: false, log: &log, tracked: Some(&tracked) });
        for f in &parsed.findings {
            prop_assert!(!f.tool.is_empty() && !f.kind.is_empty());
            prop_assert!(["error", "warn", "info"].contains(&f.severity.as_str()), "{:?}", f);
        }
    }

    #[test]
    fn the_webhook_verifier_accepts_only_the_right_signature(secret in "[ -~]{1,40}", body in prop::collection::vec(any::<u8>(), 0..512), flip in any::<usize>(), junk in "[ -~]{0,80}") {
        use axum::http::HeaderMap;
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let mut h = HeaderMap::new();
        h.insert("x-gitea-signature", hex.parse().unwrap());
        prop_assert!(crafting_table::api::verify_signature(&secret, &h, &body));
        if !body.is_empty() {
            let mut other = body.clone();
            let i = flip % other.len();
            other[i] ^= 1;
            prop_assert!(!crafting_table::api::verify_signature(&secret, &h, &other));
        }
        let mut bad = HeaderMap::new();
        if let Ok(v) = junk.parse() {
            bad.insert("x-hub-signature-256", v);
        }
        let same = junk == format!("sha256={}", hex);
        prop_assert!(!crafting_table::api::verify_signature(&secret, &bad, &body) || same);
    }

    #[test]
    fn the_config_loader_answers_every_value_with_ok_or_a_named_error(key in prop::sample::select(vec![
        "CRAFTING_BIND", "CRAFTING_WORKERS", "CRAFTING_LAN_CIDRS", "CRAFTING_REGISTRY_POLL_SECS", "CRAFTING_SMTP_TLS",
        "CRAFTING_SMTP_PORT", "CRAFTING_DIGEST_TIME", "CRAFTING_DIGEST_TIMEZONE", "CRAFTING_PUBLIC_URL", "CRAFTING_SANDBOX",
        "CRAFTING_SANDBOX_WRITABLE", "CRAFTING_RETAIN_DAYS", "CRAFTING_GIT_TIMEOUT_SECS", "CRAFTING_LOG_CAP_BYTES",
        "CRAFTING_PATCHER_MAX_ATTEMPTS"]), value in "\\PC{0,40}") {
        let (k, v) = (key.to_owned(), value.clone());
        let lookup = move |name: &str| (name == k).then(|| v.clone());
        if let Err(e) = crafting_table::config::Config::from_lookup(&lookup, None, 2) {
            prop_assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn the_masker_never_lets_a_secret_through(secret in "[a-z0-9]{4,24}", prefix in "[a-z0-9 ]{0,30}", suffix in "[a-z0-9 ]{0,30}", cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let text = format!("{prefix}{secret}{suffix}{secret}");
        let mut m = crafting_table::runner::mask::Masker::new([secret.clone()]);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        points.sort();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([text.len()]) {
            out.extend(m.feed(&text.as_bytes()[last..p]));
            last = p;
        }
        out.extend(m.finish());
        let out = String::from_utf8(out).unwrap();
        prop_assert!(!out.contains(&secret), "{out}");
    }
}
