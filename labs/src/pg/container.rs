//! The container backend: a throwaway container (testcontainers) whose main process only keeps
//! it alive; the servers in it are run by `cluster.rs`, exactly as the local backend runs them.
//! The container and everything in it are removed when the lab ends.

use std::time::Duration;

use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::cluster::{Cluster, Host, Ports, CONTAINER_ROOT};
use super::ProviderError;

/// Every container carries the id of the `labs` process that started it, so a leftover (after
/// a `kill -9`, say) can be traced: `docker ps -a --filter label=io.github.es-workshop.labs.run`.
const RUN_LABEL: &str = "io.github.es-workshop.labs.run";
const PRIMARY_PORT: u16 = 5432;
const STANDBY_PORT: u16 = 5433;
const READY_LINE: &str = "labs: host ready";

/// Starts the container and the primary in it with `settings`.
pub(super) async fn start(image: &str, settings: &[(String, String)]) -> Result<Cluster, ProviderError> {
    let (name, tag) = split_image(image);
    // PID 1 is a shell that sleeps: a crashed server leaves the container, the standby and the
    // archive in place. `docker stop` (TERM) ends it at once.
    let keepalive = format!(
        "trap 'exit 0' TERM INT; mkdir -p {CONTAINER_ROOT} && chown postgres:postgres {CONTAINER_ROOT} && chmod 700 {CONTAINER_ROOT}; \
         echo '{READY_LINE}'; while :; do sleep 1 & wait $!; done"
    );
    let request = GenericImage::new(name, tag)
        .with_entrypoint("sh")
        .with_exposed_port(PRIMARY_PORT.tcp())
        .with_exposed_port(STANDBY_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stdout(READY_LINE))
        .with_cmd(["-c", keepalive.as_str()])
        .with_label(RUN_LABEL, std::process::id().to_string())
        // Publish the ports on loopback only: a lab server has a known password.
        .with_host_config_modifier(|host| {
            host.publish_all_ports = Some(false);
            host.port_bindings = Some(
                [PRIMARY_PORT, STANDBY_PORT]
                    .into_iter()
                    .map(|p| (format!("{p}/tcp"), Some(vec![bollard_binding()])))
                    .collect(),
            );
        })
        .with_startup_timeout(Duration::from_secs(120));
    let container = request
        .start()
        .await
        .map_err(|e| ProviderError::ContainerStart { image: image.to_string(), reason: e.to_string() })?;
    let primary = mapped_port(&container, PRIMARY_PORT).await?;
    let standby = mapped_port(&container, STANDBY_PORT).await?;
    let host = Host::Container { container };
    host.init_primary(PRIMARY_PORT, settings).await.map_err(|e| ProviderError::ContainerStart {
        image: image.to_string(),
        reason: format!(
            "{e} (the image needs PostgreSQL 15 at /usr/lib/postgresql/15/bin, a postgres user and setpriv)"
        ),
    })?;
    Ok(Cluster {
        host,
        image: Some(image.to_string()),
        primary: Ports { inside: PRIMARY_PORT, published: primary },
        standby: Ports { inside: STANDBY_PORT, published: standby },
        standby_running: false,
        primary_running: true,
        frozen: Vec::new(),
        paused_conninfo: None,
    })
}

/// Removes the container and everything in it.
pub(super) async fn remove(container: ContainerAsync<GenericImage>) -> Result<(), ProviderError> {
    container.rm().await.map_err(|e| ProviderError::Control { action: "remove container", detail: e.to_string() })
}

fn split_image(image: &str) -> (&str, &str) {
    // The tag follows the last ':' unless that ':' belongs to a registry host:port.
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

fn bollard_binding() -> testcontainers::bollard::models::PortBinding {
    testcontainers::bollard::models::PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }
}

async fn mapped_port(container: &ContainerAsync<GenericImage>, port: u16) -> Result<u16, ProviderError> {
    container
        .get_host_port_ipv4(ContainerPort::Tcp(port))
        .await
        .map_err(|e| ProviderError::Control { action: "find the published port", detail: e.to_string() })
}
