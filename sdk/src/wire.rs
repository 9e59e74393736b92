//! The wire types of plugin ABI v1, shared by the host and the SDK so the two cannot drift.
//!
//! The host writes an [`Input`] as JSON into guest memory; the plugin answers with an
//! [`Output`]: a [`Decision`] or `{"error": "why"}`. Unknown fields in the input are ignored
//! (the host may add some); unknown fields in a decision are refused (a typo such as
//! `"point"` must not silently award nothing).

use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Error;
use crate::number::{Decimal, Money};
use crate::time::Timestamp;

mod read;

pub(crate) use read::read_input;

/// The ABI version this SDK and host speak; a plugin's `tally_abi_version` export returns it.
pub const ABI_VERSION: i32 = 1;

/// Everything a plugin sees for one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// The ABI version of this input, [`ABI_VERSION`].
    pub abi: i32,
    /// The tenant (brand) the event belongs to.
    pub tenant: String,
    /// Which plugin is running, at which version, with the tenant's configuration.
    pub plugin: PluginInfo,
    /// The event being evaluated.
    pub event: Event,
    /// The customer as the plugins before this one left them.
    pub customer: Customer,
    /// This plugin's private state for this customer, `null` when it has none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RawJson>,
    /// A seed derived from tenant, plugin and event id, as 16 hex digits: the same event
    /// always gets the same seed, so draws and coupon codes replay identically.
    #[serde(default)]
    pub seed: String,
}

impl Input {
    /// The plugin's configuration as `T`; a plugin with no configuration set reads `{}`, so
    /// `#[serde(default)]` fields take their defaults.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let raw = match &self.plugin.config {
            Some(raw) if raw.get() != "null" => raw.get(),
            _ => "{}",
        };
        from_json_str(raw).map_err(|why| Error::new(format!("plugin config{why}")))
    }

    /// This plugin's state for this customer as `T`, or `T::default()` when it has none yet.
    pub fn state<T: DeserializeOwned + Default>(&self) -> Result<T, Error> {
        match &self.state {
            Some(raw) if raw.get() != "null" => {
                from_json_str(raw.get()).map_err(|why| Error::new(format!("plugin state{why}")))
            }
            _ => Ok(T::default()),
        }
    }

    /// A deterministic random number generator seeded for this tenant, plugin and event.
    pub fn rng(&self) -> crate::Rng {
        crate::Rng::from_seed_hex(&self.seed)
    }
}

/// Which plugin is running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The plugin's name within its tenant.
    pub name: String,
    /// The uploaded version being run.
    pub version: u32,
    /// The tenant's configuration for the plugin, `null` when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RawJson>,
}

/// A member the host writes into the input's `event` just before `data`: the length of
/// `data`'s JSON text in bytes, so that the SDK's reader takes the data without scanning it.
/// Serde-based readers ignore it, as they ignore every member they do not know.
pub const EVENT_DATA_BYTES: &str = "data_bytes";

/// Like [`EVENT_DATA_BYTES`], for the input's `state`: written just before it when the state
/// is an object or an array.
pub const STATE_BYTES: &str = "state_bytes";

/// Like [`EVENT_DATA_BYTES`], for the `plugin`'s `config`: written just before it when the
/// configuration is an object or an array.
pub const CONFIG_BYTES: &str = "config_bytes";

/// One customer interaction.
///
/// `data` stays raw JSON until a rule asks for a field, so a rule that reads one number
/// does not pay for parsing the whole item list.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// Unique per tenant; posting the same id again is idempotent.
    pub id: String,
    /// What happened: `checkout`, `repair`, `swim`, ...
    pub action: String,
    /// A human-readable name of the action, when the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The customer who did it.
    pub customer: String,
    /// When it happened, RFC 3339 UTC. Rules take time from here, never from a clock.
    pub timestamp: Timestamp,
    /// Where the event came from (`api`, `import`, `webhook`, ...).
    #[serde(default)]
    pub source: String,
    /// The action's own attributes.
    pub data: RawJson,
    /// The channel it came through (`app`, `store`, `web`, ...), when the sender said:
    /// Sitecore's interaction channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The campaign it belongs to, when the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Ids of the goals it reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<String>,
    /// What it is worth to the brand's engagement (Sitecore's engagement value); the host
    /// sums it on the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_value: Option<Decimal>,
    #[serde(skip)]
    parsed: OnceLock<Result<Fields, String>>,
}

impl Clone for Event {
    fn clone(&self) -> Event {
        Event {
            id: self.id.clone(),
            action: self.action.clone(),
            label: self.label.clone(),
            customer: self.customer.clone(),
            timestamp: self.timestamp,
            source: self.source.clone(),
            data: self.data.clone(),
            channel: self.channel.clone(),
            campaign: self.campaign.clone(),
            goals: self.goals.clone(),
            engagement_value: self.engagement_value,
            parsed: OnceLock::new(),
        }
    }
}

impl Event {
    /// An event with the given fields; `data` must be a JSON object.
    pub fn new(
        id: impl Into<String>,
        action: impl Into<String>,
        customer: impl Into<String>,
        timestamp: Timestamp,
        data: &Value,
    ) -> Result<Event, Error> {
        let data = RawJson::to_json(data)
            .map_err(|why| Error::new(format!("event data: {}", why.message())))?;
        Event::from_raw(id, action, customer, timestamp, data)
    }

    /// An event whose `data` is given as JSON text, which must be an object; the host builds
    /// events this way from data it has already checked, without re-encoding it.
    pub fn from_raw(
        id: impl Into<String>,
        action: impl Into<String>,
        customer: impl Into<String>,
        timestamp: Timestamp,
        data: RawJson,
    ) -> Result<Event, Error> {
        if !data.get().trim_start().starts_with('{') {
            return Err(Error::new("event data: not a JSON object"));
        }
        Ok(Event {
            id: id.into(),
            action: action.into(),
            label: None,
            customer: customer.into(),
            timestamp,
            source: "api".to_owned(),
            data,
            channel: None,
            campaign: None,
            goals: Vec::new(),
            engagement_value: None,
            parsed: OnceLock::new(),
        })
    }

