"""The codec server (`lockmaster codec-server`): Temporal's remote codec protocol over HTTP, so
the Web UI and the `temporal` CLI (`--codec-endpoint`) show encrypted payloads decrypted, and the
CLI's signals, updates and starts are encrypted before they reach Temporal (docs/codec.md).

- `POST /decode`, `POST /encode`, also under a namespace (`/<namespace>/decode`: the CLI's
  `--codec-endpoint 'http://host:8081/{namespace}'`): a JSON body `{"payloads": [...]}` (proto3
  JSON: metadata values and data in base64), answered in the same shape. A body that is not
  that: 400; a payload that cannot be decrypted (unknown key id, changed): 422 with the reason.
- Auth (with a token file): `Authorization: Bearer <token>` (the CLI's `--codec-auth`), or the
  session cookie a browser gets from `/login` by giving the token once (the Web UI sends cookies
  with TEMPORAL_CODEC_INCLUDE_CREDENTIALS; it has no way to send a static bearer token). Tokens
  are compared in constant time. Without or with a wrong one: 401.
- CORS: only the configured origins (the Web UI's address) get `Access-Control-Allow-Origin`
  (with credentials); preflight OPTIONS is answered without auth, as browsers send it without.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from lockmaster.config.codec import LOOPBACK, check_origin
from lockmaster.config.models import LockmasterConfig
from lockmaster.temporal.codec import CodecError, EncryptionCodec, KeyFileError, load_keys

log = logging.getLogger(__name__)

ALLOW_HEADERS = "Authorization, Content-Type, X-Namespace"
COOKIE = "lockmaster-codec"
SESSION_SECONDS = 12 * 3600
# A history page of large payloads: Temporal's own limit is 2 MiB a payload.
MAX_BODY = 16 * 2**20
NEW_TOKEN = "openssl rand -hex 32 > TOKEN-FILE && chmod 600 TOKEN-FILE"


class TokenFileError(Exception):
    """The token file cannot be used; the message says which file and how to fix it."""


def read_token(path: Path) -> str:
    """The bearer token in `path` (its first line): the file must not be open to others."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(
            f"the codec server's token file {path} cannot be read ({exc.strerror or exc}): "
            f"make one ({NEW_TOKEN}) or fix --token-file / codec.serve.token-file") from None
    except UnicodeDecodeError:
        raise TokenFileError(f"the codec server's token file {path} is not text") from None
    if info.st_mode & 0o007:
        raise TokenFileError(
            f"the codec server's token file {path} is open to other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run: chmod o-rwx {path}")
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise TokenFileError(f"the codec server's token file {path} holds no token of at least "
                             f"16 characters on its first line ({NEW_TOKEN})")
    return token


