//! The forge (Gitea): pull requests over its REST API (`Authorization: token …`),
//! and the branch pushed over HTTP with the token as basic-auth password through
//! git's environment.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::git::Git;
use crate::manifest::ForgeRepo;

/// Deadline of one REST call.
pub const FORGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pull request as the farm tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// Number.
    pub number: i64,
    /// Web URL.
    pub url: String,
    /// `open`, `closed` or `merged`.
    pub state: String,
    /// The head branch.
    pub head: String,
}

/// A configured Gitea.
#[derive(Debug, Clone)]
pub struct Forge {
    url: String,
    token: String,
    http: reqwest::Client,
}

fn pull_of(v: &Value) -> Option<Pull> {
    let merged = v["merged"].as_bool().unwrap_or(false);
    Some(Pull {
        number: v["number"].as_i64()?,
        url: v["html_url"]
            .as_str()
            .or_else(|| v["url"].as_str())
            .unwrap_or_default()
            .to_owned(),
        state: if merged {
            "merged".to_owned()
        } else {
            v["state"].as_str().unwrap_or("open").to_owned()
        },
        head: v["head"]["ref"].as_str().unwrap_or_default().to_owned(),
    })
}

/// What creating a pull request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new pull request.
    New(Pull),
    /// Gitea said one exists for this head (409): reuse it.
    Exists,
}

impl Forge {
    /// A client for Gitea at `url` (its web root).
    pub fn new(url: &str, token: &str) -> Result<Forge, String> {
        let http = reqwest::Client::builder()
            .timeout(FORGE_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the forge client: {e}"))?;
        Ok(Forge {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// The forge's web root.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Owner and repository of a project: `forge:` when given, else from a
    /// `git_url` on the forge's host.
    pub fn repo_of(&self, git_url: &str, forge: Option<&ForgeRepo>) -> Option<(String, String)> {
        if let Some(f) = forge {
            return Some((f.owner.clone(), f.repo.clone()));
        }
        let host = |u: &str| {
            u.split("://")
                .nth(1)
                .map(|r| r.rsplit('@').next().unwrap_or(r))
                .and_then(|r| r.split('/').next())
                .map(str::to_owned)
        };
        let ours = host(&self.url)?;
        let theirs = host(git_url)?;
        if ours != theirs {
            return None;
        }
        let path = git_url.split("://").nth(1)?.split_once('/')?.1;
        let base = self
            .url
            .split("://")
            .nth(1)?
            .split_once('/')
            .map_or("", |(_, p)| p);
        let path = path
            .strip_prefix(base)
            .unwrap_or(path)
            .trim_start_matches('/');
        let mut parts = path.trim_end_matches('/').split('/');
        let owner = parts.next()?.to_owned();
        let repo = parts.next()?.trim_end_matches(".git").to_owned();
        (parts.next().is_none() && !owner.is_empty() && !repo.is_empty()).then_some((owner, repo))
    }

    /// The HTTP clone URL of a repository.
    pub fn clone_url(&self, owner: &str, repo: &str) -> String {
        format!("{}/{owner}/{repo}.git", self.url)
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    async fn error_of(what: &str, resp: reqwest::Response) -> String {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(300).collect());
        format!("Gitea {what}: {status}: {msg}")
    }

    /// Pull requests of a repository in `state` (`open` or `all`).
    pub async fn pulls(&self, owner: &str, repo: &str, state: &str) -> Result<Vec<Pull>, String> {
        let mut out = Vec::new();
        for page in 1..=20 {
            let resp = self
                .http
                .get(self.api(&format!(
                    "/repos/{owner}/{repo}/pulls?state={state}&page={page}&limit=50"
                )))
                .header("Authorization", format!("token {}", self.token))
                .send()
                .await
                .map_err(|e| format!("Gitea: cannot list pull requests: {}", e.without_url()))?;
            if !resp.status().is_success() {
                return Err(Forge::error_of("listing pull requests", resp).await);
            }
            let list: Vec<Value> = resp
                .json()
                .await
                .map_err(|e| format!("Gitea: bad pull request list: {e}"))?;
            let n = list.len();
            out.extend(list.iter().filter_map(pull_of));
            if n < 50 {
                break;
            }
        }
        Ok(out)
    }

    /// Opens a pull request.
    pub async fn create_pull(
        &self,
        owner: &str,
        repo: &str,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<Created, String> {
        let resp = self
            .http
            .post(self.api(&format!("/repos/{owner}/{repo}/pulls")))
            .header("Authorization", format!("token {}", self.token))
            .json(&json!({"head": head, "base": base, "title": title, "body": body}))
            .send()
            .await
            .map_err(|e| format!("Gitea: cannot create the pull request: {}", e.without_url()))?;
        match resp.status().as_u16() {
            201 | 200 => {
                let v: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("Gitea: bad pull request reply: {e}"))?;
                pull_of(&v)
                    .map(Created::New)
                    .ok_or_else(|| "Gitea: the pull request reply has no number".to_owned())
            }
            409 => Ok(Created::Exists),
            _ => Err(Forge::error_of("creating the pull request", resp).await),
        }
    }

    /// Pushes `commit` (in `mirror`) to `branch` of the repository. Skips the push
    /// when the branch already points at it. Blocking.
    pub fn push(
        &self,
        git_timeout: Duration,
        mirror: &Path,
        commit: &str,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> Result<(), String> {
        let git = Git::with_basic("crafting-table", &self.token).with_timeout(git_timeout);
        let url = self.clone_url(owner, repo);
        let head = format!("refs/heads/{branch}");
        let remote = git
            .text(Some(mirror), ["ls-remote", url.as_str(), head.as_str()])
            .map_err(|e| format!("cannot read the forge's branches: {}", e.message))?;
        if remote.split_whitespace().next() == Some(commit) {
            return Ok(());
        }
        let spec = format!("+{commit}:{head}");
        git.run(
            Some(mirror),
            ["push", "--quiet", url.as_str(), spec.as_str()],
        )
        .map(|_| ())
        .map_err(|e| format!("push to {url} failed: {}", e.message))
    }
}