    /// The whole of `data` as `T`, with errors that name the field path
    /// (`data.items[0].price: ...`). Use [`Money`] and [`Decimal`] fields for numbers that
    /// may arrive as strings.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        from_json_str(self.data.get()).map_err(|why| Error::new(format!("event data{why}")))
    }

    /// One field of `data`, `None` when absent or `null`.
    ///
    /// The first call indexes `data`'s top-level keys without building any value; each
    /// field is then parsed into a [`Value`] when it is first asked for. A rule that reads
    /// the total of a checkout never parses its item list.
    pub fn field(&self, name: &str) -> Result<Option<&Value>, Error> {
        let parsed = self.parsed.get_or_init(|| {
            Fields::index(self.data.get())
                .map_err(|why| format!("event data is not a JSON object: {why}"))
        });
        let fields = match parsed {
            Ok(fields) => fields,
            Err(why) => return Err(Error::new(why.clone())),
        };
        // A repeated key keeps its last value, as a JSON object read into a map does.
        let Some(field) = fields
            .0
            .iter()
            .rev()
            .find(|field| field.key(self.data.get()) == name)
        else {
            return Ok(None);
        };
        let value = field.value.get_or_init(|| {
            serde_json::from_str(&self.data.get()[field.start..field.end])
                .map_err(|why| format!("event data.{name}: {why}"))
        });
        match value {
            Ok(value) => Ok(Some(value).filter(|value| !value.is_null())),
            Err(why) => Err(Error::new(why.clone())),
        }
    }

    fn required(&self, name: &str) -> Result<&Value, Error> {
        self.field(name)?
            .ok_or_else(|| Error::new(format!("event data.{name} is missing")))
    }

    /// A number field that may be written as a number or a numeric string.
    pub fn decimal(&self, name: &str) -> Result<Decimal, Error> {
        value_as_decimal(name, self.required(name)?)
    }

    /// Like [`Event::decimal`], `None` when the field is absent.
    pub fn decimal_opt(&self, name: &str) -> Result<Option<Decimal>, Error> {
        self.field(name)?
            .map(|value| value_as_decimal(name, value))
            .transpose()
    }

    /// A money field in minor units (two decimals), written as a number or a string.
    pub fn money(&self, name: &str) -> Result<Money, Error> {
        Money::from_decimal(self.decimal(name)?)
            .map_err(|why| Error::new(format!("event data.{name}: {why}")))
    }

    /// A whole-number field (a quantity), written as a number or a string.
    pub fn integer(&self, name: &str) -> Result<i64, Error> {
        self.decimal(name)?
            .to_integer()
            .map_err(|why| Error::new(format!("event data.{name}: {why}")))
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Result<&str, Error> {
        let value = self.required(name)?;
        value
            .as_str()
            .ok_or_else(|| wrong_type(name, "a string", value))
    }

    /// Like [`Event::str`], `None` when the field is absent.
    pub fn str_opt(&self, name: &str) -> Result<Option<&str>, Error> {
        match self.field(name)? {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a string", value)),
        }
    }

    /// A boolean field; `"true"` and `"false"` strings are read too, as some systems send them.
    pub fn bool_opt(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.field(name)? {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(value) => Err(wrong_type(name, "true or false", value)),
        }
    }
}

/// The top-level members of an event's `data`, as byte ranges into its JSON, each parsed
/// on first use.
#[derive(Debug, Default)]
struct Fields(Vec<Field>);

#[derive(Debug)]
struct Field {
    /// The key as written between its quotes, or unescaped when it has escapes.
    key: FieldKey,
    start: usize,
    end: usize,
    value: OnceLock<Result<Value, String>>,
}

#[derive(Debug)]
enum FieldKey {
    /// `data[start..end]`.
    Raw(usize, usize),
    Unescaped(String),
}

impl Field {
    fn key<'a>(&'a self, data: &'a str) -> &'a str {
        match &self.key {
            FieldKey::Raw(start, end) => &data[*start..*end],
            FieldKey::Unescaped(key) => key,
        }
    }
}

impl Fields {
    /// Indexes the members of the JSON object `data`.
    ///
    /// `data` is valid JSON (serde_json wrote it in the host, or checked it when it read it):
    /// a plain scan finds each top-level key and where its value ends, without checking
    /// or building anything, which in wasm takes a third of the time serde_json takes to skip
    /// the same values. Data that is not an object is read as a map by serde_json for the
    /// message it has always given.
    fn index(data: &str) -> Result<Fields, serde_json::Error> {
        match scan_object(data) {
            Some(fields) => Ok(fields),
            None => match serde_json::from_str::<Map<String, Value>>(data) {
                Err(why) => Err(why),
                // Unreachable for valid JSON: the scan reads every object.
                Ok(_) => Ok(Fields::default()),
            },
        }
    }
}

/// The members of the JSON object `data` (valid JSON), or `None` when it is not an object.
fn scan_object(data: &str) -> Option<Fields> {
    let mut fields = Vec::new();
    let mut cursor = read::Cursor::new(data);
    cursor.object(|cursor, key| {
        let key = if key.plain {
            FieldKey::Raw(key.range.start, key.range.end)
        } else {
            // Rare: a key with escapes is unescaped by serde_json's `Value` reader, which
            // every plugin has already (the range is the key with its quotes).
            let quoted = key.range.start - 1..key.range.end + 1;
            match serde_json::from_str::<Value>(data.get(quoted)?) {
                Ok(Value::String(key)) => FieldKey::Unescaped(key),
                _ => return None,
            }
        };
        let value = cursor.value_span()?;
        fields.push(Field {
            key,
            start: value.start,
            end: value.end,
            value: OnceLock::new(),
        });
        Some(())
    })?;
    cursor.end()?;
    Some(Fields(fields))
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// The eight bytes at `at`, as one word, when there are eight.
///
/// Scanning eight bytes at a time (wasm has 64-bit integers) is what makes these scans
/// cheaper than serde_json's: byte by byte they would not be.
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The high bit of each byte of `word` that equals `byte`, exactly for the lowest such
/// byte: `x - 0x01.. & !x & 0x80..` flags the zero bytes of `x`, and bytes above the first
/// flag may be flagged wrongly, so callers use only the lowest.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let zero_where_equal = word ^ (ONES * u64::from(byte));
    zero_where_equal.wrapping_sub(ONES) & !zero_where_equal & HIGH_BITS
}

/// The high bit of each byte of `word` below `bound` (at most 0x80), exactly for the lowest
/// such byte, as in [`bytes_equal`].
fn bytes_below(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGH_BITS
}

/// The index of the quote that closes the string opening at `open`, and whether the string
/// is *plain*: no escapes and no control characters, so that its text is the string itself.
/// Finding both in one scan spares the input reader a second pass over every string.
fn string_end(bytes: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut at = open + 1;
    let mut plain = true;
    loop {
        while let Some(word) = word_at(bytes, at) {
            let found =
                bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20);
            if found != 0 {
                at += (found.trailing_zeros() / 8) as usize;
                break;
            }
            at += 8;
        }
        match bytes.get(at)? {
            b'"' => return Some((at, plain)),
            b'\\' => {
                plain = false;
                at += 2;
            }
            byte => {
                plain &= *byte >= 0x20;
                at += 1;
            }
        }
    }
}

