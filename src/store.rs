//! The hot paths' access to castle.sessions, straight through the table and
//! index access methods: authenticate's read of one session by primary key,
//! and the sign-in's count of a user's sessions, trim and insert. No
//! SPI, no planner, no SQL text, so nothing here depends on search_path, and
//! each costs about what the bare statement would.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::plans;
use crate::session_row::SessionValues;
use crate::unguarded;

/// castle.sessions' columns, in table order (sql/bootstrap.sql; an upgrade may
/// only append, and the scans read these first eight).
pub const ID: usize = 0;
const HASH: usize = 1;
pub const USER_ID: usize = 2;
const CREATED_AT: usize = 3;
pub const UPDATED_AT: usize = 4;
const EXPIRES_AT: usize = 5;
pub const USED_AT: usize = 6;
const DATA: usize = 7;
const COLUMNS: usize = 8;
/// Their types: what every direct read and write assumes of the datums.
pub const COLUMN_TYPES: [Oid; COLUMNS] = [
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::JSONBOID,
];

/// castle.session's attributes, in order: the table's columns but the hash.
pub const SESSION_COLUMNS: [usize; 7] = [
    ID, USER_ID, CREATED_AT, UPDATED_AT, EXPIRES_AT, USED_AT, DATA,
];

/// Whether castle.sessions' first eight columns are still the ones this
/// version made, in place and type. A DBA's ALTER COLUMN … TYPE, or a dropped
/// and re-added column, must stop the direct reads and writes with an error
/// rather than let them misread or write the wrong kind of datum.
unsafe fn columns_as_made(rel: pg_sys::Relation) -> bool {
    unsafe {
        let descriptor = (*rel).rd_att;
        let attributes = (*descriptor).attrs.as_slice((*descriptor).natts as usize);
        attributes.len() >= COLUMNS && attributes_are(attributes, &COLUMN_TYPES)
    }
}

/// Whether the first attributes are, in order, of these types (no typmod),
/// none dropped: what every direct read or write of the table's columns, or
/// of castle.session's, assumes of the datums.
pub fn attributes_are(attributes: &[pg_sys::FormData_pg_attribute], types: &[Oid]) -> bool {
    attributes.len() >= types.len()
        && attributes.iter().zip(types).all(|(attribute, &expected)| {
            !attribute.attisdropped && attribute.atttypid == expected && attribute.atttypmod == -1
        })
}

fn columns_changed() -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "castle.sessions has been altered: its first eight columns are not the ones castle_sessions made",
        "Give the columns back their types (see sql/bootstrap.sql)."
    );
}

/// Whether a write may bypass the executor: nothing on the table would have
/// acted on it. A DBA's trigger (or a foreign key pointing at the table), rule
/// or forced row-level security, or the table being a partition, sends the
/// write to SQL, run as the table's owner.
unsafe fn plain_for_writes(rel: pg_sys::Relation) -> bool {
    unsafe {
        let class = (*rel).rd_rel;
        (*rel).trigdesc.is_null()
            && (*rel).rd_rules.is_null()
            && !(*class).relforcerowsecurity
            && !(*class).relispartition
    }
}

/// A session row as read, with the timestamps the checks need.
pub struct StoredSession {
    pub hash: [u8; 64],
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// the row as castle.session (without its hash), ready to return
    pub session: SessionValues,
}

/// The session with this id, or None, under `activate_reading_snapshot`'s snapshot.
pub fn find_by_id(id: i64) -> Option<StoredSession> {
    let mut found = None;
    scan_sessions(
        Names::resolve().primary_key,
        equality_key(pg_sys::F_INT8EQ, pg_sys::InvalidOid, Datum::from(id)),
        Reading::Statement,
        |values, nulls, _| {
            found = Some(unsafe { read_row(values, nulls) });
            false
        },
    );
    found
}

/// One row's first eight values, as a scan hands them on.
type Values = [Datum; COLUMNS];
type Nulls = [bool; COLUMNS];

