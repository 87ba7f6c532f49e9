"""The browser side of the dev issuer: what keycloak-js 16 needs from Keycloak.

Served under Keycloak's realm URLs: the login page (`auth`, with Keycloak's form ids), SSO
sessions kept in Keycloak's cookies, authorization codes (with PKCE S256 and the request's
nonce), `prompt=none`, the third-party-cookie check pages, the login-status iframe, logout and
the account endpoint. Only the public client's registered redirect URIs are accepted, as
Keycloak does; CORS answers the configured web origins with credentials, as Keycloak does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import jwt
from flask import Flask, Response, make_response, redirect, render_template_string, request

if TYPE_CHECKING:
    from devkit.oidc_issuer import LocalIssuer, User

CODE_TTL = 60  # seconds an authorization code stays redeemable (Keycloak's default)
SESSION_IDLE = 30 * 60  # Keycloak's default SSO session idle timeout
IDENTITY_COOKIE = "KEYCLOAK_IDENTITY"  # HttpOnly: the session id the server looks up
SESSION_COOKIE = "KEYCLOAK_SESSION"  # readable by the login-status iframe: realm/sub/session
RESPONSE_MODES = ("fragment", "query")
DEFAULT_CORS_HEADERS = "Authorization, Content-Type"
# RFC 7636 §4.1: 43 to 128 unreserved characters.
VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
ERRORS = {
    "client": "Client not found.",
    "redirect_uri": "Invalid parameter: redirect_uri",
    "response_mode": "Invalid parameter: response_mode",
    "logout_redirect": "Invalid redirect uri",
}


@dataclass
class Session:
    """An SSO session: who logged in, when, and when it was last used."""

    id: str
    user: User
    auth_time: int
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class AuthCode:
    """A one-use authorization code and the request it answers."""

    client_id: str
    redirect_uri: str
    session_id: str
    nonce: str | None
    scope: str
    code_challenge: str | None
    expires: float


def s256(verifier: str) -> str:
    """Return the PKCE S256 challenge of a verifier: BASE64URL(SHA256(verifier))."""
    return jwt.utils.base64url_encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode()


def uri_allowed(uri: str, patterns: list[str]) -> bool:
    """Tell whether a redirect URI matches a registered one (a trailing `*` as in Keycloak)."""
    if not uri or "#" in uri:
        return False
    for pattern in patterns:
        if pattern.endswith("*"):
            if uri.startswith(pattern[:-1]):
                return True
        elif uri == pattern:
            return True
    return False


def origin_of(uri: str) -> str:
    """Return scheme://host[:port] of a URL."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