/// The index just past the value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start).map(|(end, _)| end + 1),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut at = start;
            // Byte by byte between strings: in JSON as events carry it only a byte or two lies
            // between one string and the next, so skipping eight at a time there as well costs
            // more fuel than it saves.
            loop {
                match bytes.get(at)? {
                    b'"' => at = string_end(bytes, at)?.0,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next delimiter.
        _ => {
            let mut at = start;
            while !matches!(
                bytes.get(at),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                at += 1;
            }
            Some(at)
        }
    }
}

fn value_as_decimal(name: &str, value: &Value) -> Result<Decimal, Error> {
    let parsed = match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => Ok(Decimal::from_int(integer)),
            (None, Some(unsigned), _) => unsigned.to_string().parse(),
            (None, None, Some(float)) => Decimal::from_f64(float),
            _ => return Err(wrong_type(name, "a number", value)),
        },
        Value::String(text) => text.parse(),
        _ => return Err(wrong_type(name, "a number or a numeric string", value)),
    };
    parsed.map_err(|why| Error::new(format!("event data.{name}: {why}")))
}

/// What kind of JSON value this is, for messages: `"a string"`, `"an array"`, `"null"`, ...
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(name: &str, expected: &str, found: &Value) -> Error {
    let kind = kind_of(found);
    Error::new(format!(
        "event data.{name}: expected {expected}, found {kind}"
    ))
}

/// Deserializes JSON, naming the path of the first offending field in the error, as
/// `: why` at the top level or `.items[1].price: why` below it.
///
/// The path comes from where serde_json stopped (the line and column of its error), found by
/// [`json_path_at`] in the text, rather than from tracking every step of the deserialization
/// with serde_path_to_error: the same paths (a test checks them against it) without a second,
/// wrapped copy of every `Deserialize` impl in the wasm (about 25 KB) or its cost when
/// nothing fails. One difference: an error a `Deserialize` impl raises after its value was
/// read (a `try_from` conversion, a check after `deserialize` returned) is placed by serde_json
/// at the end of the enclosing object, so the path names that object rather than the field.
/// The SDK's own types (`Decimal`, `Money`, `Timestamp`) check inside their visitors, so their
/// errors name the field.
fn from_json_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| {
        let path = json_path_at(text, error_offset(text, &error));
        if path.is_empty() {
            format!(": {error}")
        } else {
            format!(".{path}: {error}")
        }
    })
}

/// The byte offset in `text` of serde_json's error position (1-based line, column in bytes
/// from the start of that line); 0 when the error has no position.
fn error_offset(text: &str, error: &serde_json::Error) -> usize {
    let line_start = match error.line() {
        0 => return 0,
        1 => 0,
        line => text
            .match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(at, _)| at + 1),
    };
    (line_start + error.column()).min(text.len())
}

/// The path of the value being read at byte `offset` of the JSON `text`, in the form
/// serde_path_to_error gives (`items[1].price`), empty at the top level.
///
/// serde_json reports an error right after what it was reading: after the value of a field
/// with the wrong type (`items[1].price`), after the key of an unknown field (the key is
/// named), after the `}` of an object that misses a field (the object is named). So the path
/// is the chain of open objects and arrays at `offset`, each with its current key or index;
/// an object whose next key has not been read yet adds nothing.
fn json_path_at(text: &str, offset: usize) -> String {
    enum Frame<'a> {
        Object(Option<&'a str>),
        Array(usize),
    }
    let bytes = text.as_bytes();
    let mut frames: Vec<Frame<'_>> = Vec::new();
    let mut expect_key = false;
    let mut at = 0;
    while at < offset.min(bytes.len()) {
        match bytes[at] {
            b'"' => {
                let start = at;
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                if expect_key {
                    expect_key = false;
                    if let Some(Frame::Object(key)) = frames.last_mut() {
                        // Quotes are ASCII, so both ends are character boundaries.
                        *key = text.get(start + 1..at.min(bytes.len()));
                    }
                }
            }
            b'{' => {
                frames.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => frames.push(Frame::Array(0)),
            b'}' | b']' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::Object(key)) => {
                    *key = None;
                    expect_key = true;
                }
                Some(Frame::Array(index)) => *index += 1,
                None => {}
            },
            _ => {}
        }
        at += 1;
    }
    let mut path = String::new();
    for frame in &frames {
        match frame {
            Frame::Object(None) => {}
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                if key.contains('\\') {
                    // A key with escapes is shown unescaped, as serde reads it; read as a
                    // `Value`, whose parser every plugin has already.
                    match serde_json::from_str::<Value>(&format!("\"{key}\"")) {
                        Ok(Value::String(key)) => path.push_str(&key),
                        _ => path.push_str(key),
                    }
                } else {
                    path.push_str(key);
                }
            }
            Frame::Array(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

/// A customer as the host knows them when a plugin runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The tenant's id for the customer (an external master id).
    #[serde(default)]
    pub id: String,
    /// Points balance and lifetime points.
    #[serde(default)]
    pub points: Points,
    /// The customer's tier, `None` before any plugin set one.
    #[serde(default)]
    pub tier: Option<String>,
    /// Perks (coupons, rewards) the customer holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<Perk>,
    /// Whether the customer is a member of the loyalty program: `opt_in` makes them one,
    /// `opt_out` ends it. A tenant may require it to earn. Left out of the JSON when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub member: bool,
    /// Profile attributes the tenant sent (name, email, birthday, ...).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Counters the host keeps, as they were before this event.
    #[serde(default)]
    pub stats: Stats,
}

/// What the host counts of a customer's events, as it was before the event being evaluated:
/// on a customer's fifth checkout, `events("checkout")` is 4.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Events per action.
    #[serde(default)]
    pub events: std::collections::BTreeMap<String, u64>,
    /// The earliest event time seen (business time, from the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event_at: Option<Timestamp>,
    /// The latest event time seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<Timestamp>,
}

impl Stats {
    /// How many events of `action` the customer had before this one.
    pub fn events(&self, action: &str) -> u64 {
        self.events.get(action).copied().unwrap_or(0)
    }
}

/// A customer's points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// What the customer can spend now: earned points neither pending nor expired, less what
    /// was spent.
    pub balance: i64,
    /// All points ever earned, less reversals; spending and expiry do not lower it. Tiers use
    /// it.
    pub lifetime: i64,
    /// Points earned but held (until a date or a `checkout_accept`): not in `balance`, so not
    /// spendable yet.
    #[serde(default)]
    pub pending: i64,
}

