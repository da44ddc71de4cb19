//! PostgreSQL functions linked directly, without pgrx's guard on each call.
//!
//! pgrx wraps every `pg_sys` function in a sigsetjmp boundary that turns a
//! PostgreSQL ERROR into a Rust panic, so that Rust destructors run. That is
//! one to two hundred instructions a call; authenticate made some thirty such
//! calls, a fifth of what it cost above a primary-key lookup (callgrind).
//! These are the same functions, declared as PostgreSQL exports them, for two
//! places where an ERROR can skip Rust frames without harm, because no frame
//! it skips holds anything with a destructor (no `String`, `Vec` or guard; a
//! reference to a caller's is fine) and none is expected to run to its end:
//!
//! - inside ONE `pg_sys::ffi::pg_guard_ffi_boundary` around a whole read
//!   (`store::scan_sessions`): the ERROR longjmps to that boundary, which
//!   pgrx turns into a panic and re-raises. Code in there must not panic
//!   either: it is jumped out of, never unwound.
//! - in an executor callback of `scan` that is not `#[pg_guard]`, called by
//!   PostgreSQL: the ERROR longjmps straight back into PostgreSQL, as out of
//!   a C extension. Rust that may panic runs there inside pgrx's guard
//!   (`scan::guarded`), never around one of these calls: a longjmp must not
//!   pass a pending `catch_unwind` either.
//!
//! The first group never raises an ERROR and may be called anywhere.

use pgrx::pg_sys::{
    varlena, AclMode, AclResult, AttrNumber, Datum, ExecScanAccessMtd, ExecScanRecheckMtd, Expr,
    ExprState, HeapTuple, IndexScanDesc, List, MemoryContext, ObjectType, Oid, PlanState,
    RegProcedure, Relation, ScanDirection, ScanKey, ScanState, Size, Snapshot, StrategyNumber,
    TimestampTz, TransactionId, TupleDesc, TupleTableSlot, LOCKMODE,
};
use std::ffi::{c_char, c_int, c_void};

unsafe extern "C-unwind" {
    // never raise
    pub fn GetCurrentTransactionStartTimestamp() -> TimestampTz;
    pub fn GetCurrentTransactionIdIfAny() -> TransactionId;
    pub fn ActiveSnapshotSet() -> bool;
    pub fn GetActiveSnapshot() -> Snapshot;
    pub fn GetUserId() -> Oid;
    pub fn ExecStoreVirtualTuple(slot: *mut TupleTableSlot) -> *mut TupleTableSlot;
    pub fn heap_deform_tuple(
        tuple: HeapTuple,
        descriptor: TupleDesc,
        values: *mut Datum,
        nulls: *mut bool,
    );
    // (for a built-in procedure, as ours, which needs no catalog look-up)
    pub fn ScanKeyEntryInitialize(
        entry: ScanKey,
        flags: c_int,
        attribute: AttrNumber,
        strategy: StrategyNumber,
        subtype: Oid,
        collation: Oid,
        procedure: RegProcedure,
        argument: Datum,
    );

    // may raise: only where the rule above allows
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
    pub fn pg_detoast_datum_packed(datum: *mut varlena) -> *mut varlena;
    pub fn pg_detoast_datum(datum: *mut varlena) -> *mut varlena;
    pub fn detoast_external_attr(attr: *mut varlena) -> *mut varlena;
    pub fn datumCopy(value: Datum, by_value: bool, length: c_int) -> Datum;
    pub fn pg_proc_aclcheck(function: Oid, role: Oid, mode: AclMode) -> AclResult::Type;
    pub fn aclcheck_error(result: AclResult::Type, kind: ObjectType::Type, name: *const c_char);
    pub fn get_func_name(function: Oid) -> *mut c_char;
    pub fn RunFunctionExecuteHook(function: Oid);
    pub fn palloc(size: Size) -> *mut c_void;
    pub fn MemoryContextReset(context: MemoryContext);
    pub fn AllocSetContextCreateInternal(
        parent: MemoryContext,
        name: *const c_char,
        min_size: Size,
        initial_size: Size,
        max_size: Size,
    ) -> MemoryContext;
    pub fn ExecInitExpr(node: *mut Expr, parent: *mut PlanState) -> *mut ExprState;
    pub fn ExecScan(
        node: *mut ScanState,
        next: ExecScanAccessMtd,
        recheck: ExecScanRecheckMtd,
    ) -> *mut TupleTableSlot;
}
