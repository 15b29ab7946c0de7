//! Typed IMSP commands, as the parser produces them.
//!
//! Strings from the wire are kept as bytes (`Vec<u8>`): values and entry
//! names may be 8-bit and must round-trip exactly. Atoms (command keywords,
//! option and field names) are 7-bit by the grammar and kept as `String`.

/// Which kind of object an ACL command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclKind {
    Mailbox,
    AddressBook,
}

/// What LOCK / UNLOCK names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockTarget {
    Option(String),
    AddressBook { book: Vec<u8>, name: Vec<u8> },
}

/// `hostname [ "/" atom ]` of a server partition list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPartition {
    pub host: String,
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Noop,
    Capability,
    Logout,
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Authenticate {
        mechanism: String,
        initial_response: Option<Vec<u8>>,
    },
    Get {
        pattern: Vec<u8>,
    },
    Set {
        option: String,
        value: Vec<u8>,
    },
    Unset {
        option: String,
    },
    Lock(LockTarget),
    Unlock(LockTarget),
    AddressBook {
        pattern: Vec<u8>,
    },
    CreateAddressBook {
        name: Vec<u8>,
    },
    DeleteAddressBook {
        name: Vec<u8>,
    },
    RenameAddressBook {
        old: Vec<u8>,
        new: Vec<u8>,
    },
    SearchAddress {
        book: Vec<u8>,
        criteria: Vec<(String, Vec<u8>)>,
    },
    FetchAddress {
        book: Vec<u8>,
        names: Vec<Vec<u8>>,
    },
    StoreAddress {
        book: Vec<u8>,
        name: Vec<u8>,
        fields: Vec<(String, Vec<u8>)>,
    },
    DeleteAddress {
        book: Vec<u8>,
        name: Vec<u8>,
    },
    SetAcl {
        kind: AclKind,
        object: Vec<u8>,
        identifier: Vec<u8>,
        rights: Vec<u8>,
    },
    DeleteAcl {
        kind: AclKind,
        object: Vec<u8>,
        identifier: Vec<u8>,
    },
    GetAcl {
        kind: AclKind,
        object: Vec<u8>,
    },
    MyRights {
        kind: AclKind,
        object: Vec<u8>,
    },
    List {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Unseen {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Subscribe {
        mailbox: Vec<u8>,
    },
    Unsubscribe {
        mailbox: Vec<u8>,
    },
    Create {
        mailbox: Vec<u8>,
        servers: Vec<ServerPartition>,
    },
    Delete {
        mailbox: Vec<u8>,
        host: Option<String>,
    },
    Rename {
        old: Vec<u8>,
        new: Vec<u8>,
    },
    Replace {
        old: Vec<u8>,
        new: Vec<u8>,
    },
    Move {
        mailbox: Vec<u8>,
        host: String,
        servers: Vec<ServerPartition>,
    },
    Last {
        mailbox: Vec<u8>,
        uid: String,
    },
    Seen {
        mailbox: Vec<u8>,
        uid: String,
        user: Vec<u8>,
    },
}

impl Command {
    /// The command's name as logged and as used in response texts
    /// ("get completed"), lower case like cyrus-imspd 1.8.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Noop => "noop",
            Command::Capability => "capability",
            Command::Logout => "logout",
            Command::Login { .. } => "login",
            Command::Authenticate { .. } => "authenticate",
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::Unset { .. } => "unset",
            Command::Lock(_) => "lock",
            Command::Unlock(_) => "unlock",
            Command::AddressBook { .. } => "addressbook",
            Command::CreateAddressBook { .. } => "createaddressbook",
            Command::DeleteAddressBook { .. } => "deleteaddressbook",
            Command::RenameAddressBook { .. } => "renameaddressbook",
            Command::SearchAddress { .. } => "searchaddress",
            Command::FetchAddress { .. } => "fetchaddress",
            Command::StoreAddress { .. } => "storeaddress",
            Command::DeleteAddress { .. } => "deleteaddress",
            Command::SetAcl { .. } => "setacl",
            Command::DeleteAcl { .. } => "deleteacl",
            Command::GetAcl { .. } => "getacl",
            Command::MyRights { .. } => "myrights",
            Command::List { .. } => "list",
            Command::Lsub { .. } => "lsub",
            Command::Unseen { .. } => "unseen",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Create { .. } => "create",
            Command::Delete { .. } => "delete",
            Command::Rename { .. } => "rename",
            Command::Replace { .. } => "replace",
            Command::Move { .. } => "move",
            Command::Last { .. } => "last",
            Command::Seen { .. } => "seen",
        }
    }

    /// Commands allowed before authentication.
    pub fn allowed_before_login(&self) -> bool {
        matches!(
            self,
            Command::Noop
                | Command::Capability
                | Command::Login { .. }
                | Command::Authenticate { .. }
                | Command::Logout
        )
    }
}
