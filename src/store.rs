//! castle.sessions on the hot paths: authenticate's read of one session by
//! id, the sign-in's count of a user's index entries, the sign-in's INSERT
//! and trimming's DELETE, and the UPDATE that records uses.
//!
//! Each has two ways: straight through the access methods, when `catalog`
//! has verified every object involved and no executor or permission hook
//! wants to see it; otherwise the same statement in SQL, run as the table's
//! owner under a pinned search_path. Every PostgreSQL call here is pgrx's
//! guarded binding, so an ERROR unwinds through these frames as a panic.
//!
//! The direct INSERT and UPDATE are the executor's own routines for a row
//! (the ones logical replication applies rows with): constraints checked,
//! every index maintained, the same errors. The catalog allows them only
//! where the statement would run nothing else (no trigger, rule, forced
//! policy, generated column or default of a DBA's). Every other write is
//! SQL (`src/queries`).

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::catalog::{self, Catalog, COLUMNS, CREATED_AT, EXPIRES_AT, HASH, SESSION_COLUMNS};
use crate::catalog::{DATA, FAMILY_ID, ID, ROTATED_AT, UPDATED_AT, USED_AT, USER_ID};
use crate::compat;
use crate::plans::{self, Statement, INT8};
use crate::session_row::SessionValues;
use crate::token::Refusal;

static READ_SESSION: Statement = Statement {
    sql: include_str!("queries/read_session.sql"),
    args: &[INT8],
    // prepared as writing, so that each execution takes a fresh snapshot
    mutating: true,
};
static READ_SESSION_BEFORE_FAMILIES: Statement = Statement {
    sql: include_str!("queries/read_session_before_families.sql"),
    args: &[INT8],
    mutating: true,
};
static READ_SUCCESSOR: Statement = Statement {
    sql: include_str!("queries/read_successor.sql"),
    args: &[INT8],
    mutating: true,
};

/// A session row as read, with the timestamps the checks need.
pub struct StoredSession {
    pub id: i64,
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// the first session of its sign-in (its own id for that one)
    pub family: i64,
    /// when castle.rotate replaced it
    pub rotated_at: Option<i64>,
    /// the row as castle.session (without its hash), ready to return
    pub session: SessionValues,
}

/// The session with this id, or None, as of a fresh snapshot: at READ
/// COMMITTED every session committed before the call, at REPEATABLE READ the
/// transaction's — what a VOLATILE SQL function's query would see.
pub fn find_by_id(id: i64) -> Option<StoredSession> {
    let catalog = Catalog::locked();
    match catalog.primary_key {
        Some(index) if !catalog::hooks_want_the_executor() => unsafe {
            read_through_index(catalog.table, index, id, catalog.columns)
        },
        _ if catalog.columns == COLUMNS => read_with_sql(catalog.owner, &READ_SESSION, id),
        _ => read_with_sql(catalog.owner, &READ_SESSION_BEFORE_FAMILIES, id),
    }
}

/// The newest session of a family that was not rotated away, live or not:
/// what a token rotated away from the family stands for within its grace.
pub fn find_successor(family: i64) -> Option<StoredSession> {
    let id = plans::as_owner(Catalog::locked().owner, || {
        Spi::connect(|client| {
            let read = plans::kept(client, &READ_SUCCESSOR);
            let rows = plans::or_raise(client.select(read, Some(1), &[family.into()]));
            plans::returned_ids(rows).first().copied()
        })
    })?;
    // then read as any session is read, directly when the table allows
    find_by_id(id)
}

