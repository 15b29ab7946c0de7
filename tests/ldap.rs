//! LDAP-backed address books (USER1 for anyone), against a real slapd
//! started by each test (see common/slapd.rs).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::slapd::{ROOTDN, ROOTPW, Slapd};
use common::{Client, Reply, Server};

/// The LDAP options of a server using `host` (and the rest of the usual
/// settings): the Mulberry-style map of the setup instructions.
fn ldap_options(host: &str) -> Vec<String> {
    vec![
        format!("imsp.ldap.host N {host}"),
        "imsp.ldap.searchbase N ou=people,dc=example,dc=org".into(),
        "imsp.ldap.scope N subtree".into(),
        "imsp.ldap.fullnameattr N cn".into(),
        "imsp.ldap.uniqueattr N uid".into(),
        "imsp.ldap.defaultfilter N (objectClass=inetOrgPerson)".into(),
        "imsp.ldap.attrmap N (name cn address postaladdress alias uid company ou \
         email mail fax facsimiletelephonenumber notes NULL phone-work telephonenumber \
         urls labeleduri)"
            .into(),
        "imsp.ldap.timeout N 2".into(),
    ]
}

fn server_with(host: &str, extra: &[&str]) -> Server {
    let mut b = Server::builder();
    for l in ldap_options(host) {
        b = b.option_line(&l);
    }
    for l in extra {
        b = b.option_line(l);
    }
    b.start()
}

fn server(slapd: &Slapd) -> Server {
    server_with(&format!("127.0.0.1:{}", slapd.port), &[])
}

/// fred's book `fred.directory` turned LDAP-backed with `rights` for
/// anyone; returns fred's session.
fn directory_book(s: &Server, rights: &str) -> Client {
    let mut c = s.login("fred");
    c.ok("CREATEADDRESSBOOK fred.directory");
    c.ok(&format!(
        "SETACL ADDRESSBOOK fred.directory anyone {rights}"
    ));
    c
}

/// The names of `* SEARCHADDRESS` lines (atom, quoted or literal).
fn names(r: &Reply) -> Vec<String> {
    r.untagged()
        .iter()
        .map(|l| {
            let n = l
                .strip_prefix("* SEARCHADDRESS ")
                .unwrap_or_else(|| panic!("not a SEARCHADDRESS line: {l:?}"));
            if let Some(q) = n.strip_prefix('"') {
                q.strip_suffix('"').unwrap().to_string()
            } else if n.starts_with('{') {
                n.split_once("}\r\n").unwrap().1.to_string()
            } else {
                n.to_string()
            }
        })
        .collect()
}

fn search(c: &mut Client, command: &str) -> Vec<String> {
    let r = c.cmd(command);
    assert_eq!(r.status(), "OK", "{command} -> {:?}", r.lines);
    names(&r)
}

const EVERYBODY: [&str; 5] = [
    "Ann Nomail",
    "John Anderson[uid:anderson1]",
    "John Anderson[uid:anderson2]",
    "Mary Jackson",
    "Odd (Star*) Back\\slash",
];

