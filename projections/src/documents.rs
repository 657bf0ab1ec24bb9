//! The document each read-model row serves, stored with the row (`doc`): rendered once
//! by the projector when the row changes, so a page or a detail hands stored text over
//! as it is instead of rendering rows per request.
//!
//! A document is what the query API answered before it was stored: the row as
//! PostgreSQL writes it (`to_jsonb(row)` without `search` and `search_text`), read into
//! JSON and written out compactly with keys in sorted order (serde_json's map). A
//! [`Document`] produces the same text straight from the folded record: the view's
//! columns only (absent ones as `null`), each value written by its own `Serialize` with
//! numbers as they come back from PostgreSQL (see [`ReadBack`]), without building the
//! row as a `serde_json::Value` first (which was a quarter of a rebuild's own CPU).
//! Rows written before documents were stored are rendered by [`render_missing`] the old
//! way, and so are rows an older release's projector rewrote without one (a trigger of
//! migration 0015 forgets a document its row outgrew); until then the queries render
//! them per request (`coalesce`).

use std::io;
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::ser::{CompactFormatter, Formatter};
use serde_json::Value;
use sqlx::PgPool;

use crate::ProjectionError;

/// A view's served columns, in the order its documents list them, and those of them that
/// are `double precision` (the others hold text, integers, booleans, arrays of text, or
/// `jsonb`): put in order once, used for every row.
pub struct Served<'a> {
    /// Byte order, as serde_json's map kept the keys when a row was read back.
    columns: Vec<&'a str>,
    /// Each column's key as the document writes it (`"name":`), in the same order.
    keys: Vec<String>,
    floats: &'a [&'a str],
}

impl<'a> Served<'a> {
    /// The view's served `columns`, of which `floats` are `double precision`.
    pub fn new(columns: &[&'a str], floats: &'a [&'a str]) -> Self {
        let mut columns = columns.to_vec();
        columns.sort_unstable();
        columns.dedup();
        let keys = columns
            .iter()
            .map(|column| format!("{}:", Value::from(*column)))
            .collect();
        Self {
            columns,
            keys,
            floats,
        }
    }

    /// Starts the document of one row.
    pub fn document(&self) -> Document<'_> {
        Document {
            served: self,
            text: Vec::with_capacity(1024),
            fields: vec![None; self.columns.len()],
        }
    }
}

/// A row's document being put together: its served columns taken from the fields of a
/// record ([`Document::fields`]) or given one by one ([`Document::set`]); the last value
/// given a column wins, a column given none is `null`, and a field that is not a served
/// column is left out.
pub struct Document<'s> {
    served: &'s Served<'s>,
    /// The values' JSON text, one after another.
    text: Vec<u8>,
    /// Where each served column's value is in `text`, in column order.
    fields: Vec<Option<Range<usize>>>,
}

impl Document<'_> {
    /// Takes the served columns among the fields of `record`, a struct (flattened fields
    /// included) or a map with string keys such as a row's JSON object.
    pub fn fields<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<(), serde_json::Error> {
        record.serialize(Fields(self))
    }

    /// Sets `column` (if it is served) to `value`.
    pub fn set<T: Serialize + ?Sized>(
        &mut self,
        column: &str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        let Ok(index) = self.served.columns.binary_search(&column) else {
            return Ok(());
        };
        let start = self.text.len();
        let formatter = ReadBack {
            float8: self.served.floats.contains(&column),
        };
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut self.text,
            formatter,
        ))?;
        self.fields[index] = Some(start..self.text.len());
        Ok(())
    }

    /// The document's text.
    pub fn finish(self) -> Result<String, serde_json::Error> {
        let mut out = Vec::with_capacity(self.text.len() + 32 * self.fields.len());
        out.push(b'{');
        for (i, (key, field)) in self.served.keys.iter().zip(&self.fields).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            match field {
                Some(range) => out.extend_from_slice(&self.text[range.clone()]),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
        // serde_json writes UTF-8, and so does `Value`'s `Display` of the keys.
        String::from_utf8(out).map_err(ser::Error::custom)
    }
}

