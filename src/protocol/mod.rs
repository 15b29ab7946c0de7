//! The IMSP wire protocol: bytes to typed commands, typed responses to bytes.
//! Nothing here does I/O except through the [`framing::Transport`] trait.

pub mod command;
pub mod framing;
pub mod parser;
pub mod response;
pub mod writer;

pub use command::{AclKind, Command, LockTarget, ServerPartition};
pub use framing::{Frame, FrameReader, Limits, Transport};
pub use parser::{ParseError, parse_command};
pub use response::{Data, MailboxListKind, Response, Status};
