"""The domain's error tree. Each class maps once to an HTTP problem code (api/problems.py)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal the domain makes; ``code`` is stable and machine-readable."""

    code = "invalid_request"
    title = "Request refused"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """An unknown id, or another org's id: the two are deliberately indistinguishable."""

    code = "not_found"
    title = "Not found"


class ValidationFailed(DomainError):
    code = "validation_error"
    title = "Invalid request"


class MalformedRequest(ValidationFailed):
    """The request could not even be read (e.g. the body is not JSON): HTTP 400."""


class InvalidState(DomainError):
    """An illegal lifecycle transition, or a uniqueness rule the request would break."""

    code = "invalid_state"
    title = "Invalid state"


class InsufficientCredits(DomainError):
    code = "insufficient_credits"
    title = "Insufficient credits"


class EmployeeInactive(DomainError):
    code = "employee_inactive"
    title = "Employee inactive"


class PaymentFailed(DomainError):
    code = "payment_failed"
    title = "Payment failed"


class PaymentMethodRequired(DomainError):
    """The provider charges a card on file and the org has none: nothing was bought."""

    code = "payment_method_required"
    title = "Payment method required"


class RefundExceedsAvailable(DomainError):
    """More credits asked back than the purchase's lot still holds or the org has free."""

    code = "refund_exceeds_available"
    title = "Refund exceeds available"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Forbidden"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = "Unauthenticated"


class IdempotencyKeyReused(ValidationFailed):
    """The same Idempotency-Key was sent before with another request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"
