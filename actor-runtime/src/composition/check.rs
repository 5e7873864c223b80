//! Checking, before anything is enqueued, that each pipeline step can take its arguments.

use serde_json::Value;

use crate::args::ArgError;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::registry::Registry;

/// Each step whose actor is registered here must accept its own arguments plus, unless it
/// ignores it, one more (the previous result). The result's value is unknown until run time,
/// so only its slot is checked here; its type is checked when the step runs (or at compile
/// time with a [`TypedPipeline`](super::TypedPipeline)).
pub(crate) fn check_steps(steps: &[Message]) -> Result<()> {
    let Ok(registry) = Registry::global() else {
        return Ok(());
    };
    for (index, step) in steps.iter().enumerate() {
        // Actors of other processes (Python ones included) cannot be checked here.
        let Some(actor) = registry.get(&step.actor_name) else {
            continue;
        };
        let previous = index.checked_sub(1).map(|i| &steps[i]);
        let receives_result = previous.is_some_and(|prev| !ignores_result(step, prev, registry));
        let mut probe = step.clone();
        if receives_result {
            probe.args.push(Value::Null);
        }
        let failure = match actor.handler(&probe) {
            Ok(_) => continue,
            Err(ArgError::Type { name, .. })
                if receives_result && is_result_slot(actor, step, name) =>
            {
                continue
            }
            Err(ArgError::TooMany { expected, got, .. }) if receives_result => format!(
                "`{}` takes {expected} argument(s) but would get {got}: its {} own plus the \
                 result of `{}`; drop one argument or set `pipe_ignore`",
                step.actor_name,
                got - 1,
                previous.map_or("", |p| p.actor_name.as_str()),
            ),
            Err(err) => err.to_string(),
        };
        return Err(Error::InvalidPipeline {
            step: index,
            actor: step.actor_name.clone(),
            reason: failure,
        });
    }
    Ok(())
}

/// Whether `step` will not receive `previous`'s result (its `pipe_ignore`, or the previous
/// actor's, as the Pipelines middleware decides).
fn ignores_result(step: &Message, previous: &Message, registry: &Registry) -> bool {
    step.options
        .get("pipe_ignore")
        .and_then(Value::as_bool)
        .or_else(|| registry.get(&previous.actor_name)?.options.pipe_ignore)
        .unwrap_or(false)
}

/// Whether parameter `name` is the one the result fills: the step without the result is
/// missing exactly that parameter.
fn is_result_slot(actor: &crate::registry::Registration, step: &Message, name: &str) -> bool {
    matches!(actor.handler(step), Err(ArgError::Missing { name: missing, .. }) if missing == name)
}
