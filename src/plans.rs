//! Statements prepared once per backend and kept (SPI_keepplan), so the hot
//! paths never parse or plan. The SQL itself lives in `src/queries/*.sql`.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

pub struct Statement {
    pub sql: &'static str,
    pub args: &'static [PgOid],
    /// a statement that writes must run with a fresh snapshot and a transaction id
    pub mutating: bool,
}

pub const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
pub const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
pub const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
pub const INTERVAL: PgOid = PgOid::BuiltIn(PgBuiltInOids::INTERVALOID);
pub const JSONB: PgOid = PgOid::BuiltIn(PgBuiltInOids::JSONBOID);

thread_local! {
    // Leaked on purpose: one plan per statement per backend, alive as long as it.
    static KEPT: RefCell<HashMap<usize, &'static OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// The kept plan for `statement`, prepared on first use in this backend.
pub fn kept(
    client: &SpiClient<'_>,
    statement: &'static Statement,
) -> &'static OwnedPreparedStatement {
    let key = statement as *const Statement as usize;
    if let Some(plan) = KEPT.with(|kept| kept.borrow().get(&key).copied()) {
        return plan;
    }
    let prepared = if statement.mutating {
        client.prepare_mut(statement.sql, statement.args)
    } else {
        client.prepare(statement.sql, statement.args)
    };
    let plan: &'static OwnedPreparedStatement = Box::leak(Box::new(
        prepared
            .unwrap_or_else(|e| error!("castle_sessions: cannot prepare a statement: {e}"))
            .keep(),
    ));
    KEPT.with(|kept| kept.borrow_mut().insert(key, plan));
    plan
}

/// SPI failures here are server faults (a dropped table, out of memory), never
/// a property of the caller's input, so they are raised as they are.
pub fn or_raise<T>(result: pgrx::spi::SpiResult<T>) -> T {
    result.unwrap_or_else(|e| error!("castle_sessions: {e}"))
}