/// Reads castle.sessions through `index` with one equality `key`, handing each
/// row's first eight values (and where the row is) to `row` until it returns
/// false. The one place that opens, scans and closes: every direct read shares
/// its snapshot rule, its column check and its clean-up.
///
/// It runs inside one pgrx boundary, calling PostgreSQL through `unguarded`
/// (see there why): so `row` must not panic, hold nothing with a destructor,
/// or call a guarded `pg_sys` function.
fn scan_sessions(
    index: Oid,
    mut key: pg_sys::ScanKeyData,
    reading: Reading,
    mut row: impl FnMut(&Values, &Nulls, pg_sys::ItemPointerData) -> bool,
) {
    let table = Names::resolve().table;
    let columns_as_made = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let pushed = activate_reading_snapshot(reading);
            let rel = unguarded::table_open(table, pg_sys::AccessShareLock as _);
            let index = unguarded::index_open(index, pg_sys::AccessShareLock as _);
            let columns_as_made = columns_as_made(rel);
            if columns_as_made {
                let slot = unguarded::table_slot_create(rel, std::ptr::null_mut());
                let scan =
                    unguarded::index_beginscan(rel, index, unguarded::GetActiveSnapshot(), 1, 0);
                unguarded::index_rescan(scan, &mut key, 1, std::ptr::null_mut(), 0);
                while unguarded::index_getnext_slot(
                    scan,
                    pg_sys::ScanDirection::ForwardScanDirection,
                    slot,
                ) {
                    unguarded::slot_getsomeattrs_int(slot, COLUMNS as i32);
                    let values = &*(*slot).tts_values.cast::<Values>();
                    let nulls = &*(*slot).tts_isnull.cast::<Nulls>();
                    if !row(values, nulls, (*slot).tts_tid) {
                        break;
                    }
                }
                unguarded::index_endscan(scan);
                unguarded::ExecDropSingleTupleTableSlot(slot);
            }
            // locks are kept to the end of the transaction, as the executor does
            unguarded::index_close(index, pg_sys::NoLock as _);
            unguarded::table_close(rel, pg_sys::NoLock as _);
            if pushed {
                unguarded::PopActiveSnapshot();
            }
            columns_as_made
        })
    };
    if !columns_as_made {
        columns_changed();
    }
}

/// Whether a session is dead: expired, or unused (used_at, else created_at)
/// for longer than `idle_timeout` seconds when that is > 0. Timestamps are
/// PostgreSQL's microseconds; `now` is the transaction's now(). The one rule
/// authenticate and the sign-in's trim (and, in SQL, trim and prune) apply.
pub fn is_dead(expires_at: Option<i64>, last_use: i64, now: i64, idle_timeout: i32) -> bool {
    expires_at.is_some_and(|at| at <= now)
        || (idle_timeout > 0 && last_use <= now - i64::from(idle_timeout) * 1_000_000)
}

/// Which snapshot a direct read sees.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    /// the calling statement's, as any query would (a fresh one once the
    /// transaction has written, so that it sees its own changes)
    Statement,
    /// a fresh one: at READ COMMITTED every row committed before now; at
    /// REPEATABLE READ and above, the transaction's
    Fresh,
    /// every row committed before now, whatever the isolation level
    Latest,
}

/// Makes active the snapshot a read sees, and says whether it pushed one (to
/// pop when done). A transaction that has written (a revoke, say) must see its
/// own changes, as a PL/pgSQL statement would: count the command and push the
/// transaction's current snapshot. One that has written nothing has nothing of
/// its own to see, and the calling statement's snapshot serves — one snapshot
/// per statement, as for any query, and the common case. An active snapshot is
/// also what flattening a TOASTed value needs.
/// Unguarded: called inside `scan_sessions`' boundary.
unsafe fn activate_reading_snapshot(reading: Reading) -> bool {
    unsafe {
        let written = unguarded::GetCurrentTransactionIdIfAny() != pg_sys::InvalidTransactionId;
        if reading == Reading::Statement && !written && unguarded::ActiveSnapshotSet() {
            return false;
        }
        unguarded::CommandCounterIncrement();
        let snapshot = match reading {
            Reading::Latest => unguarded::GetLatestSnapshot(),
            _ => unguarded::GetTransactionSnapshot(),
        };
        unguarded::PushActiveSnapshot(snapshot);
        true
    }
}

