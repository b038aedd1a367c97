//! Just enough of the Docker Engine API for what testcontainers does not do for us: is an
//! engine answering, has it the image, and the reaper's listing and removal of labelled
//! containers (which must work after a start was abandoned, without testcontainers' handle).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::ProviderError;

/// A Docker-compatible engine (Docker or Podman) reachable on a Unix socket.
pub struct DockerEngine {
    socket: PathBuf,
}

/// One container as the engine lists it.
#[derive(Clone, Debug)]
pub(super) struct ContainerSummary {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

/// Quick questions (ping, version, image) answer within this; a removal kills a container first.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

impl DockerEngine {
    /// Finds the engine testcontainers will use: `DOCKER_HOST` (unix://…) or /var/run/docker.sock.
    /// Answers within a second either way, so `auto` stays cheap.
    pub async fn detect() -> Result<DockerEngine, ProviderError> {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
                Some(path) => PathBuf::from(path),
                None => {
                    return Err(ProviderError::DockerUnavailable {
                        socket: host.clone(),
                        reason: "DOCKER_HOST is not a unix:// socket, and the labs only probe Unix sockets".into(),
                    })
                }
            },
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        let unavailable =
            |reason: String| ProviderError::DockerUnavailable { socket: socket.display().to_string(), reason };
        if !socket.exists() {
            return Err(unavailable("no such socket".into()));
        }
        let engine = DockerEngine { socket: socket.clone() };
        match engine.request("GET", "/_ping", PROBE_TIMEOUT).await {
            Ok(Answer { status: 200, .. }) => Ok(engine),
            Ok(Answer { status, body }) => Err(unavailable(format!("it answered {status}: {}", body.trim()))),
            Err(e) => Err(unavailable(format!("it did not answer: {e}"))),
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Whether the image is already present, so no registry is needed to start it.
    pub async fn has_image(&self, image: &str) -> bool {
        let image =
            if image.contains(':') || image.contains('@') { image.to_string() } else { format!("{image}:latest") };
        matches!(
            self.request("GET", &format!("/images/{image}/json"), PROBE_TIMEOUT).await,
            Ok(Answer { status: 200, .. })
        )
    }

    /// The engine's version string, for `labs doctor`.
    pub async fn version(&self) -> Option<String> {
        let Answer { status, body } = self.request("GET", "/version", PROBE_TIMEOUT).await.ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(format!(
            "{} {}",
            v.pointer("/Components/0/Name").and_then(|n| n.as_str()).unwrap_or("engine"),
            v.get("Version").and_then(|n| n.as_str()).unwrap_or("?")
        ))
    }

    /// Every container, running or not, with a label matching `label` (`key` or `key=value`).
    pub(super) async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>, ProviderError> {
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!("/containers/json?all=1&filters={}", percent_encode(&filters));
        let action = || format!("list the containers labelled {label}");
        let Answer { status, body } =
            self.request("GET", &path, PROBE_TIMEOUT).await.map_err(|e| self.failed(action(), e.to_string()))?;
        if status != 200 {
            return Err(self.failed(action(), format!("it answered {status}: {}", body.trim())));
        }
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|e| self.failed(action(), format!("unreadable answer: {e}")))?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let id = c.get("Id")?.as_str()?.to_string();
                let image = c.get("Image").and_then(|i| i.as_str()).unwrap_or("?").to_string();
                let labels = c
                    .get("Labels")
                    .and_then(|l| l.as_object())
                    .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                    .unwrap_or_default();
                Some(ContainerSummary { id, image, labels })
            })
            .collect())
    }

    /// Removes a container, killing it if it runs, with its anonymous volumes. Returns whether
    /// it was there (a container already gone, or being removed by someone else, is fine).
    pub(super) async fn remove_container(&self, id: &str) -> Result<bool, ProviderError> {
        let path = format!("/containers/{}?force=1&v=1", percent_encode(id));
        let action = || format!("remove container {id}");
        match self.request("DELETE", &path, REMOVE_TIMEOUT).await.map_err(|e| self.failed(action(), e.to_string()))? {
            Answer { status: 204, .. } => Ok(true),
            // 404: already gone; 409: a removal is already under way.
            Answer { status: 404, .. } => Ok(false),
            Answer { status: 409, body } if body.contains("already in progress") => Ok(false),
            Answer { status, body } => Err(self.failed(action(), format!("it answered {status}: {}", body.trim()))),
        }
    }

    fn failed(&self, action: String, reason: String) -> ProviderError {
        ProviderError::Docker { socket: self.socket.display().to_string(), action, reason }
    }

    /// One HTTP/1.0 request (the engine then answers without chunking and closes the stream).
    async fn request(&self, method: &str, path: &str, timeout: Duration) -> std::io::Result<Answer> {
        let request = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            let req = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
            stream.write_all(req.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "the engine's answer is not HTTP")
            })?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, request).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {} s", timeout.as_secs()))
        })?
    }
}

/// An HTTP answer: status code and body.
struct Answer {
    status: u16,
    body: String,
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query string.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