/// Numbers as they read back from PostgreSQL, the rest as serde_json writes it compactly.
///
/// A `double precision` column (`float8`): PostgreSQL writes the float's shortest form
/// and jsonb reads it as a decimal, so a float without a fraction comes back as an
/// integer (`3.0` as `3`, `1e15` as `1000000000000000`).
///
/// Anything else, notably inside a `jsonb` column: jsonb keeps a number's decimal text,
/// so a float comes back as written (`2.0` stays `2.0`) except where it was written with
/// an exponent and is an integer that fits one (`1e19` comes back as
/// `10000000000000000000`), and a negative zero loses its sign.
#[derive(Clone, Copy)]
struct ReadBack {
    float8: bool,
}

impl Formatter for ReadBack {
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // As a `Value` holds it.
        self.write_f64(writer, f64::from(value))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if self.float8 {
            if write_integral(writer, value)? {
                return Ok(());
            }
            return CompactFormatter.write_f64(writer, value);
        }
        if value == 0.0 {
            return CompactFormatter.write_f64(writer, 0.0);
        }
        // The shortest form, as serde_json writes it (at most 24 bytes).
        let mut shortest = io::Cursor::new([0u8; 32]);
        CompactFormatter.write_f64(&mut shortest, value)?;
        let written = usize::try_from(shortest.position()).unwrap_or(0);
        let text = &shortest.get_ref()[..written];
        if text.contains(&b'e') && write_integral(writer, value)? {
            return Ok(());
        }
        writer.write_all(text)
    }
}

/// Writes an integral float as an integer when it fits one; false (nothing written) when
/// it has a fraction or does not fit.
fn write_integral<W: ?Sized + io::Write>(writer: &mut W, f: f64) -> io::Result<bool> {
    if f.fract() != 0.0 {
        return Ok(false);
    }
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        CompactFormatter.write_u64(writer, f as u64)?;
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        CompactFormatter.write_i64(writer, f as i64)?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

fn not_a_record() -> serde_json::Error {
    ser::Error::custom("a document is made of a struct's or a map's fields")
}

/// Serializes a record into a [`Document`], field by field.
struct Fields<'d, 's>(&'d mut Document<'s>);

/// The methods of a value that is not a struct or a map: an error.
macro_rules! not_a_record {
    ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ok, serde_json::Error> {
            Err(not_a_record())
        })*
    };
}

