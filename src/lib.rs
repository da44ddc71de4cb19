//! castle_sessions: opaque session tokens inside PostgreSQL.
//!
//! `token` is the pure codec; `settings` every castle.* setting; the SQL API,
//! one module per area: `issue` (create_session), `auth` (authenticate,
//! verify, is_valid), `lifecycle` (revoke, rotate, device lists, pruning),
//! `context` (login and who is asking), `stats` (castle.stats); `families`
//! rotation's grace and reuse; `revocations` the standing
//! workers (and the queue of families they revoke after a reuse); `uses` the
//! queue of last uses they write; `user_lock` what serializes a user's
//! sign-ins and sign-outs; `shard` a database as one shard of a set; `events` what is counted, logged and notified; `catalog` the verified objects the
//! direct reads rely on (its contract is at its top); `compat` the only
//! module that names a PostgreSQL major; `store` the hot paths'
//! reads, direct or in SQL; `session_row` the rows they return; `row_scan` the scan that returns them in FROM without a Function Scan; `raw_text`
//! and `raw_jsonb` arguments taken as PostgreSQL holds them; `plans` the
//! statements kept prepared, in `src/queries`.

use pgrx::prelude::*;

mod auth;
mod catalog;
mod compat;
mod context;
mod events;
mod families;
mod issue;
mod lifecycle;
mod plans;
mod raw_jsonb;
mod raw_text;
mod revocations;
mod row_scan;
mod session_row;
mod settings;
mod shard;
mod stats;
mod store;
pub mod token;
mod user_lock;
mod uses;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    auth::register_log_hook();
    stats::register();
    revocations::register();
    context::register_callbacks();
    catalog::register_invalidation();
    shard::register_invalidation();
    row_scan::register();
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
