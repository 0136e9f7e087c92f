#!/usr/bin/env python3
"""An FTP data logger for the tests, written with Python's standard ftplib (a client nobody
here wrote). Uploads each file given, in order, over one session, and prints one line per
file: `<name>\t<final reply or error>`. With --acks, each name whose upload got its 226 is
appended to that file (flushed at once), so that a test can kill the server mid-flood and
know exactly which uploads were confirmed. Stops at the first connection error.
Then each --send command is sent as is, printed as `<command>\t<reply>`.
--garbage-data NAME first opens a passive data connection, writes bytes that are no TLS
handshake into it, and sends STOR NAME: prints `garbage\t<replies>` (the test of a data
connection that fails its TLS handshake).

usage: ftp_client.py --port P --user U --password W [--tls --cafile CERT] [--dir D]
                     [--acks FILE] [--send CMD]... [--garbage-data NAME] FILE...
"""
import argparse
import ftplib
import os
import socket
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--dir", help="MKD, CWD and LIST this directory first, as loggers do")
    p.add_argument("--acks")
    p.add_argument("--files-from", help="a file listing the files to upload, one a line")
    p.add_argument("--send", action="append", default=[], help="a raw command, after uploads")
    p.add_argument("--garbage-data", metavar="NAME")
    p.add_argument("files", nargs="*")
    a = p.parse_args()
    files = list(a.files)
    if a.files_from:
        with open(a.files_from) as f:
            files += [line.strip() for line in f if line.strip()]

    if a.tls:
        ctx = ssl.create_default_context(cafile=a.cafile)
        # libunftp 0.24 closes an upload's TLS data connection without a close_notify;
        # ftplib's unwrap() after STOR then fails on OpenSSL 3 unless told to accept it.
        ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        ftp = ftplib.FTP_TLS(context=ctx, timeout=60)
    else:
        ftp = ftplib.FTP(timeout=60)
    try:
        ftp.connect(a.host, a.port)
        if a.tls:
            ftp.auth()
        ftp.login(a.user, a.password)
        if a.tls:
            ftp.prot_p()
    except ftplib.Error as e:
        print(f"login\t{e}", flush=True)
        return 0
    if a.dir:
        try:
            ftp.mkd(a.dir)
        except ftplib.Error as e:
            print(f"mkd\t{e}", flush=True)
        ftp.cwd(a.dir)
        lines = []
        ftp.retrlines("LIST", lines.append)
        print(f"list\t{len(lines)} entries", flush=True)

    if a.garbage_data:
        print(f"garbage\t{garbage_data(ftp, a.garbage_data)}", flush=True)

    acks = open(a.acks, "a") if a.acks else None
    for path in files:
        name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                reply = ftp.storbinary(f"STOR {name}", f)
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as e:
            print(f"{name}\t{e}", flush=True)
            continue
        except (OSError, EOFError, ftplib.Error) as e:
            print(f"{name}\tconnection: {e!r}", flush=True)
            return 0
        print(f"{name}\t{reply}", flush=True)
        if acks and reply.startswith("226"):
            acks.write(name + "\n")
            acks.flush()
    for command in a.send:
        try:
            reply = ftp.sendcmd(command)
        except ftplib.Error as e:
            reply = str(e)
        print(f"{command}\t{reply}", flush=True)
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        pass
    return 0


def garbage_data(ftp, name):
    """PASV, connect, write what is no TLS handshake, STOR: the replies, ` | `-separated."""
    replies = []
    _, port = ftplib.parse227(ftp.sendcmd("PASV"))
    data = socket.create_connection((ftp.host, port), timeout=10)
    try:
        data.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
        ftp.putcmd(f"STOR {name}")
        old = ftp.sock.gettimeout()
        ftp.sock.settimeout(5)
        try:
            while True:
                reply = ftp.getline()
                replies.append(reply)
                if reply[:1] in "2345":
                    break
        except (OSError, EOFError) as e:
            replies.append(f"no reply: {e!r}")
        finally:
            ftp.sock.settimeout(old)
    finally:
        data.close()
    return " | ".join(replies)


if __name__ == "__main__":
    sys.exit(main())
