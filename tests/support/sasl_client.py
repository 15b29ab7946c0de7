#!/usr/bin/env python3
"""An IMSP AUTHENTICATE client for the tests, written from the RFCs and
independent of the server's code: PLAIN (RFC 4616), LOGIN, CRAM-MD5
(RFC 2195, with Python's hmac) and SCRAM-SHA-256 (RFC 7677, with the
`scramp` package).

usage: sasl_client.py PORT MECH USER PASSWORD [--authzid Z] [--ir] [--cancel-at N]

Prints one line per server challenge ("CHALLENGE <decoded>"), then
"SERVER-SIGNATURE OK" when a SCRAM server proved itself, then
"RESULT <tagged line>".
"""
import argparse
import base64
import hashlib
import hmac
import socket
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("mech")
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--authzid", default="")
    ap.add_argument("--ir", action="store_true", help="send an initial response (SASL-IR)")
    ap.add_argument("--cancel-at", type=int, default=0, help="answer challenge N with *")
    a = ap.parse_args()

    s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    f = s.makefile("rb")
    greeting = f.readline()
    assert greeting.startswith(b"* OK"), greeting

    user, pw = a.user.encode(), a.password.encode()
    scram = None
    if a.mech == "SCRAM-SHA-256":
        from scramp import ScramClient
        scram = ScramClient(["SCRAM-SHA-256"], a.user, a.password)
    login_answers = [user, pw]

    def first_message():
        if a.mech == "PLAIN":
            return a.authzid.encode() + b"\0" + user + b"\0" + pw
        if a.mech == "SCRAM-SHA-256":
            return scram.get_client_first().encode()
        if a.mech == "LOGIN":
            return login_answers.pop(0)
        return None

    cmd = b"A1 AUTHENTICATE " + a.mech.encode()
    if a.ir:
        m = first_message()
        cmd += b" " + (base64.b64encode(m) if m else b"=")
    s.sendall(cmd + b"\r\n")

    n = 0
    scram_step = 0
    sent_first = a.ir
    while True:
        line = f.readline()
        if not line:
            print("RESULT <connection closed>")
            return
        line = line.rstrip(b"\r\n")
        if line.startswith(b"A1 "):
            print("RESULT " + line.decode())
            return
        if line.startswith(b"* "):
            print("UNTAGGED " + line.decode())
            continue
        assert line.startswith(b"+"), line
        n += 1
        challenge = base64.b64decode(line[2:])
        print("CHALLENGE " + challenge.decode("latin-1"))
        if n == a.cancel_at:
            s.sendall(b"*\r\n")
            continue
        if a.mech == "PLAIN" or (a.mech == "SCRAM-SHA-256" and not sent_first):
            answer = first_message()
            sent_first = True
        elif a.mech == "LOGIN":
            answer = login_answers.pop(0) if login_answers else b""
        elif a.mech == "CRAM-MD5":
            answer = user + b" " + hmac.new(pw, challenge, hashlib.md5).hexdigest().encode()
        elif a.mech == "SCRAM-SHA-256":
            scram_step += 1
            if scram_step == 1:
                scram.set_server_first(challenge.decode())
                answer = scram.get_client_final().encode()
            else:
                scram.set_server_final(challenge.decode())  # raises if forged
                print("SERVER-SIGNATURE OK")
                answer = b""
        else:
            answer = b""
        s.sendall(base64.b64encode(answer) + b"\r\n")


if __name__ == "__main__":
    sys.exit(main())