/// Actions only the host writes, for time passing: the host's clock turns a due moment
/// into an event of one of these, with the due time as its timestamp and source `system`.
/// A tenant cannot post them (`reserved_action`); plugins subscribe to them like any other.
pub const INTERNAL_ACTIONS: [&str; 7] = [
    "point_expire",
    "points_release",
    "birthday",
    "anniversary",
    "reminder",
    "tier_review",
    "perk_expire",
];

/// Whether only the host may write events of `action` (see [`INTERNAL_ACTIONS`]).
pub fn is_internal_action(action: &str) -> bool {
    INTERNAL_ACTIONS.contains(&action)
}

/// What a plugin decides for one event. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Points entries to append to the customer's ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointEntry>,
    /// Perks granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<Perk>,
    /// The customer's new tier; `None` leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Outbound notifications such as `TierEarned` or `CouponAwarded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// What this plugin shows on the customer's profile, under `plugins.<its name>` there, as
    /// JSON text (set it with [`Decision::profile`]): figures for people and other systems,
    /// such as the points needed to keep a tier. `None` keeps what it showed; an object
    /// replaces it; `null` removes it. Plugins never read it back: that is what state is for.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub profile: Option<RawJson>,
    /// The plugin's new private state for this customer, as JSON text (set it with
    /// [`Decision::state`]): `None` keeps the old state, `Some` of JSON `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub state: Option<RawJson>,
}

/// Keeps an explicit `null` as `Some` of `null` so that it can clear state.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(deserializer).map(Some)
}

/// A JSON value kept as its text.
///
/// Plugin state is written by the plugin, stored by the host and read back by the plugin on
/// the customer's next event; nothing in between needs it as a tree of values. Keeping the
/// text means neither side builds one (a plugin's state of a thousand remembered
/// transactions is read and written on every event). Equal when the texts are equal.
///
/// The event data, configuration and state in a plugin's input are also kept as text, but
/// unchecked: the SDK's input reader finds where each ends without checking what is inside
/// (see the `read` module), and whatever reads one later (a field, `data_as`, `state`) parses
/// it with serde_json and checks it then. Everywhere else (what the host reads from a plugin
/// or from storage, what a plugin writes) the text is checked when the value is made.
#[derive(Debug, Clone)]
pub struct RawJson(Text);

#[derive(Debug, Clone)]
enum Text {
    /// Checked by serde_json, or written by it: serializes as it is.
    Checked(Box<RawValue>),
    /// Taken from the JSON the host wrote, not checked yet.
    Unchecked(Box<str>),
}

impl RawJson {
    /// The text of `value`.
    pub fn from_value(value: &Value) -> RawJson {
        // Serializing a `Value` cannot fail: its map keys are strings.
        RawJson(Text::Checked(
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        ))
    }

    /// `value` written as JSON.
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<RawJson, Error> {
        serde_json::value::to_raw_value(value)
            .map(|raw| RawJson(Text::Checked(raw)))
            .map_err(|why| Error::new(why.to_string()))
    }

    /// Text the input reader found in what the host wrote; see the type's documentation.
    pub(crate) fn unchecked(text: &str) -> RawJson {
        RawJson(Text::Unchecked(text.into()))
    }

    /// JSON text the plugin wrote itself, taken as it is, for a [`Decision::state`] built
    /// as text (a rule that appends to its state's text instead of parsing it).
    ///
    /// Not checked in the plugin, where serde_json's check costs ~37 wasm instructions a
    /// byte: the host checks every decision it reads, and one whose state is not a single
    /// JSON value fails the evaluation as the plugin's error (`bad_output`). Natively (in a
    /// rule's tests) it is checked when serialized, and [`RawJson::parse`] checks it as ever.
    pub fn from_text_unchecked(text: impl Into<Box<str>>) -> RawJson {
        RawJson(Text::Unchecked(text.into()))
    }

    /// Whether the text was taken unchecked (from the input, or
    /// [`RawJson::from_text_unchecked`]) and its brackets and strings end with it: then,
    /// copied into a decision, it cannot add members of its own (`1,"tier":"gold"` is
    /// refused), and the host's read of the decision checks the rest.
    fn is_unchecked_value(&self) -> bool {
        match &self.0 {
            Text::Unchecked(text) => value_end(text.as_bytes(), 0) == Some(text.len()),
            Text::Checked(_) => false,
        }
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        match &self.0 {
            Text::Checked(raw) => raw.get(),
            Text::Unchecked(text) => text,
        }
    }

    /// The value, parsed (`null` if the text is not JSON).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }

    /// The value as `T`, with the path of what does not fit.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        from_json_str(self.get()).map_err(|why| Error::new(format!("JSON value{why}")))
    }

    /// Whether it is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.get() == "null"
    }
}

impl Default for RawJson {
    /// `null`.
    fn default() -> RawJson {
        RawJson(Text::Checked(RawValue::NULL.to_owned()))
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> RawJson {
        RawJson(Text::Checked(raw))
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Text::Checked(raw) => raw.serialize(serializer),
            // Only an input the reader made is serialized this way (in tests, by a rule that
            // writes its input out): checked here, so that nothing invalid is written.
            Text::Unchecked(text) => serde_json::from_str::<&RawValue>(text)
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawJson, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(RawJson::from)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get()
    }
}

impl Decision {
    /// An empty decision: nothing changes.
    pub fn new() -> Decision {
        Decision::default()
    }

    /// Awards points (`amount` > 0), counted in lifetime points.
    pub fn earn(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(amount, reason).with_kind(PointKind::Earn));
        self
    }

