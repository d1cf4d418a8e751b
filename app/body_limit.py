"""Request body limits enforced while the body streams in: 413 as soon as a limit is crossed.

Why here and not in the routes: FastAPI and Starlette read (and spool to disk) a whole multipart body
before a route runs, so a route-level check only fires after a 1 GiB upload has been received. This
ASGI middleware counts the bytes the app pulls through ``receive``: a declared ``Content-Length`` over
the limit is refused before anything is read, a chunked body the moment its running total crosses it.
Multipart bodies get ``max_upload_bytes`` (plus room for part headers and small form fields), every
other body ``max_json_bytes``. The 413 closes the connection, so the client's remaining bytes are not
read either.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

# Boundaries, part headers and small fields (name, format) around the files of one multipart request.
MULTIPART_SLACK_BYTES = 64 * 1024


class _BodyTooLarge(Exception):
    """Raised inside the app's ``receive``: unwinds whatever was parsing the body."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int):
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.lower()
                break
        if content_type.startswith(b"multipart/form-data"):
            return self.max_upload_bytes + MULTIPART_SLACK_BYTES, "upload"
        return self.max_json_bytes, "json"

    async def _refuse(self, scope: Scope, send: Send, limit: int, kind: str) -> None:
        setting = "VISLEX_MAX_UPLOAD_BYTES" if kind == "upload" else "VISLEX_MAX_JSON_BYTES"
        response = error_response(413, "payload_too_large", f"request body exceeds {limit} bytes ({setting})",
                                  {"field": "body", "limit": limit, "setting": setting},
                                  headers={"Connection": "close"})
        await response(scope, _no_body, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, kind = self._limit(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:  # a malformed length is the server's to refuse
                    await self._refuse(scope, send, limit, kind)
                    return
                break
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app made of the aborted body (e.g. a 400 from the form parser) is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise  # parsers may wrap our exception in their own: only ours is swallowed
        if exceeded and not started:
            await self._refuse(scope, send, limit, kind)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
