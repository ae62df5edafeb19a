"""Errors that reach API clients.

Every error a client can see is a ``DarkroomError`` with a stable ``code`` (never translated,
never changed) and an HTTP status. One handler turns them into the envelope
``{"success": false, "code": ..., "message": ...}``::

    DarkroomError                         400 bad_request
    ├── Unauthorized                      401 unauthorized | invalid_token | token_expired
    ├── Forbidden                         403 forbidden
    ├── NotFound                          404 not_found | task_not_found | file_not_found
    ├── Conflict                          409 conflict | email_taken | task_not_retryable | ...
    ├── PaymentRequired                   402 insufficient_credits
    ├── PayloadTooLarge                   413 file_too_large | request_too_large
    ├── UnsupportedMediaType              415 unsupported_image_type
    ├── Unprocessable                     422 validation_error | invalid_parameter | ...
    └── ServiceUnavailable                503 service_unavailable
"""

from __future__ import annotations

from typing import Any


class DarkroomError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class Unauthorized(DarkroomError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DarkroomError):
    status_code = 403
    code = "forbidden"


class NotFound(DarkroomError):
    status_code = 404
    code = "not_found"


class Conflict(DarkroomError):
    status_code = 409
    code = "conflict"


class PaymentRequired(DarkroomError):
    status_code = 402
    code = "insufficient_credits"


class PayloadTooLarge(DarkroomError):
    status_code = 413
    code = "file_too_large"


class UnsupportedMediaType(DarkroomError):
    status_code = 415
    code = "unsupported_image_type"


class Unprocessable(DarkroomError):
    status_code = 422
    code = "validation_error"


class ServiceUnavailable(DarkroomError):
    status_code = 503
    code = "service_unavailable"
