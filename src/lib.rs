#![recursion_limit = "512"]
//! crafting-table: a self-hosted build, test and audit farm driven by a git
//! registry of YAML manifests. See `ARCHITECTURE.md` for the map.

pub mod api;
pub mod config;
pub mod findings;
pub mod git;
pub mod ledger;
pub mod manifest;
pub mod parsers;
pub mod reconciler;
pub mod registry;
pub mod runner;
pub mod scheduler;
pub mod serve;
pub mod workspace;
