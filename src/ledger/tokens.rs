//! API tokens: stored as SHA-256 hashes only; web sessions that belong to them.

use super::sql::{Row, RowError, args};
use super::{Ledger, LedgerError};

/// A token as stored (never the bearer itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    /// Unique name; projects list token names in `owners`.
    pub name: String,
    /// Whether it may do everything.
    pub is_admin: bool,
    /// Networks it may be used from (empty: any allowed LAN address).
    pub ip_cidrs: Vec<String>,
    /// Minted (ms).
    pub created_at: i64,
    /// Revoked (ms), if it is.
    pub revoked_at: Option<i64>,
}

fn token_from_row(r: &Row) -> Result<Token, RowError> {
    Ok(Token {
        name: r.get(0)?,
        is_admin: r.get(1)?,
        ip_cidrs: serde_json::from_str(&r.get::<String>(2)?).unwrap_or_default(),
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

impl Ledger {
    /// Number of tokens ever minted (revoked ones included).
    pub fn token_count(&self) -> Result<i64, LedgerError> {
        self.sql()
            .query_one("SELECT COUNT(*) FROM tokens", args![], |r| r.get(0))
    }

    /// Stores a new token; `false` when the name is taken.
    pub fn insert_token(
        &self,
        name: &str,
        hash: &str,
        is_admin: bool,
        ip_cidrs: &[String],
        now: i64,
    ) -> Result<bool, LedgerError> {
        let cidrs = serde_json::to_string(ip_cidrs).unwrap_or_else(|_| "[]".into());
        let n = self.sql().execute(
            "INSERT INTO tokens (name, token_hash, is_admin, ip_cidrs, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
            args![name, hash, is_admin, cidrs, now],
        )?;
        Ok(n == 1)
    }

    /// The live (not revoked) token with this hash.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<Token>, LedgerError> {
        self.sql().query_opt(
            "SELECT name, is_admin, ip_cidrs, created_at, revoked_at FROM tokens
             WHERE token_hash = ?1 AND revoked_at IS NULL",
            args![hash],
            token_from_row,
        )
    }

    /// Every token, by name.
    pub fn list_tokens(&self) -> Result<Vec<Token>, LedgerError> {
        self.sql().query(
            "SELECT name, is_admin, ip_cidrs, created_at, revoked_at FROM tokens ORDER BY name",
            args![],
            token_from_row,
        )
    }

    /// Revokes a live token and ends its web sessions; `false` when there is no
    /// live token by that name.
    pub fn revoke_token(&mut self, name: &str, now: i64) -> Result<bool, LedgerError> {
        self.transaction(|sql| {
            let n = sql.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                args![name, now],
            )?;
            sql.execute("DELETE FROM ui_sessions WHERE token_name = ?1", args![name])?;
            Ok(n == 1)
        })
    }

    /// Starts a web session for the live token `token_name` (`false`: no such live
    /// token), and forgets sessions that expired.
    pub fn create_session(
        &mut self,
        id_hash: &str,
        token_name: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, LedgerError> {
        self.transaction(|sql| {
            sql.execute("DELETE FROM ui_sessions WHERE expires_at <= ?1", args![now])?;
            let n = sql.execute(
                "INSERT INTO ui_sessions (id_hash, token_name, created_at, expires_at)
                 SELECT ?1, name, ?3, ?4 FROM tokens WHERE name = ?2 AND revoked_at IS NULL",
                args![id_hash, token_name, now, expires_at],
            )?;
            Ok(n == 1)
        })
    }

    /// The live token of an unexpired session.
    pub fn session_token(&self, id_hash: &str, now: i64) -> Result<Option<Token>, LedgerError> {
        self.sql().query_opt(
            "SELECT t.name, t.is_admin, t.ip_cidrs, t.created_at, t.revoked_at
             FROM ui_sessions s JOIN tokens t ON t.name = s.token_name
             WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND t.revoked_at IS NULL",
            args![id_hash, now],
            token_from_row,
        )
    }

    /// Ends a session (logout); `false` when there was none.
    pub fn end_session(&self, id_hash: &str) -> Result<bool, LedgerError> {
        let n = self
            .sql()
            .execute("DELETE FROM ui_sessions WHERE id_hash = ?1", args![id_hash])?;
        Ok(n == 1)
    }
}
