//! The departments' adapter users on RabbitMQ, with least privilege: each user named in
//! `[bus.department_users]` may read only its departments' task and delay queues, write only to
//! the results, retry and dead exchanges, and configure nothing (the gateway's relay or `yichuang
//! bus declare` declares the topology). So one compromised adapter cannot read another
//! department's tasks, drain the gateway's results queue, publish a task, or change the
//! topology; and the results it publishes carry its own validated `user_id`, which the gateway
//! checks ([`crate::results`]). Users and permissions are created or updated over the management
//! HTTP API (`PUT /api/users/<user>`, `PUT /api/permissions/<vhost>/<user>`), idempotently, by
//! `yichuang bus users`. Passwords are handed in by the caller and never logged or printed.
//! docs/bus.md, "Users and permissions", lists what each permission covers.

use std::collections::BTreeMap;

use super::policy::{Management, PolicyError, encode, regex_escape};
use crate::config::BusConfig;

/// What a RabbitMQ user may do on the vhost: regular expressions on resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Declare or delete queues and exchanges, bind: `^$`, nothing, for an adapter.
    pub configure: String,
    /// Publish to exchanges (and bind to or from them).
    pub write: String,
    /// Consume from and get from queues.
    pub read: String,
    /// The topic exchange of results and the routing keys it may publish there
    /// (`<department>.<kind>` of its own departments only).
    pub results_keys: (String, String),
}

/// One adapter's user and the departments it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterUser {
    pub name: String,
    pub departments: Vec<String>,
    pub permissions: Permissions,
}

/// Why users could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Management(#[from] PolicyError),
    #[error(
        "cannot set RabbitMQ {what} at {url}: {message} (the management API's user needs the administrator tag: give it, or pass another with --admin-user)"
    )]
    Api {
        what: String,
        url: String,
        message: String,
    },
}

/// The permissions of an adapter serving `departments` under `prefix`.
pub fn adapter_permissions(prefix: &str, departments: &[String]) -> Permissions {
    let p = regex_escape(prefix);
    let codes = departments
        .iter()
        .map(|d| regex_escape(d))
        .collect::<Vec<_>>()
        .join("|");
    Permissions {
        configure: "^$".into(),
        // Results to the gateway, tasks put back through the delay queues, dead letters.
        write: format!(r"^{p}\.(results|retry|dead)$"),
        // Its task queues (`<prefix>.tasks.<d>`) and delay queues (`<prefix>.retry.<d>.<n>s`).
        read: format!(r"^{p}\.(tasks\.({codes})|retry\.({codes})\.[0-9]+s)$"),
        results_keys: (format!("{prefix}.results"), format!(r"^({codes})\.")),
    }
}

/// The reporter's permissions: consume its own queue, nothing else (it publishes nothing and
/// declares nothing).
pub fn reporter_permissions(prefix: &str) -> Permissions {
    let p = regex_escape(prefix);
    Permissions {
        configure: "^$".into(),
        write: "^$".into(),
        read: format!(r"^{p}\.report$"),
        results_keys: (format!("{prefix}.results"), "^$".into()),
    }
}

/// The notifier's permissions: consume its own queue, nothing else.
pub fn notifier_permissions(prefix: &str) -> Permissions {
    let p = regex_escape(prefix);
    Permissions {
        configure: "^$".into(),
        write: "^$".into(),
        read: format!(r"^{p}\.notify$"),
        results_keys: (format!("{prefix}.results"), "^$".into()),
    }
}

/// The users `yichuang bus users` sets up: every adapter's, then the reporter's
/// (`[bus] report_user`, when the reporter's queue is declared) and the notifier's
/// (`[bus] notify_user`, likewise).
pub fn users(config: &BusConfig) -> Vec<AdapterUser> {
    let mut all = adapter_users(config);
    if config.report && !config.report_user.is_empty() {
        all.push(AdapterUser {
            name: config.report_user.clone(),
            departments: Vec::new(),
            permissions: reporter_permissions(&config.prefix),
        });
    }
    if config.notify && !config.notify_user.is_empty() {
        all.push(AdapterUser {
            name: config.notify_user.clone(),
            departments: Vec::new(),
            permissions: notifier_permissions(&config.prefix),
        });
    }
    all
}

