//! The container backend: a throwaway PostgreSQL container through testcontainers.

use std::time::Duration;

use testcontainers::core::{ContainerPort, ExecCommand, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::ProviderError;

const PASSWORD: &str = "labs";
/// Every container carries the id of the `labs` process that started it, so a leftover (after
/// a `kill -9`, say) can be traced: `docker ps -a --filter label=io.github.es-workshop.labs.run`.
const RUN_LABEL: &str = "io.github.es-workshop.labs.run";

pub(super) struct ContainerServer {
    container: ContainerAsync<GenericImage>,
    image: String,
    port: u16,
}

fn split_image(image: &str) -> (&str, &str) {
    // The tag follows the last ':' unless that ':' belongs to a registry host:port.
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

impl ContainerServer {
    pub(super) async fn start(image: &str) -> Result<Self, ProviderError> {
        let (name, tag) = split_image(image);
        let request = GenericImage::new(name, tag)
            .with_exposed_port(5432.tcp())
            // Readiness is checked by connecting (Server::wait_ready): log lines differ between
            // the official image and the one CI builds from Debian's packages.
            .with_wait_for(WaitFor::Nothing)
            .with_env_var("POSTGRES_PASSWORD", PASSWORD)
            .with_env_var("POSTGRES_USER", "postgres")
            .with_env_var("POSTGRES_DB", "postgres")
            .with_label(RUN_LABEL, std::process::id().to_string())
            // Publish the port on loopback only: a lab server has a known password.
            .with_host_config_modifier(|host| {
                host.publish_all_ports = Some(false);
                host.port_bindings = Some(
                    [(
                        "5432/tcp".to_string(),
                        Some(vec![bollard_binding()]),
                    )]
                    .into_iter()
                    .collect(),
                );
            })
            .with_startup_timeout(Duration::from_secs(120));
        let container = request
            .start()
            .await
            .map_err(|e| ProviderError::ContainerStart { image: image.to_string(), reason: e.to_string() })?;
        let port = mapped_port(&container).await?;
        Ok(ContainerServer { container, image: image.to_string(), port })
    }

    pub(super) fn image(&self) -> &str {
        &self.image
    }

    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(self.port).user("postgres").password(PASSWORD).dbname("postgres");
        c.connect_timeout(Duration::from_secs(5));
        c
    }

    /// Immediate shutdown: SIGQUIT to the postmaster, which is PID 1 in both images.
    pub(super) async fn crash(&mut self) -> Result<(), ProviderError> {
        let control = |detail: String| ProviderError::Control { action: "crash", detail };
        self.container
            .exec(ExecCommand::new(["sh", "-c", "kill -QUIT 1"]))
            .await
            .map_err(|e| control(e.to_string()))?;
        for _ in 0..200 {
            if !self.container.is_running().await.map_err(|e| control(e.to_string()))? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(control("the server was still running 10 s after SIGQUIT".into()))
    }

    /// Starts the stopped container again; PostgreSQL runs crash recovery on the same data.
    pub(super) async fn restart(&mut self) -> Result<(), ProviderError> {
        self.container
            .start()
            .await
            .map_err(|e| ProviderError::Control { action: "restart", detail: e.to_string() })?;
        // Docker may publish a different host port after a restart.
        self.port = mapped_port(&self.container).await?;
        Ok(())
    }

    pub(super) async fn remove(self) -> Result<(), ProviderError> {
        self.container
            .rm()
            .await
            .map_err(|e| ProviderError::Control { action: "remove container", detail: e.to_string() })
    }
}

fn bollard_binding() -> testcontainers::bollard::models::PortBinding {
    testcontainers::bollard::models::PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }
}

async fn mapped_port(container: &ContainerAsync<GenericImage>) -> Result<u16, ProviderError> {
    container
        .get_host_port_ipv4(ContainerPort::Tcp(5432))
        .await
        .map_err(|e| ProviderError::Control { action: "find the published port", detail: e.to_string() })
}
