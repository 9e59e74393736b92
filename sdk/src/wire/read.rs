//! Reads a plugin's [`Input`] from the JSON the host wrote, without serde_json's checks.
//!
//! Every evaluation starts by reading its input, and with serde_json's derived reader that
//! is most of what a plugin costs: most of it skipping over event data the plugin never
//! reads, which serde_json checks as it skips.
//!
//! This reader walks the input once, forwards: the objects it builds member by member, every
//! other value skipped with the scan the SDK also indexes event data with (`value_end`: eight
//! bytes at a time through strings, byte by byte between them). It builds the small fields directly
//! and keeps the event data, the configuration and the state as unchecked text
//! ([`RawJson`]): whatever reads them later (`Event::field`, `data_as`, `Input::state`)
//! parses them with serde_json and checks them then.
//!
//! Whenever it is not sure, it gives up and the caller reads the whole input with serde_json
//! instead: a key or a string with escapes, a repeated or missing field, a number that is not
//! a plain integer, a timestamp that does not parse, anything after the object. So it returns
//! what serde_json would have read, which `tests::agrees_with_serde_json` checks on inputs as
//! the host writes them and on odd ones.
//!
//! Even unchecked, skipping JSON costs about 13 wasm instructions a byte (event data is mostly
//! short strings, and each costs its way in and out of the scan), so the host writes the
//! length of the event data just before it, and of the configuration and the state when they
//! are objects or arrays (`EVENT_DATA_BYTES`, `CONFIG_BYTES`, `STATE_BYTES`), and the reader
//! takes them without a scan. Together with the reader this takes about 40% off the fuel of the reference plugins
//! on a 1 KB checkout (`tally eval` prints fuel, which is deterministic).

use std::ops::Range;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::Map;

use super::{
    CONFIG_BYTES, Customer, Decimal, EVENT_DATA_BYTES, Event, Input, Perk, PluginInfo, Points,
    RawJson, STATE_BYTES, skip_whitespace, string_end, value_end,
};

/// Reads `text` as an [`Input`]: with this module's reader when it can, else with serde_json.
pub(crate) fn read_input(text: &str) -> Result<Input, serde_json::Error> {
    match input(text) {
        Some(input) => Ok(input),
        None => serde_json::from_str(text),
    }
}

/// The input, or `None` where serde_json must decide.
fn input(text: &str) -> Option<Input> {
    let (mut abi, mut tenant, mut plugin, mut event) = (None, None, None, None);
    let (mut customer, mut state, mut state_bytes, mut seed) = (None, None, None, None);
    let mut cursor = Cursor::new(text);
    plain_object(&mut cursor, |cursor, key| match key {
        "abi" => once(&mut abi, integer(cursor.value()?)?),
        "tenant" => once(&mut tenant, cursor.string()?.to_owned()),
        "plugin" => once(&mut plugin, plugin_info(cursor)?),
        "event" => once(&mut event, event_of(cursor)?),
        "customer" => once(&mut customer, customer_of(cursor)?),
        STATE_BYTES => once(&mut state_bytes, integer(cursor.value()?)?),
        "state" => once(&mut state, raw(cursor.text_of(state_bytes)?)),
        "seed" => once(&mut seed, cursor.string()?.to_owned()),
        // The host may add fields; the input ignores what it does not know.
        _ => cursor.value().map(drop),
    })?;
    cursor.end()?;
    Some(Input {
        abi: abi?,
        tenant: tenant?,
        plugin: plugin?,
        event: event?,
        customer: customer?,
        state: state.flatten(),
        seed: seed.unwrap_or_default(),
    })
}

fn plugin_info(cursor: &mut Cursor<'_>) -> Option<PluginInfo> {
    let (mut name, mut version, mut config, mut config_bytes) = (None, None, None, None);
    plain_object(cursor, |cursor, key| match key {
        "name" => once(&mut name, cursor.string()?.to_owned()),
        "version" => once(&mut version, integer(cursor.value()?)?),
        CONFIG_BYTES => once(&mut config_bytes, integer(cursor.value()?)?),
        "config" => once(&mut config, raw(cursor.text_of(config_bytes)?)),
        _ => cursor.value().map(drop),
    })?;
    Some(PluginInfo {
        name: name?,
        version: version?,
        config: config.flatten(),
    })
}

