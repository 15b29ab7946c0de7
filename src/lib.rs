//! imspd: an IMSP server (Internet Message Support Protocol, TCP 406), the
//! successor of CMU's cyrus-imspd.
//!
//! Data flows one way: [`connection`] -> [`protocol`] (frame, parse) ->
//! [`session`] (state) -> [`handlers`] -> store -> typed responses ->
//! [`protocol::writer`].

pub mod log;

pub mod acl;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod handlers;
pub mod ldap;
pub mod pattern;
pub mod protocol;
pub mod proxy;
pub mod refresh;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod vcard;
