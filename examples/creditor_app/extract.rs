//! Reading a creditor's name, payment reference and amount out of an email, with simple
//! rules. It stands in for the LLM call of the real system: same input, same output type, so
//! swapping in a provider changes one function.

use serde::{Deserialize, Serialize};

/// What an email says about who wants money, for what, and how much.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    /// The creditor's name as written.
    pub creditor: Option<String>,
    /// A payment or invoice reference.
    pub reference: Option<String>,
    /// The amount due, in cents.
    pub amount_cents: Option<u64>,
    /// `EUR`, `USD` or `GBP`, when written.
    pub currency: Option<String>,
}

/// Extracts what it can from an email; fields it cannot find stay `None`.
///
/// Labelled lines win (`Creditor: ...`, `Reference: ...`, `Amount due: ...`); otherwise a
/// currency next to a number is the amount, a token mixing letters and digits after
/// "reference"/"invoice" is the reference, and the sender's display name is the creditor.
///
/// ```
/// use actor_examples::creditor_app::extract::extract;
///
/// let found = extract(
///     "Stadtwerke Berlin <billing@stadtwerke.example>",
///     "Payment reminder",
///     "Dear customer,\nyour invoice SWB-2024-0042 is overdue.\nAmount due: EUR 1.234,56\n",
/// );
/// assert_eq!(found.creditor.as_deref(), Some("Stadtwerke Berlin"));
/// assert_eq!(found.reference.as_deref(), Some("SWB-2024-0042"));
/// assert_eq!(found.amount_cents, Some(123_456));
/// assert_eq!(found.currency.as_deref(), Some("EUR"));
/// ```
pub fn extract(from: &str, subject: &str, body: &str) -> Extraction {
    let mut found = Extraction::default();
    let text = format!("{subject}\n{body}");
    for line in text.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let label = label.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if found.creditor.is_none()
            && ["creditor", "company", "payee", "creditor name"].contains(&label.as_str())
        {
            found.creditor = Some(value.trim_end_matches('.').to_owned());
        } else if found.reference.is_none()
            && [
                "reference",
                "ref",
                "invoice",
                "invoice no",
                "invoice number",
                "account number",
            ]
            .iter()
            .any(|l| label.ends_with(l))
        {
            found.reference = reference_token(value);
        } else if found.amount_cents.is_none()
            && ["amount", "total", "balance", "amount due", "total due"]
                .iter()
                .any(|l| label.ends_with(l))
        {
            if let Some((cents, currency)) = amount(value) {
                found.amount_cents = Some(cents);
                found.currency = currency;
            }
        }
    }
    if found.reference.is_none() {
        found.reference = after_keyword(&text, &["reference", "invoice", "ref."]);
    }
    if found.amount_cents.is_none() {
        if let Some((cents, currency)) = currency_amount(&text) {
            found.amount_cents = Some(cents);
            found.currency = currency;
        }
    }
    if found.creditor.is_none() {
        found.creditor = display_name(from);
    }
    found
}

/// The first token of `value` that mixes in a digit, as references do.
fn reference_token(value: &str) -> Option<String> {
    value
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(|t| t.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|t| t.len() >= 4 && t.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// A reference token within the few words after one of `keywords`.
fn after_keyword(text: &str, keywords: &[&str]) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    keywords.iter().find_map(|keyword| {
        let start = lower.find(keyword)? + keyword.len();
        let window: String = text[start..]
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        reference_token(&window)
    })
}

const CURRENCIES: [(&str, &str); 6] = [
    ("EUR", "EUR"),
    ("€", "EUR"),
    ("USD", "USD"),
    ("$", "USD"),
    ("GBP", "GBP"),
    ("£", "GBP"),
];

/// An amount (with its currency if written) from a value like `EUR 1.234,56` or `$12.50`.
fn amount(value: &str) -> Option<(u64, Option<String>)> {
    let currency = CURRENCIES
        .iter()
        .find(|(marker, _)| value.contains(marker))
        .map(|(_, code)| (*code).to_owned());
    let number: String = value
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    Some((cents(&number)?, currency))
}

/// The first number written next to a currency anywhere in `text`.
fn currency_amount(text: &str) -> Option<(u64, Option<String>)> {
    for (marker, code) in CURRENCIES {
        for (at, _) in text.match_indices(marker) {
            let after = text[at + marker.len()..].trim_start();
            let before = text[..at].trim_end();
            let number: String = if after.starts_with(|c: char| c.is_ascii_digit()) {
                after
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
                    .collect()
            } else {
                let rev: String = before
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
                    .collect();
                rev.chars().rev().collect()
            };
            if let Some(cents) = cents(&number) {
                return Some((cents, Some(code.to_owned())));
            }
        }
    }
    None
}

/// `1.234,56`, `1,234.56`, `1234`, `12.5` as cents: a separator followed by one or two
/// final digits is the decimal point, any other is a thousands separator.
fn cents(number: &str) -> Option<u64> {
    let number = number.trim_end_matches(['.', ',']);
    if number.is_empty() {
        return None;
    }
    let (whole, fraction) = match number.rfind(['.', ',']) {
        Some(at) if (1..=2).contains(&(number.len() - at - 1)) => {
            (&number[..at], &number[at + 1..])
        }
        _ => (number, ""),
    };
    let whole: String = whole.chars().filter(char::is_ascii_digit).collect();
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<u64>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(fraction)
}

/// `Name <address>` gives `Name`; a bare address gives nothing.
fn display_name(from: &str) -> Option<String> {
    let (name, _) = from.split_once('<')?;
    let name = name.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_lines_win() {
        let found = extract(
            "noreply@collections.example",
            "Final notice",
            "Creditor: Acme Collections Ltd.\nInvoice number: INV-7781\nTotal due: $2,450.00\n",
        );
        assert_eq!(found.creditor.as_deref(), Some("Acme Collections Ltd"));
        assert_eq!(found.reference.as_deref(), Some("INV-7781"));
        assert_eq!(found.amount_cents, Some(245_000));
        assert_eq!(found.currency.as_deref(), Some("USD"));
    }

    #[test]
    fn free_text_falls_back_to_currency_and_keywords() {
        let found = extract(
            "\"Telekom Deutschland\" <rechnung@telekom.example>",
            "Ihre Rechnung",
            "Please pay 89,90 € for reference TDG 55512 by Friday.",
        );
        assert_eq!(found.creditor.as_deref(), Some("Telekom Deutschland"));
        assert_eq!(found.reference.as_deref(), Some("55512"));
        assert_eq!(found.amount_cents, Some(8_990));
        assert_eq!(found.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn nothing_to_find_is_all_none() {
        let found = extract("someone@example.com", "hello", "just saying hi");
        assert_eq!(found, Extraction::default());
    }

    #[test]
    fn amounts_in_both_notations() {
        assert_eq!(cents("1.234,56"), Some(123_456));
        assert_eq!(cents("1,234.56"), Some(123_456));
        assert_eq!(cents("1234"), Some(123_400));
        assert_eq!(cents("12.5"), Some(1_250));
        assert_eq!(cents("1.234"), Some(123_400));
        assert_eq!(cents(""), None);
    }
}