class BrowserLogin:
    """Sessions, codes and the browser-facing routes of one realm."""

    def __init__(
        self, issuer: LocalIssuer, redirect_uris: list[str], web_origins: list[str]
    ) -> None:
        self.issuer = issuer
        self.redirect_uris = list(redirect_uris)
        # Keycloak's web origins: `+` means the origins of the redirect URIs, `*` any origin.
        self.web_origins = list(web_origins)
        self.sessions: dict[str, Session] = {}
        self.codes: dict[str, AuthCode] = {}
        self._lock = threading.Lock()

    # origins ---------------------------------------------------------------------------------
    def origin_allowed(self, origin: str) -> bool:
        """Tell whether a browser origin may call the token, userinfo and account endpoints."""
        allowed = self.allowed_origin_list()
        return "*" in allowed or any(fnmatch.fnmatchcase(origin, o) for o in allowed)

    def allowed_origin_list(self) -> list[str]:
        """The access token's `allowed-origins`: the web origins with `+` expanded."""
        origins = [o for o in self.web_origins if o != "+"]
        if "+" in self.web_origins:
            origins += [origin_of(p.rstrip("*")) for p in self.redirect_uris]
        return sorted(set(origins))

    def cors(self, response: Response) -> Response:
        """Add Keycloak's CORS headers for an allowed Origin (credentials included)."""
        origin = request.headers.get("Origin")
        if not origin or not self.origin_allowed(origin):
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")
        if request.method == "OPTIONS":
            asked = request.headers.get("Access-Control-Request-Headers")
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = asked or DEFAULT_CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "3600"
        return response

    # sessions --------------------------------------------------------------------------------
    def start_session(self, user: User) -> Session:
        """Open an SSO session for a user."""
        session = Session(id=secrets.token_urlsafe(24), user=user, auth_time=int(time.time()))
        with self._lock:
            self.sessions[session.id] = session
        return session

    def session(self, session_id: str | None) -> Session | None:
        """Return a live session (idle ones expire), touching it."""
        if not session_id:
            return None
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                return None
            if time.monotonic() - session.last_used > SESSION_IDLE:
                del self.sessions[session_id]
                return None
            session.last_used = time.monotonic()
            return session

    def end_session(self, session_id: str | None) -> None:
        """Forget a session: its refresh tokens stop working."""
        with self._lock:
            self.sessions.pop(session_id or "", None)

    # codes -----------------------------------------------------------------------------------
    def issue_code(self, params: dict[str, str], session: Session) -> str:
        """Store a code for this authorization request and return it."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self.codes = {k: v for k, v in self.codes.items() if v.expires > now}
            self.codes[code] = AuthCode(
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                session_id=session.id,
                nonce=params.get("nonce") or None,
                scope=params.get("scope") or "openid",
                code_challenge=params.get("code_challenge") or None,
                expires=now + CODE_TTL,
            )
        return code

    def redeem(self, form: Any, client: str) -> tuple[Session, AuthCode] | tuple[None, str]:
        """Check an authorization_code grant; return (session, code) or (None, reason)."""
        with self._lock:
            entry = self.codes.pop(form.get("code", ""), None)  # one use, even when refused
        if entry is None or entry.expires < time.monotonic() or entry.client_id != client:
            return None, "Code not valid"
        if form.get("redirect_uri") != entry.redirect_uri:
            return None, "Incorrect redirect_uri"
        verifier = form.get("code_verifier")
        if entry.code_challenge is None:
            if verifier:
                return None, "PKCE code verifier specified but challenge not present"
        elif not verifier:
            return None, "PKCE code verifier not specified"
        elif not VERIFIER_RE.match(verifier) or not hmac.compare_digest(
            s256(verifier), entry.code_challenge
        ):
            return None, "PKCE verification failed: Code mismatch"
        session = self.session(entry.session_id)
        if session is None:
            return None, "Session not active"
        return session, entry

    # routes ----------------------------------------------------------------------------------
    def register(self, app: Flask, realm_path: str, oidc: str) -> None:
        """Add the browser routes to the issuer's Flask app."""
        check = self.issuer.check_realm
        app.add_url_rule(oidc + "/auth", "auth", self._auth, methods=["GET", "POST"])
        app.add_url_rule(oidc + "/logout", "logout", self._logout, methods=["GET", "POST"])
        app.add_url_rule(
            oidc + "/3p-cookies/step1.html",
            "3p_step1",
            lambda realm: check(realm) or _html(STEP1_HTML),
        )
        app.add_url_rule(
            oidc + "/3p-cookies/step2.html",
            "3p_step2",
            lambda realm: check(realm) or _html(STEP2_HTML),
        )
        app.add_url_rule(
            oidc + "/login-status-iframe.html",
            "login_status",
            lambda realm: check(realm) or _html(LOGIN_STATUS_HTML),
        )
        app.add_url_rule(
            oidc + "/login-status-iframe.html/init", "login_status_init", self._iframe_init
        )
        app.add_url_rule(realm_path + "/account", "account", self._account, methods=["GET"])

    def _auth(self, realm: str) -> Any:
        """The authorization endpoint: validate, then SSO, prompt=none, or the login form."""
        self.issuer.check_realm(realm)
        params = {**request.args.to_dict(), **_form_params()}
        client_id = params.get("client_id", "")
        if client_id not in self.issuer.clients or self.issuer.clients[client_id] is not None:
            return error_page(ERRORS["client"])
        redirect_uri = params.get("redirect_uri", "")
        if not uri_allowed(redirect_uri, self.redirect_uris):
            return error_page(ERRORS["redirect_uri"])
        mode = params.get("response_mode") or "fragment"
        if mode not in RESPONSE_MODES:
            return error_page(ERRORS["response_mode"])
        refused = self._refusal(params)
        if refused:
            return self._back(params, {"error": refused[0], "error_description": refused[1]})
        session = self.session(request.cookies.get(IDENTITY_COOKIE))
        prompt = params.get("prompt", "")
        if request.method == "POST" and "username" in request.form:
            return self._login(params)
        if session is not None and prompt != "login" and not self._too_old(session, params):
            return self._success(params, session)
        if prompt == "none":
            return self._back(params, {"error": "login_required"})
        return self._form(params, username=params.get("login_hint", ""))

    def _refusal(self, params: dict[str, str]) -> tuple[str, str] | None:
        """Return (error, description) for a request Keycloak refuses by redirect, else None."""
        if params.get("response_type") != "code":
            return "unsupported_response_type", (
                "Client is not allowed to initiate browser login with given response_type."
            )
        method = params.get("code_challenge_method")
        if params.get("code_challenge"):
            if method != "S256":
                return "invalid_request", "Invalid parameter: code_challenge_method"
            if not VERIFIER_RE.match(params["code_challenge"]):
                return "invalid_request", "Invalid parameter: code_challenge"
        elif method:
            return "invalid_request", "Missing parameter: code_challenge"
        return None

    @staticmethod
    def _too_old(session: Session, params: dict[str, str]) -> bool:
        """Tell whether `max_age` asks for a fresher login than the session's."""
        max_age = params.get("max_age", "")
        return max_age.isdigit() and time.time() - session.auth_time > int(max_age)

    def _login(self, params: dict[str, str]) -> Any:
        """Check the posted credentials: the code redirect, or the form again with an error."""
        username = request.form.get("username", "")
        user = self.issuer.find_user(username)
        if user is None or not hmac.compare_digest(
            user.password.encode(), request.form.get("password", "").encode()
        ):
            return self._form(params, username=username, error="Invalid username or password.")
        return self._success(params, self.start_session(user))

    def _success(self, params: dict[str, str], session: Session) -> Response:
        """Redirect back with code, state and session_state; (re)set the session cookies."""
        code = self.issue_code(params, session)
        response = self._back(params, {"code": code, "session_state": session.id})
        path = f"/realms/{self.issuer.realm}/"
        response.set_cookie(IDENTITY_COOKIE, session.id, path=path, httponly=True, samesite="Lax")
        value = f"{self.issuer.realm}/{session.user.sub}/{session.id}"
        response.set_cookie(SESSION_COOKIE, value, path=path, samesite="Lax")
        return response

    @staticmethod
    def _back(params: dict[str, str], answer: dict[str, str]) -> Response:
        """Redirect to the client with `state` first, in its response mode."""
        values = {"state": params["state"]} if params.get("state") else {}
        values.update(answer)
        uri = params["redirect_uri"]
        if (params.get("response_mode") or "fragment") == "query":
            target = f"{uri}{'&' if '?' in uri else '?'}{urlencode(values)}"
        else:
            target = f"{uri}#{urlencode(values)}"
        return redirect(target, code=302)

    def _form(self, params: dict[str, str], *, username: str, error: str | None = None) -> str:
        """Render Keycloak's login form; it posts back here with the request's parameters."""
        action = f"{request.base_url}?{urlencode(params)}"
        return render_template_string(
            LOGIN_HTML, realm=self.issuer.realm, action=action, username=username, error=error
        )

    def _logout(self, realm: str) -> Any:
        """End the browser's session; go to a registered redirect URI, as keycloak-js asks."""
        self.issuer.check_realm(realm)
        refresh = request.form.get("refresh_token") if request.method == "POST" else None
        if refresh:  # an adapter's back-channel logout
            try:
                claims = self.issuer.verify(refresh, typ="Refresh")
            except jwt.PyJWTError:
                return self.cors(make_response({"error": "invalid_grant"}, 400))
            self.end_session(claims.get("sid"))
            return self.cors(make_response("", 204))
        params = {**request.args.to_dict(), **_form_params()}
        target = params.get("post_logout_redirect_uri") or params.get("redirect_uri")
        if target and not uri_allowed(target, self.redirect_uris):
            return error_page(ERRORS["logout_redirect"])
        self.end_session(request.cookies.get(IDENTITY_COOKIE))
        response = (
            redirect(_with_state(target, params.get("state")), code=302)
            if target
            else make_response(render_template_string(LOGGED_OUT_HTML, realm=self.issuer.realm))
        )
        path = f"/realms/{self.issuer.realm}/"
        response.delete_cookie(IDENTITY_COOKIE, path=path)
        response.delete_cookie(SESSION_COOKIE, path=path)
        return response

    def _iframe_init(self, realm: str) -> Any:
        """The login-status iframe's origin check: 204 for a known client and origin."""
        self.issuer.check_realm(realm)
        client = request.args.get("client_id", "")
        origin = request.args.get("origin", "")
        known = client in self.issuer.clients and self.issuer.clients[client] is None
        return ("", 204) if known and self.origin_allowed(origin) else ("", 403)

    def _account(self, realm: str) -> Any:
        """Keycloak's account endpoint: the profile as JSON for a bearer token."""
        self.issuer.check_realm(realm)
        claims = self.issuer.bearer_claims()
        if claims is None:
            return {"error": "HTTP 401 Unauthorized"}, 401
        user = self.issuer.user_by_sub(claims["sub"])
        if user is None:
            return {"error": "User not found"}, 404
        return {
            "id": user.sub,
            "username": user.username,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "email": user.email,
            "emailVerified": bool(user.email),
            "attributes": {},
        }


