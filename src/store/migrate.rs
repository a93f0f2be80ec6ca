//! Versioned schema migrations, embedded in the binary, applied in order at start and recorded
//! in `schema_migrations`, so every engine's schema is reproducible from the repository.

/// Migrations of the SQLite engine, in order.
pub(super) const SQLITE: &[(&str, &str)] = &[
    (
        "0001_cases",
        include_str!("../../migrations/sqlite/0001_cases.sql"),
    ),
    (
        "0002_outbox",
        include_str!("../../migrations/sqlite/0002_outbox.sql"),
    ),
    (
        "0003_event_outbox",
        include_str!("../../migrations/sqlite/0003_event_outbox.sql"),
    ),
    (
        "0004_feed",
        include_str!("../../migrations/sqlite/0004_feed.sql"),
    ),
    (
        "0005_push",
        include_str!("../../migrations/sqlite/0005_push.sql"),
    ),
    (
        "0006_clock",
        include_str!("../../migrations/sqlite/0006_clock.sql"),
    ),
    (
        "0007_provisional",
        include_str!("../../migrations/sqlite/0007_provisional.sql"),
    ),
    (
        "0008_stall",
        include_str!("../../migrations/sqlite/0008_stall.sql"),
    ),
    (
        "0009_operator_actions",
        include_str!("../../migrations/sqlite/0009_operator_actions.sql"),
    ),
    (
        "0010_push_dead",
        include_str!("../../migrations/sqlite/0010_push_dead.sql"),
    ),
    (
        "0011_access_log",
        include_str!("../../migrations/sqlite/0011_access_log.sql"),
    ),
    (
        "0012_console",
        include_str!("../../migrations/sqlite/0012_console.sql"),
    ),
    (
        "0013_events_claim",
        include_str!("../../migrations/sqlite/0013_events_claim.sql"),
    ),
];

/// Migrations of the PostgreSQL engine, in order.
pub(super) const POSTGRES: &[(&str, &str)] = &[
    (
        "0001_cases",
        include_str!("../../migrations/postgres/0001_cases.sql"),
    ),
    (
        "0002_outbox",
        include_str!("../../migrations/postgres/0002_outbox.sql"),
    ),
    (
        "0003_event_outbox",
        include_str!("../../migrations/postgres/0003_event_outbox.sql"),
    ),
    (
        "0004_feed",
        include_str!("../../migrations/postgres/0004_feed.sql"),
    ),
    (
        "0005_push",
        include_str!("../../migrations/postgres/0005_push.sql"),
    ),
    (
        "0006_clock",
        include_str!("../../migrations/postgres/0006_clock.sql"),
    ),
    (
        "0007_provisional",
        include_str!("../../migrations/postgres/0007_provisional.sql"),
    ),
    (
        "0008_stall",
        include_str!("../../migrations/postgres/0008_stall.sql"),
    ),
    (
        "0009_operator_actions",
        include_str!("../../migrations/postgres/0009_operator_actions.sql"),
    ),
    (
        "0010_push_dead",
        include_str!("../../migrations/postgres/0010_push_dead.sql"),
    ),
    (
        "0011_access_log",
        include_str!("../../migrations/postgres/0011_access_log.sql"),
    ),
    (
        "0012_feed_xid",
        include_str!("../../migrations/postgres/0012_feed_xid.sql"),
    ),
    (
        "0013_console",
        include_str!("../../migrations/postgres/0013_console.sql"),
    ),
];

/// The table that records applied migrations (same SQL on both engines).
pub(super) const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)";
