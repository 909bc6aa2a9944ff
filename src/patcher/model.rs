//! The model backends: clawdforge's session API and any OpenAI-compatible
//! `chat/completions` server, behind one small interface. A clawdforge session,
//! once opened, is always closed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::ModelBackend;

/// Deadline of one model request.
pub const MODEL_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an unusable reply is kept for the reviewer.
pub const REPLY_KEPT: usize = 2000;

/// What the model proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// A unified diff against the repository root.
    pub diff: String,
    /// Why.
    pub explanation: String,
    /// 0..1, when given.
    pub confidence: Option<f64>,
}

/// Why there is no draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// What went wrong (never holds a token).
    pub reason: String,
    /// The reply, when one came (first 2,000 characters).
    pub reply: Option<String>,
}

impl ModelError {
    fn new(reason: impl Into<String>) -> ModelError {
        ModelError {
            reason: reason.into(),
            reply: None,
        }
    }
}

/// A configured model.
#[derive(Debug, Clone)]
pub struct Model {
    backend: ModelBackend,
    http: reqwest::Client,
}

fn keep(s: &str) -> String {
    s.chars().take(REPLY_KEPT).collect()
}

/// Reads the `{diff, explanation, confidence}` object from a reply's text: the
/// whole text, or a fenced block (```json … ```) around it.
pub fn parse_reply(text: &str) -> Result<Draft, ModelError> {
    let trimmed = text.trim();
    let candidate = if trimmed.starts_with('{') {
        trimmed.to_owned()
    } else if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        let after = after.strip_prefix("json").unwrap_or(after);
        let end = after.find("```").unwrap_or(after.len());
        after[..end].trim().to_owned()
    } else {
        String::new()
    };
    let bad = |why: &str| ModelError {
        reason: why.to_owned(),
        reply: Some(keep(text)),
    };
    let v: Value = serde_json::from_str(&candidate)
        .map_err(|_| bad("the reply is not the JSON object asked for"))?;
    from_object(&v).map_err(|why| bad(&why))
}

fn from_object(v: &Value) -> Result<Draft, String> {
    let diff = v["diff"]
        .as_str()
        .filter(|d| !d.trim().is_empty())
        .ok_or("the reply has no `diff`")?;
    Ok(Draft {
        diff: diff.to_owned(),
        explanation: v["explanation"].as_str().unwrap_or_default().to_owned(),
        confidence: v["confidence"].as_f64().map(|c| c.clamp(0.0, 1.0)),
    })
}

impl Model {
    /// A client for `backend`.
    pub fn new(backend: ModelBackend) -> Result<Model, String> {
        let http = reqwest::Client::builder()
            .timeout(MODEL_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the model client: {e}"))?;
        Ok(Model { backend, http })
    }

    /// `clawdforge` or `openai`, and the model's name.
    pub fn describe(&self) -> (String, String) {
        match &self.backend {
            ModelBackend::Clawdforge { .. } => ("clawdforge".into(), "clawdforge".into()),
            ModelBackend::OpenAi { model, .. } => ("openai".into(), model.clone()),
        }
    }

    /// Asks for a fix.
    pub async fn draft(
        &self,
        system: &str,
        prompt: &str,
        metadata: &Value,
    ) -> Result<Draft, ModelError> {
        match &self.backend {
            ModelBackend::Clawdforge { url, token } => {
                self.clawdforge(url, token, system, prompt, metadata).await
            }
            ModelBackend::OpenAi { url, model, token } => {
                self.openai(url, model, token.as_deref(), system, prompt)
                    .await
            }
        }
    }

    async fn clawdforge(
        &self,
        url: &str,
        token: &str,
        system: &str,
        prompt: &str,
        metadata: &Value,
    ) -> Result<Draft, ModelError> {
        let opened = self
            .http
            .post(format!("{url}/sessions"))
            .bearer_auth(token)
            .json(&json!({"purpose": "crafting-table patch", "metadata": metadata}))
            .send()
            .await
            .map_err(|e| {
                ModelError::new(format!(
                    "clawdforge: cannot open a session: {}",
                    e.without_url()
                ))
            })?;
        if !opened.status().is_success() {
            return Err(ModelError::new(format!(
                "clawdforge: opening a session answered {}",
                opened.status()
            )));
        }
        let session: Value = opened
            .json()
            .await
            .map_err(|e| ModelError::new(format!("clawdforge: bad session reply: {e}")))?;
        let Some(id) = session["id"].as_str().map(str::to_owned) else {
            return Err(ModelError::new("clawdforge: the session reply has no id"));
        };
        let result = self.clawdforge_turn(url, token, &id, system, prompt).await;
        // Always closed, whatever happened.
        let closed = self
            .http
            .delete(format!("{url}/sessions/{id}"))
            .bearer_auth(token)
            .send()
            .await;
        if let Err(e) = closed {
            tracing::warn!(session = %id, error = %e.without_url(), "clawdforge: closing the session failed");
        }
        result
    }

    async fn clawdforge_turn(
        &self,
        url: &str,
        token: &str,
        id: &str,
        system: &str,
        prompt: &str,
    ) -> Result<Draft, ModelError> {
        let resp = self
            .http
            .post(format!("{url}/sessions/{id}/turns"))
            .bearer_auth(token)
            .json(&json!({"message": format!("{system}\n\n{prompt}")}))
            .send()
            .await
            .map_err(|e| {
                ModelError::new(format!("clawdforge: the turn failed: {}", e.without_url()))
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(ModelError {
                reason: format!("clawdforge: the turn answered {status}"),
                reply: Some(keep(&text)),
            });
        }
        parse_reply(&text)
    }

    async fn openai(
        &self,
        url: &str,
        model: &str,
        token: Option<&str>,
        system: &str,
        prompt: &str,
    ) -> Result<Draft, ModelError> {
        let mut req = self
            .http
            .post(format!("{url}/chat/completions"))
            .json(&json!({
                "model": model,
                "temperature": 0,
                "response_format": {"type": "json_object"},
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": prompt},
                ],
            }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ModelError::new(format!("model: request failed: {}", e.without_url())))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(ModelError {
                reason: format!("model: chat/completions answered {status}"),
                reply: Some(keep(&text)),
            });
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| ModelError {
            reason: "model: the answer is not JSON".into(),
            reply: Some(keep(&text)),
        })?;
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| ModelError {
                reason: "model: the answer has no choices[0].message.content".into(),
                reply: Some(keep(&text)),
            })?;
        parse_reply(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_plain_fenced_and_prose() {
        let obj = r#"{"diff": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", "explanation": "e", "confidence": 0.8}"#;
        assert_eq!(parse_reply(obj).unwrap().confidence, Some(0.8));
        let fenced = format!("Here you go:\n```json\n{obj}\n```\n");
        assert_eq!(parse_reply(&fenced).unwrap().explanation, "e");
        let e = parse_reply("I would remove the import.").unwrap_err();
        assert!(e.reason.contains("not the JSON object"));
        assert_eq!(e.reply.as_deref(), Some("I would remove the import."));
        let e = parse_reply(r#"{"explanation": "no diff"}"#).unwrap_err();
        assert!(e.reason.contains("no `diff`"));
    }
}
