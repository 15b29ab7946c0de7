//! NOOP, CAPABILITY, LOGOUT.

use super::{Done, Handler, Output};
use crate::protocol::{Data, Response};

impl Handler<'_> {
    pub(super) fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = self
            .mechanisms()
            .iter()
            .map(|m| format!("AUTH={m}"))
            .collect();
        caps.push("LITERAL+".to_string());
        caps
    }

    pub(super) fn capability(&mut self, out: &mut dyn Output) -> Done {
        out.send(Response::Untagged(Data::Capability(self.capabilities())));
        Done::completed("capability")
    }

    pub(super) fn logout(&mut self, out: &mut dyn Output) -> Done {
        // Before the answer, so that a client told "logged out" finds the
        // locks free.
        self.release_locks();
        // The session's changes are in their files' journals, on disk
        // since each one's OK: they are folded into the files after this
        // answer and before the connection is closed (`Handler::end`), so
        // that the client is not kept waiting for the fold, and the files
        // it finds once the server has closed are 1.8's.
        out.send(Response::bye("Logging user out"));
        Done::ok("Logging user out").closing()
    }
}
