"""What SCIM shows and what it means: an employee as a User, a department as a Group, and
the discovery documents (RFC 7643).

An employee's own columns are the truth: email, name, active, external id, department. What
the identity provider sent that has no column (the userName as sent, the name's parts, the
emails list, any other attribute of the User schema) is kept in ``ScimProfile.attributes``
and served back, so the provider reads what it wrote; a kept value that no longer agrees
with the columns (the employee was renamed on the dashboard, say) gives way to the column.
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    Filter,
    Group,
    Patch,
    ResourceType,
    ServiceProviderConfig,
    Sort,
    User,
)

from learncredits import ids
from learncredits.tenancy.models import Department, Employee, ScimProfile

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
# Attributes not kept in the profile: what SCIM computes (id, meta, groups), what has its
# own column (active, externalId), and what must not be stored (a password: employees sign
# in through their own accounts or single sign-on, not SCIM).
_NOT_KEPT = {"schemas", "id", "meta", "groups", "password", "active", "externalId"}


def is_email(value: object) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        validate_email(value.strip())
    except DjangoValidationError:
        return False
    return True


def email_of(attributes: dict[str, Any]) -> str | None:
    """The employee's email in a User: the userName when it is an address (as Okta and
    Entra send it), else the primary email, else the first one."""
    user_name = attributes.get("userName")
    if is_email(user_name):
        return str(user_name).strip().lower()
    emails = [e for e in attributes.get("emails") or [] if isinstance(e, dict)]
    emails.sort(key=lambda e: not e.get("primary"))
    for entry in emails:
        if is_email(entry.get("value")):
            return str(entry["value"]).strip().lower()
    return None


def name_of(attributes: dict[str, Any]) -> str | None:
    """The employee's name in a User: name.formatted, else given and family names, else
    displayName; None when the User names nobody."""
    name = attributes.get("name") or {}
    formatted = (name.get("formatted") or "").strip()
    if formatted:
        return formatted
    joined = " ".join(
        part.strip()
        for part in (name.get("givenName") or "", name.get("familyName") or "")
        if part.strip()
    )
    if joined:
        return joined
    display = (attributes.get("displayName") or "").strip()
    return display or None


def fallback_name(attributes: dict[str, Any], email: str) -> str:
    """The name of a User that gives none: its userName, or the email's local part."""
    user_name = (attributes.get("userName") or "").strip()
    return user_name or email.split("@", 1)[0]


def kept_attributes(user: dict[str, Any]) -> dict[str, Any]:
    """What a ScimProfile keeps of a User's attributes (camelCase, as SCIM names them)."""
    return {k: copy.deepcopy(v) for k, v in user.items() if k not in _NOT_KEPT}


def location(base_url: str, endpoint: str, public_id: str) -> str:
    return f"{base_url}/scim/v2/{endpoint}/{public_id}"


def _meta(resource_type: str, created: Any, modified: Any, where: str) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": ids.iso(created),
        "lastModified": ids.iso(modified),
        "location": where,
    }