#[test]
fn setacl_user1_makes_a_book_ldap_backed_and_read_only() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = s.login("fred");
    c.ok("CREATEADDRESSBOOK fred.directory");
    c.ok("STOREADDRESS fred.directory \"Local Only\" email local@example.org");
    c.ok("SETACL ADDRESSBOOK fred.directory barney lrwd2");
    // USER1 for anyone keeps only lookup and read (and the digits), for
    // every identifier (the owner also keeps administer).
    c.ok("SETACL ADDRESSBOOK fred.directory anyone lrswicd1");
    assert_eq!(
        c.ok("GETACL ADDRESSBOOK fred.directory"),
        vec![
            "* ACL ADDRESSBOOK fred.directory fred lra",
            "* ACL ADDRESSBOOK fred.directory barney lr2",
            "* ACL ADDRESSBOOK fred.directory anyone lr1"
        ]
    );
    assert_eq!(
        c.ok("MYRIGHTS ADDRESSBOOK fred.directory"),
        vec!["* MYRIGHTS ADDRESSBOOK fred.directory lra1"]
    );
    assert!(s.read("abooks").contains("anyone\tlr1\t"));
    // Digits for someone else do not make a book LDAP-backed nor strip rights.
    c.ok("SETACL ADDRESSBOOK fred barney lrw1");
    assert!(
        c.ok("GETACL ADDRESSBOOK fred")
            .contains(&"* ACL ADDRESSBOOK fred barney lrw1".to_string())
    );

    // The entries now come from the directory, not the file.
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name *"),
        EVERYBODY
    );
    let mut b = s.login("barney");
    assert_eq!(
        b.ok("MYRIGHTS ADDRESSBOOK fred.directory"),
        vec!["* MYRIGHTS ADDRESSBOOK fred.directory lr12"]
    );
    assert_eq!(
        search(&mut b, "SEARCHADDRESS fred.directory"),
        EVERYBODY,
        "no criteria is every entry when USER0 is not set"
    );

    // Read-only, even for the owner who keeps the write right.
    let before = s.read("user/fred/abook.fred.directory");
    let t = c.fails(
        "STOREADDRESS fred.directory \"Mary Jackson\" email x@y",
        "NO",
    );
    assert!(t.contains("read-only"), "{t}");
    let t = c.fails("DELETEADDRESS fred.directory \"Local Only\"", "NO");
    assert!(t.contains("read-only"), "{t}");
    let t = b.fails("STOREADDRESS fred.directory \"New One\" email x@y", "NO");
    assert!(t.contains("read-only"), "{t}");
    let t = b.fails("DELETEADDRESSBOOK fred.directory", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    // LOCK is a write: refused, for the owner and an administrator too.
    let mut admin = s.login("admin");
    for cl in [&mut c, &mut admin] {
        let t = cl.fails("LOCK ADDRESSBOOK fred.directory \"Mary Jackson\"", "NO");
        assert!(t.contains("read-only"), "{t}");
    }
    assert!(!s.path("user/fred/alock").exists() || !s.read("user/fred/alock").contains("Mary"));
    assert_eq!(s.read("user/fred/abook.fred.directory"), before);
    // Other books are not affected.
    c.ok("STOREADDRESS fred \"Barney Rubble\" email barney@bedrock");

    // Taking USER1 away brings the file's entries back, and the rights.
    c.ok("DELETEACL ADDRESSBOOK fred.directory anyone");
    assert_eq!(
        b.ok("MYRIGHTS ADDRESSBOOK fred.directory"),
        vec!["* MYRIGHTS ADDRESSBOOK fred.directory lrwd2"]
    );
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name *"),
        vec!["Local Only"]
    );
    c.ok("DELETEADDRESS fred.directory \"Local Only\"");
}

#[test]
fn searches_map_fields_through_the_attribute_map() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let _fred = directory_book(&s, "lr1");
    let mut c = s.login("barney");
    let q = |c: &mut Client, crit: &str| search(c, &format!("SEARCHADDRESS fred.directory {crit}"));
    assert_eq!(q(&mut c, "name \"*jackson*\""), vec!["Mary Jackson"]);
    // No wildcard: the whole name, compared as the directory does (cn
    // ignores case).
    assert_eq!(q(&mut c, "name \"mary jackson\""), vec!["Mary Jackson"]);
    assert_eq!(q(&mut c, "name Mary"), Vec::<String>::new());
    // The default filter leaves out the device "John Printer".
    assert_eq!(
        q(&mut c, "name John*"),
        vec![
            "John Anderson[uid:anderson1]",
            "John Anderson[uid:anderson2]"
        ]
    );
    // A name shared in the directory keeps its suffix when only one matches.
    assert_eq!(
        q(&mut c, "email *@chem.example.org"),
        vec!["John Anderson[uid:anderson2]"]
    );
    assert_eq!(q(&mut c, "alias mjackson"), vec!["Mary Jackson"]);
    assert_eq!(
        q(&mut c, "phone-work \"+1 555 0101\""),
        vec!["John Anderson[uid:anderson1]"]
    );
    // Matching is the directory's: labeledURI has no substring rule.
    assert_eq!(
        q(&mut c, "urls http://example.org/~mjackson"),
        vec!["Mary Jackson"]
    );
    assert_eq!(q(&mut c, "urls *mjackson"), Vec::<String>::new());
    // Criteria are ANDed; field names are case-insensitive.
    assert_eq!(
        q(&mut c, "NAME John* company physics"),
        vec!["John Anderson[uid:anderson1]"]
    );
    assert_eq!(
        q(&mut c, "company Physics"),
        vec!["John Anderson[uid:anderson1]", "Mary Jackson"]
    );
    // `%` is a wildcard as well.
    assert_eq!(q(&mut c, "email mary%"), vec!["Mary Jackson"]);
    // Every entry with an e-mail address: not Ann.
    assert_eq!(q(&mut c, "email *"), EVERYBODY[1..].to_vec());
    // A field with no attribute (NULL) or none in the map matches nothing.
    assert_eq!(q(&mut c, "notes *"), Vec::<String>::new());
    assert_eq!(q(&mut c, "pager *"), Vec::<String>::new());
    assert_eq!(q(&mut c, "name \"\""), Vec::<String>::new());
    // Searching needs the read right, as for any book.
    c.logout();
    let mut f = s.login("fred");
    f.ok("SETACL ADDRESSBOOK fred.directory anyone l1");
    let mut c = s.login("barney");
    let t = c.fails("SEARCHADDRESS fred.directory name *", "NO");
    assert!(t.contains("no read right"), "{t}");
}

