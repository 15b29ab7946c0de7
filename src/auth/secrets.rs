//! What the challenge-response SASL mechanisms need of a password, kept
//! in the password file instead of the password itself:
//!
//! - `scram-sha-256=ITER,SALT,STOREDKEY,SERVERKEY` (RFC 5802 section 3,
//!   RFC 7677; salt and keys in base64);
//! - `cram-md5=HEX`: the MD5 states after the HMAC-MD5 (RFC 2104) inner
//!   and outer key blocks, 2 x 16 octets, as Dovecot and Cyrus keep them.
//!   Either state alone reveals nothing, but together they let anyone
//!   answer CRAM-MD5 challenges: keep the password file unreadable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use md5::Digest as _;
use sha2::Sha256;

/// PBKDF2 iterations for new SCRAM secrets (RFC 7677's minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

impl ScramSecret {
    pub fn new(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    pub fn decode(s: &str) -> Option<ScramSecret> {
        let mut f = s.split(',');
        let iterations = f.next()?.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(f.next()?).ok()?;
        let stored_key = B64.decode(f.next()?).ok()?;
        let server_key = B64.decode(f.next()?).ok()?;
        if f.next().is_some() || stored_key.len() != 32 || server_key.len() != 32 {
            return None;
        }
        Some(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

/// The HMAC-MD5 key states of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CramSecret {
    inner: [u32; 4],
    outer: [u32; 4],
}

const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// MD5 state after one 64-octet block, from the initial state.
fn md5_block(block: &[u8; 64]) -> [u32; 4] {
    let mut s = MD5_INIT;
    md5::block_api::compress(&mut s, &[*block]);
    s
}

/// Finish an MD5 whose first 64 octets were compressed into `state`.
fn md5_resume(state: [u32; 4], data: &[u8]) -> [u8; 16] {
    let mut s = state;
    let mut msg = data.to_vec();
    let bits = ((64 + data.len()) as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let blocks: Vec<[u8; 64]> = msg
        .chunks_exact(64)
        .map(|c| c.try_into().expect("64 octets"))
        .collect();
    md5::block_api::compress(&mut s, &blocks);
    let mut out = [0u8; 16];
    for (chunk, v) in out.chunks_exact_mut(4).zip(s) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

impl CramSecret {
    pub fn new(password: &[u8]) -> CramSecret {
        let mut key = [0u8; 64];
        if password.len() > 64 {
            key[..16].copy_from_slice(&md5::Md5::digest(password));
        } else {
            key[..password.len()].copy_from_slice(password);
        }
        let ipad = key.map(|b| b ^ 0x36);
        let opad = key.map(|b| b ^ 0x5c);
        CramSecret {
            inner: md5_block(&ipad),
            outer: md5_block(&opad),
        }
    }

    /// HMAC-MD5 of `challenge` with the password, as lower-case hex.
    pub fn respond(&self, challenge: &[u8]) -> String {
        let inner = md5_resume(self.inner, challenge);
        let mac = md5_resume(self.outer, &inner);
        mac.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn encode(&self) -> String {
        self.inner
            .iter()
            .chain(&self.outer)
            .flat_map(|w| w.to_le_bytes())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn decode(s: &str) -> Option<CramSecret> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4"));
        Some(CramSecret {
            inner: [word(0), word(1), word(2), word(3)],
            outer: [word(4), word(5), word(6), word(7)],
        })
    }
}

/// `n` random octets from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    buf
}

/// Constant-time comparison of two byte strings of public length.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cram_md5_matches_rfc_2195() {
        let s = CramSecret::new(b"tanstaaftanstaaf");
        assert_eq!(
            s.respond(b"<1896.697170952@postoffice.reston.mci.net>"),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        let again = CramSecret::decode(&s.encode()).unwrap();
        assert_eq!(again, s);
        // Long passwords and long challenges, against the hmac crate.
        for (pw, ch) in [
            (vec![b'k'; 100], vec![b'c'; 200]),
            (b"x".to_vec(), vec![]),
            (vec![7; 64], vec![1; 55]),
            (vec![9; 65], vec![2; 56]),
        ] {
            let mut m = <Hmac<md5::Md5> as KeyInit>::new_from_slice(&pw).unwrap();
            m.update(&ch);
            let want: String = m
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(CramSecret::new(&pw).respond(&ch), want);
        }
        assert!(CramSecret::decode("00").is_none());
    }

    #[test]
    fn scram_matches_rfc_7677() {
        // RFC 7677 section 3: user, pencil, salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let s = ScramSecret::new(b"pencil", &salt, 4096);
        // The server signature of the RFC's exchange, from ServerKey.
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac_sha256(&s.server_key, auth_message.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(ScramSecret::decode(&s.encode()), Some(s));
        assert!(ScramSecret::decode("0,AA==,AA==,AA==").is_none());
    }
}
