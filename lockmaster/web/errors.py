"""JSON errors of the API, one shape everywhere: {"error": what went wrong, "hint": how to fix
it}, with the HTTP status that says whose fault it is (400 bad input, 404 unknown, 503 a
dependency such as Temporal down)."""

from __future__ import annotations

from aiohttp import web


def json_error(status: int, error: str, hint: str = "") -> web.Response:
    return web.json_response({"error": error, "hint": hint}, status=status)


def bad_request(error: str, hint: str = "") -> web.Response:
    return json_error(400, error, hint)


def not_found(error: str, hint: str = "") -> web.Response:
    return json_error(404, error, hint)


def unavailable(error: str, hint: str = "") -> web.Response:
    return json_error(503, error, hint)