/// How many rows of the user's sessions there may be, counting no further
/// than `limit`: the user's entries in the (user_id, created_at) index, read
/// without visiting the table. Every session has an entry, so this is never
/// fewer than the user's sessions; entries of rows deleted but not yet
/// vacuumed (or inserted by a transaction that aborted) make it more, which
/// only runs the exact trimming statement when it was not needed. No snapshot
/// is involved: an entry is there as soon as its row is, whoever wrote it.
pub fn entries_of(user_id: &str, limit: i64) -> i64 {
    let names = Names::resolve();
    let mut key = user_scan_key(user_id);
    let mut entries = 0;
    unsafe {
        let rel = pg_sys::table_open(names.table, pg_sys::AccessShareLock as _);
        let index = pg_sys::index_open(names.user_index, pg_sys::AccessShareLock as _);
        let scan = pg_sys::index_beginscan(rel, index, &raw mut pg_sys::SnapshotAnyData, 1, 0);
        pg_sys::index_rescan(scan, &mut key, 1, std::ptr::null_mut(), 0);
        while entries < limit
            && !pg_sys::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection)
                .is_null()
        {
            entries += 1;
        }
        pg_sys::index_endscan(scan);
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
    }
    entries
}

/// Makes room for one more session of the user, as `queries/trim_sessions.sql`
/// does in SQL: deletes the user's dead sessions, then the oldest live ones,
/// so that at most `keep` live ones remain. The caller holds the user's lock,
/// so the only other writers of these rows are prune (deleting dead ones,
/// which is as good) and a DBA's UPDATE. Returns false, having maybe deleted
/// some, when the caller must run the SQL instead: the table has triggers to
/// fire, or a row changed under us.
pub fn trim(user_id: &str, keep: i64, now: i64, idle_timeout: i32) -> bool {
    let names = Names::resolve();
    let rel = unsafe { pg_sys::table_open(names.table, pg_sys::RowExclusiveLock as _) };
    if !unsafe { plain_for_writes(rel) } {
        unsafe { pg_sys::table_close(rel, pg_sys::NoLock as _) };
        return false;
    }
    // what a DELETE checks first: a publication that needs a replica identity
    unsafe { pg_sys::CheckCmdReplicaIdentity(rel, pg_sys::CmdType::CMD_DELETE) };
    // (newest first) the user's live sessions, and the dead ones
    let mut live: Vec<(i64, i64, pg_sys::ItemPointerData)> = Vec::new();
    let mut doomed: Vec<pg_sys::ItemPointerData> = Vec::new();
    let key = user_scan_key(user_id);
    // a fresh snapshot, after the caller took the user's lock: every session
    // committed before it (above READ COMMITTED, `refuse_if_snapshot_is_stale`
    // has made sure the transaction's snapshot has them all)
    scan_sessions(
        names.user_index,
        key,
        Reading::Fresh,
        |values, nulls, tid| {
            let at = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
            let created_at = at(CREATED_AT).unwrap_or(i64::MIN);
            if is_dead(
                at(EXPIRES_AT),
                at(USED_AT).unwrap_or(created_at),
                now,
                idle_timeout,
            ) {
                doomed.push(tid);
            } else {
                live.push((created_at, values[ID].value() as i64, tid));
            }
            true
        },
    );
    live.sort_unstable_by_key(|&(created_at, id, _)| std::cmp::Reverse((created_at, id)));
    doomed.extend(
        live.iter()
            .skip(keep.max(0) as usize)
            .map(|&(_, _, tid)| tid),
    );
    unsafe {
        let mut failure = pg_sys::TM_FailureData::default();
        let mut done = true;
        for mut tid in doomed {
            let result = pg_sys::table_tuple_delete(
                rel,
                &mut tid,
                pg_sys::GetCurrentCommandId(true),
                pg_sys::GetActiveSnapshot(),
                std::ptr::null_mut(),
                true,
                &mut failure,
                false,
            );
            match result {
                // deleted by us, or already gone (a concurrent prune)
                pg_sys::TM_Result::TM_Ok
                | pg_sys::TM_Result::TM_Deleted
                | pg_sys::TM_Result::TM_SelfModified => {}
                // updated since the scan: let the SQL decide again
                _ => done = false,
            }
        }
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        done
    }
}

