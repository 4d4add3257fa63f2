#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for engine's mail tests and benchmarks.

Listens on 127.0.0.1:PORT and stores every accepted message in OUT_DIR as

    NNNNNN.eml   the raw message exactly as received (DATA), CRLF line ends
    NNNNNN.json  {"mail_from", "rcpt_tos", "eml", "subject", "message_id", "from",
                  "to", "cc", "bcc", "reply_to", "text", "html", "content_type"}
                 (headers decoded by Python's email package; written after the .eml,
                 by rename, so a test that sees the .json can read both)

Modes:
    --reject-5xx      answer 550 to RCPT TO (and to DATA)
    --reject-4xx      answer 451 to DATA (temporary failure)
    --delay-ms N      wait N ms before answering DATA
    --auth USER:PASS  require AUTH PLAIN/LOGIN with these credentials (no TLS needed)
    --no-store        accept but write nothing (for benchmarks)
    --starttls        offer STARTTLS with a throw-away self-signed certificate (made with the
                      openssl command into OUT_DIR); clients that check certificates refuse it
    --implicit-tls    speak TLS from the first byte (smtps), with the same kind of certificate

Prints "LISTENING 127.0.0.1:PORT" on stdout once it accepts connections; stops on
SIGTERM/SIGINT. Needs `pip install aiosmtpd`.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import subprocess
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, args):
        self.args = args
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.reject_5xx:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.delay_ms:
            await asyncio.sleep(self.args.delay_ms / 1000.0)
        if self.args.reject_5xx:
            return "550 5.7.1 Message rejected as spam by content filter"
        if self.args.reject_4xx:
            return "451 4.3.0 Mail server temporarily rejected message, try again later"
        self.count += 1
        n = self.count
        if not self.args.no_store:
            store(self.args.out_dir, n, envelope)
        return f"250 2.0.0 Ok: queued as {n:06d}"


def store(out_dir, n, envelope):
    raw = envelope.original_content or envelope.content
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    base = os.path.join(out_dir, f"{n:06d}")
    write_atomically(base + ".eml", raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)

    def part(kind):
        p = msg.get_body(preferencelist=(kind,))
        if p is None or p.get_content_type() != f"text/{kind}":
            return None
        return p.get_content()

    def header(name):
        v = msg.get(name)
        return None if v is None else str(v)

    summary = {
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "eml": os.path.basename(base + ".eml"),
        "subject": header("Subject"),
        "message_id": header("Message-ID"),
        "from": header("From"),
        "to": header("To"),
        "cc": header("Cc"),
        "bcc": header("Bcc"),
        "reply_to": header("Reply-To"),
        "content_type": msg.get_content_type(),
        "text": part("plain"),
        "html": part("html"),
    }
    write_atomically(base + ".json", json.dumps(summary, indent=1).encode("utf-8"))


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def self_signed_context(out_dir):
    key = os.path.join(out_dir, "tls-key.pem")
    cert = os.path.join(out_dir, "tls-cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("out_dir")
    ap.add_argument("--reject-5xx", action="store_true")
    ap.add_argument("--reject-4xx", action="store_true")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--auth", metavar="USER:PASS")
    ap.add_argument("--no-store", action="store_true")
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--implicit-tls", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    handler = Handler(args)
    smtp_kwargs = {"hostname": "smtp.test", "data_size_limit": 10 * 1024 * 1024}
    if args.starttls:
        smtp_kwargs["tls_context"] = self_signed_context(args.out_dir)
    if args.auth:
        user, _, password = args.auth.partition(":")
        smtp_kwargs.update(
            auth_required=True,
            auth_require_tls=False,
            authenticator=authenticator_for(user, password),
        )

    loop = asyncio.get_running_loop()
    # Implicit TLS (smtps, port 465 style): the TLS handshake comes first, with the same
    # throw-away certificate.
    ssl_ctx = self_signed_context(args.out_dir) if args.implicit_tls else None
    server = await loop.create_server(
        lambda: SMTP(handler, **smtp_kwargs), host="127.0.0.1", port=args.port, ssl=ssl_ctx
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING 127.0.0.1:{args.port}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except OSError as e:
        print(f"smtp_server.py: {e}", file=sys.stderr)
        sys.exit(1)
