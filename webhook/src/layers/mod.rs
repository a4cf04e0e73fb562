//! Cross-cutting concerns of the HTTP stack, one tower layer per file.

pub mod shed;

pub use shed::{InFlight, ShedLayer};
