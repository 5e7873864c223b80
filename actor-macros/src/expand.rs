//! The items generated beside the user's function. Every path goes through the runtime's
//! `__private` module (or `#[actor(crate = ...)]`), so users depend on `actor-runtime` alone.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{parse_quote, Ident, LitStr, Path, Type};

use crate::args::{Args, Callback};
use crate::input::{ActorFn, Returns};

/// `#[actor(args)] item`: the item unchanged, plus the actor around it; on a mistake, the item
/// and the errors, with as much of the actor as is still sound.
pub(crate) fn actor(args: TokenStream, item: TokenStream) -> TokenStream {
    let (args, args_error) = Args::parse(args);
    match ActorFn::parse(item) {
        Ok(function) => {
            let mut tokens = expand(&args, &function);
            if let Some(error) = args_error {
                tokens.extend(error.into_compile_error());
            }
            tokens
        }
        Err((item, fn_error)) => {
            let error = match args_error {
                Some(mut error) => {
                    error.combine(fn_error);
                    error
                }
                None => fn_error,
            };
            let error = error.into_compile_error();
            quote!(#item #error)
        }
    }
}

fn expand(args: &Args, function: &ActorFn) -> TokenStream {
    let krate: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::actor_runtime));
    let private = quote!(#krate::__private);
    let item = &function.item;
    let vis = &item.vis;
    let ident = function.ident();
    let cfgs: Vec<_> = function.cfgs().collect();
    let name = args
        .actor_name
        .clone()
        .unwrap_or_else(|| LitStr::new(&function.name(), ident.span()));
    let queue = args
        .queue_name
        .clone()
        .unwrap_or_else(|| LitStr::new("default", Span::call_site()));

    let idents: Vec<&Ident> = function.params.iter().map(|p| &p.ident).collect();
    let tys: Vec<&Type> = function.params.iter().map(|p| &p.ty).collect();
    let names: Vec<String> = idents
        .iter()
        .map(|i| syn::ext::IdentExt::unraw(*i).to_string())
        .collect();
    let indexes = 0..idents.len();
    let arg_list = names.join(", ");

    let type_doc = format!(
        " The actor `{}` on queue `{}`, which runs `{}()` on a worker: \
         `{ident}::send({arg_list}).await` enqueues a call, `{ident}::message({arg_list})` \
         prepares one to adjust before sending.",
        name.value(),
        queue.value(),
        function.name(),
    );
    let fn_docs: Vec<_> = function.docs().collect();
    let separator = (!fn_docs.is_empty()).then(|| quote!(#[doc = ""]));
    let message_doc = format!(
        " A message calling `{}({arg_list})`, to send after setting per-message options \
         (`delay`, `priority`, `broker`...).",
        function.name()
    );
    let send_doc = format!(
        " Enqueues a call of `{}({arg_list})` on the global broker.",
        function.name()
    );

    // Asserted first in each body that uses the types: rustc then reports the runtime's
    // "cannot travel in a message" at the user's type and drops the weaker errors of the same
    // bounds that follow it (`encode_arg`, `take`).
    let arg_checks: Vec<_> = tys
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> #private::assert_arg::<#ty>();))
        .collect();
    let Handler {
        output,
        output_check,
        call,
    } = handler(function, &private);
    let options = options(args, &private);
    // The key is computed from the arguments by reference, before they are encoded; a
    // function of the wrong signature is a type error at the user's path.
    let (unique_key_let, unique_key_set) = match &args.unique_key {
        Some(key_fn) => (
            Some(quote_spanned! {key_fn.span()=>
                let __actor_unique_key = (#key_fn)(#(&#idents),*);
            }),
            Some(quote!(.default_unique_key(__actor_unique_key))),
        ),
        None => (None, None),
    };
    let rust_path = format!("::{}", function.name());
    let pipe = pipe_step(function, ident, &idents, &tys, vis, &private);

    quote! {
        #item

        #(#cfgs)*
        #(#fn_docs)*
        #separator
        #[doc = #type_doc]
        #[allow(non_camel_case_types)]
        #vis struct #ident {
            __actor_private: (),
        }

        #(#cfgs)*
        #[allow(dead_code)]
        impl #ident {
            #[doc = #message_doc]
            #vis fn message(#(#idents: #tys),*) -> #private::MessageBuilder<#ident> {
                #(#arg_checks)*
                #unique_key_let
                #private::MessageBuilder::new((|| {
                    #private::core::result::Result::Ok(#private::Vec::from([
                        #(#private::encode_arg::<#tys>(&#idents)?),*
                    ]))
                })())
                #unique_key_set
            }

            #[doc = #send_doc]
            #vis async fn send(
                #(#idents: #tys),*
            ) -> #private::core::result::Result<#private::Enqueued<#ident>, #private::Error> {
                Self::message(#(#idents),*).send().await
            }

            #pipe
        }

        #(#cfgs)*
        impl #private::Actor for #ident {
            type Output = #output;
            const NAME: &'static str = #name;
            const QUEUE: &'static str = #queue;
            const OPTIONS: #private::ActorOptions = #options;
        }

        #(#cfgs)*
        const _: () = {
            fn __actor_handler(
                __actor_message: &#private::Message,
            ) -> #private::core::result::Result<#private::Handler, #private::ArgError> {
                #(#arg_checks)*
                #output_check
                let __actor_args = #private::ArgReader::new(
                    __actor_message,
                    <#ident as #private::Actor>::NAME,
                    &[#(#names),*],
                )?;
                #(let #idents: #tys = __actor_args.take::<#tys>(#indexes, #names)?;)*
                #private::core::result::Result::Ok(#call)
            }

            #private::inventory::submit! {
                #private::Registration::new::<#ident>(
                    #private::core::concat!(#private::core::module_path!(), #rust_path),
                    __actor_handler,
                )
            }
        };
    }
}