/// Under REPEATABLE READ or SERIALIZABLE a transaction's snapshot predates the
/// user's lock, so it may miss a session another sign-in committed meanwhile,
/// and trimming by it would leave the user over the limit. Such a transaction
/// gets a serialization failure (40001, retry it) whenever the latest committed
/// state holds other sessions of the user than its snapshot does.
pub fn refuse_if_snapshot_is_stale(user_id: &str) {
    let isolation = unsafe { pg_sys::XactIsoLevel };
    if isolation < pg_sys::XACT_REPEATABLE_READ as i32 {
        return; // READ COMMITTED: every statement reads the latest state
    }
    if rows_seen(user_id, Reading::Fresh) != rows_seen(user_id, Reading::Latest) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            "could not serialize access due to a concurrent sign-in of the same user",
            "Retry the transaction."
        );
    }
}

/// The ids of the user's sessions a read sees, sorted.
fn rows_seen(user_id: &str, reading: Reading) -> Vec<i64> {
    let mut ids = Vec::new();
    scan_sessions(
        Names::resolve().user_index,
        user_scan_key(user_id),
        reading,
        |values, _, _| {
            ids.push(values[ID].value() as i64);
            true
        },
    );
    ids.sort_unstable();
    ids
}

/// The scan key for a user's sessions in the (user_id, created_at) index.
fn user_scan_key(user_id: &str) -> pg_sys::ScanKeyData {
    let user_id = user_id.into_datum().expect("text");
    equality_key(pg_sys::F_TEXTEQ, pg_sys::C_COLLATION_OID, user_id)
}

/// A key for `index column 1 = argument`, compared by the built-in `procedure`.
fn equality_key(procedure: u32, collation: Oid, argument: Datum) -> pg_sys::ScanKeyData {
    let mut key = pg_sys::ScanKeyData::default();
    unsafe {
        unguarded::ScanKeyEntryInitialize(
            &mut key,
            0,
            1,
            pg_sys::BTEqualStrategyNumber as _,
            pg_sys::InvalidOid,
            collation,
            Oid::from(procedure),
            argument,
        );
    }
    key
}

/// A sign-in's new row: everything but the id, which `insert` draws.
pub struct NewSession<'a> {
    /// lowercase hex SHA-256 of the secret
    pub hash: &'a [u8; 64],
    pub user_id: &'a str,
    /// the transaction's now(): created_at and updated_at
    pub now: i64,
    pub expires_at: Option<i64>,
    pub data: Option<Datum>,
}