fn event_of(cursor: &mut Cursor<'_>) -> Option<Event> {
    let (mut id, mut action, mut label, mut customer) = (None, None, None, None);
    let (mut timestamp, mut source, mut data, mut data_bytes) = (None, None, None, None);
    let (mut channel, mut campaign, mut goals, mut engagement_value) = (None, None, None, None);
    plain_object(cursor, |cursor, key| match key {
        "channel" => once(&mut channel, cursor.optional_string()?),
        "campaign" => once(&mut campaign, cursor.optional_string()?),
        "goals" => once(&mut goals, list::<String>(cursor.value()?)?),
        "engagement_value" => once(
            &mut engagement_value,
            serde_json::from_str::<Option<Decimal>>(cursor.value()?).ok()?,
        ),
        "id" => once(&mut id, cursor.string()?.to_owned()),
        "action" => once(&mut action, cursor.string()?.to_owned()),
        "label" => once(&mut label, cursor.optional_string()?),
        "customer" => once(&mut customer, cursor.string()?.to_owned()),
        "timestamp" => once(&mut timestamp, cursor.string()?.parse().ok()?),
        "source" => once(&mut source, cursor.string()?.to_owned()),
        EVENT_DATA_BYTES => once(&mut data_bytes, integer(cursor.value()?)?),
        "data" => once(&mut data, RawJson::unchecked(cursor.text_of(data_bytes)?)),
        _ => cursor.value().map(drop),
    })?;
    Some(Event {
        id: id?,
        action: action?,
        label: label.flatten(),
        customer: customer?,
        timestamp: timestamp?,
        source: source.unwrap_or_default(),
        data: data?,
        channel: channel.flatten(),
        campaign: campaign.flatten(),
        goals: goals.unwrap_or_default(),
        engagement_value: engagement_value.flatten(),
        parsed: OnceLock::new(),
    })
}

fn customer_of(cursor: &mut Cursor<'_>) -> Option<Customer> {
    let (mut id, mut points, mut tier, mut perks) = (None, None, None, None);
    let (mut attributes, mut stats, mut member) = (None, None, None);
    plain_object(cursor, |cursor, key| match key {
        "id" => once(&mut id, cursor.string()?.to_owned()),
        "member" => once(
            &mut member,
            serde_json::from_str::<bool>(cursor.value()?).ok()?,
        ),
        "points" => once(&mut points, points_of(cursor)?),
        "tier" => once(&mut tier, cursor.optional_string()?),
        "perks" => once(&mut perks, list::<Perk>(cursor.value()?)?),
        "attributes" => once(&mut attributes, map(cursor.value()?)?),
        "stats" => once(&mut stats, serde_json::from_str(cursor.value()?).ok()?),
        _ => cursor.value().map(drop),
    })?;
    Some(Customer {
        id: id.unwrap_or_default(),
        points: points.unwrap_or_default(),
        tier: tier.flatten(),
        perks: perks.unwrap_or_default(),
        member: member.unwrap_or_default(),
        attributes: attributes.unwrap_or_default(),
        stats: stats.unwrap_or_default(),
    })
}

fn points_of(cursor: &mut Cursor<'_>) -> Option<Points> {
    let (mut balance, mut lifetime, mut pending) = (None, None, None);
    plain_object(cursor, |cursor, key| match key {
        "balance" => once(&mut balance, integer(cursor.value()?)?),
        "lifetime" => once(&mut lifetime, integer(cursor.value()?)?),
        "pending" => once(&mut pending, integer(cursor.value()?)?),
        _ => cursor.value().map(drop),
    })?;
    Some(Points {
        balance: balance?,
        lifetime: lifetime?,
        pending: pending.unwrap_or_default(),
    })
}

/// Fills `slot`; `None` when it was filled already (serde_json refuses a repeated field).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// Reads an object whose keys this reader can compare as written: `None` when a key has
/// escapes (serde_json would unescape it) or `member` gives up.
fn plain_object<'a>(
    cursor: &mut Cursor<'a>,
    mut member: impl FnMut(&mut Cursor<'a>, &'a str) -> Option<()>,
) -> Option<()> {
    let text = cursor.text;
    cursor.object(|cursor, key| {
        if !key.plain {
            return None;
        }
        member(cursor, text.get(key.range)?)
    })
}

/// A key of an object as [`Cursor::object`] finds it.
pub(super) struct Key {
    /// Its byte range between the quotes, as written.
    pub(super) range: Range<usize>,
    /// No escapes and no control characters: the text is the key itself.
    pub(super) plain: bool,
}

