"""What a key's state is called: its status, why it was flagged exposed, why it expired."""

from __future__ import annotations

from enum import StrEnum


class KeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ExposureSource(StrEnum):
    """Why a key is flagged as possibly exposed (`ApiKey.Exposed.source`)."""

    BROWSER = "browser"  # a secret key sent with browser signals (Origin, CORS)
    PLAIN_HTTP = "plain_http"  # a secret key sent over plain HTTP
    LEAK_REPORT = "leak_report"  # a scanner (e.g. GitHub secret scanning) found it public
    PUBLIC_REVOCATION = "public_revocation"  # whoever found it sent it to POST /v1/public/revoke


#: The sources that say the key is public (a leak), not only that it may have been seen.
LEAK_SOURCES = frozenset({ExposureSource.LEAK_REPORT, ExposureSource.PUBLIC_REVOCATION})


#: An expiry in words: the key's `revocation_reason`, and the `reason` of its wire message
#: (`api_key.revoked`, docs/events.md). Before `ApiKey.Expired`, the stored reason itself.
EXPIRED_AFTER_GRACE = "expired: the grace period of its roll ended"
EXPIRED_AT_EXPIRY = "expired: its expiry time was reached"


class ExpiryCause(StrEnum):
    """Why the system retired a key (`ApiKey.Expired.cause`)."""

    AFTER_GRACE = "after_grace"  # it was rolled, and the grace period of its roll ended
    AT_EXPIRY = "at_expiry"  # its own expiry time was reached

    @property
    def reason(self) -> str:
        """The expiry in words (`EXPIRED_AFTER_GRACE` or `EXPIRED_AT_EXPIRY`)."""
        return EXPIRED_AFTER_GRACE if self is ExpiryCause.AFTER_GRACE else EXPIRED_AT_EXPIRY


def expiry_cause_in(reason: str) -> ExpiryCause | None:
    """The expiry these words state, if they are an expiry's (`ExpiryCause.reason`)."""
    return _CAUSE_OF_REASON.get(reason)


_CAUSE_OF_REASON = {cause.reason: cause for cause in ExpiryCause}
