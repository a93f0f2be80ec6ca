//! Databases of each test's own: a PostgreSQL schema per test (the server `make test` starts),
//! dropped at the end even when the test fails.

use std::time::Duration;

use tokio_postgres::Client;

/// The PostgreSQL URL that `make test` provides.
pub fn pg_url() -> String {
    std::env::var("YICHUANG_TEST_PG_URL").expect(
        "YICHUANG_TEST_PG_URL is not set: run the suite with `make test`, which starts PostgreSQL and sets it",
    )
}

/// `url` without its password, and the password: what a department file gives an adapter
/// apart.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), password);
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return (url.to_string(), password);
    };
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (format!("{scheme}://{user}@{host}"), password)
}

/// A schema name no other test uses: `<prefix>_<uuid>`.
pub fn unique_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A connection to the test server, with the URL's TLS settings (`make test` asks for
/// `sslmode=require`); its connection task runs on the current runtime.
pub async fn connect() -> Client {
    yichuang::tls::connect_postgres(&pg_url())
        .await
        .expect("connect to PostgreSQL")
}

/// Drops a test's schema.
pub async fn drop_schema(name: &str) {
    connect()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .await
        .expect("drop the test schema");
}

/// A schema of one test's own, dropped when the test ends: by [`Schema::drop_now`] at its end,
/// or when the guard is dropped, a test's panic included.
#[derive(Debug)]
pub struct Schema {
    pub name: String,
    dropped: bool,
}

impl Schema {
    /// A fresh name, `<prefix>_<uuid>`; whoever uses it first creates it.
    pub fn new(prefix: &str) -> Schema {
        Schema::named(unique_schema(prefix))
    }

    /// The guard of a schema named elsewhere (a gateway's settings).
    pub fn named(name: impl Into<String>) -> Schema {
        Schema {
            name: name.into(),
            dropped: false,
        }
    }

    /// Drops the schema now, on the test's runtime.
    pub async fn drop_now(mut self) {
        drop_schema(&self.name).await;
        self.dropped = true;
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A test that failed, or never said. Bounded: a gateway of the failed test may still
        // hold locks on the schema.
        let name = self.name.clone();
        crate::clean_up_on_a_thread(move || async move {
            let url = pg_url();
            let connected = yichuang::tls::connect_postgres(&url);
            let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(10), connected).await
            else {
                return;
            };
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                ))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_split_from_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/d"),
            (
                "postgres://u@h:5432/d".to_string(),
                Some("p@ss".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/d"),
            ("postgres://u@h/d".to_string(), None)
        );
    }
}