/// How the decoded call runs.
struct Handler {
    /// The actor's `Output`.
    output: TokenStream,
    /// Asserts the output is `Serialize`, at the return type.
    output_check: Option<TokenStream>,
    /// The decoded call, as a runtime `Handler`.
    call: TokenStream,
}

fn handler(function: &ActorFn, private: &TokenStream) -> Handler {
    // The handler constructor takes the return type by turbofish, so its bounds fail at the
    // return type, where `assert_output` fails first: rustc then keeps only the latter's error.
    let (output, returned, constructor) = match &function.returns {
        Returns::Unit => (quote!(()), None, "handler_ok"),
        Returns::Value(ty) => (ty.to_token_stream(), Some(ty), "handler_ok"),
        Returns::Result { ok, full } => {
            let output = match ok {
                Some(ok) => ok.to_token_stream(),
                None => quote!(<#full as #private::IntoActorResult>::Ok),
            };
            (output, Some(full), "handler")
        }
    };
    let output_check = returned.map(|ty| {
        let checked = match &function.returns {
            // `<R as IntoActorResult>::Ok`, spanned over all of `R`.
            Returns::Result { full, .. } => {
                let (first, last) = span_range(full);
                let open = quote_spanned!(first=> <);
                let ok = quote_spanned!(last=> as #private::IntoActorResult>::Ok);
                quote!(#open #full #ok)
            }
            _ => ty.to_token_stream(),
        };
        quote_spanned!(ty.span()=> #private::assert_output::<#checked>();)
    });
    let returned = match returned {
        Some(ty) => ty.to_token_stream(),
        None => quote!(()),
    };
    let ident = function.ident();
    let idents = function.params.iter().map(|p| &p.ident);
    let call = quote_spanned!(ident.span()=> #ident(#(#idents),*));
    let call = if function.is_async() {
        let constructor = Ident::new(&format!("async_{constructor}"), ident.span());
        quote_spanned! {ident.span()=>
            #private::#constructor::<#returned, _>(#private::assert_send(#call))
        }
    } else {
        let constructor = Ident::new(&format!("blocking_{constructor}"), ident.span());
        // Without arguments, the fn itself: `move || f()` is clippy's `redundant_closure`,
        // reported on the user's own name.
        let call = if function.params.is_empty() {
            ident.to_token_stream()
        } else {
            quote_spanned!(ident.span()=> move || #call)
        };
        quote_spanned!(ident.span()=> #private::#constructor::<#returned, _>(#call))
    };
    Handler {
        output,
        output_check,
        call,
    }
}

/// The spans of the first and last tokens of `tokens`, to span a wrapper over all of them.
fn span_range(tokens: &impl ToTokens) -> (Span, Span) {
    let mut spans = tokens.to_token_stream().into_iter().map(|tt| tt.span());
    let first = spans.next().unwrap_or_else(Span::call_site);
    (first, spans.last().unwrap_or(first))
}

/// `ActorOptions { set fields, ..ActorOptions::DEFAULT }`.
fn options(args: &Args, private: &TokenStream) -> TokenStream {
    let some = |value: TokenStream| quote!(#private::core::option::Option::Some(#value));
    let mut fields = Vec::new();
    if let Some(priority) = args.priority {
        fields.push(quote!(priority: #priority));
    }
    if let Some(max_retries) = args.max_retries {
        fields.push(quote!(max_retries: #private::core::option::Option::Some(#max_retries)));
    }
    let durations = [
        ("min_backoff", args.min_backoff),
        ("max_backoff", args.max_backoff),
        ("time_limit", args.time_limit),
        ("max_age", args.max_age),
        ("result_ttl", args.result_ttl),
        ("unique_ttl", args.unique_ttl),
    ];
    for (field, ms) in durations {
        if let Some(ms) = ms {
            let field = Ident::new(field, Span::call_site());
            let value = some(quote!(#ms));
            fields.push(quote!(#field: #value));
        }
    }
    let flags = [
        ("store_results", args.store_results),
        ("notify_shutdown", args.notify_shutdown),
        ("pipe_ignore", args.pipe_ignore),
    ];
    for (field, flag) in flags {
        if let Some(flag) = flag {
            let field = Ident::new(field, Span::call_site());
            let value = some(quote!(#flag));
            fields.push(quote!(#field: #value));
        }
    }
    let callbacks = [
        ("on_success", &args.on_success),
        ("on_failure", &args.on_failure),
        ("on_retry_exhausted", &args.on_retry_exhausted),
    ];
    for (field, callback) in callbacks {
        let field = Ident::new(field, Span::call_site());
        match callback {
            Some(Callback::Name(name)) => {
                let value = some(quote!(#name));
                fields.push(quote!(#field: #value));
            }
            Some(Callback::Actor(path)) => {
                let name = quote_spanned!(path.span()=> <#path as #private::Actor>::NAME);
                let value = some(name);
                fields.push(quote!(#field: #value));
            }
            None => {}
        }
    }
    if let Some(retry_when) = &args.retry_when {
        // A typed binding, spanned at the user's function, so a wrong signature is one
        // "mismatched types" there.
        let value = quote_spanned! {retry_when.span()=> {
            let __actor_retry_when: fn(u32, &#private::ActorFailure) -> bool = #retry_when;
            #private::core::option::Option::Some(__actor_retry_when)
        }};
        fields.push(quote!(retry_when: #value));
    }
    if let Some(throws) = &args.throws {
        let names = throws.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                #private::core::any::type_name::<#ty> as fn() -> &'static str
            }
        });
        fields.push(quote!(throws: &[#(#names),*]));
    }
    quote! {
        #private::ActorOptions {
            #(#fields,)*
            ..#private::ActorOptions::DEFAULT
        }
    }
}

/// `my_actor::pipe(all but the last argument)`: a typed pipeline step whose last argument is
/// the previous step's output (none for an actor without parameters).
fn pipe_step(
    function: &ActorFn,
    ident: &Ident,
    idents: &[&Ident],
    tys: &[&Type],
    vis: &syn::Visibility,
    private: &TokenStream,
) -> Option<TokenStream> {
    let (last_ty, head_tys) = tys.split_last()?;
    let head = &idents[..head_tys.len()];
    let doc = format!(
        " A pipeline step calling `{}`, whose last argument is the previous step's result \
         (see `TypedPipeline`).",
        function.name()
    );
    Some(quote! {
        #[doc = #doc]
        #vis fn pipe(#(#head: #head_tys),*) -> #private::PipeStep<#ident, #last_ty> {
            #private::PipeStep::new(#private::MessageBuilder::new((|| {
                #private::core::result::Result::Ok(#private::Vec::from([
                    #(#private::encode_arg::<#head_tys>(&#head)?),*
                ]))
            })()))
        }
    })
}
