//! Attribute macros for Annals: `#[event]`, `#[aggregate]`, `#[commands]`,
//! `#[projection]` and `#[handler]`.
//!
//! Do not depend on this crate directly: use the re-exports of the `annals`
//! crate, whose documentation describes each macro. Every entry point here
//! only parses, calls an `expand` function of its module that returns
//! `syn::Result<TokenStream>`, and turns errors into `compile_error!`s.
//! Generated code reaches the runtime only through `::annals::__private`.

use proc_macro::TokenStream;

mod aggregate;
mod commands;
mod diagnostics;
mod event;
mod handler;
mod naming;
mod options;
mod pii;
mod projection;
mod read_model_table;

/// See `annals::event`.
#[proc_macro_attribute]
pub fn event(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(args.into(), item.into()).into()
}

/// See `annals::aggregate`.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    aggregate::expand(args.into(), item.into()).into()
}

/// See `annals::commands`.
#[proc_macro_attribute]
pub fn commands(args: TokenStream, item: TokenStream) -> TokenStream {
    commands::expand(args.into(), item.into()).into()
}

/// See `annals::projection`.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    projection::expand(args.into(), item.into()).into()
}

/// See `annals::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
