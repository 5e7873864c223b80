//! Matching an extraction against the creditors we know: a small table here, a database in
//! the real system.

use serde::{Deserialize, Serialize};

use super::extract::Extraction;

/// A creditor we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creditor {
    /// Our id for it.
    pub id: &'static str,
    /// Its legal name.
    pub name: &'static str,
    /// Other names it writes under, lower case.
    pub aliases: &'static [&'static str],
    /// How its references begin, upper case.
    pub reference_prefix: &'static str,
}

/// The creditors this example knows.
///
/// ```
/// use actor_examples::creditor_app::creditors::CREDITORS;
///
/// assert!(CREDITORS.iter().any(|c| c.name == "Acme Collections Ltd"));
/// ```
pub const CREDITORS: &[Creditor] = &[
    Creditor {
        id: "cr-001",
        name: "Stadtwerke Berlin GmbH",
        aliases: &["stadtwerke berlin", "swb"],
        reference_prefix: "SWB-",
    },
    Creditor {
        id: "cr-002",
        name: "Telekom Deutschland GmbH",
        aliases: &["telekom deutschland", "deutsche telekom", "telekom"],
        reference_prefix: "TDG",
    },
    Creditor {
        id: "cr-003",
        name: "Acme Collections Ltd",
        aliases: &["acme collections", "acme"],
        reference_prefix: "INV-",
    },
    Creditor {
        id: "cr-004",
        name: "Allianz Versicherungs-AG",
        aliases: &["allianz"],
        reference_prefix: "AZ-",
    },
];

/// The result of matching one email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MatchOutcome {
    /// A known creditor.
    Matched {
        /// Its id.
        creditor_id: String,
        /// Its legal name.
        creditor_name: String,
        /// `high` when the name and the reference agree, `medium` for one of them.
        confidence: String,
        /// The reference from the email.
        reference: Option<String>,
        /// The amount from the email, in cents.
        amount_cents: Option<u64>,
    },
    /// No known creditor fits: a person looks at it.
    Unmatched {
        /// What was extracted, for the person.
        extraction: Extraction,
    },
}

/// Finds the creditor `extraction` names, by name or alias and by reference prefix.
///
/// ```
/// use actor_examples::creditor_app::creditors::{match_creditor, MatchOutcome};
/// use actor_examples::creditor_app::extract::Extraction;
///
/// let extraction = Extraction {
///     creditor: Some("ACME Collections".into()),
///     reference: Some("INV-7781".into()),
///     ..Extraction::default()
/// };
/// let MatchOutcome::Matched { creditor_id, confidence, .. } = match_creditor(&extraction) else {
///     panic!("acme is known");
/// };
/// assert_eq!((creditor_id.as_str(), confidence.as_str()), ("cr-003", "high"));
/// ```
pub fn match_creditor(extraction: &Extraction) -> MatchOutcome {
    let name = extraction.creditor.as_deref().map(normalise);
    let reference = extraction.reference.as_deref().map(str::to_ascii_uppercase);
    let mut best: Option<(&Creditor, u8)> = None;
    for creditor in CREDITORS {
        let by_name = name.as_deref().is_some_and(|name| {
            let legal = normalise(creditor.name);
            name == legal
                || creditor
                    .aliases
                    .iter()
                    .any(|alias| name == *alias || name.starts_with(&format!("{alias} ")))
        });
        let by_reference = reference
            .as_deref()
            .is_some_and(|r| r.starts_with(creditor.reference_prefix));
        let score = u8::from(by_name) + u8::from(by_reference);
        if score > best.map_or(0, |(_, s)| s) {
            best = Some((creditor, score));
        }
    }
    match best {
        Some((creditor, score)) => MatchOutcome::Matched {
            creditor_id: creditor.id.into(),
            creditor_name: creditor.name.into(),
            confidence: if score == 2 { "high" } else { "medium" }.into(),
            reference: extraction.reference.clone(),
            amount_cents: extraction.amount_cents,
        },
        None => MatchOutcome::Unmatched {
            extraction: extraction.clone(),
        },
    }
}

/// Lower case, punctuation to spaces, legal forms dropped: "ACME Collections, Ltd." gives
/// "acme collections".
fn normalise(name: &str) -> String {
    const LEGAL_FORMS: [&str; 7] = ["gmbh", "ltd", "ag", "inc", "llc", "plc", "se"];
    name.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !LEGAL_FORMS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extraction(creditor: Option<&str>, reference: Option<&str>) -> Extraction {
        Extraction {
            creditor: creditor.map(Into::into),
            reference: reference.map(Into::into),
            amount_cents: Some(100),
            currency: None,
        }
    }

    #[test]
    fn name_alone_is_a_medium_match() {
        let outcome = match_creditor(&extraction(Some("Stadtwerke Berlin"), None));
        assert!(
            matches!(outcome, MatchOutcome::Matched { ref creditor_id, ref confidence, .. }
            if creditor_id == "cr-001" && confidence == "medium")
        );
    }

    #[test]
    fn reference_alone_is_a_medium_match() {
        let outcome = match_creditor(&extraction(None, Some("az-99-1")));
        assert!(
            matches!(outcome, MatchOutcome::Matched { ref creditor_id, .. } if creditor_id == "cr-004")
        );
    }

    #[test]
    fn unknown_creditors_go_to_a_person() {
        let outcome = match_creditor(&extraction(Some("Unknown Bank"), Some("X-1")));
        assert!(matches!(outcome, MatchOutcome::Unmatched { .. }));
    }

    #[test]
    fn legal_forms_and_case_do_not_matter() {
        assert_eq!(normalise("ACME Collections, Ltd."), "acme collections");
        assert_eq!(
            normalise("Allianz Versicherungs-AG"),
            "allianz versicherungs"
        );
    }
}
