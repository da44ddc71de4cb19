//! A jsonb value passed through untouched. pgrx's `JsonB` round-trips through
//! serde_json, which costs a parse and rounds large numbers: session metadata
//! must come back exactly as it went in.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, IntoDatum, PgMemoryContexts};

#[derive(Clone, Copy)]
pub struct RawJsonb(pg_sys::Datum);

impl FromDatum for RawJsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(RawJsonb(datum))
    }

    /// Values read through SPI must outlive SPI's memory: copy, and detoast so
    /// that the copy does not depend on the row it came from.
    unsafe fn from_datum_in_memory_context(
        mut memory_context: PgMemoryContexts,
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        memory_context.switch_to(|_| unsafe {
            let copy = pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr());
            Some(RawJsonb(pg_sys::Datum::from(copy)))
        })
    }
}

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::RawJsonb");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { arg.unbox_arg_using_from_datum() }.expect("a non-NULL jsonb argument")
    }
}
