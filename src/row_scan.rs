//! `FROM castle.authenticate(t)` (and verify, login) without a Function Scan.
//!
//! A Function Scan costs more than the check it runs a row for: at every
//! execution it looks the function and its result type up, copies the row's
//! descriptor and passes the one row through a tuplestore (about 13,000 of
//! authenticate's 97,000 instructions on 15). Where the planner plans such a
//! FROM item, this module's path takes the Function Scan's place (at its
//! cost, so the plan around it is the same): a custom scan that calls the
//! function's Rust body and puts the seven values in its scan slot.
//!
//! Contract, checked at planning (a plan made under it is invalidated, as
//! every plan that calls the function, by any change to its pg_proc row):
//! - the FROM item is one call, not WITH ORDINALITY, of a C function of this
//!   library whose symbol is one of `ROW_FUNCTIONS`', with one text
//!   argument, returning (not a set of) a type whose attributes are
//!   castle.session's as this version made them; not STRICT, not SECURITY
//!   DEFINER, no SET clause;
//! - its argument is a constant or a parameter (a bound `$1`, an outer
//!   query's column, an initplan's result such as `(SELECT token FROM …)`),
//!   and no restriction (WHERE) applies to the item: the scan evaluates no
//!   expression of the statement's but that one, so every other error is
//!   PostgreSQL's own, as raised (pgrx raises again what a guarded call
//!   catches, without its schema fields or inner context);
//! - what is read from the item is its columns: not its whole row (a row
//!   lock's or UPDATE's copy of it, `SELECT a FROM castle.authenticate(t) a`)
//!   nor a placeholder the planner would compute at the scan (an expression
//!   of a LATERAL subquery on an outer join's nullable side);
//! - no fmgr hook (sepgsql) is set, and track_functions is not `all` (it
//!   counts the calls of C functions the Function Scan makes): both as at
//!   planning (a cached plan keeps its scan after `SET track_functions`).
//!
//! Anything else keeps the Function Scan. Computed columns are computed by
//! a Result above the scan (PostgreSQL's, as raised).
//!
//! At execution it does what the Function Scan does: EXECUTE is checked for
//! the current user and the object access hook (pgaudit) told, at the node's
//! start; the function runs once, at the first row asked for, and again only
//! after a rescan that changed the parameter its argument is (the Function
//! Scan's `funcparams`; another rescan returns the same row); the row reads
//! in both directions as from a one-row tuplestore; a NULL result (verify's
//! refusal) is a row of NULLs; a refusal leaves with no context lines.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::FromDatum;

use crate::catalog::list_pointers;
use crate::compat;
use crate::raw_text::{self, RawText};
use crate::session_row::{self, SessionValues, ATTRIBUTES};
use crate::{auth, context};

/// A row function: its C symbol (pg_proc.prosrc), the name the plan shows,
/// and its Rust body.
struct RowFunction {
    symbol: &'static CStr,
    methods: &'static Shared<pg_sys::CustomScanMethods>,
    call: fn(Option<&[u8]>) -> Option<SessionValues>,
}

const ROW_FUNCTIONS: [RowFunction; 3] = [
    RowFunction {
        symbol: c"authenticate_wrapper",
        methods: &AUTHENTICATE_SCAN,
        call: |token| Some(auth::session_or_refuse(token)),
    },
    RowFunction {
        symbol: c"verify_wrapper",
        methods: &VERIFY_SCAN,
        call: auth::session_or_none,
    },
    RowFunction {
        symbol: c"login_wrapper",
        methods: &LOGIN_SCAN,
        call: |token| Some(context::bound_session(token)),
    },
];

/// The library the functions' pg_proc rows name (the control file's
/// module_pathname, or the path it stands for).
const LIBRARY: [&[u8]; 2] = [b"castle_sessions", b"$libdir/castle_sessions"];

/// pg_language's row for C (a fixed OID of the catalog's initial contents).
const C_LANGUAGE: Oid = Oid::from_u32(13);

