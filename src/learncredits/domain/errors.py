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


class EmailDomainTaken(InvalidState):
    """An email domain asked for single sign-on already signs in through another org."""

    code = "email_domain_taken"
    title = "Email domain taken"


class ManagedByIdentityProvider(InvalidState):
    """A person asked to change what their organization's identity provider keeps: the name
    of someone SCIM provisions, or the password of an account that signs in by single
    sign-on only."""

    code = "managed_by_identity_provider"
    title = "Managed by the identity provider"


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


class AlreadyExists(ValidationFailed):
    """A value that must be unique in the org is already another's (email, external id, name)."""

    code = "already_exists"
    title = "Already exists"


class BudgetExceeded(DomainError):
    """A manager's assignment would take a department's committed credits over its budget."""

    code = "budget_exceeded"
    title = "Budget exceeded"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Forbidden"


class SignInRefused(Forbidden):
    """A single sign-on that the provider vouched for but we do not accept (another
    domain, an unverified email, an account of another org)."""

    code = "sign_in_refused"
    title = "Sign-in refused"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = "Unauthenticated"


class InvalidRecipients(ValidationFailed):
    """A choice of alert recipients that cannot be kept: an address that is not one, too many
    addresses, someone who is not an owner or admin of the org, or nobody at all."""

    code = "invalid_recipients"
    title = "Invalid alert recipients"


class IdempotencyKeyReused(ValidationFailed):
    """The same Idempotency-Key was sent before with another request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"


# The HTTP status of each refusal, for the API, the dashboard pages and the console alike: a
# client that sees the same refusal through two doors sees the same status.
STATUS_BY_ERROR: dict[type[DomainError], int] = {
    Unauthenticated: 401,
    PaymentFailed: 402,
    Forbidden: 403,
    NotFound: 404,
    InvalidState: 409,
    InsufficientCredits: 409,
    EmployeeInactive: 409,
    RefundExceedsAvailable: 409,
    PaymentMethodRequired: 409,
    AlreadyExists: 409,
    BudgetExceeded: 409,
    MalformedRequest: 400,
    InvalidRecipients: 422,
    ValidationFailed: 422,
}


def http_status(exc: DomainError) -> int:
    """The HTTP status of a refusal (the first class of ``STATUS_BY_ERROR`` it is one of)."""
    return next((code for cls, code in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)
