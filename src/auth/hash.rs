//! crypt(3)-style password hashes, checked and made with the RustCrypto
//! crates: `$y$` (yescrypt), `$5$` / `$6$` (SHA-crypt), `$2a$` / `$2b$` /
//! `$2y$` (bcrypt). New hashes are yescrypt, the default of Debian's
//! libxcrypt, so `/etc/shadow` tools read them too.

use password_hash::{PasswordHasher, PasswordVerifier};

/// Does `password` match `hash`? Unknown or damaged hashes never match.
pub fn verify(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$y$") {
        yescrypt::PasswordHashRef::new(hash).is_ok_and(|h| {
            yescrypt::Yescrypt::default()
                .verify_password(password, h)
                .is_ok()
        })
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        sha_crypt::PasswordHashRef::new(hash).is_ok_and(|h| {
            sha_crypt::ShaCrypt::default()
                .verify_password(password, h)
                .is_ok()
        })
    } else if hash.starts_with("$2") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else {
        false
    }
}

/// A new yescrypt hash of `password`, with a random salt.
pub fn make(password: &[u8]) -> Result<String, String> {
    yescrypt::Yescrypt::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// A hash that matches nothing, checked for unknown users so that their
/// refusal takes as long as a wrong password.
pub const DUMMY: &str = "$y$j9T$hrgOVQAU/OSEKIbrvbkqF.$.gGxbve7NhCeUMJUgzPpZmm5YQdnh/Ccox3e3fbZl6C";

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Debian's `mkpasswd` (libxcrypt) for the password `secret`.
    #[test]
    fn verifies_libxcrypt_hashes() {
        for h in [
            "$y$j9T$UAOQmQ8ayWN7v/W/pmCu3/$X5LGlFXvblbrMdQdPtKY6i1NDr2Mgop1x/D.mgk/ij.",
            "$6$nSMuNF62ViUXM1BO$1cXhIYkjrI/jUbJfA.RhwvBamBq3aSj.BG/8LcZehLi62LXggxx/ZC15UFK47938xv4PVFJ5slB3n3BcfLV9l1",
            "$5$7mU5iwltzH2XtoT2$QWvqgQOV7xDrC6taxYmH/A75wW9g.42ieVayVZSxWi.",
            "$2b$05$FLcD7tlcxj0FWFc0Ic0N/eVwF/5XZDyiG5o.jQ1oykkhpWgJhzO06",
        ] {
            assert!(verify(b"secret", h), "{h}");
            assert!(!verify(b"secreT", h), "{h}");
        }
    }

    #[test]
    fn makes_hashes_it_verifies() {
        let h = make(b"secret").unwrap();
        assert!(h.starts_with("$y$"));
        assert!(verify(b"secret", &h));
        assert!(!verify(b"Secret", &h));
        assert!(!verify(b"secret", "plain"));
        assert!(!verify(b"secret", "$6$broken"));
        assert!(!verify(b"anything", DUMMY));
    }
}
