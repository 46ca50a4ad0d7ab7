//! The full-screen terminal UI of whatsap2p (`whatsap2p --tui`): every conversation in a list,
//! the open one with its history and receipts, photos drawn inline, transfers with a gauge, and an
//! input line that incoming messages never disturb.
//!
//! It is a front end on the same client core as the menu and the JSON lines: it holds no
//! messenger logic. [`App`] is the state and changes only by keys, events and answers; the
//! [`view`] draws it; [`calls`] runs every backend call off the draw loop; [`run()`] ties them to a
//! terminal.
//!
//! # Layout
//! - [`backend`]: the [`Backend`] trait, exactly the calls the UI needs, and its data.
//! - [`client_backend`]: [`Backend`] for [`whatsap2p_client::Client`].
//! - [`calls`]: requests run on their own tasks, their outcomes handed back.
//! - [`app`]: the state; keys, mouse, events and outcomes in, requests out.
//! - [`command`]: the slash commands. [`complete`]: Tab completion of paths.
//! - [`editor`]: the text being typed. [`layout`]: a message's rows.
//! - [`view`]: drawing. [`photo`]: pictures for the terminal. [`transfer`]: gauges.
//! - [`text`]: neutralizing and measuring text from others. [`clock`]: times for people.
//! - [`terminal`]: taking and restoring the terminal. [`run`](mod@run): the event loop.

#![forbid(unsafe_code)]

pub mod app;
pub mod backend;
pub mod calls;
pub mod client_backend;
pub mod clock;
pub mod command;
pub mod complete;
pub mod editor;
pub mod layout;
pub mod photo;
pub mod run;
pub mod terminal;
pub mod text;
pub mod transfer;
pub mod view;

pub use app::App;
pub use backend::Backend;
pub use run::{drive, run};