    /// Takes back points earned earlier (a return): lowers balance and lifetime points.
    /// `amount` is the positive number of points to take back.
    pub fn reverse(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(-amount, reason).with_kind(PointKind::Reverse));
        self
    }

    /// Spends points (a redemption): lowers the balance only. `amount` is positive.
    pub fn spend(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(-amount, reason).with_kind(PointKind::Spend));
        self
    }

    /// Appends a points entry as it is.
    pub fn points_entry(mut self, entry: PointEntry) -> Decision {
        self.points.push(entry);
        self
    }

    /// Grants a perk.
    pub fn perk(mut self, perk: Perk) -> Decision {
        self.perks.push(perk);
        self
    }

    /// Sets the customer's tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Decision {
        self.tier = Some(tier.into());
        self
    }

    /// Sends an outbound trigger.
    pub fn trigger(mut self, name: impl Into<String>, data: Value) -> Decision {
        self.triggers.push(Trigger {
            name: name.into(),
            data: RawJson::from_value(&data),
        });
        self
    }

    /// Sends an outbound trigger whose data is any serializable value, such as a struct of
    /// the rule's own: it is written straight to JSON, without the tree of values `json!`
    /// builds first (in wasm every map entry of that tree is an allocation).
    pub fn trigger_as<T: Serialize + ?Sized>(
        mut self,
        name: impl Into<String>,
        data: &T,
    ) -> Result<Decision, Error> {
        let name = name.into();
        let data = RawJson::to_json(data)
            .map_err(|why| Error::new(format!("trigger {name}: {}", why.message())))?;
        self.triggers.push(Trigger { name, data });
        Ok(self)
    }

    /// Replaces this plugin's state for the customer.
    pub fn state<T: Serialize>(mut self, state: &T) -> Result<Decision, Error> {
        let text = RawJson::to_json(state)
            .map_err(|why| Error::new(format!("plugin state: {}", why.message())))?;
        self.state = Some(text);
        Ok(self)
    }

    /// Shows `figures` (serialized to a JSON object) on the customer's profile under this
    /// plugin's name, replacing what it showed before.
    pub fn profile<T: Serialize>(mut self, figures: &T) -> Result<Decision, Error> {
        let text = RawJson::to_json(figures)
            .map_err(|why| Error::new(format!("plugin profile: {}", why.message())))?;
        self.profile = Some(text);
        Ok(self)
    }

    /// The sum of all points entries.
    pub fn points_total(&self) -> i64 {
        self.points
            .iter()
            .map(|entry| entry.amount)
            .fold(0, i64::saturating_add)
    }

    /// Checks the rules every decision must keep; the host refuses a decision that breaks one
    /// and records it as the plugin's error. The message names the field and the numbers.
    pub fn check(&self) -> Result<(), DecisionViolation> {
        let violation = |message: String| Err(DecisionViolation(message));
        if self.points.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "points has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.points.len()
            ));
        }
        for (index, entry) in self.points.iter().enumerate() {
            if entry.amount == 0 {
                return violation(format!(
                    "points[{index}].amount is 0: an entry must move points"
                ));
            }
            if entry.amount.unsigned_abs() > MAX_POINTS_AMOUNT {
                return violation(format!(
                    "points[{index}].amount {} is beyond ±{MAX_POINTS_AMOUNT}",
                    entry.amount
                ));
            }
            match (entry.kind(), entry.amount > 0) {
                (PointKind::Earn, false) => {
                    return violation(format!(
                        "points[{index}] has kind earn but amount {} is negative",
                        entry.amount
                    ));
                }
                (PointKind::Reverse | PointKind::Spend, true) => {
                    return violation(format!(
                        "points[{index}] has kind {} but amount {} is positive",
                        entry.kind(),
                        entry.amount
                    ));
                }
                (PointKind::Expire | PointKind::Release | PointKind::Merge, _) => {
                    return violation(format!(
                        "points[{index}] has kind {}, which only the host writes (when points \
                         fall due, or profiles are merged): a plugin earns, reverses or spends",
                        entry.kind()
                    ));
                }
                _ => {}
            }
            if (entry.pending || entry.pending_until.is_some()) && entry.kind() != PointKind::Earn {
                return violation(format!(
                    "points[{index}] is pending but has kind {}: only earned points can be held",
                    entry.kind()
                ));
            }
            check_name(
                &format!("points[{index}].reason"),
                &entry.reason,
                MAX_NAME_LEN,
            )?;
        }
        if self.perks.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "perks has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.perks.len()
            ));
        }
        for (index, perk) in self.perks.iter().enumerate() {
            check_name(&format!("perks[{index}].kind"), &perk.kind, MAX_NAME_LEN)?;
            check_name(&format!("perks[{index}].id"), &perk.id, MAX_NAME_LEN)?;
            if perk.status != PerkStatus::Active || perk.closed_at.is_some() {
                return violation(format!(
                    "perks[{index}] is granted as {:?}: a decision grants active perks; the \
                     host redeems and expires them",
                    perk.status
                ));
            }
        }
        if let Some(tier) = &self.tier {
            check_name("tier", tier, MAX_NAME_LEN)?;
        }
        if let Some(profile) = &self.profile {
            let text = profile.get().trim_start();
            if !(text.starts_with('{') || text.starts_with("null")) {
                return violation(
                    "profile must be a JSON object (or null to remove it)".to_owned(),
                );
            }
            if profile.get().len() > MAX_PROFILE_BYTES {
                return violation(format!(
                    "profile is {} bytes of JSON, more than the {MAX_PROFILE_BYTES} allowed",
                    profile.get().len()
                ));
            }
        }
        if self.triggers.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "triggers has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.triggers.len()
            ));
        }
        for (index, trigger) in self.triggers.iter().enumerate() {
            check_name(
                &format!("triggers[{index}].name"),
                &trigger.name,
                MAX_NAME_LEN,
            )?;
        }
        Ok(())
    }
}

/// The most points one entry may move: far beyond any real award, far from overflow.
pub const MAX_POINTS_AMOUNT: u64 = 1_000_000_000_000;
/// The most entries of each kind (points, perks, triggers) in one decision.
pub const MAX_DECISION_ENTRIES: usize = 1000;
/// The longest reason, perk kind or id, tier or trigger name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The most JSON a plugin may show on a profile, in bytes: figures, not a store.
pub const MAX_PROFILE_BYTES: usize = 4096;

