//! A real LDAP directory for the LDAP address book tests: OpenLDAP's slapd
//! (Debian package `slapd`), started by the test on free loopback ports
//! (ldap:// with StartTLS, and ldaps://) with its own temporary slapd.conf
//! and mdb database, and killed when dropped.
//!
//! The directory, under `dc=example,dc=org` (rootdn `cn=admin,dc=example,
//! dc=org`, password `adminpw`), holds people (inetOrgPerson) under
//! `ou=people`: two "John Anderson" (uid anderson1, anderson2), "Mary
//! Jackson", "Odd (Star*) Back\slash" and "Ann Nomail" (no mail), and a
//! device "John Printer" that the default filter leaves out.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";
pub const SUFFIX: &str = "dc=example,dc=org";
pub const ROOTDN: &str = "cn=admin,dc=example,dc=org";
pub const ROOTPW: &str = "adminpw";

pub const PEOPLE: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: uid=anderson1,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: anderson1
cn: John Anderson
sn: Anderson
mail: john.anderson@example.org
telephoneNumber: +1 555 0101
ou: Physics

dn: uid=anderson2,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: anderson2
cn: John Anderson
sn: Anderson
mail: janderson@chem.example.org
telephoneNumber: +1 555 0202
ou: Chemistry

dn: uid=mjackson,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: mjackson
cn: Mary Jackson
sn: Jackson
mail: mary.jackson@example.org
labeledURI: http://example.org/~mjackson
ou: Physics

dn: uid=odd,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: odd
cn: Odd (Star*) Back\\slash
sn: Odd
mail: odd@example.org

dn: uid=nomail,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: nomail
cn: Ann Nomail
sn: Nomail

dn: cn=John Printer,ou=people,dc=example,dc=org
objectClass: device
cn: John Printer
description: a printer, not a person
";

pub struct Slapd {
    child: Option<Child>,
    /// ldap:// (StartTLS offered).
    pub port: u16,
    /// ldaps://
    pub tls_port: u16,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Slapd {
    pub fn start() -> Slapd {
        for bin in [SLAPD, SLAPADD] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the LDAP address book tests need a real LDAP \
                 server; install the Debian package slapd (listed in .ci/packages)"
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("imspd-slapd.")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::copy(data.join("dovecot-test-cert.pem"), dir.join("cert.pem")).unwrap();
        std::fs::copy(data.join("dovecot-test-key.pem"), dir.join("key.pem")).unwrap();
        let d = dir.display();
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
access to attrs=userPassword by anonymous auth by * none
access to * by * read
database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"{ROOTDN}\"
rootpw {ROOTPW}
directory {d}/db
index objectClass eq
"
        );
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        std::fs::write(dir.join("people.ldif"), PEOPLE).unwrap();
        let out = Command::new(SLAPADD)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("people.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port found free may be taken by another test before slapd binds
        // it: slapd then exits at once, and is started again on others.
        let log_of =
            |dir: &Path| std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default();
        for attempt in 1.. {
            let (port, tls_port) = (free_port(), free_port());
            let log = std::fs::File::create(dir.join("slapd.log")).unwrap();
            let mut child = Command::new(SLAPD)
                .arg("-h")
                .arg(format!(
                    "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
                ))
                .arg("-f")
                .arg(dir.join("slapd.conf"))
                .args(["-d", "0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start slapd");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
                {
                    return Slapd {
                        child: Some(child),
                        port,
                        tls_port,
                        dir,
                        _tmp: tmp,
                    };
                }
                if let Ok(Some(st)) = child.try_wait() {
                    assert!(attempt < 5, "slapd exited with {st}:\n{}", log_of(&dir));
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    panic!("slapd did not start:\n{}", log_of(&dir));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// Stop the server now (the ports then refuse connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
