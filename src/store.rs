//! The hot path's read of one session: an index scan on castle.sessions'
//! primary key, straight through the access methods. No SPI, no planner, no
//! executor, no SQL text, so nothing on this path depends on search_path, and
//! authenticate costs about what the primary-key lookup itself costs.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::session_row::SessionRow;

/// castle.sessions' columns, in table order (sql/bootstrap.sql; an upgrade may
/// only append, and the scans read these first eight).
const ID: usize = 0;
const HASH: usize = 1;
const USER_ID: usize = 2;
const CREATED_AT: usize = 3;
const UPDATED_AT: usize = 4;
const EXPIRES_AT: usize = 5;
const USED_AT: usize = 6;
const DATA: usize = 7;
const COLUMNS: usize = 8;

/// A session row as read, with the timestamps the checks need.
pub struct StoredSession {
    /// castle.sessions' owner: whom a write on the caller's behalf runs as
    pub owner: Oid,
    pub hash: [u8; 64],
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// the row as castle.session (without its hash), ready to return
    pub session: SessionRow,
}

/// The session with this id, or None, under `activate_reading_snapshot`'s snapshot.
pub fn find_by_id(id: i64) -> Option<StoredSession> {
    let names = Names::resolve();
    let mut key = pg_sys::ScanKeyData::default();
    unsafe {
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as _,
            Oid::from(pg_sys::F_INT8EQ),
            Datum::from(id),
        );
    }
    let mut found = None;
    scan_sessions(names.primary_key, key, false, |values, nulls, owner| {
        found = Some(unsafe { read_row(values, nulls, names.session_type, owner) });
        false
    });
    found
}

/// Reads castle.sessions through `index` with one equality `key`, handing each
/// row's first eight values to `row` (with the table's owner) until it returns
/// false. The one place that opens, scans and closes: both direct reads share
/// its snapshot rule, its column check and its clean-up.
fn scan_sessions(
    index: Oid,
    mut key: pg_sys::ScanKeyData,
    must_see_latest: bool,
    mut row: impl FnMut(&[Datum], &[bool], Oid) -> bool,
) {
    let names = Names::resolve();
    unsafe {
        let pushed = activate_reading_snapshot(must_see_latest);
        let rel = pg_sys::table_open(names.table, pg_sys::AccessShareLock as _);
        let index = pg_sys::index_open(index, pg_sys::AccessShareLock as _);
        if ((*(*rel).rd_att).natts as usize) < COLUMNS {
            error!(
                "castle_sessions: castle.sessions does not have the columns this version expects"
            );
        }
        let owner = (*(*rel).rd_rel).relowner;
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let scan = pg_sys::index_beginscan(rel, index, pg_sys::GetActiveSnapshot(), 1, 0);
        pg_sys::index_rescan(scan, &mut key, 1, std::ptr::null_mut(), 0);
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            pg_sys::slot_getsomeattrs_int(slot, COLUMNS as i32);
            let values = std::slice::from_raw_parts((*slot).tts_values, COLUMNS);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, COLUMNS);
            if !row(values, nulls, owner) {
                break;
            }
        }
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        // locks are kept to the end of the transaction, as the executor does
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        if pushed {
            pg_sys::PopActiveSnapshot();
        }
    }
}

/// Whether a session is dead: expired, or unused (used_at, else created_at)
/// for longer than `idle_timeout` seconds when that is > 0. Timestamps are
/// PostgreSQL's microseconds; `now` is the transaction's now(). The one rule
/// authenticate, the sign-in census (and, in SQL, trim and prune) apply.
pub fn is_dead(expires_at: Option<i64>, last_use: i64, now: i64, idle_timeout: i32) -> bool {
    expires_at.is_some_and(|at| at <= now)
        || (idle_timeout > 0 && last_use <= now - i64::from(idle_timeout) * 1_000_000)
}

/// Makes active the snapshot a read sees, and says whether it pushed one (to
/// pop when done). A transaction that has written (a revoke, say) must see its
/// own changes, as a PL/pgSQL statement would: count the command and push the
/// transaction's current snapshot. One that has written nothing has nothing of
/// its own to see, and the calling statement's snapshot serves — one snapshot
/// per statement, as for any query, and the common case. An active snapshot is
/// also what flattening a TOASTed value needs.
unsafe fn activate_reading_snapshot(must_see_latest: bool) -> bool {
    unsafe {
        let written = pg_sys::GetCurrentTransactionIdIfAny() != pg_sys::InvalidTransactionId;
        if must_see_latest || written || !pg_sys::ActiveSnapshotSet() {
            pg_sys::CommandCounterIncrement();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            true
        } else {
            false
        }
    }
}