fn check_name(field: &str, value: &str, max: usize) -> Result<(), DecisionViolation> {
    if value.trim().is_empty() {
        return Err(DecisionViolation(format!("{field} is empty")));
    }
    if value.len() > max {
        return Err(DecisionViolation(format!(
            "{field} is {} bytes long, more than the {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// A decision that breaks a rule every decision must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionViolation(pub String);

impl fmt::Display for DecisionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecisionViolation {}

/// One points ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointEntry {
    /// Points moved: positive awards, negative takes.
    pub amount: i64,
    /// Why, as the customer's ledger shows it.
    pub reason: String,
    /// Earn, reverse or spend; when absent, earn for positive amounts and spend for negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PointKind>,
    /// When these points expire, if they do; when absent, the tenant's expiry policy
    /// decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Earned points held until this moment (a return window): pending, not spendable, until
    /// the host releases them then, or a `checkout_accept` of the event's transaction does
    /// sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<Timestamp>,
    /// Earned points held until a `checkout_accept` of the event's transaction (or
    /// `pending_until`, when also set).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl PointEntry {
    /// An entry of `amount` points for `reason`.
    pub fn new(amount: i64, reason: impl Into<String>) -> PointEntry {
        PointEntry {
            amount,
            reason: reason.into(),
            kind: None,
            expires_at: None,
            pending_until: None,
            pending: false,
        }
    }

    /// The same entry, held until `until` (or an accept of the event's transaction).
    pub fn pending_until(mut self, until: Timestamp) -> PointEntry {
        self.pending_until = Some(until);
        self
    }

    /// The same entry, held until the event's transaction is accepted.
    pub fn pending_until_accepted(mut self) -> PointEntry {
        self.pending = true;
        self
    }

    /// Whether the entry's points are held rather than spendable at once.
    pub fn is_pending(&self) -> bool {
        self.pending || self.pending_until.is_some()
    }

    /// The same entry with an explicit kind.
    pub fn with_kind(mut self, kind: PointKind) -> PointEntry {
        self.kind = Some(kind);
        self
    }

    /// The same entry, expiring at `at`.
    pub fn expiring(mut self, at: Timestamp) -> PointEntry {
        self.expires_at = Some(at);
        self
    }

    /// The entry's kind, defaulted from the sign of the amount.
    pub fn kind(&self) -> PointKind {
        self.kind.unwrap_or(if self.amount >= 0 {
            PointKind::Earn
        } else {
            PointKind::Spend
        })
    }
}

/// What a points entry does to lifetime points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// Points awarded; raises balance and lifetime points.
    Earn,
    /// Points taken back (a return, a rejected checkout); lowers balance and lifetime points.
    Reverse,
    /// Points spent on a reward; lowers the balance only.
    Spend,
    /// Points that reached their expiry date; lowers the balance only. Written by the host.
    Expire,
    /// Pending points released to the balance (the hold ended, or the transaction was
    /// accepted): raises the balance by what leaves `pending`. Written by the host.
    Release,
    /// Points moved between two profiles of one person by a `customer_merge`: negative on
    /// the profile merged away, positive on the one that stays; the part that is `held`
    /// moves pending points. Lifetime points stay with each history. Written by the host.
    Merge,
}

impl fmt::Display for PointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointKind::Earn => "earn",
            PointKind::Reverse => "reverse",
            PointKind::Spend => "spend",
            PointKind::Expire => "expire",
            PointKind::Release => "release",
            PointKind::Merge => "merge",
        })
    }
}

/// A perk granted to a customer: a coupon, a reward, a free repair. A plugin grants it with
/// a kind, a code (`id`) and optionally a value and a last day; the host keeps its life:
/// when it was issued, whether it was redeemed (`perk_redeem`) or expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perk {
    /// What sort of perk (`coupon`, `reward`, ...).
    pub kind: String,
    /// Its code, unique among the customer's perks: what a redemption names.
    pub id: String,
    /// Anything else about it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// What it is worth, as the tenant counts it (`10` for 10 %, `"5 EUR"`, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// The last moment it can be redeemed; the host expires it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// Active, redeemed or expired. Set by the host; a decision may only grant active perks.
    #[serde(default, skip_serializing_if = "PerkStatus::is_active")]
    pub status: PerkStatus,
    /// When it was granted (the event's time). Set by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// When it was redeemed or expired. Set by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
}

/// Where a perk is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerkStatus {
    /// It can be redeemed.
    #[default]
    Active,
    /// It was redeemed, once.
    Redeemed,
    /// Its `valid_until` passed before it was redeemed.
    Expired,
}

impl PerkStatus {
    fn is_active(&self) -> bool {
        *self == PerkStatus::Active
    }
}

impl Perk {
    /// A perk of `kind` with `id` and no further data.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Perk {
        Perk {
            kind: kind.into(),
            id: id.into(),
            data: Value::Null,
            value: Value::Null,
            valid_until: None,
            status: PerkStatus::Active,
            issued_at: None,
            closed_at: None,
        }
    }

    /// The same perk carrying `data`.
    pub fn with_data(mut self, data: Value) -> Perk {
        self.data = data;
        self
    }

    /// The same perk worth `value`.
    pub fn with_value(mut self, value: Value) -> Perk {
        self.value = value;
        self
    }

    /// The same perk, redeemable until `at`.
    pub fn valid_until(mut self, at: Timestamp) -> Perk {
        self.valid_until = Some(at);
        self
    }

    /// Whether it can be redeemed at `at`.
    pub fn is_redeemable_at(&self, at: Timestamp) -> bool {
        self.status == PerkStatus::Active && self.valid_until.is_none_or(|until| at <= until)
    }
}

/// An outbound notification, sent on by the host (by webhook, for instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Its name, e.g. `TierEarned`.
    pub name: String,
    /// What it carries, as JSON text: the host stores it in the outbox and in the event's
    /// outcome and answers it, and none of them needs it as a tree of values
    /// ([`RawJson::to_value`] makes one).
    #[serde(default, skip_serializing_if = "RawJson::is_null")]
    pub data: RawJson,
}

/// What a plugin answers: a decision, or an error it raised on purpose.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The plugin's decision.
    Decision(Decision),
    /// `{"error": "why"}`: the plugin refused the event, with its reason.
    Error(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    points: Vec<PointEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    perks: Vec<Perk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    triggers: Vec<Trigger>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    profile: Option<RawJson>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    state: Option<RawJson>,
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Decision(decision) => decision.serialize(serializer),
            Output::Error(message) => {
                let fields = OutputFields {
                    error: Some(message.clone()),
                    points: Vec::new(),
                    perks: Vec::new(),
                    tier: None,
                    triggers: Vec::new(),
                    profile: None,
                    state: None,
                };
                fields.serialize(serializer)
            }
        }
    }
}

