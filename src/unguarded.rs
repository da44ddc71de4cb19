//! PostgreSQL functions linked directly, without pgrx's guard on each call.
//!
//! pgrx wraps every `pg_sys` function in a sigsetjmp boundary that turns a
//! PostgreSQL ERROR into a Rust panic, so that Rust destructors run. That is
//! about a hundred instructions a call; the read of one session made some
//! twenty such calls, a fifth of what authenticate cost above a primary-key
//! lookup (callgrind). Here are the same functions, declared as PostgreSQL
//! exports them, for use inside ONE `pg_sys::ffi::pg_guard_ffi_boundary`
//! around a whole read: an ERROR raised by any of them longjmps to that one
//! boundary, which pgrx then re-raises. The rule that makes it sound is the
//! boundary's own: the code inside holds nothing with a destructor (no
//! `String`, `Vec` or guard of its own; references to the caller's are fine)
//! and cannot panic, since it is never unwound, only jumped out of.
//!
//! The first group never raises an ERROR and may be called anywhere.

use pgrx::pg_sys::{
    AttrNumber, Datum, IndexScanDesc, List, Oid, RegProcedure, Relation, ScanDirection, ScanKey,
    Snapshot, StrategyNumber, TimestampTz, TransactionId, TupleTableSlot, LOCKMODE,
};
use std::ffi::c_int;

unsafe extern "C-unwind" {
    // never raise
    pub fn GetCurrentTransactionStartTimestamp() -> TimestampTz;
    pub fn GetCurrentTransactionIdIfAny() -> TransactionId;
    pub fn ActiveSnapshotSet() -> bool;
    pub fn GetActiveSnapshot() -> Snapshot;

    // may raise: only inside a boundary
    pub fn CommandCounterIncrement();
    pub fn GetTransactionSnapshot() -> Snapshot;
    pub fn GetLatestSnapshot() -> Snapshot;
    pub fn PushActiveSnapshot(snapshot: Snapshot);
    pub fn PopActiveSnapshot();
    pub fn table_open(relation: Oid, lockmode: LOCKMODE) -> Relation;
    pub fn table_close(relation: Relation, lockmode: LOCKMODE);
    pub fn index_open(relation: Oid, lockmode: LOCKMODE) -> Relation;
    pub fn index_close(relation: Relation, lockmode: LOCKMODE);
    pub fn table_slot_create(relation: Relation, reglist: *mut *mut List) -> *mut TupleTableSlot;
    pub fn ExecDropSingleTupleTableSlot(slot: *mut TupleTableSlot);
    pub fn ScanKeyInit(
        entry: ScanKey,
        attribute: AttrNumber,
        strategy: StrategyNumber,
        procedure: RegProcedure,
        argument: Datum,
    );
    pub fn index_beginscan(
        heap: Relation,
        index: Relation,
        snapshot: Snapshot,
        nkeys: c_int,
        norderbys: c_int,
    ) -> IndexScanDesc;
    pub fn index_rescan(
        scan: IndexScanDesc,
        keys: ScanKey,
        nkeys: c_int,
        orderbys: ScanKey,
        norderbys: c_int,
    );
    pub fn index_getnext_slot(
        scan: IndexScanDesc,
        direction: ScanDirection::Type,
        slot: *mut TupleTableSlot,
    ) -> bool;
    pub fn index_endscan(scan: IndexScanDesc);
    pub fn slot_getsomeattrs_int(slot: *mut TupleTableSlot, attnum: c_int);
    pub fn pg_detoast_datum_packed(datum: *mut pgrx::pg_sys::varlena)
        -> *mut pgrx::pg_sys::varlena;
    pub fn detoast_external_attr(attr: *mut pgrx::pg_sys::varlena) -> *mut pgrx::pg_sys::varlena;
    pub fn datumCopy(value: Datum, by_value: bool, length: c_int) -> Datum;
}