/// How many sessions a user holds, live and dead (expired, or unused for
/// `idle_timeout` seconds when > 0), read through the (user_id, created_at)
/// index under a fresh snapshot: after the caller took the user's lock, so it
/// sees every session another transaction committed for this user.
pub struct Census {
    pub live: i64,
    pub dead: i64,
}

pub fn census(user_id: &str, now: i64, idle_timeout: i32) -> Census {
    let names = Names::resolve();
    let mut key = pg_sys::ScanKeyData::default();
    unsafe {
        pg_sys::ScanKeyEntryInitialize(
            &mut key,
            0,
            1,
            pg_sys::BTEqualStrategyNumber as _,
            pg_sys::InvalidOid,
            pg_sys::C_COLLATION_OID,
            Oid::from(pg_sys::F_TEXTEQ),
            user_id.into_datum().expect("text"),
        );
    }
    let mut census = Census { live: 0, dead: 0 };
    // after the caller took the user's lock: a fresh snapshot sees every
    // session committed before it
    scan_sessions(names.user_index, key, true, |values, nulls, _| {
        let at = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
        let last_use = at(USED_AT).or(at(CREATED_AT)).unwrap_or(i64::MIN);
        if is_dead(at(EXPIRES_AT), last_use, now, idle_timeout) {
            census.dead += 1;
        } else {
            census.live += 1;
        }
        true
    });
    census
}

/// Copies what the caller needs out of the slot before its buffer is released.
unsafe fn read_row(
    values: &[Datum],
    nulls: &[bool],
    session_type: Oid,
    owner: Oid,
) -> StoredSession {
    let timestamp = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
    let mut hash = [0u8; 64];
    let stored = unsafe {
        pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(
            values[HASH].cast_mut_ptr(),
        ))
    };
    if stored.len() == hash.len() {
        hash.copy_from_slice(stored);
    }
    let picked = [
        ID, USER_ID, CREATED_AT, UPDATED_AT, EXPIRES_AT, USED_AT, DATA,
    ];
    let session = SessionRow::form(
        session_type,
        &mut picked.map(|i| values[i]),
        &mut picked.map(|i| nulls[i]),
    );
    StoredSession {
        owner,
        hash,
        created_at: timestamp(CREATED_AT).unwrap_or(i64::MIN),
        expires_at: timestamp(EXPIRES_AT),
        used_at: timestamp(USED_AT),
        session,
    }
}

/// The catalog objects the scans need, looked up by name in schema castle and
/// kept until any relation cache invalidation (DROP or CREATE EXTENSION, ALTER
/// TABLE, …) arrives, so that a live backend never holds a stale OID.
#[derive(Clone, Copy)]
struct Names {
    table: Oid,
    primary_key: Oid,
    user_index: Oid,
    session_type: Oid,
}

thread_local! {
    static NAMES: Cell<Option<Names>> = const { Cell::new(None) };
}

pub fn register_invalidation() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_names), Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_names(_arg: Datum, _relid: Oid) {
    NAMES.with(|names| names.set(None));
}

impl Names {
    fn resolve() -> Names {
        NAMES.with(|names| {
            names.get().unwrap_or_else(|| {
                let resolved = Names::look_up();
                names.set(Some(resolved));
                resolved
            })
        })
    }

    fn look_up() -> Names {
        unsafe {
            let schema = pg_sys::get_namespace_oid(c"castle".as_ptr(), false);
            let relation = |name: &CStr| match pg_sys::get_relname_relid(name.as_ptr(), schema) {
                oid if oid == pg_sys::InvalidOid => {
                    error!("castle_sessions: castle.sessions is missing")
                }
                oid => oid,
            };
            let session_type = pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::TYPENAMENSP as _,
                pg_sys::Anum_pg_type_oid as _,
                Datum::from(c"session".as_ptr()),
                Datum::from(schema),
                Datum::from(0),
                Datum::from(0),
            );
            Names {
                table: relation(c"sessions"),
                primary_key: relation(c"sessions_pkey"),
                user_index: relation(c"sessions_user_id_created_at_idx"),
                session_type,
            }
        }
    }
}