@dataclass
class CodecService:
    """What the HTTP handlers need: the codec, the token (None: no auth, loopback only) and
    the origins allowed to call from a browser page."""

    codec: EncryptionCodec
    token: str | None = None
    origins: Sequence[str] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    # --- auth --------------------------------------------------------------------------------

    def session(self, expires: int) -> str:
        assert self.token is not None
        mac = hmac.new(self.token.encode(), f"session:{expires}".encode(), hashlib.sha256)
        return f"{expires}.{mac.hexdigest()}"

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                credential.strip().encode(), self.token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        expires, _, _ = cookie.partition(".")
        if expires.isdigit() and int(expires) > self.clock():
            return hmac.compare_digest(cookie.encode(), self.session(int(expires)).encode())
        return False

    # --- CORS --------------------------------------------------------------------------------

    def cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        response.headers[hdrs.VARY] = "Origin"
        if origin is not None and origin in self.origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    async def preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        self.cors(request, response)
        if hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOW_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        return response

    # --- the protocol ------------------------------------------------------------------------

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        response = web.Response(status=status, text=message + "\n")
        if status == 401:
            response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="lockmaster codec"'
        self.cors(request, response)
        return response

    async def handle(self, request: web.Request) -> web.Response:
        operation = request.path.rstrip("/").rsplit("/", 1)[-1]  # encode | decode
        namespace = request.match_info.get("namespace") or request.headers.get("X-Namespace", "")
        if not self.authorized(request):
            log.warning("codec %s refused (no or a wrong token) from %s", operation,
                        request.remote)
            return self._error(request, 401, (
                "a bearer token is required: send 'Authorization: Bearer <token>' (temporal "
                "--codec-auth 'Bearer <token>'), or sign in at /login in this browser"))
        try:
            body = await request.read()
            payloads = json_format.Parse(body, Payloads()).payloads
        except web.HTTPRequestEntityTooLarge:
            return self._error(request, 413, f"the body is over {MAX_BODY} bytes")
        except (json_format.ParseError, ValueError, UnicodeDecodeError) as exc:
            return self._error(request, 400, (
                'the body is not a codec request: expected JSON {"payloads": [{"metadata": '
                '{...}, "data": "<base64>"}, ...]} (proto3 JSON, bytes in base64): '
                f"{str(exc)[:300]}"))
        try:
            done: list[Payload] = (await self.codec.encode(payloads) if operation == "encode"
                                   else self.codec.decrypt_all(payloads))
        except CodecError as exc:
            log.warning("codec %s for namespace %r: %s", operation, namespace, exc)
            return self._error(request, 422, str(exc))
        log.info("codec %s: %d payload(s), namespace %r", operation, len(done), namespace)
        response = web.Response(
            text=json_format.MessageToJson(Payloads(payloads=done)),
            content_type="application/json")
        self.cors(request, response)
        return response

    # --- browser sign-in ---------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=_page(
            "Sign in to lockmaster's codec server",
            '<form method="post" action="login"><label>Token <input type="password" '
            'name="token" autofocus></label> <button>Sign in</button></form>'
            "<p>The Web UI then shows this deployment's encrypted payloads in this browser "
            f"for {SESSION_SECONDS // 3600} hours.</p>"))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token", "")).strip()
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401 if self.token else 404, content_type="text/html",
                                text=_page("Not signed in", "<p>That is not the token.</p>"
                                           if self.token else "<p>No token is needed.</p>"))
        expires = int(self.clock()) + SESSION_SECONDS
        response = web.Response(content_type="text/html", text=_page(
            "Signed in", "<p>Go back to the Web UI and reload the page.</p>"))
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        # SameSite=Strict: the Web UI and this server are one site (same host name, other
        # port; or sibling names under one domain), so its requests carry the cookie.
        response.set_cookie(COOKIE, self.session(expires), max_age=SESSION_SECONDS,
                            httponly=True, samesite="Strict", secure=secure, path="/")
        return response


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def build_app(service: CodecService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    for path in ("/encode", "/decode", "/{namespace}/encode", "/{namespace}/decode"):
        app.router.add_post(path, service.handle)
        app.router.add_route("OPTIONS", path, service.preflight)
    app.router.add_get("/login", service.login_form)
    app.router.add_post("/login", service.login)
    return app


class CodecServer:
    """The app on `listen:port` in a thread of its own (an auxiliary server of `lockmaster
    run`, or the command's). start() raises OSError when the port cannot be bound."""

    def __init__(self, service: CodecService, listen: str = "127.0.0.1", port: int = 8081):
        self.service, self.listen, self.port = service, listen, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="codec-server")

    @property
    def url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{self.port}"

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.service), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port)
        await site.start()
        if self.port == 0:  # tests: the kernel's choice
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> CodecServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


class CodecServerSetupError(Exception):
    """The codec server cannot be set up from the configuration and options given."""


def codec_service(config: LockmasterConfig, token_file: Path | None, origins: Sequence[str],
                  listen: str) -> CodecService:
    """The service for `config`'s keys: CodecServerSetupError (what, how to fix) when there
    are no keys, the key or token file cannot be used, or there is no token off loopback."""
    if config.codec is None:
        raise CodecServerSetupError(
            "the configuration has no codec.key-file: the codec server decrypts with the keys "
            "the workers encrypt with; set codec.key-file (docs/codec.md)")
    try:
        keys = load_keys(config.resolve(config.codec.key_file))
        token = read_token(token_file) if token_file is not None else None
    except (KeyFileError, TokenFileError) as exc:
        raise CodecServerSetupError(str(exc)) from None
    if token is None and listen not in LOOPBACK:
        raise CodecServerSetupError(
            f"a codec server listening on {listen} decrypts every payload for anyone who "
            "reaches it: give it a token (--token-file or codec.serve.token-file; "
            f"{NEW_TOKEN}), or listen on 127.0.0.1")
    return CodecService(EncryptionCodec(keys, encrypt=config.codec.encrypt), token,
                        [check_origin(o) for o in origins])


def start_codec_server(config: LockmasterConfig) -> CodecServer:
    """The codec server as codec.serve says (`lockmaster run` starts it beside the workers).
    CodecServerSetupError: the keys or the token; OSError: the port."""
    assert config.codec is not None and config.codec.serve is not None
    serve = config.codec.serve
    tokens = config.resolve(serve.token_file) if serve.token_file is not None else None
    service = codec_service(config, tokens, serve.cors_origins, serve.listen)
    return CodecServer(service, serve.listen, serve.port).start()
