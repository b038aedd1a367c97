//! The url backend: an existing server. Each lab run gets a database of its own, created here
//! and dropped afterwards, so runs never see each other's tables.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

use super::ProviderError;

pub(super) struct UrlDatabase {
    admin: tokio_postgres::Config,
    database: String,
}

impl UrlDatabase {
    pub(super) async fn create(url: &str) -> Result<Self, ProviderError> {
        let admin: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ProviderError::Url(format!("DATABASE_URL is not a valid connection string: {e}")))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let database = format!("labs_{}_{nanos}", std::process::id());
        let client = connect(&admin).await?;
        client.batch_execute(&format!("CREATE DATABASE {database}")).await.map_err(|e| {
            ProviderError::Url(format!("could not create database {database} (the user needs CREATEDB): {e}"))
        })?;
        Ok(UrlDatabase { admin, database })
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
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database))
            .await
            .map_err(|e| ProviderError::Url(format!("could not drop database {}: {e}", self.database)))
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, ProviderError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| ProviderError::Url(format!("could not connect to DATABASE_URL: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
