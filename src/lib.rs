#![recursion_limit = "512"]
//! crafting-table: a self-hosted build, test and audit farm driven by a git
//! registry of YAML manifests. See `ARCHITECTURE.md` for the map.
//!
//! Two layers. The core — `config`, `clock`, `manifest`, `registry`, `reconciler`,
//! `scheduler`, `ledger`, `enqueue`, `events`, `runner`, `workspace`, `git`,
//! `logfile`, `parsers`, `findings`, `gc`, `notify` — never imports an edge. The edges serve
//! people (`api`, `ui`, `client`, `mcp`) and the wiring puts everything together (`farm`, `serve`, the
//! binary).

pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod enqueue;
pub mod events;
pub mod farm;
pub mod findings;
pub mod gc;
pub mod git;
pub mod ledger;
pub mod logfile;
pub mod manifest;
pub mod mcp;
pub mod notify;
pub mod parsers;
pub mod patcher;
pub mod reconciler;
pub mod registry;
pub mod runner;
pub mod scheduler;
pub mod serve;
pub mod ui;
pub mod workspace;
