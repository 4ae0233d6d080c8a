"""The security headers of every HTML page this service serves: the dashboard and `/schema`.

Both are served on the origin the dashboard's session cookie belongs to, so both run under the
same strict policy: scripts and styles from this origin's own files only, no inline code, no
framing.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
#: Header names in lower case, as ASGI messages carry them.
PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
