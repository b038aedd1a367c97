//! The container backend: a throwaway container (testcontainers) whose main process only keeps
//! it alive; the servers in it are run by `cluster.rs`, exactly as the local backend runs them.
//! The container and everything in it are removed when the lab ends.

use std::mem::ManuallyDrop;
use std::time::Duration;

use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::cluster::{Cluster, ContainerHost, Host, Ports, CONTAINER_ROOT};
use super::reaper::{self, Owner, Registration, CONTAINER_SERVER_LABEL};
use super::scripts;
use super::ProviderError;

const PRIMARY_PORT: u16 = 5432;
const STANDBY_PORT: u16 = 5433;
const READY_LINE: &str = "labs: host ready";

/// Starts the container and the primary in it with `settings`.
pub(super) async fn start(image: &str, settings: &[(String, String)]) -> Result<Cluster, ProviderError> {
    let (name, tag) = split_image(image);
    // Registered before the container exists: a start abandoned while Docker creates it still
    // leaves a registry entry, and `reap_all` finds the container by its labels.
    let (registration, server) = Registration::container();
    let label = server.clone();
    let mut request = GenericImage::new(name, tag)
        .with_entrypoint("sh")
        .with_exposed_port(PRIMARY_PORT.tcp())
        .with_exposed_port(STANDBY_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stdout(READY_LINE))
        // `sh -c TEXT NAME ARGS…`: the node directory and the ready line are $1 and $2.
        .with_cmd(["-c", scripts::KEEPALIVE.text, scripts::KEEPALIVE.name, CONTAINER_ROOT, READY_LINE])
        .with_label(CONTAINER_SERVER_LABEL, server);
    for (label, value) in Owner::this_process().labels() {
        request = request.with_label(label, value);
    }
    let request = request
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
    let container = match request.start().await {
        Ok(container) => ManuallyDrop::new(container),
        Err(e) => {
            // testcontainers removes what it made when its start fails; make sure of it.
            if reaper::remove_server_containers(&label).await.is_ok() {
                registration.release();
            }
            return Err(ProviderError::ContainerStart { image: image.to_string(), reason: e.to_string() });
        }
    };
    let id = container.id().to_string();
    registration.container_created(&id);
    match prepare(container, image, settings).await {
        Ok((host, primary, standby)) => Ok(Cluster::new(host, Some(image.to_string()), primary, standby, registration)),
        Err(e) => {
            if reaper::remove_container(&id).await.is_ok() {
                registration.release();
            }
            Err(e)
        }
    }
}

/// Finds the ports and the server binaries, then creates and starts the primary.
async fn prepare(
    container: ManuallyDrop<ContainerAsync<GenericImage>>,
    image: &str,
    settings: &[(String, String)],
) -> Result<(Host, Ports, Ports), ProviderError> {
    let primary = mapped_port(&container, PRIMARY_PORT).await?;
    let standby = mapped_port(&container, STANDBY_PORT).await?;
    let mut host = Host::Container(Box::new(ContainerHost { container, bin: String::new() }));
    let unusable = |e: ProviderError, needs: &str| ProviderError::ContainerStart {
        image: image.to_string(),
        reason: format!("{e} (the image needs {needs})"),
    };
    let bin = host
        .run(scripts::FIND_BIN, "find the server binaries", &[], &[])
        .await
        .map_err(|e| unusable(e, "PostgreSQL's server binaries, a postgres user and setpriv"))?;
    if let Host::Container(c) = &mut host {
        c.bin = bin.trim().to_string();
    }
    host.init_primary(PRIMARY_PORT, settings)
        .await
        .map_err(|e| unusable(e, "PostgreSQL 14 to 18 with initdb, pg_ctl and pg_basebackup"))?;
    Ok((host, Ports { inside: PRIMARY_PORT, published: primary }, Ports { inside: STANDBY_PORT, published: standby }))
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
        .map_err(|source| ProviderError::Container { action: "find the published port", source })
}
