//! Clients of other servers that imspd acts on: the IMAP servers whose
//! mailboxes it locates.

pub mod imap;
