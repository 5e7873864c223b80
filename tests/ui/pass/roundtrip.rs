// A message built by `add::message` finds `add` in the registry, whose handler decodes the
// arguments (by position or by keyword) and runs the function.
use std::sync::Arc;

use actor_runtime::{actor, Broker};
use actor_runtime::__private::ArgError;
use actor_runtime::__private::Handler;
use actor_runtime::registry::Registry;

#[actor(queue_name = "math")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[actor]
fn divide(x: i32, y: i32) -> Result<i32, String> {
    x.checked_div(y).ok_or_else(|| format!("cannot divide {x} by {y}"))
}

#[actor]
async fn greet(name: String, title: Option<String>) -> String {
    match title {
        Some(title) => format!("hello {title} {name}"),
        None => format!("hello {name}"),
    }
}

fn run(handler: Handler) -> Result<actor_runtime::__private::Value, String> {
    let result = match handler {
        Handler::Async(future) => tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future),
        Handler::Blocking(call) => call(),
    };
    result.map_err(|failure| failure.to_string())
}

#[tokio::main]
async fn main() {
    let registry = Registry::global().expect("no duplicate actor names");

    let message = add::message(1, 2).build().unwrap();
    assert_eq!(message.actor_name, "add");
    assert_eq!(message.queue_name, "math");
    assert_eq!(message.args, [1, 2]);
    let add_actor = registry.get("add").expect("add is registered");
    assert_eq!(add_actor.queue, "math");
    assert!(add_actor.rust_path.ends_with("::add"), "{}", add_actor.rust_path);
    let handler = add_actor.handler(&message).unwrap();
    assert!(matches!(handler, Handler::Async(_)));
    assert_eq!(std::thread::spawn(move || run(handler)).join().unwrap(), Ok(3.into()));

    let divide_actor = registry.get("divide").unwrap();
    let handler = divide_actor.handler(&divide::message(7, 2).build().unwrap()).unwrap();
    assert!(matches!(handler, Handler::Blocking(_)));
    assert_eq!(run(handler), Ok(3.into()));
    let handler = divide_actor.handler(&divide::message(1, 0).build().unwrap()).unwrap();
    assert_eq!(run(handler), Err("String: cannot divide 1 by 0".to_owned()));

    // Keyword arguments, and an `Option` left out.
    let mut message = greet::message("Ada".into(), None).build().unwrap();
    message.args.clear();
    message.kwargs.insert("name".into(), "Grace".into());
    let handler = registry.get("greet").unwrap().handler(&message).unwrap();
    assert_eq!(std::thread::spawn(move || run(handler)).join().unwrap(), Ok("hello Grace".into()));

    // Arguments that do not fit the parameters.
    let mut message = add::message(1, 2).build().unwrap();
    message.args[1] = "two".into();
    let error = add_actor.handler(&message).unwrap_err();
    assert!(matches!(error, ArgError::Type { name: "y", .. }), "{error}");

    // `send` enqueues on the broker.
    let broker = Broker::stub();
    let sent = add::message(4, 5).broker(broker.clone()).send().await.unwrap();
    assert_eq!(sent.args, [4, 5]);
    actor_runtime::set_broker(broker);
    let sent = add::send(6, 7).await.unwrap();
    assert_eq!(sent.queue_name, "math");
}
