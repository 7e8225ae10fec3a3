"""Who exists and who may act: organizations, their employees, API keys and sign-in accounts.

Every org-owned row carries ``org`` and every uniqueness rule is scoped by it, so the data
can be sharded by organization (docs/product.md section 13).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone as dj_timezone

from learncredits.domain.balance import AlertThreshold
from learncredits.secrets_at_rest import EncryptedCharField


class Organization(models.Model):
    name = models.CharField(max_length=200)
    billing_email = models.EmailField(max_length=254)
    timezone = models.CharField(max_length=64, default="UTC")
    # At risk when assigned > 0 and available <= the threshold (docs/product.md section 9):
    # ``alert_threshold`` credits, or, when ``alert_threshold_percent`` is set (1 to 99),
    # that percentage of the credits held. See ``alert_line``.
    alert_threshold = models.IntegerField(default=0)
    alert_threshold_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    # Who gets the org's alert emails (notify/emails.py), as chosen on Settings > Billing:
    # ``{"billing_email": bool, "user_ids": [...], "emails": [...]}`` (tenancy/recipients.py);
    # null until someone chooses: the billing email and every owner and admin.
    alert_recipients = models.JSONField(null=True, blank=True)
    # Mirror of the enabled auto top-up rule's trigger (billing.AutoTopUp.below_available),
    # kept on the org so the write paths know without a query; null when no rule is active.
    auto_top_up_below = models.IntegerField(null=True, blank=True)
    # The org's customer at Stripe (cus_...), made the first time it is needed; null until
    # then, and with any other provider (billing/payment_methods.py).
    stripe_customer_id = models.CharField(max_length=255, null=True, blank=True)
    # The org's tax profile (billing/tax.py): no country, no profile and no tax charged.
    # Region is an ISO 3166-2 subdivision code without the country ("NY", "ON"); the tax id
    # is validated for its country and kept in its compact form.
    tax_country = models.CharField(max_length=2, blank=True, default="")
    tax_region = models.CharField(max_length=3, blank=True, default="")
    tax_id = models.CharField(max_length=40, blank=True, default="")
    tax_exempt = models.BooleanField(default=False)
    # Assignments still unstarted this many days after they were made are released by the
    # worker (actor ``system:aging``), the admins being told seven days before; null: never.
    release_unstarted_after_days = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)

    def __str__(self) -> str:
        return self.name

    def alert_line(self) -> AlertThreshold:
        """The org's at-risk threshold as the domain rule takes it (domain/balance.py)."""
        return AlertThreshold(credits=self.alert_threshold, percent=self.alert_threshold_percent)


class Department(models.Model):
    """A part of an org with, optionally, a budget of credits per budget year.

    The budget counts the credits committed to the department's employees (assigned plus
    consumed) since the start of the current budget year, which begins each year on
    ``budget_year_start`` (``MM-DD``) in the org's time zone. Null budget: no limit.
    """

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="departments")
    name = models.CharField(max_length=200)
    budget_credits = models.PositiveIntegerField(null=True, blank=True)
    budget_year_start = models.CharField(max_length=5, default="01-01")
    # The identity provider's id for the group it provisions as this department (SCIM).
    external_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="department_name_unique_per_org"),
        ]

    def __str__(self) -> str:
        return self.name


class Employee(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="employees")
    name = models.CharField(max_length=200)
    # Stored lower-cased so that uniqueness and xAPI mbox matching ignore case.
    email = models.EmailField(max_length=254)
    active = models.BooleanField(default=True)
    # At most one department; null when the employee belongs to none.
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="employees"
    )
    # The identity provider's id for the user provisioned as this employee (SCIM).
    external_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "email"], name="employee_email_unique_per_org"),
            models.UniqueConstraint(
                fields=["org", "external_id"],
                condition=~models.Q(external_id=""),
                name="employee_external_id_unique_per_org",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class ApiKey(models.Model):
    """An org's API key. Only a SHA-256 of the secret is kept; the key is shown once."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=200)
    # Public lookup part of the key (``lc_<prefix>_<secret>``): unique across all orgs through
    # ApiKeyPrefix, unique with the org here (what a table distributed by org can enforce).
    prefix = models.CharField(max_length=16, db_index=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=dj_timezone.now)
    # Updated at most once a minute, so authentication does not write on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # What the key may do (tenancy/access.py): admin, billing or manager; a manager key acts
    # for the employees of ``departments`` only.
    role = models.CharField(max_length=16, default="admin")
    departments = models.ManyToManyField(Department, blank=True, related_name="manager_api_keys")

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.UniqueConstraint(fields=["org", "prefix"], name="apikey_prefix_unique_per_org"),
            models.CheckConstraint(
                condition=models.Q(role__in=["admin", "billing", "manager"]),
                name="apikey_role_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class ApiKeyPrefix(models.Model):
    """Every API key prefix issued, with its org: the one place a prefix is unique across
    orgs. Authentication finds a key by its prefix before it knows the org, so two keys must
    never share one; under sharding by org (docs/scaling.md) this small table stays on the
    coordinator while the keys are distributed, hence no database foreign key to the org.
    Written in the key's creating transaction; rows are never removed (a revoked key keeps
    its prefix, so it is never issued again)."""

    prefix = models.CharField(max_length=16, primary_key=True)
    org = models.ForeignKey(
        Organization, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )

    class Meta:
        verbose_name = "API key prefix"
        verbose_name_plural = "API key prefixes"


class Membership(models.Model):
    """A sign-in account's role in one organization; a learner is tied to an employee."""

    class Role(models.TextChoices):
        # What each role may do is decided in one table (docs/identity.md).
        OWNER = "owner"
        ADMIN = "admin"
        BILLING = "billing"
        MANAGER = "manager"
        LEARNER = "learner"

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="memberships")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    employee = models.ForeignKey(Employee, null=True, blank=True, on_delete=models.PROTECT)
    # The departments a manager manages (empty for every other role).
    departments = models.ManyToManyField(Department, blank=True, related_name="managers")
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(role="learner") | models.Q(employee__isnull=False),
                name="membership_learner_has_employee",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=["owner", "admin", "billing", "manager", "learner"]),
                name="membership_role_known",
            ),
        ]


