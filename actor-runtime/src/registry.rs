//! Actor registration: `#[actor]` submits a [`Registration`] through `inventory`; the runtime
//! collects them all into a name -> actor map at startup.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::actor::{Actor, Handler};
use crate::args::ArgError;
use crate::error::Error;
use crate::message::Message;
pub use crate::options::ActorOptions;

/// Decodes a message's arguments and returns the call to run.
#[doc(hidden)]
pub type HandlerFn = fn(&Message) -> Result<Handler, ArgError>;

/// One registered actor, as submitted by `#[actor]`.
#[derive(Debug)]
pub struct Registration {
    /// The actor's registered name.
    pub name: &'static str,
    /// Its queue.
    pub queue: &'static str,
    /// Its `#[actor(...)]` options.
    pub options: ActorOptions,
    /// The Rust path of the function (for logs and duplicate errors).
    pub rust_path: &'static str,
    pub(crate) handler: HandlerFn,
}

impl Registration {
    /// The registration of actor `A`, whose calls `handler` builds.
    #[doc(hidden)]
    pub const fn new<A: Actor>(rust_path: &'static str, handler: HandlerFn) -> Self {
        Registration {
            name: A::NAME,
            queue: A::QUEUE,
            options: A::OPTIONS,
            rust_path,
            handler,
        }
    }

    /// Decodes `message`'s arguments into a call of this actor.
    pub fn handler(&self, message: &Message) -> Result<Handler, ArgError> {
        (self.handler)(message)
    }
}

inventory::collect!(Registration);

/// Every actor linked into this program, by name.
#[derive(Debug)]
pub struct Registry {
    actors: HashMap<&'static str, &'static Registration>,
}

impl Registry {
    /// The actors registered with `#[actor]` anywhere in the program; a name registered twice
    /// is an error.
    ///
    /// ```
    /// # #[actor_runtime::actor] async fn ping() {}
    /// let registry = actor_runtime::registry::Registry::global().unwrap();
    /// assert!(registry.get("ping").is_some());
    /// ```
    pub fn global() -> Result<&'static Registry, Error> {
        static GLOBAL: OnceLock<Result<Registry, (String, &'static str, &'static str)>> =
            OnceLock::new();
        match GLOBAL.get_or_init(|| Registry::build(inventory::iter::<Registration>())) {
            Ok(registry) => Ok(registry),
            Err((name, first, second)) => Err(Error::DuplicateActor {
                name: name.clone(),
                first,
                second,
            }),
        }
    }

    fn build(
        registrations: impl IntoIterator<Item = &'static Registration>,
    ) -> Result<Registry, (String, &'static str, &'static str)> {
        let mut actors: HashMap<&'static str, &'static Registration> = HashMap::new();
        for reg in registrations {
            if let Some(previous) = actors.insert(reg.name, reg) {
                let (first, second) = if previous.rust_path <= reg.rust_path {
                    (previous.rust_path, reg.rust_path)
                } else {
                    (reg.rust_path, previous.rust_path)
                };
                return Err((reg.name.to_owned(), first, second));
            }
        }
        Ok(Registry { actors })
    }

    /// The actor registered under `name`.
    pub fn get(&self, name: &str) -> Option<&'static Registration> {
        self.actors.get(name).copied()
    }

    /// All actors, sorted by name.
    pub fn actors(&self) -> Vec<&'static Registration> {
        let mut all: Vec<_> = self.actors.values().copied().collect();
        all.sort_by_key(|r| r.name);
        all
    }

    /// The queues the registered actors use, sorted and unique.
    pub fn queues(&self) -> Vec<&'static str> {
        let mut queues: Vec<_> = self.actors.values().map(|r| r.queue).collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }

    /// Whether no actor is registered.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(_: &Message) -> Result<Handler, ArgError> {
        Ok(Handler::Blocking(Box::new(|| Ok(serde_json::Value::Null))))
    }

    static A: Registration = Registration {
        name: "same",
        queue: "default",
        options: ActorOptions::DEFAULT,
        rust_path: "app::a::same",
        handler,
    };
    static B: Registration = Registration {
        name: "same",
        queue: "default",
        options: ActorOptions::DEFAULT,
        rust_path: "app::b::same",
        handler,
    };

    #[test]
    fn duplicate_names_are_an_error_naming_both() {
        let err = Registry::build([&A, &B]).unwrap_err();
        assert_eq!(err, ("same".to_owned(), "app::a::same", "app::b::same"));
    }
}
