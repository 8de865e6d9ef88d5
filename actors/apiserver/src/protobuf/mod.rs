//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), read into the
//! JSON form the rest of the server works with (kubectl-contract §2.3). kubectl 1.32's typed
//! clients send them for `create namespace|configmap|secret|deployment|…`, with no JSON retry.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` message: the object's `apiVersion` and
//! `kind`, and its bytes. Those are decoded against `schema.txt`: every message's field
//! numbers and types (from the `k8s-pb` bindings) with their JSON names (from `k8s-openapi`),
//! written by `scripts/protobuf-schema.py`. A few messages have a JSON form of their own:
//! `Time`, `MicroTime`, `Duration`, `Quantity`, `IntOrString`, `RawExtension`, `FieldsV1`.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use base64::Engine;
use serde_json::{Map, Value};
use shoal_core::time::{format_micro_time, format_time};

const MAGIC: &[u8] = b"k8s\0";
/// Deeper nesting than any served kind has is refused rather than followed.
const MOST_DEPTH: usize = 64;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("the protobuf body is malformed: {0}")]
    Malformed(String),
    #[error("protobuf bodies of {0} are not understood; send JSON")]
    UnknownKind(String),
}

fn malformed(what: impl Into<String>) -> ProtobufError {
    ProtobufError::Malformed(what.into())
}

/// How a field holds its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    One,
    Many,
    Map,
    /// A Go struct embedded in its parent: its fields are the parent's in JSON.
    Inline,
}

#[derive(Debug)]
struct Field {
    json: &'static str,
    label: Label,
    /// A scalar's name or a message's full name; for a map, the value's.
    typ: &'static str,
    /// A Go value (not a pointer) whose JSON omits it when empty: Go's protobuf encoder
    /// writes it even when zero, and zero means unset.
    omit_zero: bool,
    /// Its strategic merge patch strategy (`merge`, `retainKeys`, `merge,retainKeys`, …).
    strategy: Option<&'static str>,
    /// The field that identifies an element of a list merged by key.
    merge_key: Option<&'static str>,
    /// How server-side apply merges it, where the Go types say (`map:<keys>`, `set`,
    /// `atomic`).
    apply: Option<&'static str>,
}

/// Whether a decoded scalar is its type's zero value.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// Every message's fields, by message name and field number.
type Schema = HashMap<&'static str, HashMap<u32, Field>>;

static PARSED: LazyLock<(Schema, HashSet<&'static str>)> =
    LazyLock::new(|| parse_schema(include_str!("schema.txt")));
static SCHEMA: LazyLock<&'static Schema> = LazyLock::new(|| &PARSED.0);

/// The schema, and the messages marked `+structType=atomic`.
fn parse_schema(text: &'static str) -> (Schema, HashSet<&'static str>) {
    let mut schema = Schema::new();
    let mut atomic = HashSet::new();
    let mut current: Option<&'static str> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("message ") {
            let (name, marks) = rest.split_once(' ').unwrap_or((rest, ""));
            if marks == "atomic" {
                atomic.insert(name);
            }
            schema.entry(name).or_default();
            current = Some(name);
            continue;
        }
        let words: Vec<&'static str> = line.split(' ').collect();
        // The file is written by our script and checked by the tests below; a line that does
        // not read is skipped rather than taking the server down.
        let (Some(name), [tag, json, label, rest @ ..]) = (current, words.as_slice()) else {
            continue;
        };
        let Ok(tag) = tag.parse::<u32>() else {
            continue;
        };
        // The type (a map's key and value type), then the field's marks.
        let (types, marks): (Vec<&'static str>, Vec<&'static str>) =
            rest.iter().partition(|w| **w != "omit" && !w.contains('='));
        let (label, typ) = match (*label, types.as_slice()) {
            ("one", [typ]) => (Label::One, *typ),
            ("many", [typ]) => (Label::Many, *typ),
            ("inline", [typ]) => (Label::Inline, *typ),
            ("map", [_key, value]) => (Label::Map, *value),
            _ => continue,
        };
        let mark = |name: &str| {
            marks
                .iter()
                .find_map(|m| m.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        schema.entry(name).or_default().insert(
            tag,
            Field {
                json,
                label,
                typ,
                omit_zero: marks.contains(&"omit"),
                strategy: mark("smp"),
                merge_key: mark("key"),
                apply: mark("ssa"),
            },
        );
    }
    (schema, atomic)
}

/// What a strategic merge patch needs to know of one field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchField {
    /// The message of its value (of each element, for a list; of each value, for a map), or
    /// `None` for a scalar.
    pub message: Option<&'static str>,
    pub list: bool,
    pub map: bool,
    pub strategy: Option<&'static str>,
    pub merge_key: Option<&'static str>,
    /// How server-side apply merges it, where the Go types say: `map:<key>,<key>`, `set`
    /// or `atomic`.
    pub apply: Option<&'static str>,
}

