//! `SELECT * FROM castle.authenticate(token)` without PostgreSQL's Function
//! Scan. A function in FROM runs through a Function Scan, which on every
//! execution builds a tuplestore, looks up and copies the row type's
//! descriptor, and copies the row in and out: about a tenth of a whole
//! authenticate. This module offers the planner, beside that path, a Custom
//! Scan for `castle.authenticate` and `castle.verify` in FROM that calls the
//! same function once per scan and hands its row straight to the query: same
//! call, same result (verify's NULL is a row of NULLs, as a Function Scan
//! makes it), same errors. Only the plain case gets it: no ORDINALITY, one
//! function, no condition on its columns, no whole-row reference; anything
//! else keeps the Function Scan.
//!
//! When the function is still ours as installed (our C symbol, not STRICT,
//! not SECURITY DEFINER, no SET clause), the scan goes one step further and skips the
//! function call machinery too: it checks EXECUTE as a call would, evaluates
//! the token, runs `auth::authenticated` itself and puts the session's values
//! straight into its row, with no composite made and taken apart. A plan
//! depends on the function and on castle.session, so redefining either
//! replans; with per-function statistics on (track_functions = all) or a
//! security module's function hook, the scan calls the function as usual.

use std::ffi::CStr;

use pgrx::pg_sys::{self, NodeTag};
use pgrx::prelude::*;

use crate::session_row::{self, ATTRIBUTES};
use crate::{auth, unguarded};

const NAME: &CStr = c"castle session";

static mut PREVIOUS_HOOK: pg_sys::set_rel_pathlist_hook_type = None;

static mut PATH_METHODS: pg_sys::CustomPathMethods = pg_sys::CustomPathMethods {
    CustomName: NAME.as_ptr(),
    PlanCustomPath: Some(plan_path),
    ReparameterizeCustomPathByChild: None,
};

static mut SCAN_METHODS: pg_sys::CustomScanMethods = pg_sys::CustomScanMethods {
    CustomName: NAME.as_ptr(),
    CreateCustomScanState: Some(create_state),
};

static mut EXEC_METHODS: pg_sys::CustomExecMethods = pg_sys::CustomExecMethods {
    CustomName: NAME.as_ptr(),
    BeginCustomScan: Some(begin_scan),
    ExecCustomScan: Some(exec_scan),
    EndCustomScan: Some(end_scan),
    ReScanCustomScan: Some(rescan),
    ExplainCustomScan: Some(explain_scan),
    ..unsafe { std::mem::zeroed() }
};

/// How a scan gets its row, kept in the plan's custom_private.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    /// through fmgr, as a Function Scan would call it
    Function = 0,
    /// `auth::authenticated` directly, for castle.authenticate ...
    Authenticate = 1,
    /// ... and for castle.verify
    Verify = 2,
}

/// The executor state: the custom scan's, then what to evaluate (the call, or
/// for a direct call its token) and how; whether this scan has made its row;
/// and the row, kept for a rescan with nothing changed.
#[repr(C)]
struct SessionScanState {
    css: pg_sys::CustomScanState,
    expression: *mut pg_sys::ExprState,
    call: Call,
    done: bool,
    /// the last row made, while `row_memory` holds what it points to ...
    kept: bool,
    /// ... and whether the next row is that one again
    replay: bool,
    row_memory: pg_sys::MemoryContext,
    values: *mut pg_sys::Datum,
    nulls: *mut bool,
}

pub fn register() {
    unsafe {
        PREVIOUS_HOOK = pg_sys::set_rel_pathlist_hook;
        pg_sys::set_rel_pathlist_hook = Some(offer_path);
        pg_sys::RegisterCustomScanMethods(&raw const SCAN_METHODS);
    }
}

unsafe fn list_items(list: *mut pg_sys::List) -> &'static [pg_sys::ListCell] {
    unsafe {
        if list.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts((*list).elements, (*list).length as usize)
        }
    }
}

unsafe fn is_node(node: *mut pg_sys::Node, tag: NodeTag) -> bool {
    unsafe { !node.is_null() && (*node).type_ == tag }
}

