//! The catalog objects the direct reads rely on, found and verified once.
//!
//! Contract: `Catalog::get()` names castle.sessions, its owner and
//! castle.session, and says which direct reads are safe. A direct read is
//! allowed only for an object verified here, at resolution:
//!
//! - `primary_key`: castle.sessions is an ordinary heap table (not a
//!   partition, no forced row security) whose first columns are the ten this
//!   version made (name aside: position, type, no typmod, user_id in "C"),
//!   or, while ALTER EXTENSION … UPDATE has not run, the eight 0.4.0 made
//!   and no family_id or rotated_at column at all;
//!   and the index is one of its own, valid, ready and live, a unique btree
//!   on exactly (id) with int8_ops, no expression and no predicate.
//! - `user_index`: the same table, and a valid btree whose leading key is
//!   user_id with text_ops in the column's own collation ("C"), no
//!   expression and no predicate.
//!
//! - `insert_sequence`: rows may be inserted straight through the access
//!   methods (a sign-in's INSERT, store.rs). The table is as `primary_key`
//!   needs, with this version's ten columns and no other (but dropped ones); no
//!   trigger, rule or forced row security; no generated column; no default
//!   on a column the INSERT leaves out (used_at, rotated_at, data); id an
//!   identity BY DEFAULT, whose sequence this is, and no other identity.
//!   Constraints and indexes, whatever a DBA made of them, are checked and
//!   maintained on that path as by the executor. Privileges are not part of
//!   the verdict (a role's membership changes without invalidating it): the
//!   INSERT checks them at every call.
//! - Recording uses straight through the heap (`store::touch_directly`)
//!   needs `primary_key` and `insert_sequence`: an UPDATE of used_at and
//!   updated_at then runs nothing but what ExecSimpleRelationUpdate does.
//! - Deleting rows straight through the heap (trimming's common case,
//!   `store::delete_directly`) needs `primary_key` (to find a row again
//!   after a concurrent update) and no `has_dba_code`: a heap delete runs no
//!   trigger, rule or policy, and no constraint is checked on a delete but a
//!   foreign key's, which is a trigger.
//! - `hash_check`: with `insert_sequence`, the position among the table's
//!   CHECKs (sorted by name in the relcache entry) of the one this version
//!   makes on hash, its expression verified node by node to be
//!   `hash ~ '^[0-9a-f]{64}$'` (text's regex match, on column 2, in the
//!   database's or the "C" collation, enforced). The direct INSERT tests that
//!   rule on the row's bytes (`token::is_stored_hash`) instead of running
//!   the regex engine, which takes 90,000 instructions.
//!
//! Indexes are found through the table's index list, never by name, so a
//! renamed or replaced table or index is never mistaken for ours. Anything
//! else gives None and the caller takes its SQL path. The verdict is kept
//! until a relcache invalidation for one of the relations it names (or for
//! all), or a change to any schema, so unrelated DDL, ANALYZE or temporary
//! tables cost nothing.
//!
//! A verdict holds for a transaction only under a lock on the table: use
//! `Catalog::locked()`, which takes AccessShareLock first (processing every
//! invalidation committed before it) and resolves after, and keeps the lock,
//! as the executor does, so no DDL can change the table until the
//! transaction ends.

use std::cell::Cell;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::compat;

/// castle.sessions' columns, in table order (sql/bootstrap.sql); the direct
/// read takes the first ten (eight before 0.5.0's objects).
pub const ID: usize = 0;
pub const HASH: usize = 1;
pub const USER_ID: usize = 2;
pub const CREATED_AT: usize = 3;
pub const UPDATED_AT: usize = 4;
pub const EXPIRES_AT: usize = 5;
pub const USED_AT: usize = 6;
pub const DATA: usize = 7;
pub const FAMILY_ID: usize = 8;
pub const ROTATED_AT: usize = 9;
pub const COLUMNS: usize = 10;
/// The columns before 0.5.0 made family_id and rotated_at.
pub const COLUMNS_BEFORE_FAMILIES: usize = 8;
/// Their types, as made.
pub const COLUMN_TYPES: [Oid; COLUMNS] = [
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::JSONBOID,
    pg_sys::INT8OID,
    pg_sys::TIMESTAMPTZOID,
];
/// castle.session's attributes, in order: the table's columns but the hash.
pub const SESSION_COLUMNS: [usize; 7] = [
    ID, USER_ID, CREATED_AT, UPDATED_AT, EXPIRES_AT, USED_AT, DATA,
];