unsafe fn read_through_index(
    table: Oid,
    index: Oid,
    id: i64,
    columns: usize,
) -> Option<StoredSession> {
    unsafe {
        // the transaction's own changes
        pg_sys::CommandCounterIncrement();
        // Catalog::locked took the table's lock
        let rel = pg_sys::table_open(table, pg_sys::NoLock as _);
        let found = row_by_id(rel, index, id, |slot| {
            pg_sys::slot_getsomeattrs_int(slot, columns as i32);
            // the columns 0.4.0's objects lack read as NULL: no family, never rotated
            let mut values = [Datum::from(0); COLUMNS];
            let mut nulls = [true; COLUMNS];
            values[..columns]
                .copy_from_slice(std::slice::from_raw_parts((*slot).tts_values, columns));
            nulls[..columns]
                .copy_from_slice(std::slice::from_raw_parts((*slot).tts_isnull, columns));
            stored_session(&values, &nulls)
        });
        // locks are kept to the end of the transaction, as the executor does
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        found
    }
}

/// What `read` makes of the row with this id, if a new snapshot (at READ
/// COMMITTED every commit before the call) sees one, found through the
/// verified primary key `index` of `rel`.
unsafe fn row_by_id<T>(
    rel: pg_sys::Relation,
    index: Oid,
    id: i64,
    read: impl FnOnce(*mut pg_sys::TupleTableSlot) -> T,
) -> Option<T> {
    unsafe {
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let index = pg_sys::index_open(index, pg_sys::AccessShareLock as _);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let c = pg_sys::Oid::from(pg_sys::C_COLLATION_OID);
        let mut key = first_key_equals(pg_sys::F_INT8EQ, Datum::from(id), c);
        let scan = begin_index_scan(rel, index, pg_sys::GetActiveSnapshot(), &mut key);
        let found =
            pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot)
                .then(|| read(slot));
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::PopActiveSnapshot();
        found
    }
}

/// A scan key: the index's first column equals `value`, by `equal` (a
/// function oid) in `collation`.
fn first_key_equals(equal: u32, value: Datum, collation: Oid) -> pg_sys::ScanKeyData {
    let mut key = pg_sys::ScanKeyData::default();
    unsafe {
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as _,
            pg_sys::Oid::from(equal),
            value,
        );
    }
    key.sk_collation = collation;
    key
}

/// An index scan with one key, started.
unsafe fn begin_index_scan(
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    key: &mut pg_sys::ScanKeyData,
) -> pg_sys::IndexScanDesc {
    unsafe {
        let scan = compat::index_beginscan(rel, index, snapshot, 1);
        pg_sys::index_rescan(scan, key, 1, std::ptr::null_mut(), 0);
        scan
    }
}

/// The same read in SQL, as the table's owner: for a table or index a DBA
/// changed, or while a hook wants to see every statement. `read` returns
/// the ten columns, in order.
fn read_with_sql(owner: Oid, read: &'static Statement, id: i64) -> Option<StoredSession> {
    let caller_memory = unsafe { pg_sys::CurrentMemoryContext };
    plans::as_owner(owner, || {
        Spi::connect(|client| {
            let read = plans::kept(client, read);
            let rows = plans::or_raise(client.select(read, Some(1), &[id.into()]));
            let row = rows.first();
            if row.is_empty() {
                return None;
            }
            let mut values = [Datum::from(0); COLUMNS];
            let mut nulls = [true; COLUMNS];
            for column in 0..COLUMNS {
                if let Some(value) = plans::or_raise(row.get_datum_by_ordinal(column + 1)) {
                    values[column] = value;
                    nulls[column] = false;
                }
            }
            // copied out of SPI's memory into the caller's
            unsafe {
                let spi = pg_sys::MemoryContextSwitchTo(caller_memory);
                let stored = stored_session(&values, &nulls);
                pg_sys::MemoryContextSwitchTo(spi);
                Some(stored)
            }
        })
    })
}

