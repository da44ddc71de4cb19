//! The only module that names a PostgreSQL major: each function here hides
//! one difference between 15, 17 and 18, so that every call site is the same
//! on all of them. Each branch is compiled by the build for its own major,
//! against that major's headers (pgrx's bindings), so a changed signature is
//! a compile error, not a runtime fault.

use pgrx::pg_sys;

#[cfg(not(any(feature = "pg15", feature = "pg17", feature = "pg18")))]
compile_error!(
    "castle_sessions supports PostgreSQL 15, 17 and 18: build with exactly one of the features pg15, pg17, pg18"
);

/// A tuple descriptor's attributes, dropped ones included.
///
/// 18 put an array of `CompactAttribute` before them (`TupleDescAttr` in
/// its `tupdesc.h`); up to 17 they are the descriptor's `attrs`.
///
/// SAFETY: `descriptor` is a valid descriptor that outlives the slice.
pub unsafe fn attributes<'a>(descriptor: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    unsafe {
        let count = (*descriptor).natts as usize;
        #[cfg(any(feature = "pg15", feature = "pg17"))]
        return (*descriptor).attrs.as_slice(count);
        #[cfg(feature = "pg18")]
        return std::slice::from_raw_parts(
            (*descriptor)
                .compact_attrs
                .as_ptr()
                .add(count)
                .cast::<pg_sys::FormData_pg_attribute>(),
            count,
        );
    }
}

/// `index_beginscan` for `nkeys` keys and no ordering; 18 added the
/// instrumentation argument, which we do not use.
///
/// SAFETY: both relations are open and locked, `snapshot` is registered or
/// active for the scan's life.
pub unsafe fn index_beginscan(
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
) -> pg_sys::IndexScanDesc {
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg17"))]
        return pg_sys::index_beginscan(rel, index, snapshot, nkeys, 0);
        #[cfg(feature = "pg18")]
        return pg_sys::index_beginscan(rel, index, snapshot, std::ptr::null_mut(), nkeys, 0);
    }
}

/// The sequence of a table's identity column, InvalidOid when there is none;
/// 17 passes the relation (for partitions), 15 its oid.
///
/// SAFETY: `rel` is open.
pub unsafe fn identity_sequence(rel: pg_sys::Relation, column: pg_sys::AttrNumber) -> pg_sys::Oid {
    unsafe {
        #[cfg(feature = "pg15")]
        return pg_sys::getIdentitySequence((*rel).rd_id, column, true);
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        return pg_sys::getIdentitySequence(rel, column, true);
    }
}

/// Whether a CHECK is enforced: 18 added NOT ENFORCED (`ccenforced`); up to
/// 17 every CHECK is.
pub fn check_enforced(check: &pg_sys::ConstrCheck) -> bool {
    #[cfg(any(feature = "pg15", feature = "pg17"))]
    return {
        let _ = check;
        true
    };
    #[cfg(feature = "pg18")]
    return check.ccenforced;
}

/// Gives a result relation its CHECKs' prepared expressions, one per CHECK
/// of its relcache entry (NULL: not evaluated), which ExecRelCheck would
/// otherwise build; 18 renamed the field `ri_CheckConstraintExprs`.
///
/// SAFETY: `info` is initialized; `expressions` lives as long as it.
pub unsafe fn set_check_expressions(
    info: *mut pg_sys::ResultRelInfo,
    expressions: *mut *mut pg_sys::ExprState,
) {
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg17"))]
        {
            (*info).ri_ConstraintExprs = expressions;
        }
        #[cfg(feature = "pg18")]
        {
            (*info).ri_CheckConstraintExprs = expressions;
        }
    }
}

/// A CHECK's expression as ExecRelCheck prepares it: its stored tree, and on
/// 18 with the relation's virtual generated columns expanded (none on the
/// direct INSERT's path, whose verdict allows none: kept for equality).
///
/// SAFETY: `rel` is open; `check` is one of its relcache entry's CHECKs.
pub unsafe fn check_expression(
    check: &pg_sys::ConstrCheck,
    rel: pg_sys::Relation,
) -> *mut pg_sys::Expr {
    unsafe {
        let tree = pg_sys::stringToNode(check.ccbin).cast::<pg_sys::Node>();
        #[cfg(any(feature = "pg15", feature = "pg17"))]
        return {
            let _ = rel;
            tree.cast()
        };
        #[cfg(feature = "pg18")]
        return pg_sys::expand_generated_columns_in_expr(tree, rel, 1).cast();
    }
}

/// Gives a fresh `estate` a range table of one entry, `rel`'s, for an UPDATE
/// that changes the columns `updated` (attribute numbers), and returns the
/// entry's index for InitResultRelInfo. ExecSimpleRelationUpdate reads those
/// columns to hint "unchanged" only to the indexes whose keys have none of
/// them (index_unchanged_by_update), as logical replication's apply worker
/// has it do; without an entry every index gets the hint. 15 keeps the
/// columns in the entry, 16 moved them to an RTEPermissionInfo, and 18 also
/// takes the entries left after pruning.
///
/// SAFETY: `rel` is open; `estate` has no range table yet; the current
/// memory context is the estate's query context.
pub unsafe fn range_table_updating(
    estate: *mut pg_sys::EState,
    rel: pg_sys::Relation,
    updated: &[pg_sys::AttrNumber],
) -> pg_sys::Index {
    unsafe {
        let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>())
            .cast::<pg_sys::RangeTblEntry>();
        (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
        (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
        (*rte).relid = (*rel).rd_id;
        (*rte).relkind = (*(*rel).rd_rel).relkind;
        (*rte).rellockmode = pg_sys::RowExclusiveLock as _;
        let mut columns = std::ptr::null_mut();
        for &column in updated {
            columns = pg_sys::bms_add_member(
                columns,
                i32::from(column) - pg_sys::FirstLowInvalidHeapAttributeNumber,
            );
        }
        let range_table = pg_sys::lappend(std::ptr::null_mut(), rte.cast());
        #[cfg(feature = "pg15")]
        {
            (*rte).updatedCols = columns;
            pg_sys::ExecInitRangeTable(estate, range_table);
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        {
            let mut permissions = std::ptr::null_mut();
            (*pg_sys::addRTEPermissionInfo(&mut permissions, rte)).updatedCols = columns;
            #[cfg(feature = "pg17")]
            pg_sys::ExecInitRangeTable(estate, range_table, permissions);
            #[cfg(feature = "pg18")]
            pg_sys::ExecInitRangeTable(
                estate,
                range_table,
                permissions,
                pg_sys::bms_make_singleton(1),
            );
        }
        1
    }
}

/// Raises what a Function Scan raises unless the current user may EXECUTE
/// the function; 16 made the check one for every object kind.
///
/// SAFETY: `function` is a function's OID.
pub unsafe fn check_may_execute(function: pg_sys::Oid) {
    unsafe {
        #[cfg(feature = "pg15")]
        let result =
            pg_sys::pg_proc_aclcheck(function, pg_sys::GetUserId(), pg_sys::ACL_EXECUTE as _);
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        let result = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            function,
            pg_sys::GetUserId(),
            pg_sys::ACL_EXECUTE as _,
        );
        if result != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                result,
                pg_sys::ObjectType::OBJECT_FUNCTION,
                pg_sys::get_func_name(function),
            );
        }
    }
}
