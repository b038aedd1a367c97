//! The url backend: an existing server. Each lab run gets a database of its own, created here
//! and dropped afterwards, so runs never see each other's tables.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

use super::{endpoint_of, ProviderError, ServerVersion};

pub(super) struct UrlDatabase {
    admin: tokio_postgres::Config,
    database: String,
}

impl UrlDatabase {
    /// Checks the server's version, then creates the lab's database.
    pub(super) async fn create(url: &str) -> Result<(Self, ServerVersion), ProviderError> {
        let admin: tokio_postgres::Config =
            url.parse().map_err(|source| ProviderError::DatabaseUrlInvalid { source })?;
        let client = connect(&admin).await?;
        let version = ServerVersion::query(&client).await?;
        version.check_supported()?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let database = format!("labs_{}_{nanos}", std::process::id());
        client.batch_execute(&format!("CREATE DATABASE {database}")).await.map_err(|source| {
            ProviderError::UrlDatabase {
                action: "create",
                database: database.clone(),
                hint: " (the user in DATABASE_URL needs CREATEDB)",
                source,
            }
        })?;
        Ok((UrlDatabase { admin, database }, version))
    }

    pub(super) fn database(&self) -> &str {
        &self.database
    }

    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut c = self.admin.clone();
        c.dbname(&self.database);
        c
    }

    pub(super) async fn drop_database(self) -> Result<(), ProviderError> {
        let client = connect(&self.admin).await?;
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)).await.map_err(
            |source| ProviderError::UrlDatabase { action: "drop", database: self.database.clone(), hint: "", source },
        )
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, ProviderError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| ProviderError::Connect { endpoint: endpoint_of(config), source })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