/// The one function call of a `FROM castle.authenticate(…)` or
/// `FROM castle.verify(…)` relation, if `rte` is one.
unsafe fn session_call(rte: *mut pg_sys::RangeTblEntry) -> Option<*mut pg_sys::FuncExpr> {
    unsafe {
        if (*rte).rtekind != pg_sys::RTEKind::RTE_FUNCTION || (*rte).funcordinality {
            return None;
        }
        let [function] = list_items((*rte).functions) else {
            return None;
        };
        let call = (*function.ptr_value.cast::<pg_sys::RangeTblFunction>()).funcexpr;
        if !is_node(call, NodeTag::T_FuncExpr) {
            return None;
        }
        let call = call.cast::<pg_sys::FuncExpr>();
        let castle = pg_sys::get_namespace_oid(c"castle".as_ptr(), true);
        if castle == pg_sys::InvalidOid || pg_sys::get_func_namespace((*call).funcid) != castle {
            return None;
        }
        let name = CStr::from_ptr(pg_sys::get_func_name((*call).funcid));
        // what this scan can stand in for: one call of one token, one row of a
        // named composite
        let one_row = list_items((*call).args).len() == 1
            && !(*call).funcretset
            && pg_sys::get_typtype((*call).funcresulttype)
                == pg_sys::TYPTYPE_COMPOSITE as std::ffi::c_char;
        ((name == c"authenticate" || name == c"verify") && one_row).then_some(call)
    }
}

