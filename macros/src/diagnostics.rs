//! Collecting every error of one macro invocation, so they are all reported
//! together, and emitting them next to the (still generated) item.

use proc_macro2::TokenStream;
use quote::ToTokens;

/// All errors found so far (serde's `Ctxt`, simplified).
#[derive(Default)]
pub(crate) struct Diagnostics {
    errors: Option<syn::Error>,
}

impl Diagnostics {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// Records an error at the span of `tokens`.
    pub(crate) fn error_at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// The recorded errors, combined.
    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.errors
    }

    /// The generated tokens followed by every recorded error.
    pub(crate) fn emit(self, generated: TokenStream) -> TokenStream {
        let errors = self.errors.map(|errors| errors.to_compile_error());
        quote::quote! {
            #generated
            #errors
        }
    }
}
