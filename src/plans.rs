//! Statements prepared once per backend and kept (SPI_keepplan), so the hot
//! paths never parse or plan. The SQL itself lives in `src/queries/*.sql`.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys::{self, PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

pub struct Statement {
    pub sql: &'static str,
    pub args: &'static [PgOid],
    /// run with a fresh snapshot each time (a write, or a read that must see
    /// every commit before it)
    pub mutating: bool,
}

pub const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
pub const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
pub const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
pub const BYTEA: PgOid = PgOid::BuiltIn(PgBuiltInOids::BYTEAOID);
pub const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);
pub const JSONB: PgOid = PgOid::BuiltIn(PgBuiltInOids::JSONBOID);
pub const INT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID);
pub const TIMESTAMPTZ_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZARRAYOID);

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

/// A timestamptz argument (PostgreSQL's microseconds).
pub fn timestamptz(at: i64) -> pgrx::datum::DatumWithOid<'static> {
    unsafe { pgrx::datum::DatumWithOid::new(pg_sys::Datum::from(at), pg_sys::TIMESTAMPTZOID) }
}

/// A text argument from bytes in the database's encoding.
pub fn text(bytes: &[u8]) -> pgrx::datum::DatumWithOid<'static> {
    unsafe { pgrx::datum::DatumWithOid::new(crate::raw_text::text_datum(bytes), pg_sys::TEXTOID) }
}

/// The ids in the first column of a statement's rows (`RETURNING s.id`, or a
/// SELECT of ids).
pub fn returned_ids(rows: pgrx::spi::SpiTupleTable<'_>) -> Vec<i64> {
    rows.map(|row| or_raise(row.get::<i64>(1)).unwrap_or_default())
        .collect()
}

/// SPI failures here are server faults (a dropped table, out of memory), never
/// a property of the caller's input, so they are raised as they are.
pub fn or_raise<T>(result: pgrx::spi::SpiResult<T>) -> T {
    result.unwrap_or_else(|e| error!("castle_sessions: {e}"))
}

/// Runs `f` — statements on the table — as the table's owner with search_path
/// pinned to `pg_catalog, pg_temp` (and bitmap scans off, see below): what SECURITY DEFINER and SET search_path
/// would give a whole function, for just the statements that need it, so the
/// read-only hot path pays for neither. An error unwinds both with the
/// (sub)transaction, and loses its detail: the owner may read the table, so a
/// failed constraint's detail would quote the row, hash included.
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    as_owner_unpinned(owner, || pinned(f))
}

/// `as_owner` without the pinned settings, for work that runs no statement
/// (the direct reads and INSERT of store.rs): a sign-in under the limit
/// sets one parameter (`search_path_pinned`), not two. A statement inside
/// runs under `pinned`.
pub fn as_owner_unpinned<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    without_detail(|| unsafe {
        let mut caller = pg_sys::InvalidOid;
        let mut context = 0;
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        let result = f();
        pg_sys::SetUserIdAndSecContext(caller, context);
        result
    })
}

/// Runs `f` — statements on the table — with search_path pinned to
/// `pg_catalog, pg_temp` and bitmap scans off, undone when it returns (an
/// error undoes them with the (sub)transaction).
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    search_path_pinned(|| {
        // Plain index scans, never bitmap ones: only an index scan marks the
        // entries of dead rows as dead, and a user's sessions churn (every
        // sign-in at the limit deletes one), so bitmap scans of the user index
        // would revisit every dead row until the next VACUUM.
        unsafe { set_for_now(c"enable_bitmapscan", c"off") };
        f()
    })
}

/// Runs `f` with search_path pinned to `pg_catalog, pg_temp`, undone when it
/// returns. Alone, for the direct INSERT, which runs no statement of ours but
/// may run a DBA's (a CHECK's or an index's functions, resolving their names
/// as they run), as the owner, so never under the caller's search_path.
pub fn search_path_pinned<R>(f: impl FnOnce() -> R) -> R {
    unsafe {
        let nest_level = pg_sys::NewGUCNestLevel();
        set_for_now(c"search_path", c"pg_catalog, pg_temp");
        let result = f();
        pg_sys::AtEOXact_GUC(true, nest_level);
        result
    }
}

/// Inside `pinned`: the statements run next take their generic plan. A
/// custom plan of `= ANY ($1)` always looks cheaper (it knows the array's
/// length), so PostgreSQL would plan such a statement anew at every call:
/// 85,000 instructions, a third of a sign-in at the limit.
pub fn generic_plans() {
    unsafe { set_for_now(c"plan_cache_mode", c"force_generic_plan") };
}

/// Sets a parameter until the GUC nest level the caller opened is closed.
unsafe fn set_for_now(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// Runs `f`, re-raising any error it raises with the same SQLSTATE and message
/// but no detail: a constraint's detail may quote the row, hash included.
pub fn without_detail<R>(f: impl FnOnce() -> R) -> R {
    PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report) => {
                ereport!(ERROR, report.sql_error_code(), report.message().to_owned());
            }
            panic => panic.rethrow(),
        })
        .execute()
}

/// Runs `f` in a subtransaction of its own: Some(result) when it succeeded,
/// None when it raised, after rolling the subtransaction back (the caller's
/// transaction goes on either way).
pub fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Option<R> {
    attempt(f).ok()
}

/// `in_subtransaction`, with what went wrong: the error's code, and its
/// SQLSTATE and message (never its detail, which may quote a row).
pub fn attempt<R>(f: impl FnOnce() -> R) -> Result<R, (PgSqlErrorCode, String)> {
    unsafe {
        let memory = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(f())))
            .catch_others(|caught| match caught {
                pg_sys::panic::CaughtError::PostgresError(report)
                | pg_sys::panic::CaughtError::ErrorReport(report) => Err((
                    report.sql_error_code(),
                    format!("{}: {}", report.sql_error_code(), report.message()),
                )),
                _ => Err((
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "an internal error (see above)".to_owned(),
                )),
            })
            .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(memory);
        pg_sys::CurrentResourceOwner = owner;
        result
    }
}