#[derive(Clone, Copy)]
pub struct Catalog {
    pub table: Oid,
    pub owner: Oid,
    pub session_type: Oid,
    /// castle.session's relation (its pg_class row), so ALTER TYPE invalidates
    session_type_relation: Oid,
    /// verified (id) index, when direct reads of the table are safe
    pub primary_key: Option<Oid>,
    /// verified (user_id, …) index, when direct reads of the table are safe
    pub user_index: Option<(Oid, Oid)>,
    /// castle.user_locks, castle.rotation_keys and the family columns exist:
    /// the SQL objects are this version's
    pub current_objects: bool,
    /// castle.user_locks, whose table lock stands for every user's lock
    /// (user_lock.rs); InvalidOid on objects older than 0.4.0
    pub user_locks: Oid,
    /// the columns a read of a session takes: COLUMNS, or
    /// COLUMNS_BEFORE_FAMILIES on 0.4.0's objects (no family, never rotated)
    pub columns: usize,
    /// castle.sessions has code of a DBA's that an UPDATE would run: a
    /// trigger (or a foreign key's), a rule, forced row-level security
    pub has_dba_code: bool,
    /// castle.sessions' identity sequence, when a row may be inserted directly
    pub insert_sequence: Option<Oid>,
    /// with insert_sequence: which of the relcache's CHECKs is this
    /// version's on hash, verified (see the contract above)
    pub hash_check: Option<usize>,
}

thread_local! {
    static CACHED: Cell<Option<Catalog>> = const { Cell::new(None) };
    /// Counts invalidations, so that a resolution overtaken by one is not kept.
    static FORGOTTEN: Cell<u64> = const { Cell::new(0) };
}

pub fn register_invalidation() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), Datum::from(0));
        // ALTER SCHEMA castle RENAME sends no relcache invalidation
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as _,
            Some(schema_changed),
            Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn schema_changed(_arg: Datum, _cache: i32, _hash: u32) {
    forget();
}

fn forget() {
    CACHED.with(|cached| cached.set(None));
    FORGOTTEN.with(|forgotten| forgotten.set(forgotten.get() + 1));
}

#[pg_guard]
unsafe extern "C-unwind" fn invalidated(_arg: Datum, relid: Oid) {
    let concerns_us = CACHED.with(Cell::get).is_none_or(|c| {
        relid == pg_sys::InvalidOid
            || relid == c.table
            || relid == c.session_type_relation
            || c.primary_key == Some(relid)
            || c.user_index.is_some_and(|(index, _)| index == relid)
    });
    if concerns_us {
        forget();
    }
}

/// Whether an executor or permission hook is set (pgaudit, sepgsql, …): then
/// every read and write goes through the executor, so they see it.
pub fn hooks_want_the_executor() -> bool {
    // copied, not borrowed: they are mutable statics
    let (start, run, finish, end, check) = unsafe {
        (
            pg_sys::ExecutorStart_hook,
            pg_sys::ExecutorRun_hook,
            pg_sys::ExecutorFinish_hook,
            pg_sys::ExecutorEnd_hook,
            pg_sys::ExecutorCheckPerms_hook,
        )
    };
    start.is_some() || run.is_some() || finish.is_some() || end.is_some() || check.is_some()
}

/// Refuses to write when the extension's SQL objects predate this library
/// (it was installed, but ALTER EXTENSION … UPDATE has not run yet).
pub fn require_current_objects() {
    if !Catalog::get().current_objects {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "castle_sessions: the extension's objects are older than its library",
            "Run ALTER EXTENSION castle_sessions UPDATE."
        );
    }
}

impl Catalog {
    /// The verdict for this transaction: castle.sessions locked first (which
    /// processes the invalidations of any DDL committed before), then
    /// resolved, and the lock kept to the end of the transaction.
    pub fn locked() -> Catalog {
        Catalog::locked_in(pg_sys::AccessShareLock)
    }