#[test]
fn user_input_is_escaped_in_the_filter() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = directory_book(&s, "lr1");
    let q = |c: &mut Client, crit: &str| search(c, &format!("SEARCHADDRESS fred.directory {crit}"));
    let odd = vec!["Odd (Star*) Back\\slash".to_string()];
    assert_eq!(q(&mut c, "name \"Odd (Star*\""), odd);
    assert_eq!(q(&mut c, "name \"*(*\""), odd);
    assert_eq!(q(&mut c, "name \"*)*\""), odd);
    assert_eq!(q(&mut c, "name \"*\\\\slash\""), odd);
    assert_eq!(q(&mut c, "name \"Odd (Star\""), Vec::<String>::new());
    // Filter syntax in a pattern is text to look for, not filter.
    assert_eq!(q(&mut c, "name \"*)(uid=*\""), Vec::<String>::new());
    assert_eq!(
        q(&mut c, "email \"x)(|(objectClass=*\""),
        Vec::<String>::new()
    );
    assert_eq!(q(&mut c, "name \"\\\\2a\""), Vec::<String>::new());
    // 8-bit input is escaped too.
    assert_eq!(q(&mut c, "name {5+}\r\nZo\u{eb}*"), Vec::<String>::new());
    // The directory's full name, backslash and all, fetches its entry.
    let r = c.cmd("FETCHADDRESS fred.directory \"Odd (Star*) Back\\\\slash\"");
    assert_eq!(r.status(), "OK", "{:?}", r.lines);
    assert!(r.untagged()[0].contains("alias odd"), "{:?}", r.untagged());
}

#[test]
fn duplicate_full_names_get_the_unique_suffix_that_fetch_understands() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = directory_book(&s, "lr1");
    assert_eq!(
        search(
            &mut c,
            "SEARCHADDRESS fred.directory name \"John Anderson\""
        ),
        vec![
            "John Anderson[uid:anderson1]",
            "John Anderson[uid:anderson2]"
        ]
    );
    // The suffix picks the entry; the name is shown without it.
    assert_eq!(
        c.ok("FETCHADDRESS fred.directory \"John Anderson[uid:anderson2]\""),
        vec![
            "* FETCHADDRESS fred.directory \"John Anderson\" alias anderson2 company Chemistry \
             email janderson@chem.example.org phone-work \"+1 555 0202\""
        ]
    );
    assert_eq!(
        c.ok("FETCHADDRESS fred.directory \"Mary Jackson\" \"John Anderson[uid:anderson1]\""),
        vec![
            "* FETCHADDRESS fred.directory \"Mary Jackson\" alias mjackson company Physics \
             email mary.jackson@example.org urls http://example.org/~mjackson",
            "* FETCHADDRESS fred.directory \"John Anderson\" alias anderson1 company Physics \
             email john.anderson@example.org phone-work \"+1 555 0101\""
        ]
    );
    // The plain name is ambiguous.
    let t = c.fails("FETCHADDRESS fred.directory \"John Anderson\"", "NO");
    assert!(t.contains("names 2 directory entries"), "{t}");
    // As for file books: what is found is sent, the first missing named.
    let r = c.cmd(
        "FETCHADDRESS fred.directory \"Ann Nomail\" \"John Anderson[uid:nobody]\" \"John Printer\"",
    );
    assert_eq!(r.status(), "NO");
    assert_eq!(
        r.untagged(),
        vec!["* FETCHADDRESS fred.directory \"Ann Nomail\" alias nomail"]
    );
    assert!(
        r.tagged()
            .ends_with("NO entry 'John Anderson[uid:nobody]' not found"),
        "{}",
        r.tagged()
    );
    // A suffix naming another attribute is part of the name.
    c.fails(
        "FETCHADDRESS fred.directory \"John Anderson[mail:x]\"",
        "NO",
    );
}