def user_attributes(
    employee: Employee, profile: ScimProfile | None, base_url: str
) -> dict[str, Any]:
    """The employee as a SCIM User (a dict with SCIM's names)."""
    kept: dict[str, Any] = dict(profile.attributes) if profile is not None else {}
    answer: dict[str, Any] = {"schemas": [USER_SCHEMA]}
    answer.update(kept)
    # userName: as sent, unless it was the email and the email has changed since.
    user_name = profile.user_name if profile is not None and profile.user_name else ""
    if not user_name or (is_email(user_name) and user_name.strip().lower() != employee.email):
        user_name = employee.email
    answer["userName"] = user_name
    # emails: as sent while they still give the employee's email.
    if profile is None or email_of({"userName": user_name, "emails": kept.get("emails")}) != (
        employee.email
    ):
        answer["emails"] = [{"value": employee.email, "type": "work", "primary": True}]
    # name: as sent while it still gives the employee's name; when none was sent, nothing
    # while the name is the one made up for the employee (displayName, userName).
    kept_name = kept.get("name")
    if kept_name:
        if name_of({"name": kept_name}) != employee.name:
            answer["name"] = {"formatted": employee.name}
    elif profile is None or employee.name not in (
        name_of(kept),
        fallback_name({**kept, "userName": user_name}, employee.email),
    ):
        answer["name"] = {"formatted": employee.name}
    answer["active"] = employee.active
    if employee.external_id:
        answer["externalId"] = employee.external_id
    else:
        answer.pop("externalId", None)
    answer["id"] = ids.encode("employee", employee.pk)
    department = employee.department
    if department is not None:
        dep_id = ids.encode("department", department.pk) or ""
        answer["groups"] = [
            {
                "value": dep_id,
                "$ref": location(base_url, "Groups", dep_id),
                "display": department.name,
                "type": "direct",
            }
        ]
    else:
        answer.pop("groups", None)
    public_id = answer["id"]
    answer["meta"] = _meta(
        "User",
        employee.created_at,
        profile.updated_at if profile is not None else employee.created_at,
        location(base_url, "Users", public_id),
    )
    return answer


def group_attributes(
    department: Department, members: list[Employee], base_url: str
) -> dict[str, Any]:
    """The department as a SCIM Group; its members are its employees."""
    dep_id = ids.encode("department", department.pk) or ""
    answer: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": dep_id,
        "displayName": department.name,
    }
    if department.external_id:
        answer["externalId"] = department.external_id
    if members:
        answer["members"] = [
            {
                "value": ids.encode("employee", e.pk),
                "$ref": location(base_url, "Users", ids.encode("employee", e.pk) or ""),
                "type": "User",
            }
            for e in members
        ]
    answer["meta"] = _meta(
        "Group", department.created_at, department.created_at, location(base_url, "Groups", dep_id)
    )
    return answer


# --- discovery -----------------------------------------------------------------------------


def user_schema() -> dict[str, Any]:
    """RFC 7643's User schema, less the password (never taken), with ``emails`` (and an
    email's ``value``) required: every employee has an email address, so a User must bring
    one, as its userName or in ``emails``; and ``active`` required, as every employee is
    active or not."""
    schema = User.to_schema().model_dump(
        scim_ctx=None, mode="json", by_alias=True, exclude_none=True
    )
    schema["attributes"] = [a for a in schema["attributes"] if a["name"] != "password"]
    for attribute in schema["attributes"]:
        if attribute["name"] == "emails":
            attribute["required"] = True
            for sub in attribute.get("subAttributes", []):
                if sub["name"] == "value":
                    sub["required"] = True
        elif attribute["name"] == "active":
            # Always answered: an employee is active or not; it cannot be removed.
            attribute["required"] = True
    return schema


def group_schema() -> dict[str, Any]:
    """RFC 7643's Group schema; a member is named by its id, ``$ref`` and ``type`` (the
    sub-attributes RFC 7643 section 8.7.1 shows): a ``display`` sent is not kept."""
    schema: dict[str, Any] = Group.to_schema().model_dump(
        scim_ctx=None, mode="json", by_alias=True, exclude_none=True
    )
    for attribute in schema["attributes"]:
        if attribute["name"] == "members":
            attribute["subAttributes"] = [
                sub for sub in attribute.get("subAttributes", []) if sub["name"] != "display"
            ]
    return schema


def service_provider_config(base_url: str) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_COUNT),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="Bearer token",
                description="A SCIM token made for the organization "
                "(POST /api/v1/orgs/{org_id}/scim-tokens), sent as Authorization: Bearer.",
                primary=True,
            )
        ],
    )


def resource_types() -> list[ResourceType]:
    return [ResourceType.from_resource(User), ResourceType.from_resource(Group)]


MAX_COUNT = 200
