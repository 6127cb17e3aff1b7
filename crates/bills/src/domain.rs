//! Bills and payments as values: the import row, the payment form and every rule about them.
//! No AWS here.

use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The header of a bills file.
pub const HEADER: [&str; 4] = ["InvoiceID", "CustomerName", "Balance", "IsProcessed"];
/// The largest balance accepted (a bill, not a national debt).
pub const MAX_BALANCE: i64 = 1_000_000_000;
/// The longest customer name kept.
pub const MAX_NAME_CHARS: usize = 200;
/// `WaitSeconds` bounds.
pub const MAX_WAIT_SECONDS: i64 = 300;

/// An invoice number: a whole number from 1 to 10^18 - 1 (DynamoDB `N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvoiceId(pub u64);

impl InvoiceId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("InvoiceID is missing".into());
        }
        if t.len() > 18 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "InvoiceID {:?} is not a whole number of at most 18 digits",
                shorten(t)
            ));
        }
        match t.parse::<u64>() {
            Ok(0) => Err("InvoiceID must be at least 1".into()),
            Ok(n) => Ok(InvoiceId(n)),
            Err(_) => Err(format!("InvoiceID {:?} is not a whole number", shorten(t))),
        }
    }
}

impl std::fmt::Display for InvoiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// An amount of money: at most two decimals, 0 to [`MAX_BALANCE`].
pub fn parse_amount(field: &str, text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let value = Decimal::from_str(t)
        .ok()
        .filter(|_| !t.contains(['e', 'E']) && !t.starts_with('+'))
        .ok_or_else(|| format!("{field} {:?} is not an amount", shorten(t)))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{field} {t} is negative"));
    }
    if value.normalize().scale() > 2 {
        return Err(format!("{field} {t} has more than two decimals"));
    }
    if value > Decimal::from(MAX_BALANCE) {
        return Err(format!("{field} {t} is over {MAX_BALANCE}"));
    }
    Ok(value.normalize())
}

/// A bill as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    pub invoice: InvoiceId,
    pub customer_name: String,
    /// The stored number's text (DynamoDB `N`), e.g. `512.5`.
    pub balance: Decimal,
    pub processed: bool,
    pub paid_at: Option<String>,
    pub payment_ref: Option<String>,
}

/// One valid row of a bills file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRow {
    pub invoice: InvoiceId,
    pub customer_name: String,
    pub balance: Decimal,
    pub processed: bool,
}

/// True when the row is the header (names compared without case and surrounding spaces).
pub fn is_header(fields: &[String]) -> bool {
    fields.len() == HEADER.len()
        && fields
            .iter()
            .zip(HEADER)
            .all(|(f, h)| f.trim().eq_ignore_ascii_case(h))
}

/// Validates one data row; the error is the report's reason.
pub fn parse_row(fields: &[String]) -> Result<BillRow, String> {
    if fields.len() != HEADER.len() {
        return Err(format!(
            "expected 4 fields ({}), found {}",
            HEADER.join(","),
            fields.len()
        ));
    }
    let invoice = InvoiceId::parse(&fields[0])?;
    let name = fields[1].trim();
    if name.is_empty() {
        return Err("CustomerName is empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "CustomerName is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("CustomerName contains control characters".into());
    }
    let balance = parse_amount("Balance", &fields[2])?;
    let processed = match fields[3].trim() {
        "0" => false,
        "1" => true,
        other => return Err(format!("IsProcessed {:?} is not 0 or 1", shorten(other))),
    };
    Ok(BillRow {
        invoice,
        customer_name: name.to_string(),
        balance,
        processed,
    })
}

// ------------------------------------------------------------------------------ payments

/// One problem with a payment request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

fn problem(field: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        field,
        message: message.into(),
    }
}

/// How the customer wants to hear about the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    Email,
    Text,
    Both,
}

impl Alert {
    pub fn as_str(self) -> &'static str {
        match self {
            Alert::Email => "email",
            Alert::Text => "text",
            Alert::Both => "both",
        }
    }
    fn wants_email(self) -> bool {
        matches!(self, Alert::Email | Alert::Both)
    }
    fn wants_text(self) -> bool {
        matches!(self, Alert::Text | Alert::Both)
    }
}