/// PostgreSQL keeps pointers to these method tables for the life of the
/// process; they hold nothing but pointers to static names and functions.
struct Shared<T>(T);
unsafe impl<T> Sync for Shared<T> {}

const fn scan_methods(name: &'static CStr) -> Shared<pg_sys::CustomScanMethods> {
    Shared(pg_sys::CustomScanMethods {
        CustomName: name.as_ptr(),
        CreateCustomScanState: Some(create_state),
    })
}
static AUTHENTICATE_SCAN: Shared<pg_sys::CustomScanMethods> = scan_methods(c"castle.authenticate");
static VERIFY_SCAN: Shared<pg_sys::CustomScanMethods> = scan_methods(c"castle.verify");
static LOGIN_SCAN: Shared<pg_sys::CustomScanMethods> = scan_methods(c"castle.login");

static PATH_METHODS: Shared<pg_sys::CustomPathMethods> = Shared(pg_sys::CustomPathMethods {
    CustomName: c"castle_sessions row".as_ptr(),
    PlanCustomPath: Some(plan_path),
    ReparameterizeCustomPathByChild: None,
});

static EXEC_METHODS: Shared<pg_sys::CustomExecMethods> = Shared(pg_sys::CustomExecMethods {
    CustomName: c"castle_sessions row".as_ptr(),
    BeginCustomScan: Some(begin),
    ExecCustomScan: Some(exec),
    EndCustomScan: Some(end),
    ReScanCustomScan: Some(rescan),
    MarkPosCustomScan: None,
    RestrPosCustomScan: None,
    EstimateDSMCustomScan: None,
    InitializeDSMCustomScan: None,
    ReInitializeDSMCustomScan: None,
    InitializeWorkerCustomScan: None,
    ShutdownCustomScan: None,
    ExplainCustomScan: None,
});

static mut PREVIOUS_HOOK: pg_sys::set_rel_pathlist_hook_type = None;

