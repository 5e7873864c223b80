//! How an actor's failure is recorded: the error's type name and text, as Dramatiq records
//! an exception.

use std::fmt::{self, Display};

/// How an actor failed: the error's type and text, as Dramatiq records an exception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorFailure {
    /// Full Rust type name of the error (`std::any::type_name`), or `panic`/`TimeLimitExceeded`.
    pub type_name: String,
    /// The error's `Display` text.
    pub message: String,
}

impl ActorFailure {
    /// A failure of the given type with a message.
    pub fn new(type_name: impl Into<String>, message: impl Into<String>) -> Self {
        ActorFailure {
            type_name: type_name.into(),
            message: message.into(),
        }
    }

    /// The last path segment of the type name (`std::io::Error` -> `Error`), as Python
    /// reports an exception class name.
    pub fn short_type_name(&self) -> &str {
        let base = self.type_name.split('<').next().unwrap_or(&self.type_name);
        base.rsplit("::").next().unwrap_or(base)
    }
}

impl Display for ActorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.short_type_name(), self.message)
    }
}