    /// `locked`, in the mode an INSERT, an UPDATE or a DELETE takes.
    pub fn locked_for_insert() -> Catalog {
        Catalog::locked_in(pg_sys::RowExclusiveLock)
    }

    fn locked_in(mode: u32) -> Catalog {
        let mut catalog = Catalog::get();
        // a table replaced meanwhile: lock the new one, and look again
        for _ in 0..3 {
            unsafe { pg_sys::LockRelationOid(catalog.table, mode as _) };
            let now = Catalog::get();
            if now.table == catalog.table {
                return now;
            }
            catalog = now;
        }
        catalog_unsettled()
    }

    pub fn get() -> Catalog {
        if let Some(catalog) = CACHED.with(Cell::get) {
            return catalog;
        }
        let before = FORGOTTEN.with(Cell::get);
        let resolved = resolve();
        // an invalidation processed during the look-up (it takes locks and
        // reads catalogs) may have made it stale: use it once, don't keep it;
        // nor keep old SQL objects, which ALTER EXTENSION … UPDATE replaces
        // without invalidating what we cached
        if FORGOTTEN.with(Cell::get) == before && resolved.current_objects {
            CACHED.with(|cached| cached.set(Some(resolved)));
        }
        resolved
    }
}

fn catalog_unsettled() -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "castle.sessions is being replaced; retry"
    );
}

fn resolve() -> Catalog {
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"castle".as_ptr(), false);
        let table = pg_sys::get_relname_relid(c"sessions".as_ptr(), schema);
        if table == pg_sys::InvalidOid {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                "castle.sessions does not exist"
            );
        }
        let session_type = pg_sys::GetSysCacheOid(
            pg_sys::SysCacheIdentifier::TYPENAMENSP as _,
            pg_sys::Anum_pg_type_oid as _,
            Datum::from(c"session".as_ptr()),
            Datum::from(schema),
            Datum::from(0),
            Datum::from(0),
        );
        let rel = pg_sys::table_open(table, pg_sys::AccessShareLock as _);
        let owner = (*(*rel).rd_rel).relowner;
        let has_dba_code = !(*rel).trigdesc.is_null()
            || !(*rel).rd_rules.is_null()
            || (*(*rel).rd_rel).relforcerowsecurity;
        let has_column = |name: &std::ffi::CStr| {
            pg_sys::get_attnum(table, name.as_ptr()) != pg_sys::InvalidAttrNumber as i16
        };
        // 0.4.0's objects have neither column; with just one (a DBA dropped
        // the other) no read may ignore rotated_at: the SQL read, which
        // names both, fails instead
        let (family_id, rotated_at) = (has_column(c"family_id"), has_column(c"rotated_at"));
        let families = family_id && rotated_at;
        let columns = if family_id || rotated_at {
            COLUMNS
        } else {
            COLUMNS_BEFORE_FAMILIES
        };
        let readable =
            (families || columns == COLUMNS_BEFORE_FAMILIES) && table_as_made(rel, columns);
        let mut primary_key = None;
        let mut user_index = None;
        if readable {
            let indexes = pg_sys::RelationGetIndexList(rel);
            for cell in list_oids(indexes) {
                let index = pg_sys::index_open(cell, pg_sys::AccessShareLock as _);
                if primary_key.is_none() && is_id_index(index) {
                    primary_key = Some(cell);
                } else if user_index.is_none() {
                    if let Some(collation) = user_index_collation(index) {
                        user_index = Some((cell, collation));
                    }
                }
                // locks are kept to the end of the transaction, as the executor does
                pg_sys::index_close(index, pg_sys::NoLock as _);
            }
            pg_sys::list_free(indexes);
        }
        let insert_sequence = if readable && !has_dba_code {
            insertable(rel)
        } else {
            None
        };
        let hash_check = insert_sequence.and_then(|_| own_hash_check(rel));
        pg_sys::table_close(rel, pg_sys::NoLock as _);
        let user_locks = pg_sys::get_relname_relid(c"user_locks".as_ptr(), schema);
        Catalog {
            table,
            owner,
            session_type,
            session_type_relation: pg_sys::get_typ_typrelid(session_type),
            primary_key,
            user_index,
            current_objects: families
                && user_locks != pg_sys::InvalidOid
                && pg_sys::get_relname_relid(c"rotation_keys".as_ptr(), schema)
                    != pg_sys::InvalidOid,
            user_locks,
            columns,
            has_dba_code,
            insert_sequence,
            hash_check,
        }
    }
}

