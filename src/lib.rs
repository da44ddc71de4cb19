//! castle_sessions: opaque session tokens inside PostgreSQL.
//!
//! `token` is the pure codec; `settings` every castle.* setting; the SQL API,
//! one module per area: `issue` (create_session), `auth` (authenticate,
//! verify), `lifecycle` (revoke, rotate, device lists, pruning), `context`
//! (login and who is asking); `store` the hot paths' direct table access and
//! `session_row` the rows they return; `scan` the Custom Scan that runs
//! authenticate and verify in FROM; `unguarded` the PostgreSQL functions the
//! hot path calls without pgrx's per-call guard; `plans` the statements kept
//! prepared.

use pgrx::prelude::*;

mod auth;
mod context;
mod issue;
mod lifecycle;
mod plans;
mod raw_jsonb;
mod scan;
mod session_row;
mod settings;
mod store;
pub mod token;
mod unguarded;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    context::register_callbacks();
    store::register_invalidation();
    scan::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