def _form_params() -> dict[str, str]:
    """The authorization parameters of a POSTed form (not the credentials)."""
    if request.method != "POST":
        return {}
    return {k: v for k, v in request.form.items() if k not in ("username", "password", "login")}


def _with_state(uri: str, state: str | None) -> str:
    """Append `state` to a post-logout redirect (OIDC RP-initiated logout)."""
    if not state:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode({'state': state})}"


def _html(body: str) -> Response:
    """Answer a static HTML page."""
    return Response(body, mimetype="text/html")


def error_page(message: str) -> Response:
    """Keycloak's error page: a 400 HTML page naming the bad parameter."""
    return Response(render_template_string(ERROR_HTML, message=message), 400, mimetype="text/html")


STYLE = """<style>
body{font-family:sans-serif;background:#f0f0f0;margin:0}
#kc-header{background:#393f44;color:#fff;padding:18px 24px;font-size:22px}
.card{background:#fff;max-width:380px;margin:40px auto;padding:24px 32px;
 border-top:4px solid #0066cc}
label{display:block;margin-top:14px}
input[type=text],input[type=password]{width:100%;padding:6px;box-sizing:border-box}
#kc-login{margin-top:20px;width:100%;padding:8px;background:#0066cc;color:#fff;border:0}
.alert-error{background:#ffe6e6;border:1px solid #c00;padding:8px;margin:10px 0}
</style>"""