/// Copies what the caller needs out of a row's ten values, in the current
/// memory context.
unsafe fn stored_session(values: &[Datum], nulls: &[bool]) -> StoredSession {
    // an int8 or a timestamptz (microseconds), by value
    let int64 = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
    let hash = if nulls[HASH] {
        Vec::new()
    } else {
        unsafe { text_bytes(values[HASH]) }.to_vec()
    };
    let mut session = SessionValues {
        values: SESSION_COLUMNS.map(|i| values[i]),
        nulls: SESSION_COLUMNS.map(|i| nulls[i]),
    };
    // the variable-length values point into a buffer: copy them, fetching a
    // TOASTed one, as a composite's values must be in line
    for (at, &column) in SESSION_COLUMNS.iter().enumerate() {
        if matches!(column, USER_ID | DATA) && !nulls[column] {
            session.values[at] = unsafe {
                Datum::from(pg_sys::pg_detoast_datum_copy(values[column].cast_mut_ptr()))
            };
        }
    }
    let id = values[ID].value() as i64;
    StoredSession {
        id,
        family: int64(FAMILY_ID).unwrap_or(id),
        rotated_at: int64(ROTATED_AT),
        hash,
        created_at: int64(CREATED_AT).unwrap_or(i64::MIN),
        expires_at: int64(EXPIRES_AT),
        used_at: int64(USED_AT),
        session,
    }
}

/// A text datum's bytes, in the database's encoding.
pub unsafe fn text_bytes<'a>(value: Datum) -> &'a [u8] {
    unsafe {
        pgrx::varlena::varlena_to_byte_slice(pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr()))
    }
}

/// How many index entries the user's sessions may have, counting no further
/// than `limit`, or None when the (user_id, …) index cannot be read directly
/// (the caller then trims with SQL, which needs no count). Entries are read
/// without visiting the table or taking a snapshot: every session has one,
/// so this is never fewer than the user's sessions; entries of rows deleted
/// but not yet vacuumed, or of an aborted insert, only make it more, which
/// only runs the trimming statement when it was not needed.
pub fn entries_of(user_id: &[u8], limit: i64) -> Option<i64> {
    let catalog = Catalog::locked();
    let (index, collation) = catalog.user_index?;
    if catalog::hooks_want_the_executor() {
        return None;
    }
    let mut entries = 0;
    unsafe {
        // Catalog::locked took the table's lock
        let rel = pg_sys::table_open(catalog.table, pg_sys::NoLock as _);
        let index = pg_sys::index_open(index, pg_sys::AccessShareLock as _);
        let mut key = first_key_equals(
            pg_sys::F_TEXTEQ,
            crate::raw_text::text_datum(user_id),
            collation,
        );
        let scan = begin_index_scan(rel, index, &raw mut pg_sys::SnapshotAnyData, &mut key);
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
    Some(entries)
}

/// A sign-in's row, as insert_session.sql takes it.
pub struct NewSession<'a> {
    pub hash: &'a [u8],
    pub user_id: &'a [u8],
    /// created_at and updated_at
    pub now: i64,
    pub expires_at: Option<i64>,
    pub data: Option<Datum>,
    pub family: Option<i64>,
}

/// Inserts the row straight through the access methods and returns its id,
/// or None (nothing done) when the catalog does not allow it: the caller
/// runs the SQL. Called as the table's owner; the row is visible to the
/// transaction's next statement, as after SPI's INSERT.
pub fn insert_directly(row: &NewSession) -> Option<i64> {
    if catalog::hooks_want_the_executor() {
        return None;
    }
    let catalog = Catalog::locked_for_insert();
    let sequence = catalog.insert_sequence?;
    // What the SQL INSERT's permission check would ask: INSERT on the table.
    // nextval_oid also asks USAGE or UPDATE on the sequence, which an
    // identity's nextval does not: without it, the SQL INSERT goes ahead.
    if !current_user_may(catalog.table, pg_sys::ACL_INSERT)
        || !current_user_may(sequence, pg_sys::ACL_USAGE | pg_sys::ACL_UPDATE)
    {
        return None;
    }
    Some(plans::search_path_pinned(|| unsafe {
        insert_row(&catalog, sequence, row)
    }))
}

