//! The validated view of the function under `#[actor]`. It keeps the syn nodes, so generated
//! code can carry the user's spans and rustc blames the user's own tokens.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, Item, ItemFn, Pat, PatIdent, PathArguments,
    ReturnType, Type,
};

use crate::args::Errors;

/// A function that can be an actor.
pub(crate) struct ActorFn {
    /// The function as written; it is emitted unchanged.
    pub(crate) item: ItemFn,
    pub(crate) params: Vec<Param>,
    pub(crate) returns: Returns,
}

/// One argument, `name: Type`.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// What the function returns, which decides the actor's `Output` and its handler.
pub(crate) enum Returns {
    /// No return type: the output is `()`.
    Unit,
    /// A plain value: the output is that type.
    Value(Box<Type>),
    /// `Result<T, E>`, `io::Result<T>`, ...: an `Err` is a failure; `ok` is `T` when written.
    Result {
        ok: Option<Box<Type>>,
        full: Box<Type>,
    },
}

impl ActorFn {
    /// Validates the item. On error, returns what to emit in its place (the item itself, so
    /// that its uses still compile) along with every problem found.
    pub(crate) fn parse(item: TokenStream) -> Result<ActorFn, (TokenStream, Error)> {
        let item = match syn::parse2::<Item>(item.clone()) {
            Ok(Item::Fn(item)) => item,
            Ok(other) => return Err((item, not_a_function(Some(&other)))),
            Err(_) => return Err((item, not_a_function(None))),
        };
        let mut errors = Errors::default();
        let sig = &item.sig;
        if let Some(constness) = &sig.constness {
            errors.push(Error::new(
                constness.span,
                "an actor cannot be a `const fn`",
            ));
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.push(Error::new(unsafety.span, "an actor cannot be `unsafe`"));
        }
        if let Some(abi) = &sig.abi {
            errors.push(Error::new_spanned(abi, "an actor cannot be `extern`"));
        }
        if !sig.generics.params.is_empty() {
            errors.push(generic(&sig.generics));
        } else if let Some(where_clause) = &sig.generics.where_clause {
            errors.push(generic(where_clause));
        }
        let mut params = Vec::new();
        for input in &sig.inputs {
            match param(input) {
                Ok(param) => params.push(param),
                Err(error) => errors.push(error),
            }
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(Error::new_spanned(variadic, "an actor cannot be variadic"));
        }
        let returns = returns(&sig.output).unwrap_or_else(|error| {
            errors.push(error);
            Returns::Unit
        });
        match errors.into_error() {
            None => Ok(ActorFn {
                item,
                params,
                returns,
            }),
            Some(error) => {
                let mut item = item;
                // A variadic free fn is a rustc error of its own: drop it so only ours shows.
                if item.sig.variadic.take().is_some() && item.sig.inputs.trailing_punct() {
                    item.sig.inputs.pop_punct();
                }
                Err((item.into_token_stream(), error))
            }
        }
    }

    /// The function's name, which is also the actor type's.
    pub(crate) fn ident(&self) -> &Ident {
        &self.item.sig.ident
    }

    /// The default registered name: the function's name without `r#`.
    pub(crate) fn name(&self) -> String {
        self.ident().unraw().to_string()
    }

    pub(crate) fn is_async(&self) -> bool {
        self.item.sig.asyncness.is_some()
    }

    /// `#[cfg]`s, repeated on every generated item so they come and go with the function.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.item.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// The function's docs, repeated on its actor type.
    pub(crate) fn docs(&self) -> impl Iterator<Item = &Attribute> {
        self.item.attrs.iter().filter(|a| a.path().is_ident("doc"))
    }
}

fn not_a_function(item: Option<&Item>) -> Error {
    fn named(kind: &str, keyword: impl ToTokens, ident: impl ToTokens) -> Error {
        Error::new_spanned(
            quote!(#keyword #ident),
            format!("`#[actor]` applies to functions (`async fn` or `fn`), not to {kind}"),
        )
    }
    match item {
        Some(Item::Struct(i)) => named("a struct", i.struct_token, &i.ident),
        Some(Item::Enum(i)) => named("an enum", i.enum_token, &i.ident),
        Some(Item::Union(i)) => named("a union", i.union_token, &i.ident),
        Some(Item::Trait(i)) => named("a trait", i.trait_token, &i.ident),
        Some(Item::Type(i)) => named("a type alias", i.type_token, &i.ident),
        Some(Item::Const(i)) => named("a constant", i.const_token, &i.ident),
        Some(Item::Static(i)) => named("a static", i.static_token, &i.ident),
        Some(Item::Mod(i)) => named("a module", i.mod_token, &i.ident),
        Some(Item::Impl(i)) => named("an impl block", i.impl_token, &i.self_ty),
        _ => Error::new(
            Span::call_site(),
            "`#[actor]` applies to functions (`async fn` or `fn`)",
        ),
    }
}

fn generic(tokens: &impl ToTokens) -> Error {
    Error::new_spanned(
        tokens,
        "an actor cannot be generic: its messages must name one concrete function",
    )
}

fn param(input: &FnArg) -> syn::Result<Param> {
    let typed = match input {
        FnArg::Receiver(receiver) => {
            return Err(Error::new_spanned(
                receiver,
                "an actor cannot take `self`: declare it as a free function",
            ))
        }
        FnArg::Typed(typed) => typed,
    };
    let ident = match &*typed.pat {
        Pat::Ident(PatIdent {
            by_ref: None,
            subpat: None,
            ident,
            ..
        }) => ident.clone(),
        pat => {
            return Err(Error::new_spanned(
                pat,
                "actor arguments must be plain names (`x: T`), not patterns: \
                 messages pass them by name",
            ))
        }
    };
    match &*typed.ty {
        Type::Reference(reference) => {
            let owned = match &*reference.elem {
                Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
                Type::Slice(slice) => format!("Vec<{}>", type_text(&slice.elem)),
                elem => type_text(elem),
            };
            Err(Error::new_spanned(
                reference,
                format!(
                    "an actor argument must be owned, as it is decoded from the message: \
                     take `{owned}` instead of `{}`",
                    type_text(&typed.ty)
                ),
            ))
        }
        Type::ImplTrait(impl_trait) => Err(Error::new_spanned(
            impl_trait,
            "an actor cannot take `impl Trait`: name a concrete type",
        )),
        ty => Ok(Param {
            ident,
            ty: ty.clone(),
        }),
    }
}

/// A type as the user would write it (`Vec<u8>`, not `Vec < u8 >`).
fn type_text(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
    ]
    .iter()
    .fold(text, |text, (from, to)| text.replace(from, to))
}

fn returns(output: &ReturnType) -> syn::Result<Returns> {
    let ty = match output {
        ReturnType::Default => return Ok(Returns::Unit),
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Type::ImplTrait(impl_trait) = ty {
        return Err(Error::new_spanned(
            impl_trait,
            "an actor cannot return `impl Trait`: name a concrete type",
        ));
    }
    let last = match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    };
    match last {
        Some(segment) if segment.ident == "Result" => {
            let ok = match &segment.arguments {
                PathArguments::AngleBracketed(args) => match args.args.first() {
                    Some(GenericArgument::Type(ok)) => Some(Box::new(ok.clone())),
                    _ => None,
                },
                _ => None,
            };
            Ok(Returns::Result {
                ok,
                full: Box::new(ty.clone()),
            })
        }
        _ => Ok(Returns::Value(Box::new(ty.clone()))),
    }
}
