//! The container backend's image: is it here, how big is it, and pulling it while online
//! (`labs prepare`), so the day itself needs no download.

use futures_util::StreamExt;
use testcontainers::bollard::query_parameters::CreateImageOptionsBuilder;
use testcontainers::bollard::{Docker, API_DEFAULT_VERSION};

use super::{DockerEngine, ProviderError};

/// An image as the engine has it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageInfo {
    pub image: String,
    pub id: String,
    pub size_bytes: u64,
}

fn client(engine: &DockerEngine) -> Result<Docker, ProviderError> {
    let socket = engine.socket().display().to_string();
    Docker::connect_with_unix(&socket, 600, API_DEFAULT_VERSION).map_err(|e| ProviderError::Docker {
        socket,
        action: "connect".into(),
        reason: e.to_string(),
    })
}

/// The image's id and size, if the engine has it.
pub async fn image_info(engine: &DockerEngine, image: &str) -> Result<Option<ImageInfo>, ProviderError> {
    let docker = client(engine)?;
    match docker.inspect_image(image).await {
        Ok(found) => Ok(Some(ImageInfo {
            image: image.to_string(),
            id: found.id.unwrap_or_default(),
            size_bytes: found.size.unwrap_or(0).max(0) as u64,
        })),
        Err(testcontainers::bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(ProviderError::Docker {
            socket: engine.socket().display().to_string(),
            action: format!("inspect image {image}"),
            reason: e.to_string(),
        }),
    }
}

/// Pulls `image`, telling `progress` each layer's state as the engine reports it.
pub async fn pull(
    engine: &DockerEngine,
    image: &str,
    mut progress: impl FnMut(&str),
) -> Result<ImageInfo, ProviderError> {
    let docker = client(engine)?;
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut stream = docker.create_image(Some(options), None, None);
    let fail = |reason: String| ProviderError::Docker {
        socket: engine.socket().display().to_string(),
        action: format!("pull {image}"),
        reason,
    };
    while let Some(step) = stream.next().await {
        let step = step.map_err(|e| fail(e.to_string()))?;
        if let Some(error) = step.error_detail.and_then(|d| d.message) {
            return Err(fail(error));
        }
        if let Some(status) = step.status {
            match step.id {
                Some(layer) => progress(&format!("{layer}: {status}")),
                None => progress(&status),
            }
        }
    }
    image_info(engine, image).await?.ok_or_else(|| fail("the engine reports success but has no such image".into()))
}