/// insert_directly's INSERT, once allowed.
unsafe fn insert_row(catalog: &Catalog, sequence: Oid, row: &NewSession) -> i64 {
    unsafe {
        let id = pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[sequence.into_datum()])
            .expect("nextval is never NULL");
        let target = Target::open(catalog, crate::token::is_stored_hash(row.hash), &[]);
        let slot = target.slot();
        let width = (*(*target.rel).rd_att).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, width);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, width);
        // columns dropped since (the catalog allows no other beyond ours)
        values[COLUMNS..].fill(Datum::from(0));
        nulls[COLUMNS..].fill(true);
        let mut set = |column: usize, value: Option<Datum>| {
            values[column] = value.unwrap_or(Datum::from(0));
            nulls[column] = value.is_none();
        };
        set(ID, Some(Datum::from(id)));
        set(HASH, Some(crate::raw_text::text_datum(row.hash)));
        set(USER_ID, Some(crate::raw_text::text_datum(row.user_id)));
        set(CREATED_AT, Some(Datum::from(row.now)));
        set(UPDATED_AT, Some(Datum::from(row.now)));
        set(EXPIRES_AT, row.expires_at.map(Datum::from));
        set(USED_AT, None);
        set(DATA, row.data);
        set(FAMILY_ID, row.family.map(Datum::from));
        set(ROTATED_AT, None);
        pg_sys::ExecStoreVirtualTuple(slot);
        pg_sys::ExecSimpleRelationInsert(target.info, target.estate, slot);
        target.close();
        pg_sys::CommandCounterIncrement();
        id
    }
}

/// castle.sessions opened for the executor's one-row routines (the ones
/// logical replication applies rows with). For an INSERT with no range
/// table entry: nothing it runs reads one (permissions were verified with
/// the catalog, and the catalog allows no trigger). For an UPDATE of the
/// columns `updating`, with one that names them, so that only the indexes
/// on none of them are told the update left them unchanged. Its indexes are
/// open, and every enforced CHECK is prepared, this version's on hash too
/// unless `hash_tested`: the caller tested that rule on the row's bytes.
struct Target {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    info: *mut pg_sys::ResultRelInfo,
}

impl Target {
    unsafe fn open(catalog: &Catalog, hash_tested: bool, updating: &[usize]) -> Target {
        unsafe {
            let rel = pg_sys::table_open(catalog.table, pg_sys::NoLock as _);
            let estate = pg_sys::CreateExecutorState();
            let caller = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            let mut entry = 0;
            if !updating.is_empty() {
                // our columns are the table's first: column i is attribute i + 1
                let attributes: Vec<pg_sys::AttrNumber> = updating
                    .iter()
                    .map(|&c| c as pg_sys::AttrNumber + 1)
                    .collect();
                entry = compat::range_table_updating(estate, rel, &attributes);
            }
            let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                .cast::<pg_sys::ResultRelInfo>();
            pg_sys::MemoryContextSwitchTo(caller);
            pg_sys::InitResultRelInfo(info, rel, entry, std::ptr::null_mut(), 0);
            if let Some(own) = catalog.hash_check.filter(|_| hash_tested) {
                prepare_checks_but(info, rel, estate, own);
            }
            pg_sys::ExecOpenIndices(info, false);
            Target { rel, estate, info }
        }
    }

    /// The target recording uses writes: used_at and updated_at updated,
    /// the hash's rule tested on the row's bytes (`update_locked`).
    unsafe fn for_uses(catalog: &Catalog) -> Target {
        unsafe { Target::open(catalog, true, TOUCHED) }
    }

    /// A slot of the table's, freed with the target.
    unsafe fn slot(&self) -> *mut pg_sys::TupleTableSlot {
        unsafe {
            let slot = pg_sys::table_slot_create(self.rel, &raw mut (*self.estate).es_tupleTable);
            // as the executor does: a CHECK may read tableoid
            (*slot).tts_tableOid = (*self.rel).rd_id;
            slot
        }
    }

    unsafe fn close(self) {
        unsafe {
            pg_sys::ExecCloseIndices(self.info);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as _);
        }
    }
}

