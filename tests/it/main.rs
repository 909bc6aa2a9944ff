//! The integration test binary: one binary for every suite keeps link time down.

mod api;
mod browser;
mod cli;
mod client;
mod config;
mod digest;
mod disk;
mod e2e;
mod findings;
mod fuzz;
mod helpers;
mod ledger;
mod manifest;
mod mcp;
mod parsers;
mod patcher;
mod postgres;
mod reconcile;
mod runner;
mod runners;
mod sandbox;
mod scheduler;
mod schema;
mod seams;
mod ui;
mod warm;
