//! The attribute's options, `#[actor(name = value, ...)]`, as a typed struct.
//!
//! Each option is validated here so that a mistake is reported at its own token; values that
//! are checked by rustc (actor paths, `retry_when`, `throws`) are kept as syntax for `expand`.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    bracketed, Error, Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, Type, UnOp,
};

use crate::duration::parse_duration;
use crate::suggest::suggest;

/// Every option, in the order the docs list them (and error messages too).
pub(crate) const OPTION_NAMES: &[&str] = &[
    "actor_name",
    "queue_name",
    "priority",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "time_limit",
    "max_age",
    "store_results",
    "result_ttl",
    "notify_shutdown",
    "pipe_ignore",
    "on_success",
    "on_failure",
    "on_retry_exhausted",
    "retry_when",
    "throws",
    "unique_key",
    "unique_ttl",
    "crate",
];

/// The options of one `#[actor(...)]`; `None` where not given.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) actor_name: Option<LitStr>,
    pub(crate) queue_name: Option<LitStr>,
    pub(crate) priority: Option<i32>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) min_backoff: Option<u64>,
    pub(crate) max_backoff: Option<u64>,
    pub(crate) time_limit: Option<u64>,
    pub(crate) max_age: Option<u64>,
    pub(crate) store_results: Option<bool>,
    pub(crate) result_ttl: Option<u64>,
    pub(crate) notify_shutdown: Option<bool>,
    pub(crate) pipe_ignore: Option<bool>,
    pub(crate) on_success: Option<Callback>,
    pub(crate) on_failure: Option<Callback>,
    pub(crate) on_retry_exhausted: Option<Callback>,
    pub(crate) retry_when: Option<Expr>,
    pub(crate) throws: Option<Vec<Type>>,
    pub(crate) unique_key: Option<Expr>,
    pub(crate) unique_ttl: Option<u64>,
    pub(crate) krate: Option<Path>,
}

/// The actor a callback option names.
pub(crate) enum Callback {
    /// By registered name: `on_success = "log_result"`.
    Name(LitStr),
    /// By its `#[actor]` type, which rustc checks: `on_success = log_result`.
    Actor(Path),
}

/// What follows `key =`.
enum Value {
    Expr(Expr),
    /// `[A, b::B]`, only read for `throws` (types are not expressions).
    Types(Punctuated<Type, Token![,]>),
}

impl Args {
    /// Parses the attribute's arguments. Syntax errors stop at once; every invalid option is
    /// reported, and the valid ones are still returned so the expansion can go on.
    pub(crate) fn parse(tokens: TokenStream) -> (Args, Option<Error>) {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let parser = |input: ParseStream<'_>| parse_options(input, &mut args, &mut errors);
        if let Err(err) = parser.parse2(tokens) {
            errors.push(err);
        }
        (args, errors.into_error())
    }
}

