//! Text taken and given as bytes in the database's encoding. pgrx's `&str`
//! insists on UTF-8 and panics otherwise; a token or a user id must behave
//! the same in a LATIN1 or SQL_ASCII database as in a UTF8 one.

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::pg_sys::{self, Datum};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::FromDatum;

/// A text argument, detoasted, valid for the call.
#[derive(Clone, Copy)]
pub struct RawText(*const pg_sys::varlena);

impl RawText {
    pub fn bytes(&self) -> &[u8] {
        unsafe { pgrx::varlena::varlena_to_byte_slice(self.0) }
    }
}

/// The bytes of an optional argument.
pub fn bytes(text: &Option<RawText>) -> Option<&[u8]> {
    text.as_ref().map(RawText::bytes)
}

impl FromDatum for RawText {
    unsafe fn from_polymorphic_datum(datum: Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        (!is_null)
            .then(|| RawText(unsafe { pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr()) }))
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { arg.unbox_arg_using_from_datum() }.expect("a non-NULL text argument")
    }
}

/// A text datum holding these bytes, in the current memory context.
pub fn text_datum(bytes: &[u8]) -> Datum {
    unsafe {
        Datum::from(pg_sys::cstring_to_text_with_len(
            bytes.as_ptr().cast(),
            bytes.len() as i32,
        ))
    }
}

/// A text result made of bytes in the database's encoding.
pub struct TextValue(pub Vec<u8>);

unsafe impl BoxRet for TextValue {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(text_datum(&self.0)) }
    }
}

macro_rules! maps_to_text {
    ($type:ty) => {
        unsafe impl SqlTranslatable for $type {
            const TYPE_IDENT: &'static str = concat!(module_path!(), "::", stringify!($type));
            const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
            const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
                Ok(SqlMappingRef::literal("text"));
            const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
                Ok(ReturnsRef::One(SqlMappingRef::literal("text")));
        }
    };
}
maps_to_text!(RawText);
maps_to_text!(TextValue);