/// Every adapter user `[bus.department_users]` names, with the departments it serves (a user
/// listed for several departments serves them all from one process).
pub fn adapter_users(config: &BusConfig) -> Vec<AdapterUser> {
    let mut by_user: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (department, user) in &config.department_users {
        by_user.entry(user).or_default().push(department.clone());
    }
    by_user
        .into_iter()
        .map(|(name, departments)| AdapterUser {
            name: name.to_string(),
            permissions: adapter_permissions(&config.prefix, &departments),
            departments,
        })
        .collect()
}

/// RabbitMQ's management API of `config`, as `admin` (user, password) when given, else as the
/// user of `[bus] url`.
fn api(config: &BusConfig, admin: Option<(&str, &str)>) -> Result<Management, UsersError> {
    let mut api = Management::new(config)?;
    if let Some((user, password)) = admin {
        api.user = user.to_string();
        api.password = password.to_string();
    }
    Ok(api)
}

async fn put(api: &Management, what: String, path: String, body: String) -> Result<(), UsersError> {
    let failed = |message: String| UsersError::Api {
        what: what.clone(),
        url: api.url(),
        message,
    };
    let answer = api
        .request(reqwest::Method::PUT, &path, Some(body))
        .await
        .map_err(&failed)?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = answer.text().await.unwrap_or_default();
    Err(failed(format!(
        "HTTP {status}: {}",
        text.chars().take(200).collect::<String>()
    )))
}

/// Creates or updates `user` with `password` and no tags (it cannot use the management API),
/// and sets its permissions on the vhost of `[bus] url` (replacing any it had).
pub async fn apply(
    config: &BusConfig,
    admin: Option<(&str, &str)>,
    user: &AdapterUser,
    password: &str,
) -> Result<(), UsersError> {
    let api = api(config, admin)?;
    let body = serde_json::json!({ "password": password, "tags": "" });
    put(
        &api,
        format!("user {}", user.name),
        format!("users/{}", encode(&user.name)),
        body.to_string(),
    )
    .await?;
    let p = &user.permissions;
    let body = serde_json::json!({ "configure": p.configure, "write": p.write, "read": p.read });
    put(
        &api,
        format!("permissions of {} on vhost {}", user.name, api.vhost),
        format!("permissions/{}/{}", encode(&api.vhost), encode(&user.name)),
        body.to_string(),
    )
    .await?;
    // Topic permissions: on the results exchange, only its own departments' routing keys.
    let (exchange, keys) = &p.results_keys;
    let body = serde_json::json!({ "exchange": exchange, "write": keys, "read": "^$" });
    put(
        &api,
        format!("topic permissions of {} on vhost {}", user.name, api.vhost),
        format!(
            "topic-permissions/{}/{}",
            encode(&api.vhost),
            encode(&user.name)
        ),
        body.to_string(),
    )
    .await
}

/// Removes `user` (a test cleaning up, or an adapter retired); a user that does not exist is
/// not an error.
pub async fn remove(
    config: &BusConfig,
    admin: Option<(&str, &str)>,
    user: &str,
) -> Result<(), UsersError> {
    let api = api(config, admin)?;
    let answer = api
        .request(
            reqwest::Method::DELETE,
            &format!("users/{}", encode(user)),
            None,
        )
        .await
        .map_err(|message| UsersError::Api {
            what: format!("user {user}"),
            url: api.url(),
            message,
        })?;
    let status = answer.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(UsersError::Api {
            what: format!("user {user}"),
            url: api.url(),
            message: format!("HTTP {status}"),
        })
    }
}

