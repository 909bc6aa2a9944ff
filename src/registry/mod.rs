//! Registry sources: where the manifests come from.
//!
//! This module does the I/O that [`crate::manifest`] must not: it finds the manifest
//! files of a registry and reads their text.

pub mod dir;
