"""Who may reach the review server, and which files it may serve.

* It listens on 127.0.0.1 unless ``--host`` says otherwise. On any other address every request
  needs the access token printed at start (``?token=...`` once; a cookie then carries it), so a
  colleague on the network cannot open a patient's scan by guessing the port.
* The only files it serves besides the app itself are under the review folder (``/files/<path>``),
  resolved and checked after following links: ``..``, absolute paths and links out are refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Optional

TOKEN_COOKIE = "mskquant_review_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def confined(root: Path, relative: str) -> Optional[Path]:
    """``root / relative`` if that is an existing file inside ``root`` (after resolving links), else None."""
    if not relative or "\x00" in relative or Path(relative).is_absolute():
        return None
    root = root.resolve()
    try:
        target = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if target != root and root not in target.parents:
        return None
    return target if target.is_file() else None


class AccessPolicy:
    """The token rule and the file route, installed on the server's aiohttp application."""

    def __init__(self, root: Path, host: str, token: Optional[str] = None) -> None:
        self.root = Path(root)
        self.host = host
        self.token = None if is_loopback(host) else (token or secrets.token_urlsafe(24))

    @property
    def needs_token(self) -> bool:
        return self.token is not None

    def allowed(self, query_token: Optional[str], cookie_token: Optional[str]) -> bool:
        if self.token is None:
            return True
        return any(t is not None and hmac.compare_digest(t, self.token) for t in (query_token, cookie_token))

    def install(self, web_app) -> None:
        """Add the token check and the confined file route to an aiohttp application (before it starts)."""
        from aiohttp import web

        policy = self

        @web.middleware
        async def require_token(request, handler):
            query = request.query.get("token")
            if not policy.allowed(query, request.cookies.get(TOKEN_COOKIE)):
                return web.Response(status=403, text="MSKQuant Review: an access token is required "
                                                     "(open the address printed when the server started).\n")
            response = await handler(request)
            if query is not None and policy.token is not None and hasattr(response, "set_cookie"):
                response.set_cookie(TOKEN_COOKIE, policy.token, httponly=True, samesite="Strict")
            return response

        async def serve_file(request):
            target = confined(policy.root, request.match_info["tail"])
            if target is None:
                return web.Response(status=404, text="not found under the review folder\n")
            return web.FileResponse(target)

        web_app.middlewares.append(require_token)
        web_app.router.add_get("/files/{tail:.*}", serve_file)