/// The identity sequence of a table `table_as_made` accepted, when an
/// INSERT of a sign-in's row would run nothing but its constraints and
/// indexes (see `insert_sequence` above).
unsafe fn insertable(rel: pg_sys::Relation) -> Option<Oid> {
    unsafe {
        let attributes = compat::attributes((*rel).rd_att);
        let left_out = [USED_AT, DATA, ROTATED_AT];
        // columns a DBA added and dropped since are NULL in every new row
        let plain = attributes.len() >= COLUMNS
            && attributes[..COLUMNS]
                .iter()
                .all(|a| !a.attisdropped && a.attgenerated == 0)
            && attributes[COLUMNS..].iter().all(|a| a.attisdropped)
            && left_out.iter().all(|&column| !attributes[column].atthasdef)
            && attributes[ID].attidentity
                == pg_sys::ATTRIBUTE_IDENTITY_BY_DEFAULT as std::ffi::c_char
            // an identity ALWAYS elsewhere refuses the value a rotation gives
            && attributes[ID + 1..COLUMNS].iter().all(|a| a.attidentity == 0);
        if !plain {
            return None;
        }
        let sequence = compat::identity_sequence(rel, (ID + 1) as i16);
        (sequence != pg_sys::InvalidOid).then_some(sequence)
    }
}

/// The position among the table's CHECKs (its relcache entry's) of the one
/// sql/bootstrap.sql makes on hash, when its expression is exactly
/// `hash ~ '^[0-9a-f]{64}$'` and it is enforced.
unsafe fn own_hash_check(rel: pg_sys::Relation) -> Option<usize> {
    unsafe {
        let constraints = (*(*rel).rd_att).constr;
        if constraints.is_null() || (*constraints).num_check == 0 {
            return None;
        }
        let checks =
            std::slice::from_raw_parts((*constraints).check, (*constraints).num_check as usize);
        checks
            .iter()
            .position(|check| compat::check_enforced(check) && is_hash_rule(check.ccbin))
    }
}

/// Whether a CHECK's stored expression is `hash ~ '^[0-9a-f]{64}$'`: text's
/// regex match (textregexeq) of column 2 against that constant, in a
/// deterministic collation (the database's or "C").
unsafe fn is_hash_rule(expression: *mut std::ffi::c_char) -> bool {
    unsafe {
        let node = pg_sys::stringToNode(expression).cast::<pg_sys::Node>();
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_OpExpr {
            return false;
        }
        let op = node.cast::<pg_sys::OpExpr>();
        let args = list_pointers((*op).args);
        let collation = (*op).inputcollid;
        if (*op).opfuncid != pg_sys::Oid::from(pg_sys::F_TEXTREGEXEQ)
            || (*op).opretset
            || !(collation == pg_sys::DEFAULT_COLLATION_OID || collation == pg_sys::C_COLLATION_OID)
            || args.len() != 2
        {
            return false;
        }
        let (column, pattern) = (
            args[0].cast::<pg_sys::Node>(),
            args[1].cast::<pg_sys::Node>(),
        );
        let is_hash_column = (*column).type_ == pg_sys::NodeTag::T_Var && {
            let var = column.cast::<pg_sys::Var>();
            (*var).varattno == (HASH + 1) as i16
                && (*var).varlevelsup == 0
                && (*var).vartype == pg_sys::TEXTOID
        };
        let is_the_pattern = (*pattern).type_ == pg_sys::NodeTag::T_Const && {
            let constant = pattern.cast::<pg_sys::Const>();
            (*constant).consttype == pg_sys::TEXTOID
                && !(*constant).constisnull
                && pgrx::varlena::varlena_to_byte_slice(
                    (*constant).constvalue.cast_mut_ptr::<pg_sys::varlena>(),
                ) == crate::token::STORED_HASH_PATTERN.as_bytes()
        };
        is_hash_column && is_the_pattern
    }
}