impl Output {
    /// The output as JSON, as the plugin hands it to the host. A state taken unchecked is
    /// copied in as its text: serializing it would check it first, and the host checks it
    /// anyway (see [`RawJson::from_text_unchecked`]). Text that does not even end where its
    /// value does is serialized as any other, which checks it and fails.
    pub(crate) fn into_json(mut self) -> Result<Vec<u8>, serde_json::Error> {
        let unchecked_state = match &mut self {
            Output::Decision(decision) => {
                decision.state.take_if(|state| state.is_unchecked_value())
            }
            Output::Error(_) => None,
        };
        let mut json = serde_json::to_vec(&self)?;
        if let Some(state) = unchecked_state {
            // `state` is the last member the decision writes: put it before the closing brace.
            json.pop();
            if json.len() > 1 {
                json.push(b',');
            }
            json.extend_from_slice(b"\"state\":");
            json.extend_from_slice(state.get().as_bytes());
            json.push(b'}');
        }
        // In wasm the instance is thrown away after this call and the bump allocator frees
        // nothing: dropping the decision (the state's maps, every string) would be work for
        // nothing, a few percent of an evaluation.
        #[cfg(target_arch = "wasm32")]
        std::mem::forget(self);
        Ok(json)
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Output, D::Error> {
        let fields = OutputFields::deserialize(deserializer)?;
        Ok(match fields.error {
            Some(message) => Output::Error(message),
            None => Output::Decision(Decision {
                points: fields.points,
                perks: fields.perks,
                tier: fields.tier,
                triggers: fields.triggers,
                profile: fields.profile,
                state: fields.state,
            }),
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unchecked_state_is_written_as_its_text_obeyed() {
        let text = r#"{"ids":["a"],"n":[1]}"#;
        let checked = Decision::new()
            .earn(20, "checkout")
            .state(&serde_json::from_str::<Value>(text).expect("JSON"))
            .expect("serializable");
        let mut unchecked = checked.clone();
        unchecked.state = Some(RawJson::from_text_unchecked(text));
        let written = Output::Decision(unchecked).into_json().expect("written");
        assert_eq!(
            String::from_utf8(written.clone()).expect("UTF-8"),
            r#"{"points":[{"amount":20,"reason":"checkout","kind":"earn"}],"state":{"ids":["a"],"n":[1]}}"#
        );
        let back: Output = serde_json::from_slice(&written).expect("the host reads it");
        assert_eq!(back, Output::Decision(checked));

        let alone = Decision {
            state: Some(RawJson::from_text_unchecked("[1,2]")),
            ..Decision::default()
        };
        let written = Output::Decision(alone).into_json().expect("written");
        assert_eq!(written, br#"{"state":[1,2]}"#);
    }

    #[test]
    fn an_unchecked_state_is_written_as_its_text_violated() {
        // Text that is not one JSON value either reaches the host as it is, whose read of
        // the output refuses it, or (when it does not end where a value does, and so could
        // add members of its own) is checked as it is written and refused then: either way
        // the evaluation fails as the plugin's error.
        for text in ["{\"a\":tru}", "[1}", "{\"a\":[1},\"tier\":\"gold\"]"] {
            let decision = Decision {
                state: Some(RawJson::from_text_unchecked(text)),
                ..Decision::default()
            };
            let written = Output::Decision(decision).into_json().expect("written");
            assert!(
                serde_json::from_slice::<Output>(&written).is_err(),
                "{}",
                String::from_utf8_lossy(&written)
            );
        }
        for text in ["1,\"tier\":\"gold\"", "{", "", "{} {}"] {
            let decision = Decision {
                state: Some(RawJson::from_text_unchecked(text)),
                ..Decision::default()
            };
            assert!(
                Output::Decision(decision).into_json().is_err(),
                "{text} is checked as it is written"
            );
        }
    }

    #[test]
    fn decision_round_trips_and_keeps_null_state() {
        let decision = Decision::new()
            .earn(20, "checkout")
            .tier("gold")
            .state(&Value::Null)
            .expect("serializable");
        let text =
            serde_json::to_string(&Output::Decision(decision.clone())).expect("serializable");
        assert_eq!(
            text,
            r#"{"points":[{"amount":20,"reason":"checkout","kind":"earn"}],"tier":"gold","state":null}"#
        );
        let back: Output = serde_json::from_str(&text).expect("valid output");
        assert_eq!(back, Output::Decision(decision));
        let kept: Output = serde_json::from_str("{}").expect("valid output");
        assert_eq!(
            kept,
            Output::Decision(Decision::new()),
            "an absent state keeps the old one"
        );
    }

    #[test]
    fn error_output_is_a_plugin_error() {
        let output: Output =
            serde_json::from_str(r#"{"error":"no such store"}"#).expect("valid output");
        assert_eq!(output, Output::Error("no such store".into()));
        assert_eq!(
            serde_json::to_string(&output).expect("serializable"),
            r#"{"error":"no such store"}"#
        );
    }

    #[test]
    fn unknown_decision_fields_are_refused() {
        let refused = serde_json::from_str::<Output>(r#"{"point":[{"amount":1,"reason":"x"}]}"#);
        assert!(
            refused
                .expect_err("a typo is refused")
                .to_string()
                .contains("unknown field `point`")
        );
        assert!(
            serde_json::from_str::<Output>(r#"{"points":[{"amount":1.5,"reason":"x"}]}"#).is_err()
        );
    }

    #[test]
    fn decision_rules_obeyed() {
        let decision = Decision::new()
            .earn(10, "a")
            .reverse(5, "b")
            .spend(1, "c")
            .tier("gold")
            .trigger("TierEarned", json!({}))
            .points_entry(PointEntry::new(3, "held").pending_until_accepted())
            .profile(&json!({"points_to_keep_gold": 120}))
            .expect("serializable");
        assert_eq!(decision.check(), Ok(()));
    }

    #[test]
    fn decision_rules_violated() {
        let cases = [
            (Decision::new().earn(0, "x"), "points[0].amount is 0"),
            (
                Decision::new().earn(-3, "x"),
                "points[0] has kind earn but amount -3 is negative",
            ),
            (Decision::new().earn(1, " "), "points[0].reason is empty"),
            (Decision::new().tier(""), "tier is empty"),
            (
                Decision::new().points_entry(PointEntry::new(2_000_000_000_000, "x")),
                "beyond",
            ),
            (
                Decision::new().trigger("", Value::Null),
                "triggers[0].name is empty",
            ),
            (
                Decision::new().points_entry(PointEntry::new(-5, "x").with_kind(PointKind::Expire)),
                "points[0] has kind expire, which only the host writes",
            ),
            (
                Decision::new().points_entry(
                    PointEntry::new(-5, "x").pending_until(Timestamp::from_unix_seconds(0)),
                ),
                "points[0] is pending but has kind spend",
            ),
            (
                Decision::new()
                    .profile(&json!([1, 2]))
                    .expect("serializable"),
                "profile must be a JSON object",
            ),
            (
                Decision::new()
                    .profile(&json!({"big": "x".repeat(5000)}))
                    .expect("serializable"),
                "more than the 4096 allowed",
            ),
        ];
        for (decision, expected) in cases {
            let violation = decision.check().expect_err("the rule is broken");
            assert!(
                violation.0.contains(expected),
                "{violation} should contain {expected}"
            );
        }
    }

    #[test]
    fn event_fields_read_numbers_written_as_strings() {
        let data =
            json!({"total": "200", "quantity": "2", "price": 19.99, "free": "true", "bad": "x"});
        let event = Event::new(
            "e1",
            "checkout",
            "c1",
            Timestamp::from_unix_seconds(0),
            &data,
        )
        .expect("valid");
        assert_eq!(event.money("total").expect("money").minor(), 20000);
        assert_eq!(event.integer("quantity").expect("integer"), 2);
        assert_eq!(event.money("price").expect("money").minor(), 1999);
        assert_eq!(event.bool_opt("free").expect("bool"), Some(true));
        assert_eq!(
            event.decimal("bad").expect_err("not a number").to_string(),
            r#"event data.bad: "x" is not a number"#
        );
        assert_eq!(
            event.decimal("nope").expect_err("missing").to_string(),
            "event data.nope is missing"
        );
        assert_eq!(event.decimal_opt("nope").expect("absent is fine"), None);
    }

    /// The path serde_path_to_error (still a dependency, as the reference) gives.
    fn reference_path<T: DeserializeOwned>(text: &str) -> String {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
            Ok(_) => panic!("{text} should not deserialize"),
            Err(error) => error.path().to_string(),
        }
    }

    fn our_path<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        let why = from_json_str::<T>(text).expect_err("a bad document");
        let path = why
            .strip_prefix('.')
            .and_then(|rest| rest.split_once(": "))
            .map_or(".", |(path, _)| path);
        path.to_owned()
    }

    #[test]
    fn error_paths_match_serde_path_to_error() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only the errors are tested")]
        struct Line {
            price: Money,
            #[serde(default)]
            tags: Vec<String>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only the errors are tested")]
        struct Doc {
            id: String,
            #[serde(default)]
            lines: Vec<Line>,
            #[serde(default)]
            nested: Option<Box<Doc>>,
            #[serde(default)]
            matrix: Vec<Vec<u8>>,
        }
        let cases = [
            r#"{"id": 7}"#,
            r#"{"id": "a", "lines": [{"price": "1"}, {"price": "oops"}]}"#,
            r#"{"id": "a", "lines": [{"price": "1", "tags": ["x", 3]}]}"#,
            r#"{"id": "a", "lines": [{"price": "1"}, {}]}"#,
            r#"{"id": "a", "lines": [{"price": "1", "colour": "red"}]}"#,
            r#"{"id": "a", "extra": true}"#,
            r#"{"lines": []}"#,
            r#"{"id": "a", "nested": {"id": "b", "nested": {"id": false}}}"#,
            r#"{"id": "a", "matrix": [[1, 2], [3, 300]]}"#,
            r#"{"id": "a", "lines": {"price": "1"}}"#,
            r#"{"id": "a", "lines": [{"price": "1"}, "x"]}"#,
            "{\n  \"id\": \"a\",\n  \"lines\": [\n    {\"price\": \"1.999\"}\n  ]\n}",
            r#"{"i\"d": "a", "id": "b", "lines": [{"price": [1]}]}"#,
            r#"[1, 2]"#,
            r#""text""#,
        ];
        for text in cases {
            assert_eq!(
                our_path::<Doc>(text),
                reference_path::<Doc>(text),
                "the path of the error in {text}"
            );
        }
    }

    #[test]
    fn a_type_error_at_the_top_has_no_path() {
        let why = from_json_str::<Points>(r#""x""#).expect_err("not an object");
        assert!(why.starts_with(": invalid type: string"), "{why}");
    }

    #[test]
    fn the_scan_indexes_as_serde_json_does() {
        let documents = [
            r#"{}"#,
            r#"{"a":1}"#,
            " {\n  \"a\" : [1, {\"b\": \"}]\\\"\"}],\n  \"c\":-1.5e3 , \"d\":true,\"e\":null,\"f\":false }\n",
            r#"{"k\u00e9y": "v", "q\"": {"x": [[], {}]}, "": ""}"#,
            r#"{"total": "474.50", "items": [{"price": "29.90", "name": "a \"b\" c"}]}"#,
        ];
        for data in documents {
            let scanned = scan_object(data).expect("an object");
            let scanned: Map<String, Value> = scanned
                .0
                .iter()
                .map(|field| {
                    let value =
                        serde_json::from_str(&data[field.start..field.end]).expect("a whole value");
                    (field.key(data).to_owned(), value)
                })
                .collect();
            let read: Map<String, Value> = serde_json::from_str(data).expect("an object");
            assert_eq!(scanned, read, "{data}");
        }
        for not_an_object in ["[1]", "1", "\"x\"", "null"] {
            assert!(scan_object(not_an_object).is_none());
        }
    }

    #[test]
    fn fields_are_read_one_by_one() {
        let event = Event::new(
            "e1",
            "checkout",
            "c1",
            Timestamp::from_unix_seconds(0),
            &json!({"total": "200", "items": [{"price": 1}], "note": null, "a\"b": 1}),
        )
        .expect("valid");
        assert_eq!(event.field("total").expect("indexed"), Some(&json!("200")));
        assert_eq!(
            event.field("items").expect("indexed"),
            Some(&json!([{"price": 1}]))
        );
        assert_eq!(
            event.field("note").expect("indexed"),
            None,
            "null is absent"
        );
        assert_eq!(event.field("nope").expect("indexed"), None);
        assert_eq!(event.field("a\"b").expect("indexed"), Some(&json!(1)));

        let repeated =
            RawValue::from_string(r#"{"total": 1, "total": 2}"#.to_owned()).expect("JSON");
        let mut event = event.clone();
        event.data = repeated.into();
        assert_eq!(
            event.field("total").expect("indexed"),
            Some(&json!(2)),
            "the last of a repeated key wins, as in a map"
        );

        let mut list = event.clone();
        list.data = RawValue::from_string("[1]".to_owned())
            .expect("JSON")
            .into();
        assert_eq!(
            list.field("total").expect_err("not an object").message(),
            "event data is not a JSON object: invalid type: sequence, expected a map at line 1 column 0"
        );
    }

    #[test]
    fn data_as_names_the_failing_path() {
        #[derive(Deserialize)]
        struct Item {
            #[allow(dead_code, reason = "read only to test the error path")]
            price: Money,
        }
        #[derive(Deserialize)]
        struct Checkout {
            #[allow(dead_code, reason = "read only to test the error path")]
            items: Vec<Item>,
        }
        let data = json!({"items": [{"price": "1"}, {"price": "oops"}]});
        let event = Event::new(
            "e1",
            "checkout",
            "c1",
            Timestamp::from_unix_seconds(0),
            &data,
        )
        .expect("valid");
        let error = event.data_as::<Checkout>().err().expect("a bad price");
        assert!(
            error.to_string().starts_with("event data.items[1].price: "),
            "{error}"
        );
    }
}
