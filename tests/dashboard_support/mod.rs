//! Shared parts of the dashboard tests: the queries of
//! `dashboards/keywheel.json`, a `keywheel serve` child process under load,
//! and Debian's Prometheus tools.

#![allow(
    dead_code,
    reason = "each dashboard test binary uses a different part of these helpers"
)]

pub mod dashboard;
#[cfg(feature = "server")]
pub mod load;
#[cfg(feature = "server")]
pub mod processes;
#[cfg(feature = "server")]
pub mod scrape;
