//! The `#[tally_sdk::plugin]` attribute: turns one rule function into the plugin ABI exports.
//!
//! Use it through `tally-sdk`, which re-exports it as `tally_sdk::plugin`.

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input};

const SIGNATURE: &str =
    "fn rule(input: &tally_sdk::Input) -> Result<tally_sdk::Decision, tally_sdk::Error>";

/// Marks the rule of a plugin crate: a function `fn(&Input) -> Result<Decision, Error>` (or
/// one returning `Decision` directly).
///
/// On `wasm32` it adds the exports `tally_alloc`, `tally_evaluate` and `tally_abi_version`;
/// elsewhere it adds nothing, so the rule stays a plain function to unit-test.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let rule = parse_macro_input!(item as ItemFn);
    match expand(attr, &rule) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#rule #error).into()
        }
    }
}

fn expand(attr: proc_macro2::TokenStream, rule: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[tally_sdk::plugin] takes no arguments: write `#[tally_sdk::plugin]`",
        ));
    }
    let signature = &rule.sig;
    if let Some(asyncness) = &signature.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            format!("a plugin rule cannot be async: remove `async` and write `{SIGNATURE}`"),
        ));
    }
    if let Some(unsafety) = &signature.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            "a plugin rule cannot be unsafe: remove `unsafe`",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            signature.generics.span(),
            format!(
                "a plugin rule cannot be generic: remove the type parameters and write `{SIGNATURE}`"
            ),
        ));
    }
    if signature.inputs.len() != 1 {
        let span = if signature.inputs.is_empty() {
            signature.paren_token.span.join()
        } else {
            signature.inputs.span()
        };
        return Err(syn::Error::new(
            span,
            format!(
                "a plugin rule takes exactly one argument, `input: &tally_sdk::Input`: write `{SIGNATURE}`"
            ),
        ));
    }
    if let Some(FnArg::Receiver(receiver)) = signature.inputs.first() {
        return Err(syn::Error::new(
            receiver.span(),
            "a plugin rule is a free function, not a method: move it out of the `impl` block",
        ));
    }
    if let ReturnType::Default = signature.output {
        return Err(syn::Error::new(
            signature.ident.span(),
            format!(
                "a plugin rule returns its decision: add `-> Result<tally_sdk::Decision, tally_sdk::Error>`, as in `{SIGNATURE}`"
            ),
        ));
    }

    let name = &signature.ident;
    // Spanned at the rule's name so that a wrong argument or return type reports there.
    let check = quote_spanned! {name.span()=>
        const _: () = {
            #[allow(dead_code, reason = "only type-checks the rule's signature")]
            fn __tally_check_rule_signature() {
                ::tally_sdk::__private::assert_rule(#name);
            }
        };
    };
    Ok(quote! {
        #rule

        #check

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            pub extern "C" fn tally_abi_version() -> i32 {
                ::tally_sdk::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tally_alloc(len: i32) -> i32 {
                ::tally_sdk::__private::alloc(len)
            }

            /// # Safety
            /// Called by the host with a buffer from `tally_alloc` that holds the input JSON.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn tally_evaluate(ptr: i32, len: i32) -> i64 {
                // SAFETY: the host keeps the ABI contract described above.
                unsafe { ::tally_sdk::__private::evaluate(ptr, len, #name) }
            }
        };
    })
}
