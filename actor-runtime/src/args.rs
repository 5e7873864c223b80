//! Reading an actor's arguments from a message's `args` and `kwargs`, as Dramatiq passes them.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::message::Message;

/// A message's arguments do not fit the actor's parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgError {
    /// More positional arguments than parameters.
    #[error("`{actor}` takes {expected} argument(s) but the message has {got} positional")]
    TooMany {
        /// The actor.
        actor: &'static str,
        /// Its parameter count.
        expected: usize,
        /// Positional arguments in the message.
        got: usize,
    },
    /// A keyword names no parameter.
    #[error("`{actor}` has no parameter `{name}`")]
    UnknownKeyword {
        /// The actor.
        actor: &'static str,
        /// The keyword.
        name: String,
    },
    /// A parameter is given both by position and by keyword.
    #[error("`{actor}` got parameter `{name}` both by position and by keyword")]
    Duplicate {
        /// The actor.
        actor: &'static str,
        /// The parameter.
        name: &'static str,
    },
    /// A required parameter is missing.
    #[error("`{actor}` is missing argument `{name}`")]
    Missing {
        /// The actor.
        actor: &'static str,
        /// The parameter.
        name: &'static str,
    },
    /// An argument has the wrong type.
    #[error("argument `{name}` of `{actor}` has the wrong type: {error}")]
    Type {
        /// The actor.
        actor: &'static str,
        /// The parameter.
        name: &'static str,
        /// What serde said.
        error: String,
    },
}

/// Hands an actor its parameters, by position or by name.
#[derive(Debug)]
pub struct ArgReader<'a> {
    message: &'a Message,
    actor: &'static str,
}

impl<'a> ArgReader<'a> {
    /// Checks the message's arguments against the parameter names.
    pub fn new(
        message: &'a Message,
        actor: &'static str,
        params: &'static [&'static str],
    ) -> Result<Self, ArgError> {
        if message.args.len() > params.len() {
            return Err(ArgError::TooMany {
                actor,
                expected: params.len(),
                got: message.args.len(),
            });
        }
        for name in message.kwargs.keys() {
            match params.iter().position(|p| p == name) {
                None => {
                    return Err(ArgError::UnknownKeyword {
                        actor,
                        name: name.clone(),
                    })
                }
                Some(i) if i < message.args.len() => {
                    return Err(ArgError::Duplicate {
                        actor,
                        name: params[i],
                    })
                }
                Some(_) => {}
            }
        }
        Ok(ArgReader { message, actor })
    }

    /// Parameter `index` named `name`: positional if given so, else by keyword; a missing
    /// argument is accepted when `T` reads `null` (an `Option`).
    pub fn take<T: DeserializeOwned>(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<T, ArgError> {
        let value = self
            .message
            .args
            .get(index)
            .or_else(|| self.message.kwargs.get(name));
        let actor = self.actor;
        match value {
            Some(value) => T::deserialize(value).map_err(|err| ArgError::Type {
                actor,
                name,
                error: err.to_string(),
            }),
            None => T::deserialize(&Value::Null).map_err(|_| ArgError::Missing { actor, name }),
        }
    }
}

/// Encodes one argument for the message's `args` array.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(args: Value, kwargs: Value) -> Message {
        let mut m = Message::new("q", "f", serde_json::from_value(args).unwrap());
        m.kwargs = serde_json::from_value(kwargs).unwrap();
        m
    }

    const PARAMS: &[&str] = &["x", "y", "z"];

    #[test]
    fn reads_positional_and_keyword_and_optional() {
        let m = msg(json!([1]), json!({"y": "two"}));
        let r = ArgReader::new(&m, "f", PARAMS).unwrap();
        assert_eq!(r.take::<i32>(0, "x"), Ok(1));
        assert_eq!(r.take::<String>(1, "y"), Ok("two".into()));
        assert_eq!(r.take::<Option<u8>>(2, "z"), Ok(None));
    }

    #[test]
    fn reports_each_mismatch() {
        let m = msg(json!([1, 2, 3, 4]), json!({}));
        assert!(matches!(
            ArgReader::new(&m, "f", PARAMS),
            Err(ArgError::TooMany { got: 4, .. })
        ));
        let m = msg(json!([]), json!({"w": 1}));
        assert!(matches!(
            ArgReader::new(&m, "f", PARAMS),
            Err(ArgError::UnknownKeyword { .. })
        ));
        let m = msg(json!([1]), json!({"x": 1}));
        assert!(matches!(
            ArgReader::new(&m, "f", PARAMS),
            Err(ArgError::Duplicate { name: "x", .. })
        ));
        let m = msg(json!([]), json!({}));
        let r = ArgReader::new(&m, "f", PARAMS).unwrap();
        assert_eq!(
            r.take::<i32>(0, "x"),
            Err(ArgError::Missing {
                actor: "f",
                name: "x"
            })
        );
        let m = msg(json!(["nope"]), json!({}));
        let r = ArgReader::new(&m, "f", PARAMS).unwrap();
        assert!(matches!(
            r.take::<i32>(0, "x"),
            Err(ArgError::Type { name: "x", .. })
        ));
    }
}
