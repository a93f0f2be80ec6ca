//! Where the gateway listens for the windows (the gRPC server and its bound on one request) and
//! where it keeps cases (an embedded SQLite file, or PostgreSQL shared by replicas). Shapes and
//! defaults only: it never opens a socket or a database.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Settings of the gRPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request accepted, in bytes; larger requests get `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Address of the internal listener: `AdminService`, server reflection and health, for
    /// operators and probes; keep it on loopback or the cluster's internal network.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// TLS for both listeners (required unless `[development] plaintext`).
    #[serde(default)]
    pub tls: super::trust::TlsConfig,
}

/// Which store holds cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Embedded SQLite file (one gateway node). WAL, `synchronous = FULL`: a commit survives power loss.
    Sqlite {
        /// Path of the database file; its directory is created if missing.
        path: PathBuf,
    },
    /// PostgreSQL, for several gateway replicas sharing one database.
    Postgres {
        /// Connection URL, e.g. `postgres://yichuang:${PGPASSWORD}@db:5432/yichuang`.
        url: String,
        /// Schema holding the gateway's tables (created if missing).
        #[serde(default = "default_schema")]
        schema: String,
        /// Connections in the pool.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
    },
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("literal address")
}
fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:50052".parse().expect("literal address")
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_schema() -> String {
    "yichuang".into()
}
fn default_pool_size() -> usize {
    16
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_message_bytes: default_max_message_bytes(),
            admin_listen: default_admin_listen(),
            tls: Default::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite {
            path: "data/yichuang.db".into(),
        }
    }
}