/// The environment variable an adapter user's password is read from by `yichuang bus users`:
/// `YICHUANG_BUS_PASSWORD_<USER>`, the user's name upper-cased with every other character `_`
/// (`adapter-scjg` → `YICHUANG_BUS_PASSWORD_ADAPTER_SCJG`).
pub fn password_variable(user: &str) -> String {
    let name: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("YICHUANG_BUS_PASSWORD_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive matcher for the shapes used: `^a\.(b|c)$`-like, enough to check names.
    fn matches(pattern: &str, name: &str) -> bool {
        fn expand(p: &str) -> Vec<String> {
            // Expands the first group `(x|y)` into its alternatives, recursively.
            let Some(open) = p.find('(') else {
                return vec![p.to_string()];
            };
            let mut depth = 0;
            let mut close = open;
            for (i, c) in p[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &p[open + 1..close];
            let mut alts = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    '|' if depth == 0 => {
                        alts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            alts.push(&inner[start..]);
            alts.iter()
                .flat_map(|a| expand(&format!("{}{a}{}", &p[..open], &p[close + 1..])))
                .collect()
        }
        let body = pattern.trim_start_matches('^').trim_end_matches('$');
        expand(body).iter().any(|alt| {
            let alt = alt.replace(r"\.", ".");
            match alt.split_once("[0-9]+") {
                Some((head, tail)) => name
                    .strip_prefix(head)
                    .and_then(|rest| rest.strip_suffix(tail))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                None => alt == name,
            }
        })
    }

    #[test]
    fn an_adapter_reads_only_its_queues_writes_only_results_retry_and_dead_and_configures_nothing()
    {
        let config = BusConfig {
            prefix: "t.x".into(),
            department_users: BTreeMap::from([
                ("scjg".into(), "adapter-a".into()),
                ("sw".into(), "adapter-a".into()),
                ("xf".into(), "adapter-xf".into()),
            ]),
            ..BusConfig::default()
        };
        let users = adapter_users(&config);
        assert_eq!(users.len(), 2);
        let a = &users[0];
        assert_eq!((a.name.as_str(), a.departments.len()), ("adapter-a", 2));
        let n = super::super::Names::new("t.x");
        let p = &a.permissions;
        assert_eq!(p.configure, "^$");
        for own in [
            n.task_queue("scjg"),
            n.task_queue("sw"),
            n.retry_queue("scjg", 10),
            n.retry_queue("sw", 600),
        ] {
            assert!(matches(&p.read, &own), "{own} readable by {}", p.read);
        }
        for other in [
            n.task_queue("xf"),
            n.retry_queue("xf", 10),
            n.results_queue(),
            n.dead_queue("scjg"),
            n.dead_queue("results"),
            "t.x.tasks.scjgx".to_string(),
        ] {
            assert!(!matches(&p.read, &other), "{other} not readable");
        }
        for exchange in [n.results_exchange(), n.retry_exchange(), n.dead_exchange()] {
            assert!(matches(&p.write, &exchange), "{exchange} writable");
        }
        for exchange in [n.tasks_exchange(), n.events_exchange()] {
            assert!(!matches(&p.write, &exchange), "{exchange} not writable");
        }
        assert_eq!(
            p.results_keys,
            ("t.x.results".into(), r"^(scjg|sw)\.".into())
        );
        assert_eq!(
            password_variable("adapter-scjg"),
            "YICHUANG_BUS_PASSWORD_ADAPTER_SCJG"
        );
    }

    #[test]
    fn the_notifier_reads_only_its_queue_and_writes_and_configures_nothing() {
        let mut config = BusConfig {
            prefix: "t.x".into(),
            notify_user: "notifier".into(),
            ..BusConfig::default()
        };
        assert!(users(&config).is_empty(), "no notifier without its queue");
        config.notify = true;
        let all = users(&config);
        assert_eq!(all.len(), 1);
        let p = &all[0].permissions;
        let n = super::super::Names::new("t.x");
        assert!(matches(&p.read, &n.notify_queue()));
        for other in [
            n.report_queue(),
            n.results_queue(),
            n.task_queue("scjg"),
            "t.x.notifyx".into(),
        ] {
            assert!(!matches(&p.read, &other), "{other} not readable");
        }
        assert_eq!(p.write, "^$");
        assert_eq!(p.configure, "^$");
    }

    #[test]
    fn the_reporter_reads_only_its_queue_and_writes_and_configures_nothing() {
        let mut config = BusConfig {
            prefix: "t.x".into(),
            report_user: "reporter".into(),
            ..BusConfig::default()
        };
        assert!(users(&config).is_empty(), "no reporter without its queue");
        config.report = true;
        let all = users(&config);
        assert_eq!(all.len(), 1);
        let p = &all[0].permissions;
        let n = super::super::Names::new("t.x");
        assert!(matches(&p.read, &n.report_queue()));
        for other in [
            n.results_queue(),
            n.task_queue("scjg"),
            "t.x.reportx".into(),
        ] {
            assert!(!matches(&p.read, &other), "{other} not readable");
        }
        for exchange in [
            n.results_exchange(),
            n.events_exchange(),
            n.tasks_exchange(),
        ] {
            assert!(!matches(&p.write, &exchange), "{exchange} not writable");
        }
        assert_eq!(
            (p.configure.as_str(), p.results_keys.1.as_str()),
            ("^$", "^$")
        );
    }
}