LOGIN_HTML = (
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in to {{ realm }}</title>"""
    + STYLE
    + """</head>
<body><div id="kc-header">{{ realm }}</div>
<div class="card"><h1 id="kc-page-title">Sign in to your account</h1>
{% if error %}<div class="alert-error"><span id="input-error" class="kc-feedback-text"
 aria-live="polite">{{ error }}</span></div>{% endif %}
<form id="kc-form-login" action="{{ action }}" method="post">
<label for="username">Username or email</label>
<input tabindex="1" id="username" name="username" value="{{ username }}" type="text" autofocus
 autocomplete="off">
<label for="password">Password</label>
<input tabindex="2" id="password" name="password" type="password" autocomplete="off">
<input tabindex="4" id="kc-login" name="login" type="submit" value="Sign In">
</form></div></body></html>"""
)

ERROR_HTML = (
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Error</title>"""
    + STYLE
    + """</head>
<body><div id="kc-header">Error</div>
<div class="card"><h1 id="kc-page-title">We are sorry...</h1>
<p id="kc-error-message" class="instruction">{{ message }}</p></div></body></html>"""
)

LOGGED_OUT_HTML = (
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Logged out</title>"""
    + STYLE
    + """</head>
<body><div id="kc-header">{{ realm }}</div>
<div class="card"><h1 id="kc-page-title">You are logged out</h1></div></body></html>"""
)

# Third-party cookie check, as keycloak-js runs it in a hidden iframe: step 1 sets a cookie,
# step 2 reports to the parent whether it came back.
STEP1_HTML = """<!doctype html><html><body><script>
document.cookie = "KEYCLOAK_3P_COOKIE=supported; max-age=60; path=/";
window.location.replace("step2.html");
</script></body></html>"""

STEP2_HTML = """<!doctype html><html><body><script>
var found = document.cookie.indexOf("KEYCLOAK_3P_COOKIE=supported") !== -1;
document.cookie = "KEYCLOAK_3P_COOKIE=; max-age=0; path=/";
window.parent.postMessage(found ? "supported" : "unsupported", "*");
</script></body></html>"""

# keycloak-js posts "<client_id> <session_state>"; the answer is unchanged, changed or error.
LOGIN_STATUS_HTML = """<!doctype html><html><body><script>
var checked = null;
function sessionCookie() {
  var parts = document.cookie.split("; ");
  for (var i = 0; i < parts.length; i++) {
    if (parts[i].indexOf("KEYCLOAK_SESSION=") === 0) {
      return decodeURIComponent(parts[i].substring(17)).replace(/^"|"$/g, "");
    }
  }
  return null;
}
function compare(sessionState) {
  var cookie = sessionCookie();
  if (!cookie) { return "changed"; }
  return cookie.split("/")[2] === sessionState ? "unchanged" : "changed";
}
window.addEventListener("message", function (event) {
  if (typeof event.data !== "string") { return; }
  var words = event.data.split(" ");
  if (words.length !== 2) { return; }
  var key = words[0] + " " + event.origin;
  var answer = function (text) { event.source.postMessage(text, event.origin); };
  if (checked === key) { answer(compare(words[1])); return; }
  var url = location.pathname + "/init?client_id=" + encodeURIComponent(words[0]) +
    "&origin=" + encodeURIComponent(event.origin);
  fetch(url, {credentials: "include"}).then(function (response) {
    if (response.status === 204) { checked = key; answer(compare(words[1])); }
    else { answer("error"); }
  }, function () { answer("error"); });
});
</script></body></html>"""