fn parse_options(input: ParseStream<'_>, args: &mut Args, errors: &mut Errors) -> syn::Result<()> {
    let mut seen: Vec<String> = Vec::new();
    while !input.is_empty() {
        let key = input.call(Ident::parse_any)?;
        let name = key.unraw().to_string();
        if !OPTION_NAMES.contains(&name.as_str()) {
            errors.push(unknown_option(&key, &name));
            skip_value(input)?;
        } else if seen.contains(&name) {
            errors.push(Error::new(key.span(), format!("duplicate option `{name}`")));
            skip_value(input)?;
        } else {
            seen.push(name.clone());
            if !input.peek(Token![=]) {
                return Err(Error::new(
                    key.span(),
                    format!("expected a value: `{name} = ...`"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value = if name == "throws" && input.peek(syn::token::Bracket) {
                let content;
                bracketed!(content in input);
                Value::Types(content.parse_terminated(Type::parse, Token![,])?)
            } else {
                Value::Expr(input.parse()?)
            };
            if let Err(err) = args.set(&name, value) {
                errors.push(err);
            }
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

impl Args {
    fn set(&mut self, name: &str, value: Value) -> syn::Result<()> {
        let expr = match value {
            Value::Types(types) => {
                self.throws = Some(types.into_iter().collect());
                return Ok(());
            }
            Value::Expr(expr) => expr,
        };
        match name {
            "actor_name" => {
                let lit = string(&expr, name, "\"add\"")?;
                if lit.value().is_empty() {
                    return Err(Error::new(lit.span(), "`actor_name` cannot be empty"));
                }
                self.actor_name = Some(lit);
            }
            "queue_name" => {
                let lit = string(&expr, name, "\"default\"")?;
                if !is_valid_queue_name(&lit.value()) {
                    return Err(Error::new(
                        lit.span(),
                        format!(
                            "invalid queue name `{}`: use `[a-zA-Z_][a-zA-Z0-9._-]*`, \
                             without a `.DQ` or `.XQ` suffix",
                            lit.value()
                        ),
                    ));
                }
                self.queue_name = Some(lit);
            }
            "priority" => self.priority = Some(integer(&expr, name, "i32")?),
            "max_retries" => self.max_retries = Some(integer(&expr, name, "u32")?),
            "min_backoff" => self.min_backoff = Some(duration(&expr, name)?),
            "max_backoff" => self.max_backoff = Some(duration(&expr, name)?),
            "time_limit" => self.time_limit = Some(duration(&expr, name)?),
            "max_age" => self.max_age = Some(duration(&expr, name)?),
            "result_ttl" => self.result_ttl = Some(duration(&expr, name)?),
            "store_results" => self.store_results = Some(boolean(&expr, name)?),
            "notify_shutdown" => self.notify_shutdown = Some(boolean(&expr, name)?),
            "pipe_ignore" => self.pipe_ignore = Some(boolean(&expr, name)?),
            "on_success" => self.on_success = Some(callback(expr, name)?),
            "on_failure" => self.on_failure = Some(callback(expr, name)?),
            "on_retry_exhausted" => self.on_retry_exhausted = Some(callback(expr, name)?),
            "retry_when" => match expr {
                Expr::Path(_) | Expr::Closure(_) => self.retry_when = Some(expr),
                _ => {
                    return Err(Error::new_spanned(
                        expr,
                        "`retry_when` expects a function `fn(u32, &ActorFailure) -> bool`, \
                         e.g. `retry_when = should_retry`",
                    ))
                }
            },
            "unique_ttl" => self.unique_ttl = Some(duration(&expr, name)?),
            "unique_key" => match expr {
                Expr::Path(_) | Expr::Closure(_) => self.unique_key = Some(expr),
                _ => {
                    return Err(Error::new_spanned(
                        expr,
                        "`unique_key` expects a function taking the actor's arguments by \
                         reference and returning the key (`impl Display`), \
                         e.g. `unique_key = email_key`",
                    ))
                }
            },
            "throws" => {
                return Err(Error::new_spanned(
                    expr,
                    "`throws` expects a list of error types, e.g. `throws = [MyError]`",
                ))
            }
            "crate" => {
                self.krate = Some(match expr {
                    Expr::Path(path) if path.qself.is_none() => path.path,
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(lit), ..
                    }) => lit.parse()?,
                    _ => {
                        return Err(Error::new_spanned(
                            expr,
                            "`crate` expects a path, e.g. `crate = ::actor_runtime`",
                        ))
                    }
                })
            }
            _ => unreachable!("`{name}` is in OPTION_NAMES"),
        }
        Ok(())
    }
}

fn string(expr: &Expr, name: &str, example: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        _ => Err(Error::new_spanned(
            expr,
            format!("`{name}` expects a string, e.g. `{name} = {example}`"),
        )),
    }
}

fn integer<N: TryFrom<i128>>(expr: &Expr, name: &str, ty: &str) -> syn::Result<N> {
    let wrong = || {
        Error::new_spanned(
            expr,
            format!("`{name}` expects an integer (`{ty}`), e.g. `{name} = 3`"),
        )
    };
    let (negative, lit) = match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => (false, lit),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }) => (true, lit),
            _ => return Err(wrong()),
        },
        _ => return Err(wrong()),
    };
    let magnitude: i128 = lit.base10_parse().map_err(|_| wrong())?;
    let value = if negative { -magnitude } else { magnitude };
    N::try_from(value)
        .map_err(|_| Error::new_spanned(expr, format!("`{name}` does not fit in `{ty}`")))
}

fn boolean(expr: &Expr, name: &str) -> syn::Result<bool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Ok(lit.value),
        _ => Err(Error::new_spanned(
            expr,
            format!("`{name}` expects `true` or `false`"),
        )),
    }
}