/// Prepares the table's CHECKs for ExecSimpleRelationInsert as ExecRelCheck
/// would (in the query's memory, each enforced one from its stored
/// expression), but `own`: the extension's CHECK on hash, whose rule the
/// caller has tested on the row's bytes, stays NULL (passed). Its regex
/// would cost 90,000 instructions, half a bare INSERT.
unsafe fn prepare_checks_but(
    info: *mut pg_sys::ResultRelInfo,
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    own: usize,
) {
    unsafe {
        let constraints = (*(*rel).rd_att).constr;
        // the verdict's position belongs to this relcache entry (the table
        // is locked); anything else leaves every CHECK to ExecRelCheck
        if constraints.is_null() || own >= (*constraints).num_check as usize {
            return;
        }
        let checks =
            std::slice::from_raw_parts((*constraints).check, (*constraints).num_check as usize);
        let caller = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        let prepared =
            pg_sys::palloc0(std::mem::size_of::<*mut pg_sys::ExprState>() * checks.len())
                .cast::<*mut pg_sys::ExprState>();
        for (i, check) in checks.iter().enumerate() {
            if i != own && crate::compat::check_enforced(check) {
                let expression = crate::compat::check_expression(check, rel);
                *prepared.add(i) = pg_sys::ExecPrepareExpr(expression, estate);
            }
        }
        pg_sys::MemoryContextSwitchTo(caller);
        crate::compat::set_check_expressions(info, prepared);
    }
}

/// A user's session as trimming needs it.
pub struct UserSession {
    pub id: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// rotated away, or rotated from another: part of a family
    pub in_a_family: bool,
    /// where the read found it
    pub tid: pg_sys::ItemPointerData,
}

/// The user's sessions, as of a fresh snapshot (at READ COMMITTED every
/// session committed before the call: the caller holds the user's lock), at
/// most `limit` of them, read through the verified (user_id, …) index; None
/// when it cannot be read directly, or when the user has more than `limit`.
pub fn sessions_of_user(user_id: &[u8], limit: usize) -> Option<Vec<UserSession>> {
    let catalog = Catalog::locked();
    let (index, collation) = catalog.user_index?;
    if catalog::hooks_want_the_executor() || catalog.columns != COLUMNS {
        return None;
    }
    let mut sessions = Vec::new();
    unsafe {
        pg_sys::CommandCounterIncrement();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        // Catalog::locked took the table's lock
        let rel = pg_sys::table_open(catalog.table, pg_sys::NoLock as _);
        let index = pg_sys::index_open(index, pg_sys::AccessShareLock as _);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let mut key = first_key_equals(
            pg_sys::F_TEXTEQ,
            crate::raw_text::text_datum(user_id),
            collation,
        );
        let scan = begin_index_scan(rel, index, pg_sys::GetActiveSnapshot(), &mut key);
        let mut more = false;
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if sessions.len() == limit {
                more = true;
                break;
            }
            pg_sys::slot_getsomeattrs_int(slot, COLUMNS as i32);
            let values = std::slice::from_raw_parts((*slot).tts_values, COLUMNS);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, COLUMNS);
            let int64 = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
            sessions.push(UserSession {
                id: values[ID].value() as i64,
                created_at: int64(CREATED_AT).unwrap_or(i64::MIN),
                expires_at: int64(EXPIRES_AT),
                used_at: int64(USED_AT),
                in_a_family: !nulls[FAMILY_ID] || !nulls[ROTATED_AT],
                tid: (*slot).tts_tid,
            });
        }
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        pg_sys::PopActiveSnapshot();
        if more {
            return None;
        }
    }
    Some(sessions)
}