#[test]
fn user0_refuses_unqualified_searches() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let _fred = directory_book(&s, "lr01");
    let mut c = s.login("barney");
    for crit in ["", " name *", " name \"**\"", " name * email %"] {
        let t = c.fails(&format!("SEARCHADDRESS fred.directory{crit}"), "NO");
        assert!(t.contains("Unqualified searches"), "{crit}: {t}");
    }
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name * email *@chem*"),
        vec!["John Anderson[uid:anderson2]"]
    );
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name A*"),
        vec!["Ann Nomail"]
    );
}

/// A NO that names the book as unavailable, within the timeout (2 s).
fn fails_in_time(c: &mut Client, command: &str) -> String {
    let t0 = Instant::now();
    let t = c.fails(command, "NO");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(8), "{command} took {took:?}");
    assert!(t.contains("is unavailable"), "{t}");
    t
}

#[test]
fn a_stopped_or_silent_directory_gives_no_within_the_timeout() {
    let mut slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = directory_book(&s, "lr1");
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name M*"),
        vec!["Mary Jackson"]
    );
    slapd.stop();
    fails_in_time(&mut c, "SEARCHADDRESS fred.directory name M*");
    fails_in_time(&mut c, "FETCHADDRESS fred.directory \"Mary Jackson\"");
    // The session goes on.
    c.ok("NOOP");
    c.ok("STOREADDRESS fred \"Barney Rubble\" email barney@bedrock");

    // A server that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for tls in ["none", "starttls", "ldaps"] {
        let tls_line = format!("imsp.ldap.tls N {tls}");
        let s = server_with(&format!("127.0.0.1:{port}"), &[&tls_line]);
        let mut c = directory_book(&s, "lr1");
        let t = fails_in_time(&mut c, "SEARCHADDRESS fred.directory name M*");
        assert!(t.contains("timeout"), "{tls}: {t}");
        fails_in_time(&mut c, "FETCHADDRESS fred.directory \"Mary Jackson\"");
        c.ok("NOOP");
    }
    drop(silent);
}

#[test]
fn ldaps_and_starttls() {
    let slapd = Slapd::start();
    // The test certificate is self-signed: not trusted unless told.
    for (host, tls) in [
        (format!("ldaps://127.0.0.1:{}", slapd.tls_port), None),
        (format!("127.0.0.1:{}", slapd.tls_port), Some("ldaps")),
        (format!("127.0.0.1:{}", slapd.port), Some("starttls")),
    ] {
        let tls_line = tls.map(|t| format!("imsp.ldap.tls N {t}"));
        let mut extra: Vec<&str> = tls_line.iter().map(String::as_str).collect();
        let s = server_with(&host, &extra);
        let mut c = directory_book(&s, "lr1");
        let t = fails_in_time(&mut c, "SEARCHADDRESS fred.directory name M*");
        assert!(
            t.to_lowercase().contains("certificate"),
            "{host} {tls:?}: {t}"
        );
        drop(c);
        drop(s);
        extra.push("imsp.ldap.tls.verify N -");
        let s = server_with(&host, &extra);
        let mut c = directory_book(&s, "lr1");
        assert_eq!(
            search(&mut c, "SEARCHADDRESS fred.directory name M*"),
            vec!["Mary Jackson"],
            "{host} {tls:?}"
        );
    }
    // Plain LDAP to the ldaps port fails: the sessions above spoke TLS.
    let s = server_with(
        &format!("127.0.0.1:{}", slapd.tls_port),
        &["imsp.ldap.tls N none"],
    );
    let mut c = directory_book(&s, "lr1");
    fails_in_time(&mut c, "SEARCHADDRESS fred.directory name M*");
}