/// Installs the planner hook (chained after any earlier one) and names the
/// scans, so that a plan written out can be read back.
pub fn register() {
    unsafe {
        PREVIOUS_HOOK = pg_sys::set_rel_pathlist_hook;
        pg_sys::set_rel_pathlist_hook = Some(plan_rel);
        for function in &ROW_FUNCTIONS {
            pg_sys::RegisterCustomScanMethods(&function.methods.0);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn plan_rel(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rti: pg_sys::Index,
    rte: *mut pg_sys::RangeTblEntry,
) {
    unsafe {
        if let Some(previous) = PREVIOUS_HOOK {
            previous(root, rel, rti, rte);
        }
        if (*rte).rtekind == pg_sys::RTEKind::RTE_FUNCTION {
            if let Some(which) = replaceable(rel, rte) {
                replace_paths(rel, which);
            }
        }
    }
}

/// Which row function the FROM item is a plain call of, if the contract
/// allows the custom scan.
unsafe fn replaceable(
    rel: *mut pg_sys::RelOptInfo,
    rte: *mut pg_sys::RangeTblEntry,
) -> Option<usize> {
    unsafe {
        let functions = list_pointers((*rte).functions);
        if (*rte).funcordinality || functions.len() != 1 {
            return None;
        }
        // copied, not borrowed: a mutable static
        let fmgr_hook = pg_sys::needs_fmgr_hook;
        if fmgr_hook.is_some()
            || pg_sys::pgstat_track_functions >= pg_sys::TrackFunctionsLevel::TRACK_FUNC_ALL as i32
        {
            return None;
        }
        let call = call_of(functions[0].cast());
        if !pgrx::is_a(call.cast(), pg_sys::NodeTag::T_FuncExpr)
            || (*call).funcretset
            || !(*rel).baserestrictinfo.is_null()
            || !reads_columns_only(rel)
        {
            return None;
        }
        let arguments = list_pointers((*call).args);
        let plain = |node: *mut pg_sys::Node| {
            pgrx::is_a(node, pg_sys::NodeTag::T_Const) || pgrx::is_a(node, pg_sys::NodeTag::T_Param)
        };
        if arguments.len() != 1 || !plain(arguments[0].cast()) {
            return None;
        }
        row_function((*call).funcid)
    }
}

unsafe fn call_of(function: *mut pg_sys::RangeTblFunction) -> *mut pg_sys::FuncExpr {
    unsafe { (*function).funcexpr.cast() }
}

/// Whether what is read from the rel is its columns only: not its whole row
/// (a row lock's or UPDATE's copy of it, `SELECT a FROM castle.authenticate(t)
/// a`), nor an expression the planner computes at the scan (a placeholder
/// for an outer join's nullable side, lateral ones included).
unsafe fn reads_columns_only(rel: *mut pg_sys::RelOptInfo) -> bool {
    unsafe {
        list_pointers((*(*rel).reltarget).exprs).iter().all(|expr| {
            let var = expr.cast::<pg_sys::Var>();
            pgrx::is_a(var.cast(), pg_sys::NodeTag::T_Var) && (*var).varattno > 0
        })
    }
}

/// The index in `ROW_FUNCTIONS` of the function `oid` is, if its pg_proc
/// row is exactly what this library made.
unsafe fn row_function(oid: Oid) -> Option<usize> {
    unsafe {
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as _, Datum::from(oid));
        if tuple.is_null() {
            return None;
        }
        let found = verified_row_function(tuple);
        pg_sys::ReleaseSysCache(tuple);
        found
    }
}

unsafe fn verified_row_function(tuple: pg_sys::HeapTuple) -> Option<usize> {
    unsafe {
        let proc = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple);
        let shape_as_made = proc.prolang == C_LANGUAGE
            && !proc.prosecdef
            // a STRICT function's NULL argument gives a row of NULLs, uncalled
            && !proc.proisstrict
            && !proc.proretset
            && proc.pronargs == 1
            && proc.proargtypes.values.as_slice(1)[0] == pg_sys::TEXTOID
            && attribute(tuple, pg_sys::Anum_pg_proc_proconfig).is_none();
        if !shape_as_made {
            return None;
        }
        let library = attribute(tuple, pg_sys::Anum_pg_proc_probin)?;
        if !LIBRARY.contains(&crate::store::text_bytes(library)) {
            return None;
        }
        let symbol = crate::store::text_bytes(attribute(tuple, pg_sys::Anum_pg_proc_prosrc)?);
        let which = ROW_FUNCTIONS
            .iter()
            .position(|function| function.symbol.to_bytes() == symbol)?;
        returns_session(proc.prorettype).then_some(which)
    }
}

/// A pg_proc attribute, None when NULL.
unsafe fn attribute(tuple: pg_sys::HeapTuple, number: u32) -> Option<Datum> {
    unsafe {
        let mut is_null = false;
        let datum = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::PROCOID as _,
            tuple,
            number as _,
            &mut is_null,
        );
        (!is_null).then_some(datum)
    }
}

/// Whether `type_oid` is a row type with castle.session's attributes as
/// this version made them: what the scan's slot is built from.
unsafe fn returns_session(type_oid: Oid) -> bool {
    unsafe {
        pg_sys::get_typtype(type_oid) == pg_sys::TYPTYPE_COMPOSITE as std::ffi::c_char
            && with_session_attributes(type_oid, |_| ()).is_some()
    }
}

/// `then` run on the attributes of row type `type_oid`, if they are
/// castle.session's as this version made them.
unsafe fn with_session_attributes<T>(
    type_oid: Oid,
    then: impl FnOnce(&[pg_sys::FormData_pg_attribute]) -> T,
) -> Option<T> {
    unsafe {
        let descriptor = pg_sys::lookup_rowtype_tupdesc(type_oid, -1);
        let attributes = compat::attributes(descriptor);
        let result = session_row::as_made(attributes).then(|| then(attributes));
        pg_sys::DecrTupleDescRefCount(descriptor);
        result
    }
}

