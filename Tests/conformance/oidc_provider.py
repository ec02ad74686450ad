"""A small OpenID Connect provider for the console's single sign-on tests.

It serves discovery, JWKS, an authorize endpoint that signs the configured user in at once, and a
token endpoint that checks the client's credentials, the code, the redirect URI and the PKCE
verifier before it returns an RS256-signed ID token (authlib's JOSE). `mode` makes it hand out a
bad token on purpose: expired, for another audience, or signed with a key it never published.
"""
import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from authlib.jose import JsonWebKey, jwt


class OIDCProvider:
    def __init__(self, client_id="signalbox-console", client_secret="console-secret-for-tests"):
        self.client_id, self.client_secret = client_id, client_secret
        self.key = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "test-key-1"})
        # Same kid, never published: a token it signs must be refused.
        self.rogue_key = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "test-key-1"})
        self.user = {"sub": "user-1", "email": "ops@example.com", "email_verified": True, "name": "Ops", "groups": []}
        self.mode = "good"
        self.codes = {}
        self.token_requests = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def id_token(self, nonce):
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300, "nonce": nonce, **self.user}
        key = self.key
        if self.mode == "expired":
            claims.update(iat=now - 3600, exp=now - 600)
        elif self.mode == "wrong_audience":
            claims["aud"] = "some-other-client"
        elif self.mode == "bad_signature":
            key = self.rogue_key
        elif self.mode == "wrong_nonce":
            claims["nonce"] = "not-the-one-sent"
        header = {"alg": "RS256", "kid": "test-key-1", "typ": "JWT"}
        return jwt.encode(header, claims, key).decode()

    def _handler(provider):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    return self.reply(200, {
                        "issuer": provider.issuer, "authorization_endpoint": provider.issuer + "/authorize",
                        "token_endpoint": provider.issuer + "/token", "jwks_uri": provider.issuer + "/jwks",
                        "response_types_supported": ["code"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                        "code_challenge_methods_supported": ["S256"]})
                if url.path == "/jwks":
                    return self.reply(200, {"keys": [provider.key.as_dict(is_private=False)]})
                if url.path == "/authorize":
                    assert query.get("response_type") == "code" and query.get("client_id") == provider.client_id
                    assert query.get("code_challenge_method") == "S256" and "openid" in query.get("scope", "").split()
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = (query["redirect_uri"], query["code_challenge"], query["nonce"])
                    target = query["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": query["state"]})
                    return self.reply(302, headers=[("Location", target)])
                return self.reply(404, {"error": "not_found"})

            def do_POST(self):
                if self.path != "/token":
                    return self.reply(404, {"error": "not_found"})
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                provider.token_requests.append(form)
                expected = base64.b64encode(f"{provider.client_id}:{provider.client_secret}".encode()).decode()
                if self.headers.get("Authorization") != "Basic " + expected:
                    return self.reply(401, {"error": "invalid_client"})
                pending = provider.codes.pop(form.get("code"), None)
                if pending is None or form.get("grant_type") != "authorization_code":
                    return self.reply(400, {"error": "invalid_grant"})
                redirect_uri, challenge, nonce = pending
                verifier = form.get("code_verifier", "")
                computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if form.get("redirect_uri") != redirect_uri or computed != challenge:
                    return self.reply(400, {"error": "invalid_grant"})
                return self.reply(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                        "expires_in": 300, "id_token": provider.id_token(nonce)})

        return Handler