/// Inserts a session as `INSERT INTO castle.sessions … RETURNING id` would:
/// the id from the table's identity sequence, the row through the table AM,
/// its NOT NULL and CHECK constraints, and every index entry, unique ones
/// checked. A failed constraint keeps its SQLSTATE and message but loses its
/// detail, which would show the row.
///
/// None, having written nothing, when the table is not as this version made
/// it: a DBA's trigger (or a foreign key pointing at it), or an added column.
/// Then the caller inserts with SQL, which fires and fills those.
pub fn insert(new: &NewSession) -> Option<i64> {
    let names = Names::resolve();
    unsafe {
        let rel = pg_sys::table_open(names.table, pg_sys::RowExclusiveLock as _);
        if !columns_as_made(rel) {
            columns_changed();
        }
        let attributes = (*(*rel).rd_att)
            .attrs
            .as_slice((*(*rel).rd_att).natts as usize);
        // columns past ours may only be dropped ones, which stay NULL
        let added_column = attributes
            .iter()
            .skip(COLUMNS)
            .any(|attribute| !attribute.attisdropped);
        // an id column that is no longer an identity (a DBA's serial default, say)
        let no_sequence = names.id_sequence == pg_sys::InvalidOid;
        if added_column || no_sequence || !plain_for_writes(rel) {
            pg_sys::table_close(rel, pg_sys::NoLock as _);
            return None;
        }
        let id = next_id(names.id_sequence);
        let estate = pg_sys::CreateExecutorState();
        let result_rel = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
            .cast::<pg_sys::ResultRelInfo>();
        (*result_rel).type_ = pg_sys::NodeTag::T_ResultRelInfo;
        // range table index 0: no query's range table is behind this insert
        pg_sys::InitResultRelInfo(result_rel, rel, 0, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(result_rel, false);

        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        pg_sys::ExecClearTuple(slot);
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, attributes.len());
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, attributes.len());
        nulls.fill(true);
        let text = |s: &[u8]| {
            Datum::from(pg_sys::cstring_to_text_with_len(
                s.as_ptr().cast(),
                s.len() as i32,
            ))
        };
        let mut set = |column: usize, value: Option<Datum>| {
            nulls[column] = value.is_none();
            values[column] = value.unwrap_or(Datum::from(0));
        };
        set(ID, Some(Datum::from(id)));
        set(HASH, Some(text(new.hash)));
        set(USER_ID, Some(text(new.user_id.as_bytes())));
        set(CREATED_AT, Some(Datum::from(new.now)));
        set(UPDATED_AT, Some(Datum::from(new.now)));
        set(EXPIRES_AT, new.expires_at.map(Datum::from));
        set(USED_AT, None);
        set(DATA, new.data);
        pg_sys::ExecStoreVirtualTuple(slot);

        if !constraints_hold_by_construction(rel, nulls) {
            plans::without_detail(|| pg_sys::ExecConstraints(result_rel, slot, estate));
        }
        pg_sys::table_tuple_insert(
            rel,
            slot,
            pg_sys::GetCurrentCommandId(true),
            0,
            std::ptr::null_mut(),
        );
        // A unique violation could only be on id (the pkey; its detail shows
        // the id, which is no secret), or on an index a DBA added.
        pg_sys::ExecInsertIndexTuples(
            result_rel,
            slot,
            estate,
            false,
            false,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );

        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::ExecCloseIndices(result_rel);
        pg_sys::FreeExecutorState(estate);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        Some(id)
    }
}

/// Whether the row is sure to pass castle.sessions' constraints without
/// evaluating them: no NULL in a NOT NULL column, and no CHECK but the one
/// bootstrap.sql declares (a hex hash, which `token::hash_secret` always
/// gives). A DBA's added CHECK, or NOT NULL on a column we leave NULL, is
/// evaluated as an INSERT would.
unsafe fn constraints_hold_by_construction(rel: pg_sys::Relation, nulls: &[bool]) -> bool {
    unsafe {
        let descriptor = (*rel).rd_att;
        let constraints = (*descriptor).constr;
        if constraints.is_null() {
            return true;
        }
        let checks = match (*constraints).num_check as usize {
            0 => &[][..],
            n => std::slice::from_raw_parts((*constraints).check, n),
        };
        let only_ours = checks
            .iter()
            .all(|check| CStr::from_ptr(check.ccname) == c"sessions_hash_check");
        let attributes = (*descriptor).attrs.as_slice(nulls.len());
        only_ours
            && attributes
                .iter()
                .zip(nulls)
                .all(|(attribute, null)| !(attribute.attnotnull && *null))
    }
}

/// nextval() without its USAGE check: the caller has EXECUTE on
/// create_session, not rights on the sequence.
unsafe fn next_id(sequence: Oid) -> i64 {
    unsafe extern "C-unwind" {
        // commands/sequence.h, which pgrx does not bind
        fn nextval_internal(relid: Oid, check_permissions: bool) -> i64;
    }
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(sequence, false)) }
}