/// Whether the query asks of `rel` nothing but some of its columns: no
/// condition on the row, no whole-row reference.
unsafe fn asks_only_columns(rel: *mut pg_sys::RelOptInfo) -> bool {
    unsafe {
        (*rel).baserestrictinfo.is_null()
            && list_items((*(*rel).reltarget).exprs).iter().all(|item| {
                let expr = item.ptr_value.cast::<pg_sys::Node>();
                is_node(expr, NodeTag::T_Var) && (*expr.cast::<pg_sys::Var>()).varattno >= 1
            })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn offer_path(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rti: pg_sys::Index,
    rte: *mut pg_sys::RangeTblEntry,
) {
    unsafe {
        if let Some(previous) = PREVIOUS_HOOK {
            previous(root, rel, rti, rte);
        }
        if session_call(rte).is_none() || !asks_only_columns(rel) {
            return;
        }
        // beside each Function Scan path (one per parameterization, for
        // LATERAL), the same scan for less
        let function_scans: Vec<*mut pg_sys::Path> = list_items((*rel).pathlist)
            .iter()
            .map(|item| item.ptr_value.cast::<pg_sys::Path>())
            .filter(|&path| (*path).pathtype == NodeTag::T_FunctionScan)
            .collect();
        for path in function_scans {
            let custom = pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomPath>())
                .cast::<pg_sys::CustomPath>();
            (*custom).path = *path;
            (*custom).path.type_ = NodeTag::T_CustomPath;
            (*custom).path.pathtype = NodeTag::T_CustomScan;
            (*custom).path.startup_cost = (*path).startup_cost / 2.0;
            (*custom).path.total_cost = (*path).total_cost / 2.0;
            (*custom).path.pathkeys = std::ptr::null_mut();
            (*custom).methods = &raw const PATH_METHODS;
            pg_sys::add_path(rel, custom.cast());
        }
    }
}

/// How this scan may get its row: directly, when `call` is to our own C
/// function as installed and its row is castle.session as this version made
/// it, and it is not STRICT; through fmgr otherwise. fmgr itself says whether
/// the function would be called plainly: it hands back our symbol only for a
/// C function without SECURITY DEFINER, SET clauses or a hook that needs to
/// see the call.
unsafe fn direct_call(
    call: *mut pg_sys::FuncExpr,
    attributes: &[pg_sys::FormData_pg_attribute],
) -> Call {
    unsafe {
        if !session_row::as_made(attributes) {
            return Call::Function;
        }
        let mut function = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info((*call).funcid, &mut function);
        if function.fn_strict {
            return Call::Function; // a NULL token must give NULL without a call
        }
        let address = function.fn_addr.map_or(0, |f| f as usize);
        if address == auth::authenticate_wrapper as *const () as usize {
            Call::Authenticate
        } else if address == auth::verify_wrapper as *const () as usize {
            Call::Verify
        } else {
            Call::Function
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn plan_path(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    best_path: *mut pg_sys::CustomPath,
    tlist: *mut pg_sys::List,
    clauses: *mut pg_sys::List,
    _custom_plans: *mut pg_sys::List,
) -> *mut pg_sys::Plan {
    unsafe {
        let relid = (*rel).relid;
        let rte = *(*root).simple_rte_array.add(relid as usize);
        let Some(call) = session_call(rte) else {
            error!("castle_sessions: a session scan planned for another relation");
        };
        let scan =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomScan>()).cast::<pg_sys::CustomScan>();
        (*scan).scan.plan.type_ = NodeTag::T_CustomScan;
        (*scan).scan.plan.targetlist = tlist;
        (*scan).scan.plan.qual = pg_sys::extract_actual_clauses(clauses, false);
        // no relation to open: the rows come from the call; custom_scan_tlist
        // says what they hold, castle.session's columns in order
        (*scan).scan.scanrelid = 0;
        (*scan).flags = (*best_path).flags;
        (*scan).custom_exprs =
            pg_sys::lappend(std::ptr::null_mut(), pg_sys::copyObjectImpl(call.cast()));
        let row_type = pg_sys::exprType(call.cast());
        let descriptor = pg_sys::lookup_rowtype_tupdesc(row_type, -1);
        let attributes = (*descriptor).attrs.as_slice((*descriptor).natts as usize);
        let direct = direct_call(call, attributes);
        let mut columns = std::ptr::null_mut();
        for (i, attribute) in attributes.iter().enumerate() {
            let var = pg_sys::makeVar(
                relid as _,
                (i + 1) as _,
                attribute.atttypid,
                attribute.atttypmod,
                attribute.attcollation,
                0,
            );
            let entry =
                pg_sys::makeTargetEntry(var.cast(), (i + 1) as _, std::ptr::null_mut(), false);
            columns = pg_sys::lappend(columns, entry.cast());
        }
        pg_sys::DecrTupleDescRefCount(descriptor);
        (*scan).custom_scan_tlist = columns;
        (*scan).custom_private = pg_sys::lappend(
            std::ptr::null_mut(),
            pg_sys::makeInteger(direct as i32).cast(),
        );
        // castle.session altered (ALTER TYPE) must replan, as a changed table does
        let type_relation = pg_sys::get_typ_typrelid(row_type);
        (*(*root).glob).relationOids =
            pg_sys::lappend_oid((*(*root).glob).relationOids, type_relation);
        (*scan).custom_relids = pg_sys::bms_make_singleton(relid as _);
        (*scan).methods = &raw const SCAN_METHODS;
        scan.cast()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn create_state(_scan: *mut pg_sys::CustomScan) -> *mut pg_sys::Node {
    unsafe {
        let state =
            pg_sys::palloc0(std::mem::size_of::<SessionScanState>()).cast::<SessionScanState>();
        (*state).css.ss.ps.type_ = NodeTag::T_CustomScanState;
        (*state).css.methods = &raw const EXEC_METHODS;
        state.cast()
    }
}

/// Runs Rust that may raise an ERROR as a panic (`error!`, a refusal, a
/// guarded `pg_sys` call) from a callback that is not `#[pg_guard]`, turning
/// the panic into the ERROR as `#[pg_guard]` would. The callbacks below are
/// not, so that the PostgreSQL they call unguarded (see `unguarded`) can
/// longjmp out of them with no `catch_unwind` pending on the way.
///
/// # Safety
/// As for `unguarded`: no frame between here and PostgreSQL holds anything
/// with a destructor, and `f` calls unguarded PostgreSQL that may raise only
/// inside a pgrx boundary of its own.
unsafe fn guarded<R>(f: impl FnOnce() -> R) -> R {
    unsafe { pg_sys::submodules::panic::pgrx_extern_c_guard(f) }
}

/// The call, how to make it, and its token, as planned.
unsafe fn planned(
    scan: *mut pg_sys::CustomScan,
) -> (*mut pg_sys::FuncExpr, Call, *mut pg_sys::Expr) {
    unsafe {
        let ([call], [how]) = (
            list_items((*scan).custom_exprs),
            list_items((*scan).custom_private),
        ) else {
            error!("castle_sessions: a session scan without its call");
        };
        let call = call.ptr_value.cast::<pg_sys::FuncExpr>();
        let [token] = list_items((*call).args) else {
            error!("castle_sessions: a session call without its token");
        };
        let how = match (*how.ptr_value.cast::<pg_sys::Integer>()).ival {
            1 => Call::Authenticate,
            2 => Call::Verify,
            _ => Call::Function,
        };
        (call, how, token.ptr_value.cast())
    }
}

/// Not `#[pg_guard]` (see `guarded`): nothing here has a destructor.
unsafe extern "C-unwind" fn begin_scan(
    node: *mut pg_sys::CustomScanState,
    _estate: *mut pg_sys::EState,
    _eflags: i32,
) {
    unsafe {
        let state = node.cast::<SessionScanState>();
        let (call, mut how, token) = guarded(|| planned((*node).ss.ps.plan.cast()));
        // what fmgr would do on the call's behalf, the scan can't: count it, or
        // let a security module's hook see it
        let (fmgr_hook, access_hook) = (pg_sys::needs_fmgr_hook, pg_sys::object_access_hook);
        if pg_sys::pgstat_track_functions >= pg_sys::TrackFunctionsLevel::TRACK_FUNC_ALL as i32
            || fmgr_hook.is_some()
        {
            how = Call::Function;
        }
        (*state).call = how;
        (*state).done = false;
        (*state).kept = false;
        (*state).replay = false;
        (*state).expression = if how == Call::Function {
            unguarded::ExecInitExpr(call.cast(), &mut (*node).ss.ps)
        } else {
            // the checks ExecInitExpr makes of a function call, in its order
            let function = (*call).funcid;
            let allowed = unguarded::pg_proc_aclcheck(
                function,
                unguarded::GetUserId(),
                pg_sys::ACL_EXECUTE as _,
            );
            if allowed != pg_sys::AclResult::ACLCHECK_OK {
                unguarded::aclcheck_error(
                    allowed,
                    pg_sys::ObjectType::OBJECT_FUNCTION,
                    unguarded::get_func_name(function),
                );
            }
            if access_hook.is_some() {
                unguarded::RunFunctionExecuteHook(function);
            }
            unguarded::ExecInitExpr(token, &mut (*node).ss.ps)
        };
        // where each call's row is made, kept until the next call: a Function
        // Scan's per-row memory is reset under it before a rescan could replay it
        (*state).row_memory = unguarded::AllocSetContextCreateInternal(
            pg_sys::CurrentMemoryContext,
            c"castle session row".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as _,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as _,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as _,
        );
        let natts = (*(*node).ss.ss_ScanTupleSlot).tts_tupleDescriptor;
        let natts = (*natts).natts as usize;
        (*state).values = unguarded::palloc(natts * std::mem::size_of::<pg_sys::Datum>()).cast();
        (*state).nulls = unguarded::palloc(natts.max(1)).cast();
    }
}

/// Not `#[pg_guard]`: it holds nothing and cannot panic, and an ERROR from
/// ExecScan (next_row's own included) goes straight back to PostgreSQL.
unsafe extern "C-unwind" fn exec_scan(
    node: *mut pg_sys::CustomScanState,
) -> *mut pg_sys::TupleTableSlot {
    unsafe { unguarded::ExecScan(&mut (*node).ss, Some(next_row), Some(recheck)) }
}

/// The scan's one row: the call's result, or a row of NULLs for a NULL, as a
/// Function Scan gives; then nothing. After a rescan with no parameter
/// changed, the same row again without a call, as a Function Scan replays
/// its stored rows. Not `#[pg_guard]` (see `guarded`): nothing here has a
/// destructor.
unsafe extern "C-unwind" fn next_row(node: *mut pg_sys::ScanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let state = node.cast::<SessionScanState>();
        let slot = (*node).ss_ScanTupleSlot;
        // ExecClearTuple and ExecEvalExprSwitchContext are inline in C
        if let Some(clear) = (*(*slot).tts_ops).clear {
            clear(slot);
        }
        if (*state).done {
            return slot;
        }
        (*state).done = true;
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        let kept_values = std::slice::from_raw_parts_mut((*state).values, natts);
        let kept_nulls = std::slice::from_raw_parts_mut((*state).nulls, natts);
        if (*state).replay {
            values.copy_from_slice(kept_values);
            nulls.copy_from_slice(kept_nulls);
            return unguarded::ExecStoreVirtualTuple(slot);
        }
        (*state).kept = false;
        unguarded::MemoryContextReset((*state).row_memory);
        let caller = pg_sys::MemoryContextSwitchTo((*state).row_memory);
        let context = (*node).ps.ps_ExprContext;
        let mut is_null = false;
        let result = match (*(*state).expression).evalfunc {
            Some(evaluate) => evaluate((*state).expression, context, &mut is_null),
            None => guarded(|| -> pg_sys::Datum {
                error!("castle_sessions: a session scan's call not ready")
            }),
        };
        if (*state).call != Call::Function {
            let token = (!is_null).then(|| {
                pgrx::varlena::varlena_to_byte_slice(unguarded::pg_detoast_datum_packed(
                    result.cast_mut_ptr(),
                ))
            });
            let call = (*state).call;
            guarded(|| {
                // what the function would return: authenticate's, or verify's
                let session = match call {
                    Call::Verify => auth::session_or_none(token),
                    _ => Some(auth::session_or_refuse(token)),
                };
                match session {
                    Some(session) if natts == ATTRIBUTES => {
                        values.copy_from_slice(&session.values);
                        nulls.copy_from_slice(&session.nulls);
                    }
                    Some(_) => {
                        error!("castle_sessions: castle.session changed under a running query")
                    }
                    None => nulls.fill(true),
                }
            });
        } else if is_null {
            nulls.fill(true);
        } else {
            let header = unguarded::pg_detoast_datum(result.cast_mut_ptr())
                .cast::<pg_sys::HeapTupleHeaderData>();
            // (fewer attributes are read as NULLs, as for any composite)
            if usize::from((*header).t_infomask2 & pg_sys::HEAP_NATTS_MASK as u16) > natts {
                guarded(|| -> () {
                    error!("castle_sessions: castle.session changed under a running query")
                });
            }
            let mut tuple = pg_sys::HeapTupleData {
                t_len: pgrx::varlena::varsize(header.cast()) as u32,
                t_data: header,
                ..Default::default()
            };
            unguarded::heap_deform_tuple(
                &mut tuple,
                (*slot).tts_tupleDescriptor,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
        pg_sys::MemoryContextSwitchTo(caller);
        kept_values.copy_from_slice(values);
        kept_nulls.copy_from_slice(nulls);
        (*state).kept = true;
        unguarded::ExecStoreVirtualTuple(slot)
    }
}

/// Never called: UPDATE, DELETE and row locks, which re-check rows, refer to
/// the whole row, and a whole-row reference keeps the Function Scan.
#[pg_guard]
unsafe extern "C-unwind" fn recheck(
    _node: *mut pg_sys::ScanState,
    _slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn end_scan(node: *mut pg_sys::CustomScanState) {
    unsafe { pg_sys::MemoryContextDelete((*node.cast::<SessionScanState>()).row_memory) };
}

/// A new call when a parameter it depends on changed (LATERAL); otherwise the
/// row already made, as a Function Scan replays its stored rows.
#[pg_guard]
unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::CustomScanState) {
    unsafe {
        let state = node.cast::<SessionScanState>();
        (*state).replay = (*state).kept && (*node).ss.ps.chgParam.is_null();
        (*state).done = false;
    }
}

/// EXPLAIN says how the row is got: "Call: direct" or "Call: function".
#[pg_guard]
unsafe extern "C-unwind" fn explain_scan(
    node: *mut pg_sys::CustomScanState,
    _ancestors: *mut pg_sys::List,
    es: *mut pg_sys::ExplainState,
) {
    unsafe {
        let how = match (*node.cast::<SessionScanState>()).call {
            Call::Function => c"function",
            Call::Authenticate | Call::Verify => c"direct",
        };
        pg_sys::ExplainPropertyText(c"Call".as_ptr(), how.as_ptr(), es);
    }
}
