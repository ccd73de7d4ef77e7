//! Calls between users: ringing devices, answering, hanging up, and telling the app backend.

pub mod book;
pub mod webhooks;

#[cfg(test)]
mod book_tests;

pub use book::{BusyPolicy, CallBook, CallError, CallSettings, Effect, Media, Now};
