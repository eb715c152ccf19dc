#!/usr/bin/env python3
"""A Docker-Hub-style Bearer token issuer for the test registry (test infrastructure only).

Serves GET /token (anonymous or HTTP Basic) and the OAuth2 form POST /token
(grant_type=password|refresh_token) and answers with an RS256 JWT that Debian's
docker-registry 2.8 accepts (`auth: token:` with this issuer's certificate as rootcertbundle).
Policy: valid credentials get every requested action on every repository; anonymous users get
pull (or nothing with --anonymous none), never on repositories under `private/`.
Never use it outside tests: users and passwords live in a plain-text file.
"""

import argparse
import base64
import hmac
import math
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AUTHENTICATED_ACTIONS = {"pull", "push", "delete", "*"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cert_der_b64(pem_path: str) -> str:
    """The x5c entry: the PEM body is already base64 of the DER certificate."""
    lines, inside = [], False
    with open(pem_path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("-----BEGIN CERTIFICATE"):
                inside = True
            elif line.startswith("-----END CERTIFICATE"):
                break
            elif inside:
                lines.append(line)
    if not lines:
        sys.exit(f"token_issuer: no certificate in {pem_path}")
    return "".join(lines)


def load_users(path):
    users = {}
    if path:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line and not line.startswith("#") and ":" in line:
                    name, password = line.split(":", 1)
                    users[name] = password
    return users


def parse_scope(scope: str):
    """'repository:NAME:a,b' -> (type, name, [actions]); NAME may itself hold ':' (host:port)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class Issuer:
    """Signs tokens and remembers refresh tokens; shared by all request threads."""

    def __init__(self, args):
        self.args = args
        self.users = load_users(args.users)
        self.x5c = cert_der_b64(args.cert)
        self.lock = threading.Lock()
        self.refresh_tokens = {}  # refresh token -> user name
        self.log_file = open(args.log, "a", buffering=1) if args.log else sys.stderr

    def log(self, line: str):
        with self.lock:
            self.log_file.write(f"{rfc3339(time.time())} {line}\n")

    def check_password(self, user, password) -> bool:
        expected = self.users.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def new_refresh_token(self, user) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[token] = user
        return token

    def user_for_refresh_token(self, token):
        with self.lock:
            return self.refresh_tokens.get(token)

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            if kind == "repository" and user is not None:
                allowed = AUTHENTICATED_ACTIONS
            elif kind == "repository" and self.args.anonymous == "pull" and not name.startswith("private/"):
                allowed = {"pull"}
            elif kind == "registry" and name == "catalog" and user is not None:
                allowed = {"*"}
            else:
                allowed = set()
            actions = [a for a in wanted if a in allowed]
            if actions:
                access.append({"type": kind, "name": name, "actions": actions})
        return access

    def sign(self, user, service, access):
        now = time.time()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": self.args.issuer,
            "sub": user or "",
            "aud": service,
            # The registry tolerates `leeway` seconds past exp; subtract it so that the token
            # really stops working `ttl` seconds after issue, as expires_in promises.
            # Rounded up so that the lifetime is never shorter than ttl.
            "exp": math.ceil(now) + self.args.ttl - self.args.leeway,
            "nbf": int(now),
            "iat": int(now),
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.args.key],
            input=signing_input.encode(), capture_output=True, check=True,
        ).stdout
        return signing_input + "." + b64url(sig), int(now)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "imagefs-token-issuer"
    issuer: Issuer = None  # set in main()

    def log_message(self, fmt, *args):  # the issuer writes its own log lines
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def basic_credentials(self):
        value = self.headers.get("Authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
        except ValueError:
            return ("", "")
        return user, password

    def finish_token(self, who, user, service, scopes, offline, oauth):
        iss = self.issuer
        if service != iss.args.service:
            return self.fail(400, who, f"unknown service {service!r}", "invalid_request")
        access = iss.grant(user, scopes)
        token, now = iss.sign(user, service, access)
        body = {"token": token, "access_token": token, "expires_in": iss.args.ttl,
                "issued_at": rfc3339(now)}
        if oauth:
            body["scope"] = " ".join(scopes)
        if offline and user is not None:
            body["refresh_token"] = iss.new_refresh_token(user)
        granted = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
        iss.log(f"{self.command} {who} 200 service={service} scope=[{' '.join(scopes)}] "
                f"granted=[{granted}]{' +refresh_token' if 'refresh_token' in body else ''}")
        self.reply(200, body)

    def fail(self, status, who, message, oauth_error=None):
        self.issuer.log(f"{self.command} {who} {status} {message}")
        code = "UNAUTHORIZED" if status == 401 else "BAD_REQUEST"
        body = {"errors": [{"code": code, "message": message}], "details": message}
        if oauth_error:
            body.update(error=oauth_error, error_description=message)
        self.reply(status, body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
        query = urllib.parse.parse_qs(url.query)
        service = query.get("service", [self.issuer.args.service])[0]
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        creds = self.basic_credentials()
        if creds is None:
            return self.finish_token("anonymous", None, service, scopes, False, False)
        user, password = creds
        if not self.issuer.check_password(user, password):
            return self.fail(401, f"user={user}", "incorrect username or password")
        offline = query.get("offline_token", ["false"])[0] == "true"
        self.finish_token(f"user={user}", user, service, scopes, offline, False)

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": self.path}]})
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            return self.fail(400, "?", "form too large", "invalid_request")
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        field = lambda name, default="": form.get(name, [default])[0]
        service = field("service", self.issuer.args.service)
        scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
        grant_type = field("grant_type")
        if grant_type == "password":
            user = field("username")
            if not self.issuer.check_password(user, field("password")):
                return self.fail(401, f"password user={user}", "incorrect username or password",
                                 "invalid_grant")
            offline = field("access_type") == "offline"
            return self.finish_token(f"password user={user}", user, service, scopes, offline, True)
        if grant_type == "refresh_token":
            user = self.issuer.user_for_refresh_token(field("refresh_token"))
            if user is None:
                return self.fail(401, "refresh_token", "unknown refresh token", "invalid_grant")
            return self.finish_token(f"refresh_token user={user}", user, service, scopes, False, True)
        self.fail(400, "?", f"unsupported grant_type {grant_type!r}", "unsupported_grant_type")


def parse_listen(value):
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        return host, int(port)
    except ValueError:
        sys.exit(f"token_issuer: --listen must be a loopback HOST:PORT, not {value!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--key", required=True, help="PEM RSA private key that signs tokens")
    p.add_argument("--cert", required=True, help="PEM certificate of --key, sent in the x5c header")
    p.add_argument("--issuer", default="imagefs-test-issuer", help="the iss claim")
    p.add_argument("--service", default="imagefs-test-registry", help="the service (aud) accepted")
    p.add_argument("--users", help="file of 'user:password' lines (plain text: tests only)")
    p.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds")
    p.add_argument("--leeway", type=int, default=60,
                   help="the registry's clock-skew leeway on exp, subtracted from exp (2.8: 60)")
    p.add_argument("--anonymous", choices=["pull", "none"], default="pull")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--port-file", help="write HOST:PORT here once listening")
    p.add_argument("--log", help="append one line per request here (default: stderr)")
    args = p.parse_args()

    Handler.issuer = Issuer(args)
    server = ThreadingHTTPServer(parse_listen(args.listen), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    address = f"{host}:{port}"
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(address + "\n")
        os.replace(tmp, args.port_file)
    print(address, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