/// Deletes these sessions of a user (each with where `sessions_of_user`
/// found it) straight through the heap, as trimming's `DELETE … WHERE id =
/// ANY (…) RETURNING id` would at READ COMMITTED, and returns the ids it
/// deleted; None (nothing done) when the catalog, a hook or the isolation
/// level does not allow it: the caller runs the SQL. A session another
/// transaction deleted meanwhile (a revocation) is skipped; one it updated
/// (a use recorded) is found again by id and deleted, as the executor's
/// recheck of the DELETE would. A heap delete checks no constraint and runs
/// no expression: without a DBA's trigger (a foreign key's included), rule or
/// forced row security there is nothing else a DELETE would run. Called as
/// the table's owner, under the user's lock.
pub fn delete_directly(sessions: &[(i64, pg_sys::ItemPointerData)]) -> Option<Vec<i64>> {
    // what the SQL DELETE (its WHERE and RETURNING read id) would ask
    let catalog = allowing_a_direct_write(pg_sys::ACL_DELETE)?;
    let index = catalog.primary_key?;
    if catalog.has_dba_code {
        return None;
    }
    let mut deleted = Vec::with_capacity(sessions.len());
    unsafe {
        let rel = pg_sys::table_open(catalog.table, pg_sys::NoLock as _);
        let command = pg_sys::GetCurrentCommandId(true);
        for &(id, found_at) in sessions {
            let mut tid = found_at;
            loop {
                let mut failure = pg_sys::TM_FailureData::default();
                let crosscheck = std::ptr::null_mut(); // none at READ COMMITTED
                match pg_sys::heap_delete(
                    rel,
                    &mut tid,
                    command,
                    crosscheck,
                    true,
                    &mut failure,
                    false,
                ) {
                    pg_sys::TM_Result::TM_Ok => {
                        deleted.push(id);
                        break;
                    }
                    // gone: deleted by another transaction once it committed, or
                    // already by this command
                    pg_sys::TM_Result::TM_Deleted | pg_sys::TM_Result::TM_SelfModified => break,
                    pg_sys::TM_Result::TM_Updated => {
                        match row_by_id(rel, index, id, |slot| (*slot).tts_tid) {
                            Some(now_at) => tid = now_at,
                            None => break,
                        }
                    }
                    _ => error!("castle_sessions: unexpected result deleting a session"),
                }
            }
        }
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        // visible to the transaction's next statement, as after SPI's DELETE
        pg_sys::CommandCounterIncrement();
    }
    Some(deleted)
}

/// Records uses (session id, time of use) straight through the heap, as
/// `touch_sessions.sql` would at READ COMMITTED, and returns how many rows
/// it wrote; None (nothing done) when the catalog, a hook, the privileges or
/// the isolation level do not allow it: the caller runs the SQL. Each row
/// is locked without waiting — one another transaction holds is skipped,
/// as SKIP LOCKED would — and its newest version is updated, unless its
/// used_at is already as late, by ExecSimpleRelationUpdate: CHECKs, indexes
/// (when the update is not HOT) and replica identity, as the executor does.
/// Only the regex of this version's CHECK on hash is left out, its rule
/// tested on the row's bytes: an UPDATE runs it on every row although
/// recording a use never changes hash, and it was most of the worker's
/// time. The catalog must allow the direct INSERT (this version's columns
/// and no other, no generated column, no trigger, rule or forced row
/// security). Called as the table's owner.
pub fn touch_directly(uses: &[(i64, i64)]) -> Option<u64> {
    // what the SQL UPDATE (it reads id, used_at and updated_at) would ask
    let catalog = allowing_a_direct_write(pg_sys::ACL_UPDATE)?;
    let index = catalog.primary_key?;
    catalog.insert_sequence?;
    let mut written = 0;
    unsafe {
        // the transaction's own changes, as before SPI's UPDATE
        pg_sys::CommandCounterIncrement();
        // Held to the end: it keeps the transaction's xmin, so a version
        // found by `row_by_id` cannot be pruned (its TID reused) before it
        // is locked; and a DBA's CHECK or TOAST may need one.
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let target = Target::for_uses(&catalog);
        let locked = target.slot();
        let new = target.slot();
        let width = (*(*target.rel).rd_att).natts as usize;
        for &(id, at) in uses {
            written += u64::from(touch_row(&target, index, id, at, locked, new, width));
        }
        target.close();
        pg_sys::PopActiveSnapshot();
        // visible to the transaction's next statement, as after SPI's UPDATE
        pg_sys::CommandCounterIncrement();
    }
    Some(written)
}