/// castle.sessions' owner: whom statements on the caller's behalf run as.
pub fn table_owner() -> Oid {
    Names::resolve().owner
}

/// Copies what the caller needs out of the slot before its buffer is released.
/// Unguarded: called inside `scan_sessions`' boundary, so it cannot panic.
unsafe fn read_row(values: &Values, nulls: &Nulls) -> StoredSession {
    let timestamp = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
    let mut hash = [0u8; 64];
    let stored = unsafe {
        pgrx::varlena::varlena_to_byte_slice(unguarded::pg_detoast_datum_packed(
            values[HASH].cast_mut_ptr(),
        ))
    };
    if stored.len() == hash.len() {
        hash.copy_from_slice(stored);
    }
    let mut session = SessionValues {
        values: SESSION_COLUMNS.map(|i| values[i]),
        nulls: SESSION_COLUMNS.map(|i| nulls[i]),
    };
    // the two variable-length values point into the buffer: copy them, and
    // fetch a TOASTed one, as a composite's values must be in line
    for (at, &column) in SESSION_COLUMNS.iter().enumerate() {
        if matches!(column, USER_ID | DATA) && !nulls[column] {
            session.values[at] = unsafe { copy_varlena(values[column]) };
        }
    }
    StoredSession {
        hash,
        created_at: timestamp(CREATED_AT).unwrap_or(i64::MIN),
        expires_at: timestamp(EXPIRES_AT),
        used_at: timestamp(USED_AT),
        session,
    }
}

/// A copy of a variable-length value in the current memory context, fetched
/// from TOAST storage if it is there. Unguarded.
unsafe fn copy_varlena(value: Datum) -> Datum {
    unsafe {
        let pointer = value.cast_mut_ptr::<pg_sys::varlena>();
        if pgrx::varlena::varatt_is_1b_e(pointer) {
            Datum::from(unguarded::detoast_external_attr(pointer))
        } else {
            unguarded::datumCopy(value, false, -1)
        }
    }
}

/// castle.session's type, which the function calls form their row as.
pub fn session_type() -> Oid {
    Names::resolve().session_type
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
    /// the sequence behind castle.sessions.id (GENERATED BY DEFAULT AS IDENTITY)
    id_sequence: Oid,
    /// castle.sessions' owner (ALTER TABLE … OWNER TO invalidates it, too)
    owner: Oid,
}

thread_local! {
    static NAMES: Cell<Option<Names>> = const { Cell::new(None) };
    /// Counts invalidations, so that a look-up overtaken by one is not kept.
    static FORGOTTEN: Cell<u64> = const { Cell::new(0) };
}

pub fn register_invalidation() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_names), Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_names(_arg: Datum, _relid: Oid) {
    NAMES.with(|names| names.set(None));
    FORGOTTEN.with(|forgotten| forgotten.set(forgotten.get() + 1));
}

impl Names {
    fn resolve() -> Names {
        NAMES.with(|names| {
            names.get().unwrap_or_else(|| {
                let before = FORGOTTEN.with(Cell::get);
                let resolved = Names::look_up();
                // an invalidation processed during the look-up (it takes locks
                // and reads catalogs) may have made it stale: use it, don't keep it
                if FORGOTTEN.with(Cell::get) == before {
                    names.set(Some(resolved));
                }
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
            let table = relation(c"sessions");
            let rel = pg_sys::table_open(table, pg_sys::AccessShareLock as _);
            let owner = (*(*rel).rd_rel).relowner;
            pg_sys::table_close(rel, pg_sys::NoLock as _);
            Names {
                table,
                // missing: the insert falls back to SQL and the column's default
                id_sequence: pg_sys::getIdentitySequence(table, (ID + 1) as _, true),
                owner,
                primary_key: relation(c"sessions_pkey"),
                user_index: relation(c"sessions_user_id_created_at_idx"),
                session_type,
            }
        }
    }
}
