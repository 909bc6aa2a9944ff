//! The farm's bus on PostgreSQL: one session connection per process that
//! `LISTEN`s to the farm's channel (what the other processes did, as [`Note`]s)
//! and, in a process that may lead, holds the leader's advisory lock.
//!
//! A session advisory lock belongs to its connection: when the leader's process
//! dies or its connection drops, the server releases the lock and another process
//! takes it. A leader that loses its connection says so on [`Bus::leading`] and
//! never leads again in that process (the farm then stops, to be restarted).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc, watch};

use super::runners::Note;
use super::sql::CHANNEL;
use super::{LedgerError, pg};

/// The advisory lock the leader holds for as long as it leads.
const LEADER_LOCK: i64 = 0x6372_6166_7402;

/// What the bus delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// Another process did something.
    Note(Note),
    /// The bus (re)connected: notifications may have been missed; look again.
    Resync,
}

/// Whether this process leads the farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leading {
    /// Not (yet).
    No,
    /// It holds the leader's lock.
    Yes,
    /// It held it and lost it (its connection dropped).
    Lost,
}

/// The process's bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    events: broadcast::Sender<Arc<BusEvent>>,
    leading: watch::Receiver<Leading>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("leading", &*self.leading.borrow())
            .finish()
    }
}

impl Bus {
    /// Connects to the ledger at `url` and listens; with `lead_as`, also tries to
    /// become the leader under that name (every `retry`, until it does). Returns
    /// after the first connection listens.
    pub async fn start(
        url: &str,
        lead_as: Option<String>,
        retry: Duration,
    ) -> Result<Bus, LedgerError> {
        let dialer = pg::Dialer::parse(url)?;
        let (events, _) = broadcast::channel(4096);
        let (lead_tx, leading) = watch::channel(Leading::No);
        let first = dialer.listen().await.map_err(|e| dialer.error(e))?;
        let bus = Bus {
            events: events.clone(),
            leading,
        };
        tokio::spawn(run(dialer, first, events, lead_tx, lead_as, retry));
        Ok(bus)
    }

    /// What the other processes do, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.events.subscribe()
    }

    /// Whether this process leads, and changes of it.
    pub fn leading(&self) -> watch::Receiver<Leading> {
        self.leading.clone()
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow() == Leading::Yes
    }
}

async fn run(
    dialer: pg::Dialer,
    first: (tokio_postgres::Client, mpsc::UnboundedReceiver<String>),
    events: broadcast::Sender<Arc<BusEvent>>,
    lead_tx: watch::Sender<Leading>,
    lead_as: Option<String>,
    retry: Duration,
) {
    let mut conn = Some(first);
    loop {
        let (client, mut notes) = match conn.take() {
            Some(c) => c,
            None => match dialer.listen().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %super::pg_message(&e), "the farm's bus cannot reach the ledger; trying again");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            },
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %super::pg_message(&e), "the farm's bus cannot listen; trying again");
            tokio::time::sleep(retry).await;
            continue;
        }
        let _ = events.send(Arc::new(BusEvent::Resync));
        let mut tick = tokio::time::interval(retry);
        let lost = loop {
            tokio::select! {
                n = notes.recv() => match n {
                    Some(text) => {
                        if let Some(note) = Note::parse(&text) {
                            let _ = events.send(Arc::new(BusEvent::Note(note)));
                        }
                    }
                    None => break "its connection closed".to_owned(),
                },
                _ = tick.tick() => {
                    let leading = *lead_tx.borrow() == Leading::Yes;
                    if leading {
                        // Make sure the connection (and so the lock) is still there.
                        if let Err(e) = client.simple_query("SELECT 1").await {
                            break super::pg_message(&e);
                        }
                    } else if let Some(name) = &lead_as
                        && *lead_tx.borrow() == Leading::No
                    {
                        match take_lead(&client, name).await {
                            Ok(true) => {
                                tracing::info!(leader = %name, "this process leads the farm");
                                let _ = lead_tx.send(Leading::Yes);
                            }
                            Ok(false) => {}
                            Err(e) => break super::pg_message(&e),
                        }
                    }
                }
            }
        };
        tracing::warn!(why = %lost, "the farm's bus lost its ledger connection");
        if *lead_tx.borrow() == Leading::Yes {
            let _ = lead_tx.send(Leading::Lost);
        }
        tokio::time::sleep(retry).await;
    }
}

/// Tries the leader's lock; on success records the leader's name.
async fn take_lead(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    client
        .execute(
            "INSERT INTO farm_leader (id, name, since) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET name = $1, since = $2",
            &[&name, &now],
        )
        .await?;
    Ok(true)
}

/// Drives a connection, passing its notifications' payloads on.
pub(super) async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(m) = messages.next().await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if tx.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %super::pg_message(&e), "the farm's bus connection failed");
                return;
            }
        }
    }
}