/// The columns recording a use changes.
const TOUCHED: &[usize] = &[USED_AT, UPDATED_AT];

/// The attribute numbers the executor is told a recorded use updates.
#[cfg(any(test, feature = "pg_test"))]
pub fn attributes_a_use_updates() -> Vec<i32> {
    let catalog = Catalog::locked_for_insert();
    let mut attributes = Vec::new();
    unsafe {
        let target = Target::for_uses(&catalog);
        let columns = pg_sys::ExecGetUpdatedCols(target.info, target.estate);
        let mut member = pg_sys::bms_next_member(columns, -1);
        while member >= 0 {
            attributes.push(member + pg_sys::FirstLowInvalidHeapAttributeNumber);
            member = pg_sys::bms_next_member(columns, member);
        }
        target.close();
    }
    attributes
}

/// Whether a use at `at` moves a session's used_at: never back (a long
/// request may commit after a later use was recorded), as
/// `touch_sessions.sql`'s WHERE says for the SQL path.
fn moves_used_at(used_at: Option<i64>, at: i64) -> bool {
    used_at.is_none_or(|used| used < at)
}

/// One use: whether the row was written.
unsafe fn touch_row(
    target: &Target,
    index: Oid,
    id: i64,
    at: i64,
    locked: *mut pg_sys::TupleTableSlot,
    new: *mut pg_sys::TupleTableSlot,
    width: usize,
) -> bool {
    unsafe {
        // a row updated and committed since the read is read again, a few times
        for _ in 0..3 {
            let found = row_by_id(target.rel, index, id, |slot| {
                pg_sys::slot_getsomeattrs_int(slot, (USED_AT + 1) as i32);
                let used = !*(*slot).tts_isnull.add(USED_AT);
                (
                    (*slot).tts_tid,
                    used.then(|| (*(*slot).tts_values.add(USED_AT)).value() as i64),
                )
            });
            let Some((tid, used_at)) = found else {
                return false; // revoked
            };
            if !moves_used_at(used_at, at) {
                return false;
            }
            // lives until `locked` is cleared below: the slot points to it
            let mut tuple = pg_sys::HeapTupleData {
                t_self: tid,
                t_tableOid: (*target.rel).rd_id,
                ..Default::default()
            };
            let mut buffer: pg_sys::Buffer = 0;
            let mut failure = pg_sys::TM_FailureData::default();
            let result = pg_sys::heap_lock_tuple(
                target.rel,
                &mut tuple,
                pg_sys::GetCurrentCommandId(true),
                pg_sys::LockTupleMode::LockTupleNoKeyExclusive,
                pg_sys::LockWaitPolicy::LockWaitSkip,
                false,
                &mut buffer,
                &mut failure,
            );
            let written = match result {
                pg_sys::TM_Result::TM_Ok => {
                    pg_sys::ExecStoreBufferHeapTuple(&mut tuple, locked, buffer);
                    let written = update_locked(target, locked, new, width, at);
                    pg_sys::ExecClearTuple(locked);
                    Some(written)
                }
                // updated by a transaction that committed: read it again
                pg_sys::TM_Result::TM_Updated => None,
                // held by another transaction (skipped, never waited for),
                // deleted, or already written by this command
                _ => Some(false),
            };
            pg_sys::ReleaseBuffer(buffer);
            if let Some(written) = written {
                return written;
            }
        }
        false
    }
}

