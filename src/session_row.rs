//! `castle.session` values built once and handed to PostgreSQL as they are.
//! pgrx's PgHeapTuple would copy the row twice more on its way out; on the hot
//! path that was a measurable share of authenticate.

use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;

/// A castle.session composite datum in the current memory context.
pub struct SessionRow(Datum);

/// castle.session's attribute numbers (1-based, for GetAttributeByNum) ...
const ID: i16 = 1;
const USER_ID: i16 = 2;
/// ... and value positions (0-based), out of its seven attributes.
const UPDATED_AT: usize = 3;
const USED_AT: usize = 5;
const ATTRIBUTES: usize = 7;

/// castle.session's descriptor, refused unless it has the seven attributes we
/// fill: an altered type must not make us read or write past our arrays.
unsafe fn session_tupdesc(session_type: Oid) -> pg_sys::TupleDesc {
    unsafe {
        let tupdesc = pg_sys::lookup_rowtype_tupdesc(session_type, -1);
        if (*tupdesc).natts as usize != ATTRIBUTES {
            pg_sys::DecrTupleDescRefCount(tupdesc);
            error!(
                "castle_sessions: castle.session does not have the attributes this version expects"
            );
        }
        tupdesc
    }
}

impl SessionRow {
    /// Forms the composite from its seven values (copied, so they may point into a buffer).
    pub fn form(
        session_type: Oid,
        values: &mut [Datum; ATTRIBUTES],
        nulls: &mut [bool; ATTRIBUTES],
    ) -> SessionRow {
        unsafe {
            let tupdesc = session_tupdesc(session_type);
            let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::DecrTupleDescRefCount(tupdesc);
            // heap_form_tuple already stamped the header with the type; this only
            // flattens TOASTed values (a large data), which a composite may not hold
            SessionRow(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data))
        }
    }

    pub fn id(&self) -> i64 {
        self.attribute(ID)
            .map(|d| d.value() as i64)
            .unwrap_or_else(|| error!("castle_sessions: a session without an id"))
    }

    pub fn user_id(&self) -> String {
        match self.attribute(USER_ID) {
            Some(text) => unsafe {
                pgrx::varlena::text_to_rust_str_unchecked(pg_sys::pg_detoast_datum_packed(
                    text.cast_mut_ptr(),
                ))
            }
            .to_owned(),
            None => error!("castle_sessions: a session without a user"),
        }
    }

    /// The same session after a use recorded at `now`.
    pub fn used_at(self, now: i64) -> SessionRow {
        unsafe {
            let header = self.0.cast_mut_ptr::<pg_sys::HeapTupleHeaderData>();
            let session_type = pgrx::heap_tuple_header_get_type_id(header);
            let tupdesc = session_tupdesc(session_type);
            let mut tuple = pg_sys::HeapTupleData {
                t_len: pgrx::heap_tuple_header_get_datum_length(header) as u32,
                t_data: header,
                ..Default::default()
            };
            let mut values = [Datum::from(0); ATTRIBUTES];
            let mut nulls = [false; ATTRIBUTES];
            pg_sys::heap_deform_tuple(&mut tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::DecrTupleDescRefCount(tupdesc);
            for i in [UPDATED_AT, USED_AT] {
                values[i] = Datum::from(now);
                nulls[i] = false;
            }
            SessionRow::form(session_type, &mut values, &mut nulls)
        }
    }

    fn attribute(&self, n: i16) -> Option<Datum> {
        let mut is_null = false;
        let value = unsafe { pg_sys::GetAttributeByNum(self.0.cast_mut_ptr(), n, &mut is_null) };
        (!is_null).then_some(value)
    }
}

unsafe impl BoxRet for SessionRow {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
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