/// The payment form's fields, as text (JSON strings or numbers, or a form-encoded body).
#[derive(Clone, Debug, Default)]
pub struct PaymentForm {
    fields: Map<String, Value>,
}

impl PaymentForm {
    pub fn new(fields: Map<String, Value>) -> Self {
        PaymentForm { fields }
    }

    /// A field as text: a string, or a number's text; `None` when absent, null or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The invoice the form names, if it names one validly (to look the bill up).
    pub fn invoice(&self) -> Option<InvoiceId> {
        InvoiceId::parse(&self.text("InvoiceID")?).ok()
    }

    /// The last four digits of the card number, if it has at least four digits.
    pub fn card_last4(&self) -> Option<String> {
        let digits: String = self
            .text("CardNumber")?
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        (digits.len() >= 4).then(|| digits[digits.len() - 4..].to_string())
    }

    /// The form as it may be logged or stored: the card number as its last four digits, no CVV.
    pub fn redacted(&self) -> Value {
        let mut fields = self.fields.clone();
        if fields.contains_key("CardNumber") {
            let last4 = self.card_last4().unwrap_or_default();
            fields.insert("CardNumber".into(), Value::String(format!("****{last4}")));
        }
        for secret in ["CVV", "Cvv", "cvv", "CVC", "SecurityCode"] {
            fields.remove(secret);
        }
        callback_core::redact_value(&Value::Object(fields))
    }
}

/// A payment that passed every check: what the workflow gets (no card number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub invoice: InvoiceId,
    pub amount: Decimal,
    pub customer_name: String,
    pub card_last4: String,
    pub alert: Alert,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub wait_seconds: i64,
    pub payment_ref: String,
}

impl Payment {
    /// The execution name: the invoice and the payment reference, so a double submit of the
    /// same payment names the same execution and starts nothing new (at most 80 characters).
    pub fn execution_name(&self) -> String {
        format!("bill-{}-{}", self.invoice, self.payment_ref)
    }

    /// The state machine's input (statemachines/bill-payment.asl.json).
    pub fn execution_input(&self, error_ttl: i64) -> Value {
        serde_json::json!({
            "InvoiceID": self.invoice.to_string(),
            "Amount": self.amount.to_string(),
            "PaymentRef": self.payment_ref,
            "CardLast4": self.card_last4,
            "CustomerName": self.customer_name,
            "Choices": self.alert.as_str(),
            "EmailId": self.email.clone().unwrap_or_default(),
            "PhnNumber": self.phone.clone().unwrap_or_default(),
            "WaitSeconds": self.wait_seconds,
            "ErrorTtl": error_ttl.to_string(),
        })
    }
}

/// Luhn check of a card number's digits.
pub fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// An expiry date `MM/YY`, `MM/YYYY`, `MM-YY` or `YYYY-MM`: (year, month).
pub fn parse_expiry(text: &str) -> Option<(i32, u32)> {
    let t = text.trim();
    let (a, b) = t.split_once(['/', '-'])?;
    let (year, month) = if a.len() == 4 { (a, b) } else { (b, a) };
    if !(1..=2).contains(&month.len()) || ![2, 4].contains(&year.len()) {
        return None;
    }
    let month: u32 = month.parse().ok()?;
    let mut year: i32 = year.parse().ok()?;
    if year < 100 {
        year += 2000;
    }
    (1..=12).contains(&month).then_some((year, month))
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        && !domain.contains('@')
}

