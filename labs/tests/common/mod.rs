//! The one test harness for servers, shared by every test file that needs PostgreSQL.
//!
//! [`with_server`] hands a test a fresh server of the backend under test and removes it
//! afterwards, also when the test panics. A backend that cannot run here (no Docker engine, no
//! image, no local binaries) makes the test say "skipped: …" in the test output and return, or
//! fail under CI (`CI` set), where everything must run: never a silent pass.
#![allow(dead_code)] // each test file uses its own part

use std::io::Write;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use labs::pg::{find_local_binaries_async, Backend, Capability, DockerEngine, ProviderConfig, Server};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Held shared by every test while it has a server, and exclusively by a test that reaps every
/// server of this process (`pg::reap_all`) or sweeps leftovers, so it never removes another
/// test's server. (Each test file is its own process: the lock is per file.)
static SERVERS: RwLock<()> = RwLock::const_new(());

/// The environment's provider settings (image, DATABASE_URL) with `backend` forced.
pub fn config(backend: Backend) -> ProviderConfig {
    let mut config = ProviderConfig::from_env(Some(backend)).unwrap();
    config.backend = backend;
    config
}

/// The backend the run is testing: `LABS_PG` (as `cargo xtask check --pg …` sets it), else auto.
pub fn backend_under_test() -> Backend {
    ProviderConfig::from_env(None).expect("LABS_PG names a backend").backend
}

/// A line in the test output even for a passing test: libtest shows the captured output of
/// failures only, and a skip must be seen.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why `backend` cannot run on this machine, if it cannot.
pub async fn unavailable(backend: Backend) -> Option<String> {
    let labs_pg = std::env::var("LABS_PG").unwrap_or_default();
    match backend {
        Backend::Container if matches!(labs_pg.as_str(), "local" | "url") => {
            Some(format!("LABS_PG={labs_pg} says this machine runs without containers"))
        }
        Backend::Container => match DockerEngine::detect().await {
            Err(e) => Some(format!("no Docker engine ({e})")),
            Ok(engine) => {
                let image = config(Backend::Container).image;
                (!engine.has_image(&image).await)
                    .then(|| format!("no Docker image {image} (set LABS_PG_IMAGE, or run `cargo xtask prepare`)"))
            }
        },
        Backend::Local => {
            find_local_binaries_async().await.err().map(|e| format!("no local PostgreSQL binaries ({e})"))
        }
        Backend::Url => config(Backend::Url).database_url.is_none().then(|| "DATABASE_URL is not set".to_string()),
        Backend::Auto => None,
    }
}

/// Whether a test of `backend` runs here. If not, it says why in the test output and the test
/// returns; under CI that is a failure instead, since CI prepares every backend.
pub async fn runs_here(backend: Backend) -> bool {
    match unavailable(backend).await {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the {backend} backend's tests, but: {reason}")
        }
        Some(reason) => {
            say(&format!("skipped: {reason}"));
            false
        }
    }
}

/// The older check, kept for the files that still use it (switch them to [`with_server`] or
/// [`runs_here`]): container tests run unless LABS_PG=local or url says this machine has no
/// containers; a skipped test says so.
pub fn containers_expected() -> bool {
    let expected = !matches!(std::env::var("LABS_PG").as_deref(), Ok("local") | Ok("url"));
    if !expected {
        say("skipped: LABS_PG says this machine runs without containers");
    }
    expected
}

/// Runs `body` on a fresh server of `backend` with `needs`, then removes the server, also when
/// `body` panics (the panic goes on afterwards). `None` when the backend does not run here.
pub async fn with_server<T>(
    backend: Backend,
    needs: &[Capability],
    body: impl for<'s> AsyncFnOnce(&'s mut Server) -> T,
) -> Option<T> {
    if !runs_here(backend).await {
        return None;
    }
    let _shared = shared().await;
    let mut server = match Server::start(&config(backend), needs).await {
        Ok(server) => server,
        Err(e) => panic!("a fresh server from the {backend} backend: {e}"),
    };
    let outcome = AssertUnwindSafe(body(&mut server)).catch_unwind().await;
    let removed = server.shutdown().await;
    match outcome {
        Ok(value) => {
            if let Err(e) = removed {
                panic!("removing the test's {backend} server: {e}");
            }
            Some(value)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// For a test that starts servers itself (several at once, say): hold it while they live.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    SERVERS.read().await
}

/// For a test that reaps every server of this process or sweeps leftovers: no other test of
/// this file has a server while it is held.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVERS.write().await
}
pub mod exercises;