class SsoConfig(models.Model):
    """An org's single sign-on through its OpenID Connect provider (tenancy/sso.py).

    The client secret is kept encrypted (secrets_at_rest): the token request needs it in
    clear, so it cannot be a hash. Deleting the row turns single sign-on off.
    """

    org = models.OneToOneField(Organization, on_delete=models.PROTECT, related_name="sso")
    # Compared as is with the id token's ``iss``; discovery is at issuer + /.well-known/...
    issuer = models.CharField(max_length=500)
    client_id = models.CharField(max_length=255)
    client_secret = EncryptedCharField(max_length=600)
    # When set, only the org's owner may still sign in with a password.
    required = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=dj_timezone.now)
    updated_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        verbose_name = "single sign-on configuration"
        verbose_name_plural = "single sign-on configurations"

    def __str__(self) -> str:
        return f"SSO of org {self.org_id} via {self.issuer}"


class SsoDomain(models.Model):
    """An email domain whose people sign in through one org's provider. The domain is the
    key, so one domain belongs to one org at most, whatever the race between two orgs.

    Like ApiKeyPrefix, a lookup made before the org is known (the sign-in page has only an
    email): under sharding by org it stays on the coordinator, hence no database foreign key
    to the org. Written and removed with the org's SsoConfig, in its transaction."""

    domain = models.CharField(max_length=253, primary_key=True)
    org = models.ForeignKey(
        Organization,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="sso_domains",
    )

    class Meta:
        verbose_name = "single sign-on domain"
        verbose_name_plural = "single sign-on domains"

    def __str__(self) -> str:
        return self.domain


class SignInThrottle(models.Model):
    """The failed sign-in budget of one account or one address (web/signin.py).

    One row per key, so that a single conditional UPDATE can claim an attempt: concurrent
    sign-ins (in any process) then cannot all pass a "not locked yet" check together.
    ``failures`` counts the attempts claimed since the window began (a successful sign-in
    gives its claim back); the window ends when no attempt came for the cool-off time.
    """

    class Kind(models.TextChoices):
        USERNAME = "username"
        IP_ADDRESS = "ip_address"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.CharField(max_length=255)
    failures = models.IntegerField(default=0)
    last_attempt_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        verbose_name = "sign-in throttle"
        verbose_name_plural = "sign-in throttles"
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="signin_throttle_unique_key"),
            models.CheckConstraint(
                condition=models.Q(failures__gte=0), name="signin_throttle_failures_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.value}: {self.failures}"


class ScimToken(models.Model):
    """A bearer token an org's identity provider uses for SCIM provisioning (/scim/v2/).

    Like an API key, only a SHA-256 of the secret is kept and the token is shown once. The
    token is ``scim_<org id>_<prefix>_<secret>``: the org and prefix find the row before
    the secret is compared. It is a separate credential from API keys: a SCIM token reaches
    nothing but /scim/v2/, and an API key nothing there."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="scim_tokens")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=dj_timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SCIM token"
        verbose_name_plural = "SCIM tokens"
        # The token carries its org's id, so the lookup is by (org, prefix): a rule a table
        # distributed by org can enforce, with no table of prefixes across orgs.
        constraints = [
            models.UniqueConstraint(
                fields=["org", "prefix"], name="scimtoken_prefix_unique_per_org"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class ScimProfile(models.Model):
    """What the identity provider sent for an employee that has no column of its own, so
    that SCIM answers what was provisioned: the userName as sent, the name's parts and the
    emails list. The employee's own columns stay the truth (email, name, active, external
    id); a profile whose values disagree with them is not served (scim/resources.py).

    ``deleted_at``: the provider DELETEd the user. The employee is deactivated and kept
    (their history stays), and SCIM answers 404 for them from then on."""

    employee = models.OneToOneField(
        Employee, on_delete=models.CASCADE, primary_key=True, related_name="scim_profile"
    )
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    user_name = models.CharField(max_length=254, blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)
    updated_at = models.DateTimeField(default=dj_timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SCIM profile"
        verbose_name_plural = "SCIM profiles"