/// A phone number for SMS in E.164 (`+` and 8 to 15 digits); spaces and dashes are dropped.
pub fn normalise_phone(s: &str) -> Option<String> {
    let compact: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    ((8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(compact)
}

fn valid_ref(s: &str) -> bool {
    (8..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a payment form against the bill it names (`None`: no such bill) and today's date.
/// Every problem is reported, not only the first.
pub fn validate_payment(
    form: &PaymentForm,
    bill: Option<&Bill>,
    today: NaiveDate,
) -> Result<Payment, Vec<Problem>> {
    let mut problems = Vec::new();

    let invoice = match form.text("InvoiceID").map(|t| InvoiceId::parse(&t)) {
        None => {
            problems.push(problem("InvoiceID", "InvoiceID is missing"));
            None
        }
        Some(Err(e)) => {
            problems.push(problem("InvoiceID", e));
            None
        }
        Some(Ok(id)) => Some(id),
    };
    if let Some(id) = invoice {
        match bill {
            None => problems.push(problem("InvoiceID", format!("unknown invoice {id}"))),
            Some(b) if b.processed => problems.push(problem(
                "InvoiceID",
                format!("invoice {id} is already paid"),
            )),
            Some(_) => {}
        }
    }

    let amount = match form
        .text("BillingAmount")
        .map(|t| parse_amount("BillingAmount", &t))
    {
        None => {
            problems.push(problem("BillingAmount", "BillingAmount is missing"));
            None
        }
        Some(Err(e)) => {
            problems.push(problem("BillingAmount", e));
            None
        }
        Some(Ok(a)) => Some(a),
    };
    if let (Some(a), Some(b)) = (amount, bill) {
        if !b.processed && a != b.balance {
            problems.push(problem(
                "BillingAmount",
                format!("BillingAmount {a} is not the balance due ({})", b.balance),
            ));
        }
    }

    let card = form.text("CardNumber").unwrap_or_default();
    let digits: String = card.chars().filter(|c| *c != ' ' && *c != '-').collect();
    let mut last4 = String::new();
    if digits.is_empty() {
        problems.push(problem("CardNumber", "CardNumber is missing"));
    } else if !digits.bytes().all(|b| b.is_ascii_digit()) || !(12..=19).contains(&digits.len()) {
        problems.push(problem("CardNumber", "CardNumber must be 12 to 19 digits"));
    } else if !luhn_ok(&digits) {
        problems.push(problem(
            "CardNumber",
            "CardNumber is not a valid card number (Luhn check failed)",
        ));
    } else {
        last4 = digits[digits.len() - 4..].to_string();
    }

    match form.text("ExpiryDate").map(|t| parse_expiry(&t)) {
        None => problems.push(problem("ExpiryDate", "ExpiryDate is missing")),
        Some(None) => problems.push(problem(
            "ExpiryDate",
            "ExpiryDate must be MM/YY, MM/YYYY or YYYY-MM",
        )),
        Some(Some((year, month))) => {
            if (year, month) < (today.year(), today.month()) {
                problems.push(problem(
                    "ExpiryDate",
                    format!("the card expired in {month:02}/{year}"),
                ));
            }
        }
    }

    let alert = match form
        .text("Choices")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("email") => Some(Alert::Email),
        Some("text") => Some(Alert::Text),
        Some("both") => Some(Alert::Both),
        _ => {
            problems.push(problem("Choices", "Choices must be email, text or both"));
            None
        }
    };
    let email = form.text("EmailId");
    let phone = form.text("PhnNumber");
    let mut phone_ok = None;
    if let Some(alert) = alert {
        if alert.wants_email() {
            match &email {
                None => problems.push(problem(
                    "EmailId",
                    "EmailId is required for an e-mail alert",
                )),
                Some(e) if !valid_email(e) => {
                    problems.push(problem("EmailId", "EmailId is not an e-mail address"))
                }
                Some(_) => {}
            }
        }
        if alert.wants_text() {
            match phone.as_deref().map(|p| (p, normalise_phone(p))) {
                None => problems.push(problem(
                    "PhnNumber",
                    "PhnNumber is required for a text alert",
                )),
                Some((_, None)) => problems.push(problem(
                    "PhnNumber",
                    "PhnNumber must be an international number: + and 8 to 15 digits",
                )),
                Some((_, Some(p))) => phone_ok = Some(p),
            }
        }
    }

    let wait_seconds = match form.text("WaitSeconds") {
        None => Some(0),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if (0..=MAX_WAIT_SECONDS).contains(&n) => Some(n),
            _ => {
                problems.push(problem(
                    "WaitSeconds",
                    format!("WaitSeconds must be a whole number from 0 to {MAX_WAIT_SECONDS}"),
                ));
                None
            }
        },
    };

    let given_ref = form.text("PaymentRef");
    if let Some(r) = &given_ref {
        if !valid_ref(r) {
            problems.push(problem(
                "PaymentRef",
                "PaymentRef must be 8 to 40 letters, digits, - or _",
            ));
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let (invoice, amount, alert, wait_seconds, bill) = (
        invoice.expect("checked"),
        amount.expect("checked"),
        alert.expect("checked"),
        wait_seconds.expect("checked"),
        bill.expect("checked"),
    );
    let email = alert.wants_email().then(|| email.expect("checked"));
    let phone = alert.wants_text().then(|| phone_ok.expect("checked"));
    let payment_ref = given_ref.unwrap_or_else(|| {
        // The same form submitted twice gives the same reference (and execution name).
        let mut h = Sha256::new();
        for part in [
            invoice.to_string(),
            amount.to_string(),
            digits.clone(),
            form.text("ExpiryDate").unwrap_or_default(),
            alert.as_str().to_string(),
            email.clone().unwrap_or_default(),
            phone.clone().unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize()
            .iter()
            .take(10)
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    Ok(Payment {
        invoice,
        amount: bill.balance,
        customer_name: bill.customer_name.clone(),
        card_last4: last4,
        alert,
        email,
        phone,
        wait_seconds,
        payment_ref,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn rows() {
        assert_eq!(
            parse_row(&row("17,Jane Doe,512.50,0")).unwrap(),
            BillRow {
                invoice: InvoiceId(17),
                customer_name: "Jane Doe".into(),
                balance: Decimal::new(5125, 1),
                processed: false
            }
        );
        assert!(parse_row(&row("17, Jane ,0,1")).unwrap().processed);
        let bad = [
            ("abc,Jane,1,0", "InvoiceID \"abc\" is not a whole number"),
            ("0,Jane,1,0", "at least 1"),
            ("-3,Jane,1,0", "not a whole number"),
            ("1.5,Jane,1,0", "not a whole number"),
            ("1234567890123456789,Jane,1,0", "at most 18 digits"),
            ("1,,1,0", "CustomerName is empty"),
            ("1,Jane,abc,0", "Balance \"abc\" is not an amount"),
            ("1,Jane,-5,0", "negative"),
            ("1,Jane,1.005,0", "more than two decimals"),
            ("1,Jane,1e3,0", "not an amount"),
            ("1,Jane,99999999999,0", "is over"),
            ("1,Jane,5,2", "IsProcessed \"2\" is not 0 or 1"),
            ("1,Jane,5", "expected 4 fields"),
            ("1,Jane,5,0,x", "found 5"),
        ];
        for (text, reason) in bad {
            let err = parse_row(&row(text)).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
        let long = format!("1,{},5,0", "x".repeat(MAX_NAME_CHARS + 1));
        assert!(parse_row(&row(&long)).is_err());
        assert!(parse_row(&["1".into(), "a\u{7}b".into(), "1".into(), "0".into()]).is_err());
    }

    #[test]
    fn header() {
        assert!(is_header(&row(
            "InvoiceID,CustomerName,Balance,IsProcessed"
        )));
        assert!(is_header(&row(
            " invoiceid ,customername,BALANCE,isprocessed"
        )));
        assert!(!is_header(&row("1,Jane,5,0")));
    }

    #[test]
    fn luhn_and_expiry() {
        assert!(luhn_ok("4242424242424242"));
        assert!(luhn_ok("5555555555554444"));
        assert!(!luhn_ok("4242424242424241"));
        assert_eq!(parse_expiry("12/29"), Some((2029, 12)));
        assert_eq!(parse_expiry("01/2030"), Some((2030, 1)));
        assert_eq!(parse_expiry("2030-02"), Some((2030, 2)));
        assert_eq!(parse_expiry("13/29"), None);
        assert_eq!(parse_expiry("soon"), None);
        assert_eq!(
            normalise_phone("+66 81-234-5678").as_deref(),
            Some("+66812345678")
        );
        assert_eq!(normalise_phone("0812345678"), None);
    }

    fn bill(processed: bool) -> Bill {
        Bill {
            invoice: InvoiceId(7),
            customer_name: "Jane".into(),
            balance: Decimal::new(5125, 1),
            processed,
            paid_at: None,
            payment_ref: None,
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    fn good() -> Map<String, Value> {
        json!({"InvoiceID": "7", "BillersName": "Jane", "BillingAmount": "512.50", "CardNumber": "4242 4242 4242 4242",
               "ExpiryDate": "12/29", "EmailId": "jane@example.com", "PhnNumber": "+66812345678", "Choices": "both", "WaitSeconds": 10})
            .as_object().unwrap().clone()
    }

    #[test]
    fn a_good_payment_carries_no_card_number() {
        let p = validate_payment(&PaymentForm::new(good()), Some(&bill(false)), today()).unwrap();
        assert_eq!(p.card_last4, "4242");
        assert_eq!(p.alert, Alert::Both);
        assert_eq!(p.wait_seconds, 10);
        let input = p.execution_input(1).to_string();
        assert!(
            !input.contains("4242424242424242") && !input.contains("4242 4242"),
            "{input}"
        );
        assert!(input.contains("\"CardLast4\":\"4242\""));
        assert!(p.execution_name().len() <= 80);
        // the same form twice: the same reference; another card: another one
        let again =
            validate_payment(&PaymentForm::new(good()), Some(&bill(false)), today()).unwrap();
        assert_eq!(p.execution_name(), again.execution_name());
        let mut other = good();
        other.insert("CardNumber".into(), json!("5555555555554444"));
        let other =
            validate_payment(&PaymentForm::new(other), Some(&bill(false)), today()).unwrap();
        assert_ne!(p.payment_ref, other.payment_ref);
        // this month is not expired
        let mut this_month = good();
        this_month.insert("ExpiryDate".into(), json!("11/26"));
        assert!(
            validate_payment(&PaymentForm::new(this_month), Some(&bill(false)), today()).is_ok()
        );
    }

    #[test]
    fn every_problem_at_once() {
        let form =
            json!({"InvoiceID": "7", "BillingAmount": "500", "CardNumber": "4242424242424241",
                          "ExpiryDate": "10/26", "Choices": "both", "WaitSeconds": 301})
            .as_object()
            .unwrap()
            .clone();
        let problems =
            validate_payment(&PaymentForm::new(form), Some(&bill(false)), today()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            vec![
                "BillingAmount",
                "CardNumber",
                "ExpiryDate",
                "EmailId",
                "PhnNumber",
                "WaitSeconds"
            ]
        );
        let text = serde_json::to_string(&problems).unwrap();
        assert!(!text.contains("4242424242424241"));
    }

    #[test]
    fn unknown_and_paid_bills() {
        let p = validate_payment(&PaymentForm::new(good()), None, today()).unwrap_err();
        assert_eq!(p[0].message, "unknown invoice 7");
        let p =
            validate_payment(&PaymentForm::new(good()), Some(&bill(true)), today()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("already paid"));
        let mut f = good();
        f.insert("Choices".into(), json!("email"));
        f.remove("EmailId");
        f.insert("InvoiceID".into(), json!("x"));
        f.insert("PaymentRef".into(), json!("bad ref!"));
        let p = validate_payment(&PaymentForm::new(f), Some(&bill(false)), today()).unwrap_err();
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        assert_eq!(fields, vec!["InvoiceID", "EmailId", "PaymentRef"]);
    }

    #[test]
    fn redacted_form_keeps_last_four_only() {
        let mut f = good();
        f.insert("CVV".into(), json!("123"));
        let r = PaymentForm::new(f).redacted().to_string();
        assert!(r.contains("****4242"));
        assert!(!r.contains("4242 4242") && !r.contains("123\""), "{r}");
    }
}