/// A position in JSON text, read forwards once: objects are walked member by member, every
/// other value is skipped over with one scan. The input reader walks the input with it, and
/// `Event::field` indexes event data with it.
pub(super) struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`.
    pub(super) fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, at: 0 }
    }

    /// Reads an object: calls `member` with each [`Key`] and the cursor at its value, which
    /// `member` must read. `None` when it is not an object or `member` gives up.
    pub(super) fn object(
        &mut self,
        mut member: impl FnMut(&mut Cursor<'a>, Key) -> Option<()>,
    ) -> Option<()> {
        let bytes = self.text.as_bytes();
        self.at = skip_whitespace(bytes, self.at);
        if bytes.get(self.at) != Some(&b'{') {
            return None;
        }
        self.at = skip_whitespace(bytes, self.at + 1);
        if bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            if bytes.get(self.at) != Some(&b'"') {
                return None;
            }
            let (key_end, plain) = string_end(bytes, self.at)?;
            let key = Key {
                range: self.at + 1..key_end,
                plain,
            };
            self.at = skip_whitespace(bytes, key_end + 1);
            if bytes.get(self.at) != Some(&b':') {
                return None;
            }
            self.at += 1;
            member(self, key)?;
            self.at = skip_whitespace(bytes, self.at);
            match bytes.get(self.at)? {
                b',' => self.at = skip_whitespace(bytes, self.at + 1),
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The byte range of the value at the cursor, which moves past it.
    pub(super) fn value_span(&mut self) -> Option<Range<usize>> {
        let start = skip_whitespace(self.text.as_bytes(), self.at);
        let end = value_end(self.text.as_bytes(), start)?;
        if end == start {
            return None;
        }
        self.at = end;
        Some(start..end)
    }

    /// The text of the value at the cursor, which moves past it.
    fn value(&mut self) -> Option<&'a str> {
        let span = self.value_span()?;
        self.text.get(span)
    }

    /// The string at the cursor when it is plain (no escapes, no control characters), so that
    /// its text is the string; the cursor moves past it. `None` for anything else.
    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let open = skip_whitespace(bytes, self.at);
        if bytes.get(open) != Some(&b'"') {
            return None;
        }
        let (close, plain) = string_end(bytes, open)?;
        if !plain {
            return None;
        }
        self.at = close + 1;
        self.text.get(open + 1..close)
    }

    /// A plain string as [`Cursor::string`] reads it, or `null`.
    fn optional_string(&mut self) -> Option<Option<String>> {
        match self.string() {
            Some(string) => Some(Some(string.to_owned())),
            None => (self.value()? == "null").then_some(None),
        }
    }

    /// The text of the value at the cursor, taken without a scan when the host said how
    /// many bytes it is (the `*_bytes` member before it), scanned when it did not.
    ///
    /// The host gives lengths of objects and arrays only; a length that is wrong for the text
    /// gives up here (not an object's or an array's ends, not a character boundary) or at the
    /// member after it, where the reader expects `,` or `}`.
    fn text_of(&mut self, length: Option<usize>) -> Option<&'a str> {
        let Some(length) = length else {
            return self.value();
        };
        let start = skip_whitespace(self.text.as_bytes(), self.at);
        let value = self.text.get(start..start.checked_add(length)?)?;
        let ends = (value.as_bytes().first()?, value.as_bytes().last()?);
        if !matches!(ends, (b'{', b'}') | (b'[', b']')) {
            return None;
        }
        self.at = start + length;
        Some(value)
    }

    /// Whether only whitespace is left, as serde_json requires after the value.
    pub(super) fn end(&self) -> Option<()> {
        (skip_whitespace(self.text.as_bytes(), self.at) == self.text.len()).then_some(())
    }
}

/// A JSON integer as JSON writes it: digits after an optional `-`, no leading zero, and not
/// `-0` (which serde_json reads as a float).
fn integer<T: std::str::FromStr>(value: &str) -> Option<T> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (value == "0" || !digits.starts_with('0'));
    well_formed.then(|| value.parse().ok()).flatten()
}

/// A raw value, `None` for `null` as serde_json reads an `Option`.
fn raw(value: &str) -> Option<RawJson> {
    (value != "null").then(|| RawJson::unchecked(value))
}

/// A list, read by serde_json unless empty (a customer's perks: usually none).
fn list<T: DeserializeOwned>(value: &str) -> Option<Vec<T>> {
    match value {
        "[]" => Some(Vec::new()),
        _ => serde_json::from_str(value).ok(),
    }
}

/// An object of any values, read by serde_json unless empty.
fn map(value: &str) -> Option<Map<String, serde_json::Value>> {
    match value {
        "{}" => Some(Map::new()),
        _ => serde_json::from_str(value).ok(),
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::testing;

    /// The input as serde_json reads it and as `read_input` does, each written back as a
    /// JSON value (or the error's message), for comparing.
    fn both(text: &str) -> (Result<Value, String>, Result<Value, String>) {
        let reference = serde_json::from_str::<Input>(text)
            .map(|input| serde_json::to_value(input).expect("serializable"))
            .map_err(|why| why.to_string());
        let ours = read_input(text)
            .map(|input| serde_json::to_value(input).expect("serializable"))
            .map_err(|why| why.to_string());
        (reference, ours)
    }

    fn host_written() -> Vec<String> {
        let checkout = json!({
            "total": "474.50",
            "transaction_id": "T-1",
            "items": [{"product_id": "UFA-8888", "price": "29.90", "quantity": "1",
                       "product_name": "a \"quoted\" name", "tags": ["x", {"y": null}]}],
        });
        let inputs = [
            testing::input("checkout", checkout.clone()).build(),
            testing::input("checkout", checkout)
                .config(json!({"rate": 0.1, "actions": ["checkout"]}))
                .state(&json!({"ids": ["T-0"], "points": [10]}))
                .tier("gold")
                .seed(42)
                .build(),
            testing::input("opt_in", json!({})).build(),
            testing::input("repair", json!({"note": "ünïcödé ✓", "n": -3}))
                .state(&json!([1, 2, 3]))
                .build(),
        ];
        let mut texts: Vec<String> = inputs
            .iter()
            .map(|input| serde_json::to_string(input).expect("serializable"))
            .collect();
        let mut customer = inputs[0].clone();
        customer.customer.perks = vec![Perk::new("coupon", "WELCOME10")];
        customer
            .customer
            .attributes
            .insert("name".into(), json!("Ada"));
        customer.customer.stats.events.insert("checkout".into(), 3);
        customer.event.label =
            Some("Checkout \u{2713} f\u{f6}r \u{c5}sa, en l\u{e5}ng etikett".into());
        customer.event.source = "import".into();
        texts.push(serde_json::to_string(&customer).expect("serializable"));
        // Pretty-printed: whitespace everywhere the grammar allows it.
        texts.push(serde_json::to_string_pretty(&customer).expect("serializable"));
        texts
    }

    /// The members the host writes a length before: the length's name, the member's path.
    const LENGTHS: [(&str, &[&str]); 3] = [
        (EVENT_DATA_BYTES, &["event", "data"]),
        (STATE_BYTES, &["state"]),
        (CONFIG_BYTES, &["plugin", "config"]),
    ];

    fn member_at<'v>(value: &'v Value, path: &[&str]) -> &'v Value {
        path.iter().fold(value, |value, key| &value[key])
    }

    /// The length of `value`'s JSON text as the host writes it.
    fn text_length(value: &Value) -> usize {
        serde_json::to_string(value).expect("JSON").len()
    }

    /// `text` with the length of each object or array the host passes as text written
    /// before it, as the host writes them, but `wrong` instead of the right length for the
    /// one named `wrong_for`.
    fn with_lengths(text: &str, wrong_for: &str, wrong: usize) -> String {
        let value: Value = serde_json::from_str(text).expect("JSON");
        let mut hinted = text.to_owned();
        for (name, path) in LENGTHS {
            let member = member_at(&value, path);
            if !(member.is_object() || member.is_array()) {
                continue;
            }
            let length = if name == wrong_for {
                wrong
            } else {
                text_length(member)
            };
            let before = format!(r#""{}":"#, path[path.len() - 1]);
            assert_eq!(
                hinted.matches(&before).count(),
                1,
                "one {before} in {hinted}"
            );
            hinted = hinted.replacen(&before, &format!(r#""{name}":{length},{before}"#), 1);
        }
        hinted
    }

    #[test]
    fn agrees_with_serde_json() {
        for text in host_written() {
            assert!(input(&text).is_some(), "the fast reader reads {text}");
            let (reference, ours) = both(&text);
            assert_eq!(ours, reference, "{text}");
        }
    }

    #[test]
    fn texts_of_a_given_length_are_taken_as_they_are_obeyed() {
        for text in host_written()
            .into_iter()
            .filter(|text| !text.contains('\n'))
        {
            let hinted = with_lengths(&text, "", 0);
            assert!(input(&hinted).is_some(), "the fast reader reads {hinted}");
            let (reference, ours) = both(&hinted);
            assert_eq!(ours, reference, "{hinted}");
            assert_eq!(
                ours,
                both(&text).0,
                "the lengths change nothing that is read"
            );
        }
    }

    #[test]
    fn texts_of_a_given_length_are_taken_as_they_are_violated() {
        // A wrong length makes the reader give up, and serde_json, which ignores the member,
        // reads the input as it is. Input 1 has data, state and config.
        let text = &host_written()[1];
        let value: Value = serde_json::from_str(text).expect("JSON");
        for (name, path) in LENGTHS {
            let length = text_length(member_at(&value, path));
            for wrong in [0, 1, length - 1, length + 1, length + 2, 1 << 40] {
                let hinted = with_lengths(text, name, wrong);
                assert!(
                    input(&hinted).is_none(),
                    "{name} {wrong} is refused: {hinted}"
                );
                let (reference, ours) = both(&hinted);
                assert_eq!(ours, reference, "{hinted}");
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_odd_inputs() {
        let base = serde_json::to_string(
            &testing::input("checkout", json!({"total": 1}))
                .state(&json!({"a": 1}))
                .build(),
        )
        .expect("serializable");
        let value: Value = serde_json::from_str(&base).expect("JSON");
        let with = |path: &[&str], replacement: Option<Value>| -> String {
            let mut value = value.clone();
            let (last, parents) = path.split_last().expect("a path");
            let mut object = &mut value;
            for parent in parents {
                object = object.get_mut(*parent).expect("a parent");
            }
            let object = object.as_object_mut().expect("an object");
            match replacement {
                Some(replacement) => object.insert((*last).to_owned(), replacement),
                None => object.remove(*last),
            };
            value.to_string()
        };
        let odd = [
            with(&["abi"], Some(json!(1.0))),
            with(&["abi"], Some(json!("1"))),
            with(&["abi"], None),
            with(&["tenant"], Some(json!("a\nb"))),
            with(&["tenant"], Some(json!(7))),
            with(&["plugin", "version"], Some(json!(-1))),
            with(&["plugin", "version"], Some(json!(4_294_967_296_u64))),
            with(&["plugin", "config"], Some(Value::Null)),
            with(&["event", "timestamp"], Some(json!("yesterday"))),
            with(&["event", "label"], Some(Value::Null)),
            with(&["event", "source"], None),
            with(&["event", "data"], Some(Value::Null)),
            with(&["event", "data"], Some(json!([1, "two"]))),
            with(&["event", "data"], None),
            with(&["customer", "points"], None),
            with(&["customer", "points", "balance"], Some(json!(-12))),
            with(
                &["customer", "points", "balance"],
                Some(json!(9_223_372_036_854_775_808_u64)),
            ),
            with(
                &["customer", "perks"],
                Some(json!([{"kind": "coupon", "id": "X", "extra": 1}])),
            ),
            with(
                &["customer", "stats"],
                Some(json!({"checkout": 2, "first": "2026-01-01"})),
            ),
            with(&["customer", "tier"], Some(json!("s\u{e9}"))),
            with(&["state"], Some(Value::Null)),
            with(&["seed"], None),
            with(&["unknown"], Some(json!({"nested": [1, 2]}))),
            base.replace("\"tenant\"", "\"ten\\u0061nt\""),
            // Raw control characters, which JSON does not allow in a string or a key, 8 or
            // more bytes in (past the word-at-a-time scan's first word) and right at the start.
            base.replace("\"tenant\":\"test\"", "\"tenant\":\"a tenant\twith a tab\""),
            base.replace("\"tenant\":\"test\"", "\"tenant\":\"\u{1}\""),
            base.replace("\"tenant\"", "\"the tenant\u{1f}\""),
            // Long non-ASCII text is plain: bytes of 0x80 and above are not control characters.
            base.replace(
                "\"tenant\":\"test\"",
                "\"tenant\":\"t\u{e9}nant \u{2713} \u{80}\u{7ff}\"",
            ),
            base.replace("\"abi\":1", "\"abi\":1,\"abi\":1"),
            base.replace("\"abi\":1", "\"abi\":01"),
            base.replace("\"abi\":1", "\"abi\":-0"),
            format!("{base} "),
            format!("{base} x"),
            format!("[{base}]"),
            base[..base.len() - 1].to_owned(),
            String::new(),
        ];
        for text in odd {
            let (reference, ours) = both(&text);
            assert_eq!(ours, reference, "{text}");
        }
    }

    #[test]
    fn raw_values_are_left_unchecked_until_read() {
        let text = serde_json::to_string(&testing::input("checkout", json!({"total": 1})).build())
            .expect("serializable")
            .replace(r#"{"total":1}"#, r#"{"total":1,"bad":[1,,2]}"#);
        let input = read_input(&text).expect("the reader does not look inside data");
        assert_eq!(
            input.event.field("total").expect("a field"),
            Some(&json!(1))
        );
        assert!(
            input.event.data_as::<Value>().is_err(),
            "reading all of data checks it"
        );
        assert!(
            serde_json::to_string(&input).is_err(),
            "nothing invalid is written"
        );
    }
}
