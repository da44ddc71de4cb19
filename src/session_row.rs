//! `castle.session` values: read once from the table, then formed once into
//! the composite a function returns. pgrx's PgHeapTuple would copy the row twice more on its
//! way out; on the hot path that was a measurable share of authenticate.

use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;

use crate::catalog;
use crate::compat;
use crate::store;

/// castle.session's attributes: the table's columns but the hash, in order
/// (`catalog::SESSION_COLUMNS`); these are the ones read or written here.
pub const ATTRIBUTES: usize = catalog::SESSION_COLUMNS.len();
const ID: usize = attribute_of(catalog::ID);
const USER_ID: usize = attribute_of(catalog::USER_ID);

/// Where a table column is among castle.session's attributes (0-based).
const fn attribute_of(column: usize) -> usize {
    let mut i = 0;
    while catalog::SESSION_COLUMNS[i] != column {
        i += 1;
    }
    i
}
/// Their types: those of the table's columns they are.
const ATTRIBUTE_TYPES: [Oid; ATTRIBUTES] = {
    let mut types = [pg_sys::InvalidOid; ATTRIBUTES];
    let mut i = 0;
    while i < ATTRIBUTES {
        types[i] = catalog::COLUMN_TYPES[catalog::SESSION_COLUMNS[i]];
        i += 1;
    }
    types
};

/// Whether a row type's attributes are castle.session's as this version made
/// them: the seven, of their types.
pub fn as_made(attributes: &[pg_sys::FormData_pg_attribute]) -> bool {
    attributes.len() == ATTRIBUTES && catalog::attributes_are(attributes, &ATTRIBUTE_TYPES)
}

/// castle.session's seven values, in its attribute order, as read from the
/// table and copied into the current memory context.
pub struct SessionValues {
    pub values: [Datum; ATTRIBUTES],
    pub nulls: [bool; ATTRIBUTES],
}

impl SessionValues {
    /// The primary key, never NULL.
    pub fn id(&self) -> i64 {
        self.values[ID].value() as i64
    }

    /// user_id's bytes, in the database's encoding; never NULL (the
    /// table's NOT NULL; the SQL read of a table a DBA changed may differ).
    pub fn user_id(&self) -> Vec<u8> {
        if self.nulls[USER_ID] {
            return Vec::new();
        }
        unsafe { store::text_bytes(self.values[USER_ID]) }.to_vec()
    }

    /// The castle.session composite a function returns, formed as it is
    /// returned (`SessionRow`).
    pub fn into_row(self) -> SessionRow {
        SessionRow(self)
    }

    /// The composite datum, in the current memory context, refused unless
    /// the type has the seven attributes we fill, of their types: an altered
    /// type must not make us read past our arrays or misread a datum. A
    /// Function Scan hands over the descriptor it looked up for this
    /// statement (`expected`); anywhere else it is looked up here.
    unsafe fn into_datum(mut self, expected: pg_sys::TupleDesc) -> Datum {
        unsafe {
            let session_type = store::session_type();
            let looked_up = expected.is_null() || (*expected).tdtypeid != session_type;
            let tupdesc = if looked_up {
                pg_sys::lookup_rowtype_tupdesc(session_type, -1)
            } else {
                expected
            };
            let release = || {
                if looked_up {
                    pg_sys::DecrTupleDescRefCount(tupdesc);
                }
            };
            if !as_made(compat::attributes(tupdesc)) {
                release();
                error!(
                    "castle_sessions: castle.session does not have the attributes this version expects"
                );
            }
            let tuple =
                pg_sys::heap_form_tuple(tupdesc, self.values.as_mut_ptr(), self.nulls.as_mut_ptr());
            release();
            // heap_form_tuple already stamped the header with the type
            pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
        }
    }
}

/// The descriptor a Function Scan expects its function's rows in, if the
/// caller is one.
unsafe fn expected_tupdesc(fcinfo: &FcInfo<'_>) -> pg_sys::TupleDesc {
    unsafe {
        let result_info = (*fcinfo.as_mut_ptr()).resultinfo;
        if pgrx::is_a(result_info, pg_sys::NodeTag::T_ReturnSetInfo) {
            (*result_info.cast::<pg_sys::ReturnSetInfo>()).expectedDesc
        } else {
            std::ptr::null_mut()
        }
    }
}

/// What authenticate, verify and login return when called as functions: a
/// castle.session composite, formed as it is returned.
pub struct SessionRow(SessionValues);

unsafe impl BoxRet for SessionRow {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe {
            let datum = self.0.into_datum(expected_tupdesc(fcinfo));
            fcinfo.return_raw_datum(datum)
        }
    }
}

unsafe impl SqlTranslatable for SessionRow {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::SessionRow");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("castle.session"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("castle.session")));
}