/// A List's cells, none for NIL.
unsafe fn list_cells<'a>(list: *mut pg_sys::List) -> &'a [pg_sys::ListCell] {
    unsafe {
        if list.is_null() {
            return &[];
        }
        std::slice::from_raw_parts((*list).elements, (*list).length as usize)
    }
}

pub unsafe fn list_pointers(list: *mut pg_sys::List) -> Vec<*mut std::ffi::c_void> {
    unsafe { list_cells(list).iter().map(|cell| cell.ptr_value).collect() }
}

unsafe fn list_oids(list: *mut pg_sys::List) -> Vec<Oid> {
    unsafe { list_cells(list).iter().map(|cell| cell.oid_value).collect() }
}

/// Whether the first attributes are, in order, of these types with no typmod,
/// none dropped.
pub fn attributes_are(attributes: &[pg_sys::FormData_pg_attribute], types: &[Oid]) -> bool {
    attributes.len() >= types.len()
        && attributes.iter().zip(types).all(|(attribute, &expected)| {
            !attribute.attisdropped && attribute.atttypid == expected && attribute.atttypmod == -1
        })
}

/// An ordinary heap table, read as any query would read it, with our first
/// `columns` columns first.
unsafe fn table_as_made(rel: pg_sys::Relation, columns: usize) -> bool {
    unsafe {
        let class = (*rel).rd_rel;
        let attributes = compat::attributes((*rel).rd_att);
        (*class).relkind == pg_sys::RELKIND_RELATION as std::ffi::c_char
            && !(*class).relispartition
            && !(*class).relhassubclass
            && (*class).relam == pg_sys::HEAP_TABLE_AM_OID
            && !(*class).relforcerowsecurity
            && (*rel).rd_rules.is_null()
            && attributes_are(attributes, &COLUMN_TYPES[..columns])
            && attributes[USER_ID].attcollation == pg_sys::C_COLLATION_OID
    }
}

/// A btree index usable as is: valid, ready, live, no expression, no predicate.
unsafe fn plain_btree(index: pg_sys::Relation) -> Option<&'static pg_sys::FormData_pg_index> {
    unsafe {
        let form = (*index).rd_index.as_ref()?;
        // indcheckxmin: not yet safe for every snapshot, as the planner knows
        let usable = (*(*index).rd_rel).relam == pg_sys::BTREE_AM_OID
            && !form.indcheckxmin
            && form.indisvalid
            && form.indisready
            && form.indislive
            && pg_sys::RelationGetIndexExpressions(index).is_null()
            && pg_sys::RelationGetIndexPredicate(index).is_null();
        usable.then_some(form)
    }
}

unsafe fn key_column(form: &pg_sys::FormData_pg_index, key: usize) -> i16 {
    unsafe {
        *form
            .indkey
            .values
            .as_slice(form.indnatts as usize)
            .get(key)
            .unwrap_or(&0)
    }
}

/// The operator family and input type of a key: what its comparisons mean.
unsafe fn key_compares(index: pg_sys::Relation, key: usize) -> (Oid, Oid) {
    unsafe {
        (
            *(*index).rd_opfamily.add(key),
            *(*index).rd_opcintype.add(key),
        )
    }
}

/// A unique btree on exactly (id), comparing as int8.
unsafe fn is_id_index(index: pg_sys::Relation) -> bool {
    unsafe {
        let Some(form) = plain_btree(index) else {
            return false;
        };
        form.indisunique
            && form.indnkeyatts == 1
            && key_column(form, 0) == (ID + 1) as i16
            && key_compares(index, 0) == (pg_sys::INTEGER_BTREE_FAM_OID, pg_sys::INT8OID)
    }
}

/// The collation of a btree whose first key is user_id compared as text in
/// the column's collation, "C" (table_as_made checked the column).
unsafe fn user_index_collation(index: pg_sys::Relation) -> Option<Oid> {
    unsafe {
        let form = plain_btree(index)?;
        let collation = *(*index).rd_indcollation;
        let ok = key_column(form, 0) == (USER_ID + 1) as i16
            && key_compares(index, 0) == (pg_sys::TEXT_BTREE_FAM_OID, pg_sys::TEXTOID)
            && collation == pg_sys::C_COLLATION_OID;
        ok.then_some(collation)
    }
}
