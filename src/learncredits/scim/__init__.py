"""SCIM 2.0 provisioning (RFC 7643/7644) at /scim/v2/: an org's identity provider creates,
updates and deprovisions its employees (Users) and departments (Groups). Plain Django views
over the services; the protocol's models are scim2-models' (docs/decisions/0011)."""