#[test]
fn bind_dn_and_configuration_errors() {
    let slapd = Slapd::start();
    let host = format!("127.0.0.1:{}", slapd.port);
    let bind = format!("imsp.ldap.binddn N {ROOTDN}");
    let good = format!("imsp.ldap.bindpw N {ROOTPW}");
    let s = server_with(&host, &[&bind, &good]);
    let mut c = directory_book(&s, "lr1");
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name M*"),
        vec!["Mary Jackson"]
    );
    let s = server_with(&host, &[&bind, "imsp.ldap.bindpw N wrong"]);
    let mut c = directory_book(&s, "lr1");
    let t = fails_in_time(&mut c, "SEARCHADDRESS fred.directory name M*");
    assert!(t.contains("invalidCredentials"), "{t}");

    // Settings that cannot work are a NO naming the option.
    for (extra, why) in [
        (vec![bind.as_str()], "imsp.ldap.bindpw is empty"),
        (
            vec![bind.as_str(), "imsp.ldap.bindpw N "],
            "imsp.ldap.bindpw is empty",
        ),
        (vec!["imsp.ldap.scope N everywhere"], "imsp.ldap.scope"),
        (
            vec!["imsp.ldap.attrmap N (name cn email)"],
            "imsp.ldap.attrmap",
        ),
        (vec!["imsp.ldap.tls N maybe"], "imsp.ldap.tls"),
        (vec!["imsp.ldap.timeout N -1"], "imsp.ldap.timeout"),
        (vec!["imsp.ldap.port N 99999"], "imsp.ldap.port"),
    ] {
        let mut b = Server::builder();
        for l in ldap_options("127.0.0.1") {
            let key = l.split(' ').next().unwrap().to_string();
            if !extra.iter().any(|e| e.starts_with(&format!("{key} "))) {
                b = b.option_line(&l);
            }
        }
        for l in &extra {
            b = b.option_line(l);
        }
        let s = b.start();
        let mut c = directory_book(&s, "lr1");
        let t = c.fails("SEARCHADDRESS fred.directory name M*", "NO");
        assert!(
            t.contains("not configured properly") && t.contains(why),
            "{extra:?}: {t}"
        );
        c.fails("FETCHADDRESS fred.directory \"Mary Jackson\"", "NO");
    }
    // No LDAP settings at all.
    let s = Server::start();
    let mut c = directory_book(&s, "lr1");
    let t = c.fails("SEARCHADDRESS fred.directory name M*", "NO");
    assert!(t.contains("imsp.ldap.host is not set"), "{t}");
}

#[test]
fn a_unique_suffix_must_name_an_entry_of_that_full_name() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = directory_book(&s, "lr1");
    // anderson1 is John Anderson, not Mary Jackson.
    let r = c.cmd("FETCHADDRESS fred.directory \"Mary Jackson[uid:anderson1]\"");
    assert_eq!(r.status(), "NO", "{:?}", r.lines);
    assert!(r.untagged().is_empty(), "{:?}", r.untagged());
    assert!(
        r.tagged()
            .ends_with("NO entry 'Mary Jackson[uid:anderson1]' not found"),
        "{}",
        r.tagged()
    );
    // The full name is compared without regard to case, as LDAP does.
    assert_eq!(
        c.ok("FETCHADDRESS fred.directory \"john anderson[uid:anderson1]\"")
            .len(),
        1
    );
}

#[test]
fn question_mark_matches_one_character_in_directory_searches() {
    let slapd = Slapd::start();
    let s = server(&slapd);
    let mut c = directory_book(&s, "lr1");
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory name J?hn*"),
        vec![
            "John Anderson[uid:anderson1]",
            "John Anderson[uid:anderson2]"
        ]
    );
    // J?n* is not J*n*: no "John Anderson".
    assert!(search(&mut c, "SEARCHADDRESS fred.directory name J?n*").is_empty());
    assert_eq!(
        search(&mut c, "SEARCHADDRESS fred.directory email ????.jackson@*"),
        vec!["Mary Jackson"]
    );
    // `%` has no hierarchy here either.
    assert_eq!(
        search(
            &mut c,
            "SEARCHADDRESS fred.directory email %.jackson@example.org"
        ),
        vec!["Mary Jackson"]
    );
}

/// A TCP proxy to `port` that holds each answer of the server for
/// `delay`: a directory that answers every operation, slowly.
fn slow_proxy(port: u16, delay: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(delay);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    me
}

#[test]
fn the_timeout_bounds_the_whole_command() {
    let slapd = Slapd::start();
    // Every answer takes 1.2 s, under the 2 s timeout; a fetch of four
    // names is four searches.
    let port = slow_proxy(slapd.port, Duration::from_millis(1200));
    let s = server_with(&format!("127.0.0.1:{port}"), &[]);
    let mut c = directory_book(&s, "lr1");
    let t0 = Instant::now();
    let r = c.cmd(
        "FETCHADDRESS fred.directory \"Mary Jackson\" \"Ann Nomail\" \
         \"John Anderson[uid:anderson1]\" \"John Anderson[uid:anderson2]\"",
    );
    let took = t0.elapsed();
    assert_eq!(r.status(), "NO", "{:?}", r.lines);
    assert!(r.tagged().contains("is unavailable"), "{}", r.tagged());
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    c.ok("NOOP");
}