/// Whether `message` is a struct that server-side apply replaces whole
/// (`+structType=atomic`: a label selector, an object reference).
pub fn is_atomic_message(message: &str) -> bool {
    PARSED.1.contains(message)
}

/// The message an object of `kind` in `api_version` is, if the schema has it.
pub fn message_of(api_version: &str, kind: &str) -> Option<&'static str> {
    let name = format!("{}.{kind}", package(api_version));
    SCHEMA.get_key_value(name.as_str()).map(|(k, _)| *k)
}

/// The field of `message` spelled `json` in JSON, looking through the Go structs it embeds.
pub fn patch_field(message: &str, json: &str) -> Option<PatchField> {
    patch_field_at(message, json, 0)
}

fn patch_field_at(message: &str, json: &str, depth: usize) -> Option<PatchField> {
    let fields = SCHEMA.get(message)?;
    if let Some(f) = fields
        .values()
        .find(|f| f.json == json && f.label != Label::Inline)
    {
        return Some(PatchField {
            message: f.typ.contains('.').then_some(f.typ),
            list: f.label == Label::Many,
            map: f.label == Label::Map,
            strategy: f.strategy,
            merge_key: f.merge_key,
            apply: f.apply,
        });
    }
    if depth >= 8 {
        return None;
    }
    fields
        .values()
        .filter(|f| f.label == Label::Inline)
        .find_map(|f| patch_field_at(f.typ, json, depth + 1))
}

/// The protobuf package of an `apiVersion`: `apps/v1` -> `k8s.io.api.apps.v1`.
fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("k8s.io.api.core.{api_version}"),
        Some(("meta.k8s.io", version)) => format!("k8s.io.apimachinery.pkg.apis.meta.{version}"),
        Some((group, version)) => {
            let short = group.split('.').next().unwrap_or(group);
            format!("k8s.io.api.{short}.{version}")
        }
    }
}

