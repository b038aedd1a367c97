//! Shared by the test files that start servers themselves.
#![allow(dead_code)] // each test file uses its own part

use labs::pg::{Backend, ProviderConfig};

/// The environment's provider settings (image, DATABASE_URL) with `backend` forced.
pub fn config(backend: Backend) -> ProviderConfig {
    let mut config = ProviderConfig::from_env(Some(backend)).unwrap();
    config.backend = backend;
    config
}

/// Container tests run unless LABS_PG=local or url says this machine has no containers; a
/// skipped test says so.
pub fn containers_expected() -> bool {
    let expected = !matches!(std::env::var("LABS_PG").as_deref(), Ok("local") | Ok("url"));
    if !expected {
        eprintln!("skipped: LABS_PG says this machine runs without containers");
    }
    expected
}
pub mod exercises;