/// A duration in milliseconds: an integer literal (ms), a string such as `"1h30m"`, or the
/// same unquoted (`30s` lexes as the integer `30` with the suffix `s`, so it must not be
/// read as 30 ms; `1.5s` as a float with a suffix).
fn duration(expr: &Expr, name: &str) -> syn::Result<u64> {
    let invalid = |span: Span, shown: String, why: String| {
        Error::new(
            span,
            format!(
                "invalid duration `{shown}`: {why}; write milliseconds (`1500`) or amounts \
                 with units, such as `\"15s\"`, `\"10m\"`, `\"1h30m\"` or `\"7d\"`"
            ),
        )
    };
    let parse = |text: String, span: Span| {
        parse_duration(&text.replace('_', "")).map_err(|why| invalid(span, text, why))
    };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => {
            const INTEGER_TYPES: &[&str] = &[
                "", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128",
                "isize",
            ];
            if INTEGER_TYPES.contains(&lit.suffix()) {
                lit.base10_parse()
                    .map_err(|_| invalid(lit.span(), lit.to_string(), "too large".to_owned()))
            } else {
                parse(lit.to_string(), lit.span())
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Float(lit),
            ..
        }) if !matches!(lit.suffix(), "" | "f32" | "f64") => parse(lit.to_string(), lit.span()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => parse_duration(&lit.value()).map_err(|why| invalid(lit.span(), lit.value(), why)),
        _ => Err(Error::new_spanned(
            expr,
            format!("`{name}` expects a duration, e.g. `{name} = \"10m\"` or `{name} = 600000`"),
        )),
    }
}

fn callback(expr: Expr, name: &str) -> syn::Result<Callback> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(Callback::Name(lit)),
        Expr::Path(path) if path.qself.is_none() => Ok(Callback::Actor(path.path)),
        _ => Err(Error::new_spanned(
            expr,
            format!(
                "`{name}` expects an actor: its type (`{name} = path::to::actor`) or its name \
                 (`{name} = \"actor\"`)"
            ),
        )),
    }
}

/// Dramatiq's rule for queue names, as the runtime checks them.
fn is_valid_queue_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.ends_with(".DQ")
        && !name.ends_with(".XQ")
}

fn unknown_option(key: &Ident, name: &str) -> Error {
    let message = match suggest(name, OPTION_NAMES) {
        Some(near) => format!("unknown option `{name}`: did you mean `{near}`?"),
        None => {
            let valid: Vec<String> = OPTION_NAMES.iter().map(|o| format!("`{o}`")).collect();
            format!(
                "unknown option `{name}`; the options are {}",
                valid.join(", ")
            )
        }
    };
    Error::new(key.span(), message)
}

/// Skips an unknown or repeated option's value, up to the next top-level comma.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

/// Several errors, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_error(self) -> Option<Error> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_dramatiq() {
        assert!(is_valid_queue_name("default"));
        assert!(is_valid_queue_name("_a.b-c9"));
        assert!(!is_valid_queue_name("9a"));
        assert!(!is_valid_queue_name("a b"));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name("emails.DQ"));
        assert!(!is_valid_queue_name("emails.XQ"));
    }

    #[test]
    fn durations_are_milliseconds_or_amounts_with_units() {
        let (args, error) = Args::parse(quote::quote!(
            min_backoff = 1_500,
            max_backoff = "1h30m",
            time_limit = 30s,
            max_age = 1d12h,
            result_ttl = 250u64,
        ));
        assert!(error.is_none());
        assert_eq!(args.min_backoff, Some(1_500));
        assert_eq!(args.max_backoff, Some(5_400_000));
        assert_eq!(args.time_limit, Some(30_000));
        assert_eq!(args.max_age, Some(129_600_000));
        assert_eq!(args.result_ttl, Some(250));
        let (args, error) = Args::parse(quote::quote!(
            min_backoff = "2500",
            max_backoff = "1h 30min",
            time_limit = 1.5s,
        ));
        assert!(error.is_none());
        assert_eq!(args.min_backoff, Some(2_500));
        assert_eq!(args.max_backoff, Some(5_400_000));
        assert_eq!(args.time_limit, Some(1_500));
    }

    #[test]
    fn an_unknown_unit_is_an_invalid_duration() {
        for tokens in [
            quote::quote!(time_limit = 5x),
            quote::quote!(time_limit = "5 parsecs"),
            quote::quote!(time_limit = "1h30"),
            quote::quote!(time_limit = 500us),
        ] {
            let (args, error) = Args::parse(tokens);
            assert_eq!(args.time_limit, None);
            assert!(error.unwrap().to_string().starts_with("invalid duration"));
        }
    }

    #[test]
    fn invalid_options_are_all_reported_and_valid_ones_kept() {
        let tokens = quote::quote!(
            priority = "high",
            max_retries = 3,
            colour = 1,
            max_retries = 4
        );
        let (args, error) = Args::parse(tokens);
        assert_eq!(args.max_retries, Some(3));
        assert_eq!(args.priority, None);
        let messages: Vec<String> = error.unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[2].contains("duplicate option `max_retries`"));
    }
}
