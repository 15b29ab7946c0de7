//! Typed server responses. Handlers build these; the writer encodes them.

use super::command::AclKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// Which mailbox listing a mailbox line answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxListKind {
    List,
    Lsub,
    Unseen,
}

/// Untagged data (`* ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `* OK|NO|BAD [CODE] text`
    Status {
        status: Status,
        code: Option<String>,
        text: String,
    },
    /// `* BYE text`
    Bye(String),
    /// `* CAPABILITY ...`
    Capability(Vec<String>),
    /// `* OPTION name value [READ-WRITE]|[READ-ONLY]`
    Option {
        name: String,
        value: Vec<u8>,
        read_write: bool,
    },
    /// `* ADDRESSBOOK (attrs) "sep" name`
    AddressBook {
        attributes: Vec<String>,
        separator: Option<u8>,
        name: Vec<u8>,
    },
    /// `* SEARCHADDRESS name` (1.8's form: the book is not repeated).
    SearchAddress { name: Vec<u8> },
    /// `* FETCHADDRESS book name field value ...`
    FetchAddress {
        book: Vec<u8>,
        name: Vec<u8>,
        fields: Vec<(String, Vec<u8>)>,
    },
    /// `* ACL MAILBOX|ADDRESSBOOK object identifier rights`
    Acl {
        kind: AclKind,
        object: Vec<u8>,
        identifier: Vec<u8>,
        rights: Vec<u8>,
    },
    /// `* MYRIGHTS MAILBOX|ADDRESSBOOK object rights`
    MyRights {
        kind: AclKind,
        object: Vec<u8>,
        rights: Vec<u8>,
    },
    /// `* LIST|LSUB|UNSEEN (attrs) (servers) "sep" name`
    Mailbox {
        kind: MailboxListKind,
        attributes: Vec<String>,
        servers: Vec<String>,
        separator: Option<u8>,
        name: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Untagged(Data),
    /// `+ text`: go ahead, or a SASL challenge (already base64).
    Continue(String),
    Tagged {
        tag: String,
        status: Status,
        code: Option<String>,
        text: String,
    },
}

impl Response {
    pub fn tagged(tag: &str, status: Status, text: impl Into<String>) -> Response {
        Response::Tagged {
            tag: tag.to_string(),
            status,
            code: None,
            text: text.into(),
        }
    }

    pub fn untagged(status: Status, text: impl Into<String>) -> Response {
        Response::Untagged(Data::Status {
            status,
            code: None,
            text: text.into(),
        })
    }

    pub fn bye(text: impl Into<String>) -> Response {
        Response::Untagged(Data::Bye(text.into()))
    }
}