/// Updates the row in `locked` (its newest version, locked by this
/// transaction) with this use, unless its used_at is already as late.
unsafe fn update_locked(
    target: &Target,
    locked: *mut pg_sys::TupleTableSlot,
    new: *mut pg_sys::TupleTableSlot,
    width: usize,
    at: i64,
) -> bool {
    unsafe {
        pg_sys::slot_getsomeattrs_int(locked, width as i32);
        let values = std::slice::from_raw_parts((*locked).tts_values, width);
        let nulls = std::slice::from_raw_parts((*locked).tts_isnull, width);
        let int64 = |i: usize| (!nulls[i]).then(|| values[i].value() as i64);
        if !moves_used_at(int64(USED_AT), at)
            // a row whose hash breaks the rule the regex is skipped for (a
            // CHECK once dropped) is left as it is: no session that
            // authenticates has one
            || nulls[HASH]
            || !crate::token::is_stored_hash(text_bytes(values[HASH]))
        {
            return false;
        }
        pg_sys::ExecClearTuple(new);
        let new_values = std::slice::from_raw_parts_mut((*new).tts_values, width);
        let new_nulls = std::slice::from_raw_parts_mut((*new).tts_isnull, width);
        new_values.copy_from_slice(values);
        new_nulls.copy_from_slice(nulls);
        // columns dropped since (the catalog allows no other beyond ours)
        // are NULL in a new version, as an UPDATE makes them
        new_nulls[COLUMNS.min(width)..].fill(true);
        let updated_at = int64(UPDATED_AT).map_or(at, |updated| updated.max(at));
        new_values[USED_AT] = Datum::from(at);
        new_nulls[USED_AT] = false;
        new_values[UPDATED_AT] = Datum::from(updated_at);
        new_nulls[UPDATED_AT] = false;
        pg_sys::ExecStoreVirtualTuple(new);
        // what a DBA's CHECK allocated for the row before, as the executor
        // resets it row by row
        let per_row = (*target.estate).es_per_tuple_exprcontext;
        if !per_row.is_null() {
            pg_sys::MemoryContextReset((*per_row).ecxt_per_tuple_memory);
        }
        let no_triggers = std::ptr::null_mut();
        pg_sys::ExecSimpleRelationUpdate(target.info, target.estate, no_triggers, locked, new);
        true
    }
}

/// The catalog, locked as a write locks the table, when a write of rows the
/// caller found may go straight through the heap as far as the transaction
/// and the current user go: READ COMMITTED (at REPEATABLE READ a concurrent
/// update must fail the statement with SQL's 40001), no executor or
/// permission hook, and `privilege` and SELECT (the statement reads the row)
/// on the table. The caller still asks the catalog's verdict on the table.
fn allowing_a_direct_write(privilege: u32) -> Option<Catalog> {
    let read_committed = unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32;
    if !read_committed || catalog::hooks_want_the_executor() {
        return None;
    }
    let catalog = Catalog::locked_for_insert();
    (current_user_may(catalog.table, privilege)
        && current_user_may(catalog.table, pg_sys::ACL_SELECT))
    .then_some(catalog)
}

/// Whether the current user (the table's owner, on the direct paths) holds
/// any of `privileges` on `relation`, as the SQL statement's check would ask.
fn current_user_may(relation: Oid, privileges: u32) -> bool {
    unsafe {
        pg_sys::pg_class_aclcheck(relation, pg_sys::GetUserId(), privileges as _)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Why a session is dead, if it is: expired, or unused (used_at, else
/// created_at) for longer than `idle_timeout` seconds when that is > 0.
/// Timestamps are PostgreSQL's microseconds; `now` is the time of the call.
/// The one rule authenticate applies, and (in SQL) trim and prune.
pub fn dead(
    expires_at: Option<i64>,
    last_use: i64,
    now: i64,
    idle_timeout: i32,
) -> Option<Refusal> {
    if expires_at.is_some_and(|at| at <= now) {
        Some(Refusal::Expired)
    } else if idle_timeout > 0 && last_use <= now - i64::from(idle_timeout) * 1_000_000 {
        Some(Refusal::Idle)
    } else {
        None
    }
}

/// castle.sessions' owner: whom statements on the caller's behalf run as.
pub fn table_owner() -> Oid {
    Catalog::get().owner
}

/// castle.session's type, which the function calls form their row as.
pub fn session_type() -> Oid {
    Catalog::get().session_type
}

/// The time of the call: what expiry, idleness and a new session's times
/// are judged by (the clock, not the transaction's start).
pub fn call_time() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}
