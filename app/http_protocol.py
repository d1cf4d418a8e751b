"""uvicorn's HTTP protocol with the error contract on requests it cannot parse.

uvicorn answers a request its parser rejects (for instance a request line of ~100 KB: a query string
far above what any word needs) with a plain-text 400 before the app sees it. This subclass keeps
uvicorn's parser and answers such requests with the JSON contract instead: 414 ``uri_too_long`` when
the URL read so far is over the app's own limit (app/middleware.py, MAX_QUERY_BYTES), else 400
``bad_request``. Used by ``vislex serve`` (``http=`` of uvicorn.Config).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.middleware import MAX_QUERY_BYTES, _error_body

__all__ = ["ContractHttpToolsProtocol"]

_BAD_REQUEST = _error_body(400, "bad_request", "the request could not be parsed as HTTP", {})
_TOO_LONG = _error_body(414, "uri_too_long", f"request URL longer than {MAX_QUERY_BYTES} bytes",
                        {"max_query_bytes": MAX_QUERY_BYTES})


class ContractHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        too_long = len(getattr(self, "url", b"") or b"") > MAX_QUERY_BYTES
        status, body = (b"414 URI Too Long", _TOO_LONG) if too_long else (b"400 Bad Request", _BAD_REQUEST)
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend([b"content-type: application/json\r\n",
                     b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                     b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(head))
        self.transport.close()