impl<'d, 's> Serializer for Fields<'d, 's> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Impossible<(), serde_json::Error>;
    type SerializeTuple = Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = Impossible<(), serde_json::Error>;
    type SerializeMap = FieldsMap<'d, 's>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), serde_json::Error>;

    not_a_record! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), serde_json::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), serde_json::Error> {
        Err(not_a_record())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<FieldsMap<'d, 's>, serde_json::Error> {
        Ok(FieldsMap {
            document: self.0,
            key: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, serde_json::Error> {
        Ok(self)
    }
}

impl SerializeStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.0.set(key, value)
    }

    fn end(self) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

/// A record serialized as a map (a JSON object, or a struct with flattened fields).
struct FieldsMap<'d, 's> {
    document: &'d mut Document<'s>,
    /// The key whose value comes next.
    key: Option<String>,
}

impl SerializeMap for FieldsMap<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), serde_json::Error> {
        match serde_json::to_value(key)? {
            Value::String(key) => {
                self.key = Some(key);
                Ok(())
            }
            _ => Err(ser::Error::custom("a document's keys are strings")),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        let key = self.key.take().ok_or_else(not_a_record)?;
        self.document.set(&key, value)
    }

    fn end(self) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

/// Renders, the way the queries rendered them per request, the documents of read model
/// `view`'s rows stored before documents were (`doc IS NULL`), a thousand at a time. A
/// row changed meanwhile keeps the document its new write rendered (the version must
/// still match).
pub async fn render_missing(pool: &PgPool, view: &str) -> Result<u64, ProjectionError> {
    let mut rendered = 0;
    let served = match view {
        "technology_view" => "to_jsonb(t) - 'search' - 'search_text' - 'doc'",
        "job_view" => "to_jsonb(t) - 'doc'",
        other => return Err(ProjectionError::UnknownReadModel(other.to_string())),
    };
    let table = view;
    // Keyset by id over the partial index of rows without a document (migration 0015).
    let mut after = String::new();
    loop {
        let rows: Vec<(String, i64, Value)> = sqlx::query_as(&format!(
            "SELECT id, version, {served} FROM {table} t \
              WHERE doc IS NULL AND id > $1 ORDER BY id LIMIT 1000"
        ))
        .bind(&after)
        .fetch_all(pool)
        .await?;
        let Some((last, _, _)) = rows.last() else {
            break;
        };
        after = last.clone();
        let mut ids = Vec::with_capacity(rows.len());
        let mut versions = Vec::with_capacity(rows.len());
        let mut documents = Vec::with_capacity(rows.len());
        for (id, version, row) in rows {
            ids.push(id);
            versions.push(version);
            documents.push(serde_json::to_string(&row).unwrap_or_default());
        }
        let done = sqlx::query(&format!(
            "UPDATE {table} t SET doc = r.doc \
               FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS r(id, version, doc) \
              WHERE t.id = r.id AND t.version = r.version AND t.doc IS NULL"
        ))
        .bind(&ids)
        .bind(&versions)
        .bind(&documents)
        .execute(pool)
        .await?;
        rendered += done.rows_affected();
    }
    if rendered > 0 {
        tracing::info!(
            read_model = view,
            rows = rendered,
            "rendered the stored documents of older rows"
        );
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{json, Map, Value};

    use super::Served;

    #[test]
    fn a_document_has_the_view_columns_in_order_and_numbers_as_read_back() {
        let row = json!({
            "f": 100.0, "g": 2.5,
            "j": [1.5, 2.0, -0.0, {"z": 1e19, "y": 1e300, "x": 1.5e-7}],
            "c": "\"é\"",
            "not_a_column": 1,
        });
        let served = Served::new(&["c", "j", "f", "g", "missing"], &["f", "g"]);
        let mut document = served.document();
        document.fields(&row).unwrap();
        assert_eq!(
            document.finish().unwrap(),
            r#"{"c":"\"é\"","f":100,"g":2.5,"j":[1.5,2.0,0.0,{"x":1.5e-7,"y":1e+300,"z":10000000000000000000}],"missing":null}"#
        );
    }

    #[derive(Serialize)]
    struct Flattened {
        b_float: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        e_skipped: Option<u32>,
    }

    #[derive(Serialize)]
    struct Record {
        z_text: String,
        #[serde(flatten)]
        flattened: Flattened,
        c_json: Map<String, Value>,
        a_list: Vec<&'static str>,
        d_time: Option<f32>,
        not_served: bool,
    }

    /// A record gives the document its JSON object gives (which is how rows were
    /// rendered before: through a `Value`), flattened and skipped fields included; the
    /// columns set afterwards win.
    #[test]
    fn a_record_gives_the_document_of_its_json() {
        let served = Served::new(
            &[
                "z_text",
                "b_float",
                "e_skipped",
                "c_json",
                "a_list",
                "d_time",
                "extra",
            ],
            &["b_float", "d_time"],
        );
        let json = json!({"k\"é": [1e19, -0.0, 2.0, 1e-7, {"b": 1, "a": 1e300}], "a": null});
        for b_float in [3.0, 0.1, -0.0, 1e15, 1e300, -5e18, f64::NAN] {
            let record = Record {
                z_text: "quote \" \\ \u{2028} 😀".into(),
                flattened: Flattened {
                    b_float,
                    e_skipped: None,
                },
                c_json: json.as_object().cloned().unwrap(),
                a_list: vec!["x", "\"y\""],
                d_time: Some(2.5),
                not_served: true,
            };
            let direct = render(&served, &record);
            let through_value = render(&served, &serde_json::to_value(&record).unwrap());
            assert_eq!(direct, through_value, "{b_float}");
            assert!(direct.contains(r#""e_skipped":null"#), "{direct}");
            assert!(!direct.contains("not_served"), "{direct}");
            assert!(direct.contains(r#""z_text":"last""#), "{direct}");
        }
    }

    fn render<T: Serialize>(served: &Served, fields: &T) -> String {
        let mut document = served.document();
        document.fields(fields).unwrap();
        document.set("extra", &1.0_f64).unwrap();
        document.set("z_text", "last").unwrap();
        document.finish().unwrap()
    }
}
