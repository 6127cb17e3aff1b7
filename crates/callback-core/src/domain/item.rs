//! DynamoDB items as plain data, encoded the way the original's PynamoDB models encode them:
//! `UnicodeAttribute` -> S, `BooleanAttribute` -> BOOL, `NumberAttribute` -> N (the JSON text of
//! the number), `JSONAttribute` -> S holding JSON text; a nullable attribute with no value is
//! left out. [`Attr`] serialises as DynamoDB JSON (`{"S": "..."}`), the form PynamoDB's
//! `from_raw_data` reads, so items can be compared with the original byte for byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attr {
    S(String),
    N(String),
    #[serde(rename = "BOOL")]
    Bool(bool),
    #[serde(rename = "NULL")]
    Null(bool),
    M(BTreeMap<String, Attr>),
    L(Vec<Attr>),
}

/// One item: attribute name to value.
pub type Item = BTreeMap<String, Attr>;

/// Why an item does not decode into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute {attribute}: {problem}")]
pub struct DecodeError {
    pub attribute: String,
    pub problem: String,
}

impl DecodeError {
    fn new(attribute: &str, problem: impl Into<String>) -> Self {
        DecodeError {
            attribute: attribute.to_string(),
            problem: problem.into(),
        }
    }
}

/// Builds an item attribute by attribute, in PynamoDB's encodings.
#[derive(Default, Debug, Clone)]
pub struct ItemBuilder(Item);

impl ItemBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// `UnicodeAttribute`.
    pub fn unicode(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), Attr::S(value.into()));
        self
    }
    /// Nullable `UnicodeAttribute`: left out when `None`.
    pub fn unicode_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.unicode(name, v),
            None => self,
        }
    }
    /// `BooleanAttribute`.
    pub fn boolean(mut self, name: &str, value: bool) -> Self {
        self.0.insert(name.into(), Attr::Bool(value));
        self
    }
    /// `NumberAttribute`: the number's JSON text (`2339.0`, `100`), as `json.dumps` writes it.
    pub fn number(mut self, name: &str, value: &serde_json::Number) -> Self {
        self.0.insert(name.into(), Attr::N(value.to_string()));
        self
    }
    /// `NumberAttribute` from an integer (epoch seconds for TTL).
    pub fn integer(mut self, name: &str, value: i64) -> Self {
        self.0.insert(name.into(), Attr::N(value.to_string()));
        self
    }
    /// Nullable `JSONAttribute`: the value's JSON text; left out when `None`.
    pub fn json_opt(mut self, name: &str, value: Option<&Value>) -> Self {
        if let Some(v) = value {
            self.0.insert(name.into(), Attr::S(v.to_string()));
        }
        self
    }
    pub fn build(self) -> Item {
        self.0
    }
}

/// Reads attributes back, checking each one's type.
pub struct ItemReader<'a>(pub &'a Item);

impl<'a> ItemReader<'a> {
    pub fn unicode(&self, name: &str) -> Result<&'a str, DecodeError> {
        self.unicode_opt(name)?
            .ok_or_else(|| DecodeError::new(name, "missing"))
    }
    pub fn unicode_opt(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.0.get(name) {
            None | Some(Attr::Null(true)) => Ok(None),
            Some(Attr::S(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(DecodeError::new(
                name,
                format!("expected S, found {}", type_name(other)),
            )),
        }
    }
    pub fn boolean(&self, name: &str) -> Result<bool, DecodeError> {
        match self.0.get(name) {
            Some(Attr::Bool(b)) => Ok(*b),
            None => Err(DecodeError::new(name, "missing")),
            Some(other) => Err(DecodeError::new(
                name,
                format!("expected BOOL, found {}", type_name(other)),
            )),
        }
    }
    pub fn number_opt(&self, name: &str) -> Result<Option<serde_json::Number>, DecodeError> {
        match self.0.get(name) {
            None | Some(Attr::Null(true)) => Ok(None),
            Some(Attr::N(text)) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Number(n)) => Ok(Some(n)),
                _ => Err(DecodeError::new(name, format!("{text:?} is not a number"))),
            },
            Some(other) => Err(DecodeError::new(
                name,
                format!("expected N, found {}", type_name(other)),
            )),
        }
    }
    pub fn json_opt(&self, name: &str) -> Result<Option<Value>, DecodeError> {
        match self.unicode_opt(name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| DecodeError::new(name, format!("not JSON text: {e}"))),
        }
    }
}

fn type_name(attr: &Attr) -> &'static str {
    match attr {
        Attr::S(_) => "S",
        Attr::N(_) => "N",
        Attr::Bool(_) => "BOOL",
        Attr::Null(_) => "NULL",
        Attr::M(_) => "M",
        Attr::L(_) => "L",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_as_dynamodb_json() {
        let item = ItemBuilder::new()
            .unicode("orderId", "482500007436")
            .boolean("success", true)
            .number("amount", &serde_json::Number::from_f64(2339.0).unwrap())
            .json_opt("body", Some(&json!({"a": 1})))
            .unicode_opt("message", None::<String>)
            .build();
        let text = serde_json::to_value(&item).unwrap();
        assert_eq!(
            text,
            json!({
                "orderId": {"S": "482500007436"},
                "success": {"BOOL": true},
                "amount": {"N": "2339.0"},
                "body": {"S": "{\"a\":1}"},
            })
        );
    }

    #[test]
    fn reader_names_the_attribute_at_fault() {
        let item: Item = serde_json::from_value(json!({
            "success": {"S": "true"},
            "amount": {"N": "abc"},
            "body": {"S": "{not json"},
        }))
        .unwrap();
        let r = ItemReader(&item);
        assert_eq!(
            r.boolean("success").unwrap_err().to_string(),
            "attribute success: expected BOOL, found S"
        );
        assert!(r
            .number_opt("amount")
            .unwrap_err()
            .to_string()
            .starts_with("attribute amount"));
        assert!(r.json_opt("body").is_err());
        assert_eq!(
            r.unicode("orderId").unwrap_err().to_string(),
            "attribute orderId: missing"
        );
    }
}