/// Reads a protobuf request body into the object's JSON, `apiVersion` and `kind` first.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut reader = Reader::new(envelope);
    while let Some((tag, wire)) = reader.key()? {
        match (tag, wire) {
            (1, 2) => {
                let mut meta = Reader::new(reader.delimited()?);
                while let Some((tag, wire)) = meta.key()? {
                    match (tag, wire) {
                        (1, 2) => api_version = meta.string()?,
                        (2, 2) => kind = meta.string()?,
                        _ => meta.skip(wire)?,
                    }
                }
            }
            (2, 2) => raw = reader.delimited()?,
            (3, 2) => {
                let encoding = reader.string()?;
                if !encoding.is_empty() {
                    return Err(malformed(format!(
                        "content encoding {encoding:?} is not supported"
                    )));
                }
            }
            _ => reader.skip(wire)?,
        }
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(malformed("the envelope names no apiVersion and kind"));
    }
    let name = format!("{}.{kind}", package(&api_version));
    let Some((message, _)) = SCHEMA.get_key_value(name.as_str()) else {
        return Err(ProtobufError::UnknownKind(format!("{api_version} {kind}")));
    };
    let Value::Object(fields) = decode_message(message, raw, 0)? else {
        return Err(ProtobufError::UnknownKind(format!("{api_version} {kind}")));
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// One message's JSON: an object, or the own form of the few messages that have one.
fn decode_message(name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MOST_DEPTH {
        return Err(malformed("the object is nested too deeply"));
    }
    if let Some(special) = special(name, bytes)? {
        return Ok(special);
    }
    let fields = SCHEMA
        .get(name)
        .ok_or_else(|| malformed(format!("no message {name} is known")))?;
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.key()? {
        let Some(field) = fields.get(&tag) else {
            // A field newer than our schema: ignored, as Kubernetes' decoders ignore it.
            reader.skip(wire)?;
            continue;
        };
        match field.label {
            Label::One => {
                let value = decode_value(field.typ, wire, &mut reader, depth)?;
                if !(field.omit_zero && is_zero(&value)) {
                    merge_into(&mut object, field.json, value);
                }
            }
            Label::Inline => {
                if wire != 2 {
                    return Err(wrong_wire(field, wire));
                }
                let bytes = reader.delimited()?;
                if let Value::Object(inner) = decode_message(field.typ, bytes, depth + 1)? {
                    for (k, v) in inner {
                        merge_into(&mut object, &k, v);
                    }
                }
            }
            Label::Many => {
                let items = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else {
                    return Err(malformed(format!("{} repeats a single field", field.json)));
                };
                if wire == 2 && is_packable(field.typ) {
                    let mut packed = Reader::new(reader.delimited()?);
                    while !packed.done() {
                        items.push(decode_scalar(
                            field.typ,
                            scalar_wire(field.typ),
                            &mut packed,
                        )?);
                    }
                } else {
                    items.push(decode_value(field.typ, wire, &mut reader, depth)?);
                }
            }
            Label::Map => {
                if wire != 2 {
                    return Err(wrong_wire(field, wire));
                }
                let mut entry = Reader::new(reader.delimited()?);
                let mut key = String::new();
                let mut value = None;
                while let Some((tag, wire)) = entry.key()? {
                    match (tag, wire) {
                        (1, 2) => key = entry.string()?,
                        (2, _) => value = Some(decode_value(field.typ, wire, &mut entry, depth)?),
                        _ => entry.skip(wire)?,
                    }
                }
                let value = value.unwrap_or_else(|| zero(field.typ));
                let map = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(Value::Object(object))
}

/// Sets `key`; a message seen twice is merged, as protobuf merges it.
fn merge_into(object: &mut Map<String, Value>, key: &str, value: Value) {
    match (object.get_mut(key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                merge_into(old, &k, v);
            }
        }
        (_, value) => {
            object.insert(key.to_owned(), value);
        }
    }
}

fn wrong_wire(field: &Field, wire: u8) -> ProtobufError {
    malformed(format!("{} came with wire type {wire}", field.json))
}

fn is_packable(typ: &str) -> bool {
    matches!(typ, "bool" | "int32" | "int64" | "double")
}

fn scalar_wire(typ: &str) -> u8 {
    match typ {
        "double" => 1,
        "string" | "bytes" => 2,
        _ => 0,
    }
}

/// A map value that was left out: the zero value of its type.
fn zero(typ: &str) -> Value {
    match typ {
        "string" | "bytes" => Value::String(String::new()),
        "bool" => Value::Bool(false),
        "int32" | "int64" | "double" => Value::from(0),
        _ => Value::Object(Map::new()),
    }
}

fn decode_value(
    typ: &str,
    wire: u8,
    reader: &mut Reader<'_>,
    depth: usize,
) -> Result<Value, ProtobufError> {
    if typ.contains('.') {
        if wire != 2 {
            return Err(malformed(format!("a {typ} came with wire type {wire}")));
        }
        let bytes = reader.delimited()?;
        return decode_message(typ, bytes, depth + 1);
    }
    decode_scalar(typ, wire, reader)
}

fn decode_scalar(typ: &str, wire: u8, reader: &mut Reader<'_>) -> Result<Value, ProtobufError> {
    if wire != scalar_wire(typ) {
        return Err(malformed(format!("a {typ} came with wire type {wire}")));
    }
    Ok(match typ {
        "string" => Value::String(reader.string()?),
        "bytes" => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(reader.delimited()?))
        }
        "bool" => Value::Bool(reader.varint()? != 0),
        // Negative int32s travel sign-extended to 64 bits; the cast takes the low half back.
        "int32" => Value::from(reader.varint()? as i64 as i32),
        "int64" => Value::from(reader.varint()? as i64),
        "double" => {
            let bits = reader.fixed64()?;
            serde_json::Number::from_f64(f64::from_bits(bits))
                .map(Value::Number)
                .ok_or_else(|| malformed("a number that JSON cannot hold"))?
        }
        other => return Err(malformed(format!("unknown scalar type {other}"))),
    })
}

/// The messages whose JSON is not an object of their fields.
fn special(name: &str, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let Some(short) = name
        .strip_prefix(META)
        .and_then(|n| n.strip_prefix('.'))
        .or_else(|| name.strip_prefix("k8s.io.apimachinery.pkg.api.resource."))
        .or_else(|| name.strip_prefix("k8s.io.apimachinery.pkg.util.intstr."))
        .or_else(|| name.strip_prefix("k8s.io.apimachinery.pkg.runtime."))
    else {
        return Ok(None);
    };
    let fields = || -> Result<HashMap<u32, Scalar<'_>>, ProtobufError> {
        let mut fields = HashMap::new();
        let mut reader = Reader::new(bytes);
        while let Some((tag, wire)) = reader.key()? {
            let value = match wire {
                0 => Scalar::Int(reader.varint()?),
                2 => Scalar::Bytes(reader.delimited()?),
                _ => {
                    reader.skip(wire)?;
                    continue;
                }
            };
            fields.insert(tag, value);
        }
        Ok(fields)
    };
    let value = match short {
        // An empty time is Go's zero time, which JSON writes as null.
        "Time" | "MicroTime" => {
            let f = fields()?;
            if bytes.is_empty() {
                Value::Null
            } else {
                let seconds = f.get(&1).map_or(0, Scalar::int) as i64;
                let nanos = if short == "MicroTime" {
                    f.get(&2).map_or(0, Scalar::int) as i64 as i32
                } else {
                    // metav1.Time keeps whole seconds only.
                    0
                };
                let ts = jiff::Timestamp::new(seconds, nanos)
                    .map_err(|e| malformed(format!("a time out of range: {e}")))?;
                Value::String(if short == "Time" {
                    format_time(ts)
                } else {
                    format_micro_time(ts)
                })
            }
        }
        "Duration" => {
            let nanos = fields()?.get(&1).map_or(0, Scalar::int) as i64;
            Value::String(go_duration(nanos))
        }
        "Quantity" => Value::String(fields()?.get(&1).map_or(Ok(String::new()), Scalar::text)?),
        "IntOrString" => {
            let f = fields()?;
            if f.get(&1).map_or(0, Scalar::int) == 1 {
                Value::String(f.get(&3).map_or(Ok(String::new()), Scalar::text)?)
            } else {
                Value::from(f.get(&2).map_or(0, Scalar::int) as i64 as i32)
            }
        }
        "RawExtension" | "FieldsV1" => {
            let f = fields()?;
            match f.get(&1) {
                Some(Scalar::Bytes(raw)) if !raw.is_empty() => serde_json::from_slice(raw)
                    .map_err(|e| malformed(format!("{short} does not hold JSON: {e}")))?,
                _ => Value::Null,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

enum Scalar<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

impl Scalar<'_> {
    fn int(&self) -> u64 {
        match self {
            Scalar::Int(v) => *v,
            Scalar::Bytes(_) => 0,
        }
    }

    fn text(&self) -> Result<String, ProtobufError> {
        match self {
            Scalar::Bytes(b) => {
                String::from_utf8(b.to_vec()).map_err(|_| malformed("a string that is not UTF-8"))
            }
            Scalar::Int(_) => Err(malformed("a number where text belongs")),
        }
    }
}

/// A duration as Go's `time.Duration.String` writes it: `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.ilog10() as usize;
            let text = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", text.trim_end_matches('0'))
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}", fraction(n, 1_000, "µs"));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}", fraction(n, 1_000_000, "ms"));
    }
    let seconds = n / 1_000_000_000;
    let (h, m) = (seconds / 3600, (seconds % 3600) / 60);
    let s = fraction(n % 60_000_000_000, 1_000_000_000, "s");
    match (h, m) {
        (0, 0) => format!("{sign}{s}"),
        (0, m) => format!("{sign}{m}m{s}"),
        (h, m) => format!("{sign}{h}h{m}m{s}"),
    }
}

/// Reads protobuf's wire format.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| malformed("a number is cut short"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a number is longer than ten bytes"))
    }

    /// The next field's number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ProtobufError> {
        if self.done() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| malformed("a field number is too large"))?;
        if tag == 0 {
            return Err(malformed("field number 0"));
        }
        Ok(Some((tag, (key & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| malformed("a field runs past the end of the body"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn delimited(&mut self) -> Result<&'a [u8], ProtobufError> {
        let len =
            usize::try_from(self.varint()?).map_err(|_| malformed("a length is too large"))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, ProtobufError> {
        let bytes = self.delimited()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string that is not UTF-8"))
    }

    fn fixed64(&mut self) -> Result<u64, ProtobufError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtobufError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.delimited().map(drop),
            5 => self.take(4).map(drop),
            other => Err(malformed(format!("wire type {other} is not supported"))),
        }
    }
}

#[cfg(test)]
mod tests;