/// The rel's Function Scan path replaced by the custom scan's, at the same
/// cost; none on a rel proven empty (its path is an empty Append), and any
/// other hook's paths kept.
unsafe fn replace_paths(rel: *mut pg_sys::RelOptInfo, which: usize) {
    unsafe {
        let paths = list_pointers((*rel).pathlist);
        let is_function_scan = |path: &*mut std::ffi::c_void| {
            (*path.cast::<pg_sys::Path>()).pathtype == pg_sys::NodeTag::T_FunctionScan
        };
        let Some(&function_scan) = paths.iter().find(|path| is_function_scan(path)) else {
            return;
        };
        let path = PgBox::<pg_sys::CustomPath>::alloc_node(pg_sys::NodeTag::T_CustomPath).into_pg();
        (*path).path = *function_scan.cast::<pg_sys::Path>();
        (*path).path.type_ = pg_sys::NodeTag::T_CustomPath;
        (*path).path.pathtype = pg_sys::NodeTag::T_CustomScan;
        (*path).path.pathkeys = std::ptr::null_mut();
        // computed columns are a Result's above, evaluated by PostgreSQL
        (*path).flags = pg_sys::CUSTOMPATH_SUPPORT_BACKWARD_SCAN;
        (*path).custom_private = pg_sys::lappend_int(std::ptr::null_mut(), which as i32);
        (*path).methods = &PATH_METHODS.0;
        let mut others = std::ptr::null_mut();
        for other in paths.iter().filter(|path| !is_function_scan(path)) {
            others = pg_sys::lappend(others, *other);
        }
        (*rel).pathlist = others;
        pg_sys::add_path(rel, path.cast());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn plan_path(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    path: *mut pg_sys::CustomPath,
    tlist: *mut pg_sys::List,
    _clauses: *mut pg_sys::List, // none: `replaceable` takes no restricted item
    _custom_plans: *mut pg_sys::List,
) -> *mut pg_sys::Plan {
    unsafe {
        let relid = (*rel).relid;
        let rte = *(*root).simple_rte_array.add(relid as usize);
        let call = call_of(list_pointers((*rte).functions)[0].cast());
        let which = (*(*(*path).custom_private).elements).int_value as usize;
        let scan = PgBox::<pg_sys::CustomScan>::alloc_node(pg_sys::NodeTag::T_CustomScan).into_pg();
        (*scan).scan.plan.targetlist = tlist;
        // no relation to open: the scan's tuples are described by
        // custom_scan_tlist, and the executor maps the item's columns to it
        (*scan).scan.scanrelid = 0;
        (*scan).flags = (*path).flags;
        (*scan).custom_exprs = pg_sys::lappend(std::ptr::null_mut(), call.cast());
        (*scan).custom_private = pg_sys::list_copy((*path).custom_private);
        (*scan).custom_scan_tlist = columns(relid, (*call).funcresulttype);
        (*scan).custom_relids = pg_sys::bms_copy((*rel).relids);
        (*scan).methods = &ROW_FUNCTIONS[which].methods.0;
        scan.cast()
    }
}

/// The item's seven columns, as the scan's tuples hold them.
unsafe fn columns(relid: pg_sys::Index, type_oid: Oid) -> *mut pg_sys::List {
    unsafe {
        let columns = with_session_attributes(type_oid, |attributes| {
            let mut list = std::ptr::null_mut();
            for (i, attribute) in attributes.iter().enumerate() {
                let number = (i + 1) as pg_sys::AttrNumber;
                let var = pg_sys::makeVar(
                    relid as _,
                    number,
                    attribute.atttypid,
                    attribute.atttypmod,
                    attribute.attcollation,
                    0,
                );
                let entry =
                    pg_sys::makeTargetEntry(var.cast(), number, std::ptr::null_mut(), false);
                list = pg_sys::lappend(list, entry.cast());
            }
            list
        });
        // verified when the path was made; invalidations processed since
        // (a look-up may take a lock) could have changed the type
        columns.unwrap_or_else(|| {
            error!("castle_sessions: castle.session changed while the statement was planned")
        })
    }
}

/// The scan's state: the Custom Scan's, then the row once evaluated.
#[repr(C)]
struct RowScanState {
    css: pg_sys::CustomScanState,
    call: fn(Option<&[u8]>) -> Option<SessionValues>,
    argument: *mut pg_sys::ExprState,
    /// the PARAM_EXEC parameter the argument is (an outer query's column, an
    /// initplan's result), the Function Scan's `funcparams`: a rescan that
    /// changed it runs the function again
    argument_param: Option<i32>,
    /// the row and what the call allocated when the function runs again,
    /// reset at each such run (the first run's go with the query's)
    rerun_memory: pg_sys::MemoryContext,
    /// whether the row in `values` is the argument's as it stands
    evaluated: bool,
    ran_before: bool,
    /// read as a one-row tuplestore is: past the row once it was read
    /// forward, at the end once a forward read found nothing more
    after_row: bool,
    at_end: bool,
    values: [Datum; ATTRIBUTES],
    nulls: [bool; ATTRIBUTES],
}

#[pg_guard]
unsafe extern "C-unwind" fn create_state(scan: *mut pg_sys::CustomScan) -> *mut pg_sys::Node {
    unsafe {
        let state = pg_sys::palloc0(std::mem::size_of::<RowScanState>()).cast::<RowScanState>();
        (*state).css.ss.ps.type_ = pg_sys::NodeTag::T_CustomScanState;
        (*state).css.methods = &EXEC_METHODS.0;
        let which = (*(*(*scan).custom_private).elements).int_value as usize;
        (*state).call = ROW_FUNCTIONS[which].call;
        state.cast()
    }
}

unsafe fn the_call(node: *mut pg_sys::CustomScanState) -> *mut pg_sys::FuncExpr {
    unsafe {
        let scan = (*node).ss.ps.plan.cast::<pg_sys::CustomScan>();
        list_pointers((*scan).custom_exprs)[0].cast()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    node: *mut pg_sys::CustomScanState,
    _estate: *mut pg_sys::EState,
    _eflags: i32,
) {
    unsafe {
        let call = the_call(node);
        // as the Function Scan's start does (init_sexpr), EXPLAIN included
        compat::check_may_execute((*call).funcid);
        let access_hook = pg_sys::object_access_hook;
        if access_hook.is_some() {
            pg_sys::RunFunctionExecuteHook((*call).funcid);
        }
        // the slot gets exactly our values (`columns` made its descriptor)
        if (*(*(*node).ss.ss_ScanTupleSlot).tts_tupleDescriptor).natts as usize != ATTRIBUTES {
            error!("castle_sessions: the plan's row is not castle.session's");
        }
        let state = node.cast::<RowScanState>();
        let argument = list_pointers((*call).args)[0].cast::<pg_sys::Node>();
        (*state).argument = pg_sys::ExecInitExpr(argument.cast(), node.cast());
        if pgrx::is_a(argument, pg_sys::NodeTag::T_Param) {
            let param = argument.cast::<pg_sys::Param>();
            if (*param).paramkind == pg_sys::ParamKind::PARAM_EXEC {
                (*state).argument_param = Some((*param).paramid);
            }
        }
    }
}

/// Runs the function when this fetch returns its row and it has not run
/// since the start or the last rescan that changed its argument; then
/// PostgreSQL's ExecScan, which fetches it. The function runs here, not
/// inside ExecScan: a refusal raised within a guarded call would be raised
/// again with the portal's context (see `auth::report_refusal_alone`).
#[pg_guard]
unsafe extern "C-unwind" fn exec(
    node: *mut pg_sys::CustomScanState,
) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let state = node.cast::<RowScanState>();
        if !(*state).evaluated && row_comes_next(state, is_forward(&mut (*node).ss)) {
            evaluate(state);
        }
        pg_sys::ExecScan(&mut (*node).ss, Some(next_row), Some(recheck))
    }
}

unsafe fn is_forward(node: *mut pg_sys::ScanState) -> bool {
    unsafe { (*(*node).ps.state).es_direction != pg_sys::ScanDirection::BackwardScanDirection }
}

/// Whether a fetch in this direction returns the row.
unsafe fn row_comes_next(state: *mut RowScanState, forward: bool) -> bool {
    unsafe {
        if forward {
            !(*state).after_row
        } else {
            (*state).at_end
        }
    }
}

/// One fetch: the row or nothing in the scan slot, the position moved.
unsafe fn fetch(state: *mut RowScanState, forward: bool) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let row = row_comes_next(state, forward);
        if forward {
            (*state).at_end = (*state).after_row;
            (*state).after_row = true;
        } else if row {
            (*state).at_end = false;
        } else {
            (*state).after_row = false;
        }
        let slot = (*state).css.ss.ss_ScanTupleSlot;
        if !row {
            return pg_sys::ExecClearTuple(slot);
        }
        if !(*state).evaluated {
            evaluate(state); // `exec` did, unless a caller bypassed it
        }
        pg_sys::ExecClearTuple(slot);
        std::ptr::copy_nonoverlapping((*state).values.as_ptr(), (*slot).tts_values, ATTRIBUTES);
        std::ptr::copy_nonoverlapping((*state).nulls.as_ptr(), (*slot).tts_isnull, ATTRIBUTES);
        pg_sys::ExecStoreVirtualTuple(slot)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn next_row(node: *mut pg_sys::ScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe { fetch(node.cast(), is_forward(node)) }
}

/// Under EvalPlanQual (the scan inside a subquery of an UPDATE's recheck):
/// ExecScan asks this instead of `next_row`, which it answers the same way.
#[pg_guard]
unsafe extern "C-unwind" fn recheck(
    node: *mut pg_sys::ScanState,
    _slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    unsafe {
        let slot = fetch(node.cast(), is_forward(node));
        (*slot).tts_flags & pg_sys::TTS_FLAG_EMPTY as u16 == 0
    }
}

/// Runs the function on its argument. The first run's row and allocations
/// live as long as the query's (no context to make on a request's path); a
/// run again after a rescan allocates in a context of the node's own, reset
/// at each, so that a scan run for every outer row does not pile them up.
unsafe fn evaluate(state: *mut RowScanState) {
    unsafe {
        let estate = (*state).css.ss.ps.state;
        let memory = if !(*state).ran_before {
            (*estate).es_query_cxt
        } else if (*state).rerun_memory.is_null() {
            (*state).rerun_memory = pg_sys::AllocSetContextCreateInternal(
                (*estate).es_query_cxt,
                c"castle_sessions row".as_ptr(),
                0,
                1024,
                8 * 1024,
            );
            (*state).rerun_memory
        } else {
            pg_sys::MemoryContextReset((*state).rerun_memory);
            (*state).rerun_memory
        };
        (*state).ran_before = true;
        let caller = pg_sys::CurrentMemoryContext;
        pg_sys::CurrentMemoryContext = memory;
        let econtext = (*state).css.ss.ps.ps_ExprContext;
        let mut is_null = false;
        let datum = pg_sys::ExecEvalExpr((*state).argument, econtext, &mut is_null);
        let token = RawText::from_datum(datum, is_null);
        match ((*state).call)(raw_text::bytes(&token)) {
            Some(row) => {
                (*state).values = row.values;
                (*state).nulls = row.nulls;
            }
            None => (*state).nulls = [true; ATTRIBUTES],
        }
        pg_sys::CurrentMemoryContext = caller;
        (*state).evaluated = true;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::CustomScanState) {
    unsafe {
        let state = node.cast::<RowScanState>();
        let changed = (*node).ss.ps.chgParam;
        if (*state)
            .argument_param
            .is_some_and(|param| pg_sys::bms_is_member(param, changed))
        {
            (*state).evaluated = false;
        }
        (*state).after_row = false;
        (*state).at_end = false;
        pg_sys::ExecScanReScan(&mut (*node).ss);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn end(_node: *mut pg_sys::CustomScanState) {
    // the row's memory goes with the query's
}
