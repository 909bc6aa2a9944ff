//! Who may call: the LAN allowlist (before anything else), bearer tokens (stored
//! hashed), per-token networks, and what a token may see.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::ledger::{Ledger, LedgerError, Source, StoredObject};

/// A new random bearer: `ct_` and 32 random bytes in hex.
pub fn mint_bearer() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(format!(
        "ct_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The stored form of a bearer.
pub fn hash_bearer(bearer: &str) -> String {
    Sha256::digest(bearer.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// On first boot (no token at all), mints the admin bearer and writes it to `path`
/// with mode 0600. Never regenerates while any token exists. Returns whether it
/// minted one.
pub fn ensure_admin_token(ledger: &Ledger, path: &Path, now_ms: i64) -> Result<bool, String> {
    let count = ledger.token_count().map_err(|e| e.to_string())?;
    if count > 0 {
        return Ok(false);
    }
    let bearer = mint_bearer()?;
    // The file first, then the row: a crash in between leaves no token, so the next
    // start mints again and rewrites the file; never a token nobody can read.
    write_secret(path, &bearer).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    ledger
        .insert_token("admin", &hash_bearer(&bearer), true, &[], now_ms)
        .map_err(|e| e.to_string())?;
    Ok(true)
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Normalises `::ffff:a.b.c.d` to the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who is calling, as far as the farm can tell: the TCP peer, or — when the peer is
/// one of `CRAFTING_TRUSTED_PROXIES` — the rightmost hop of `Forwarded` /
/// `X-Forwarded-For` that is not itself a trusted proxy. Set on every request by
/// [`lan_only`]; the LAN allowlist and per-token networks check this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the client reached the farm over TLS (said by a trusted proxy's
    /// `X-Forwarded-Proto: https` or `Forwarded: proto=https`).
    pub tls: bool,
}

/// The client behind `peer`: `Err` names the header that could not be believed.
pub fn client_addr(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Result<ClientAddr, String> {
    let peer = canonical_ip(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Ok(ClientAddr {
            ip: peer,
            tls: false,
        });
    }
    let text = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    // Hops, nearest last; `Forwarded` (RFC 7239) wins over `X-Forwarded-*`.
    let forwarded = text("forwarded");
    // The comma-separated items of every instance of a header, in order.
    let items = |name: &str| -> Vec<String> {
        text(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_owned())
            .collect()
    };
    let (hops, protos): (Vec<String>, Vec<String>) = if forwarded.is_empty() {
        (items("x-forwarded-for"), items("x-forwarded-proto"))
    } else {
        let mut hops = Vec::new();
        let mut protos = Vec::new();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let mut hop = None;
            for pair in element.split(';') {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "for" => hop = Some(v),
                    "proto" => protos.push(v),
                    _ => {}
                }
            }
            hops.push(hop.unwrap_or_default());
        }
        (hops, protos)
    };
    let header = if forwarded.is_empty() {
        "X-Forwarded-For"
    } else {
        "Forwarded"
    };
    let tls = protos
        .last()
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let mut client = peer;
    for hop in hops.iter().rev() {
        let ip = parse_hop(hop).ok_or_else(|| {
            format!("the request came through a trusted proxy, but its {header} hop `{hop}` is not an IP address")
        })?;
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Ok(ClientAddr { ip: client, tls })
}

/// An address of a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`
/// or a bare IPv6 address.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical_ip)
}

/// Refuses connections from outside `CRAFTING_LAN_CIDRS` before anything else, and
/// records who the client is ([`ClientAddr`]) for the checks after it.
pub async fn lan_only(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = match peer {
        None => Err("the connection has no peer address".to_owned()),
        Some(peer) => client_addr(peer, req.headers(), &state.config.trusted_proxies),
    };
    let client = match client {
        Ok(c) => c,
        Err(msg) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_forwarding", &msg).into_response();
        }
    };
    if !state
        .config
        .lan_cidrs
        .iter()
        .any(|n| n.contains(&client.ip))
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "not_on_lan",
            "connections are accepted only from the networks in CRAFTING_LAN_CIDRS",
        )
        .into_response();
    }
    req.extensions_mut().insert(client);
    next.run(req).await
}

/// In front of `/mcp`: the caller must hold a valid token (from an allowed address,
/// as everywhere); the tools then call the API with it.
pub async fn mcp_caller(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Err(e) = Caller::from_request_parts(&mut parts, &state).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name.
    pub name: String,
    /// Whether it is an admin token.
    pub is_admin: bool,
}

impl Caller {
    /// Whether this caller may see `project`.
    pub fn can_see(&self, project: &StoredObject) -> bool {
        if self.is_admin {
            return true;
        }
        match project.source {
            Source::Api => project.owner_token.as_deref() == Some(self.name.as_str()),
            Source::Registry => project.spec["owners"]
                .as_array()
                .is_some_and(|o| o.iter().any(|v| v.as_str() == Some(self.name.as_str()))),
        }
    }

    /// Whether this caller may see the project named `name`; a project that no
    /// longer exists is visible to admins only.
    pub fn can_see_named(&self, ledger: &Ledger, name: &str) -> Result<bool, LedgerError> {
        Ok(match ledger.get_project(name)? {
            Some(p) => self.can_see(&p),
            None => self.is_admin,
        })
    }

    /// The projects this caller may see (`None` for admins: all).
    pub fn visible_projects(&self, ledger: &Ledger) -> Result<Option<Vec<String>>, LedgerError> {
        if self.is_admin {
            return Ok(None);
        }
        Ok(Some(
            ledger
                .snapshot()?
                .values()
                .filter(|o| o.kind == crate::manifest::Kind::Project && self.can_see(o))
                .map(|o| o.name.clone())
                .collect(),
        ))
    }
}

/// Whether `token` may be used by `client` (its own networks, when it has any).
pub fn token_allows(token: &crate::ledger::Token, client: Option<&ClientAddr>) -> bool {
    token.ip_cidrs.is_empty()
        || client.is_some_and(|c| {
            token
                .ip_cidrs
                .iter()
                .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
                .any(|n| n.contains(&c.ip))
        })
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let bearer = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let hash = hash_bearer(bearer);
        let token = state
            .db
            .read(move |l| l.token_by_hash(&hash))
            .await?
            .ok_or_else(|| unauthorized("unknown or revoked token"))?;
        if !token_allows(&token, parts.extensions.get::<ClientAddr>()) {
            return Err(unauthorized("this token may not be used from this address"));
        }
        Ok(Caller {
            name: token.name,
            is_admin: token.is_admin,
        })
    }
}

/// A caller that must be an admin (403 otherwise: admin routes are not objects
/// whose existence could leak).
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let c = Caller::from_request_parts(parts, state).await?;
        if !c.is_admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_only",
                "this route needs an admin token",
            ));
        }
        Ok(Admin(c))
    }
}
