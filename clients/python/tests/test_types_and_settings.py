"""What the client decides alone: reading objects it half knows, and its settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from icodrip_client import ApiKey, Icodrip, UnexpectedResponseError, WebhookEndpoint

KEY = {
    "id": "key_" + "1" * 32,
    "object": "api_key",
    "organization": "org_" + "2" * 32,
    "name": "n",
    "env": "live",
    "type": "secret",
    "hint": "h",
    "status": "active",
    "created_at": "2026-12-01T04:17:24.758543Z",
}


def test_fields_the_client_does_not_know_are_kept_in_raw() -> None:
    key = ApiKey.from_dict({**KEY, "added_later": {"nested": True}})

    assert key.raw["added_later"] == {"nested": True}
    assert key.created_at == datetime(2026, 12, 1, 4, 17, 24, 758543, tzinfo=UTC)


def test_a_key_from_a_server_without_the_lifetime_fields_reads_as_none() -> None:
    older = ApiKey.from_dict(KEY)
    newer = ApiKey.from_dict(
        {
            **KEY,
            "revoke_when_idle_seconds": 900,
            "unused_revocation_at": "2026-12-08T04:17:24Z",
        }
    )

    assert (older.revoke_when_idle_seconds, older.unused_revocation_at) == (None, None)
    assert newer.revoke_when_idle_seconds == 900
    assert newer.unused_revocation_at == datetime(2026, 12, 8, 4, 17, 24, tzinfo=UTC)


def test_a_missing_documented_field_is_an_unexpected_response() -> None:
    without_id = {name: value for name, value in KEY.items() if name != "id"}

    with pytest.raises(UnexpectedResponseError, match="id"):
        ApiKey.from_dict(without_id)


def test_results_are_frozen() -> None:
    key = ApiKey.from_dict(KEY)

    with pytest.raises(AttributeError):
        key.name = "changed"  # type: ignore[misc]


def test_secrets_stay_out_of_reprs() -> None:
    secret = "whsec_" + "A" * 44
    endpoint = WebhookEndpoint.from_dict(
        {
            "id": "we_1",
            "organization": "org_1",
            "env": "live",
            "url": "https://x.example",
            "status": "enabled",
            "created_at": "2026-12-01T00:00:00Z",
            "secret": secret,
        }
    )

    assert endpoint.secret == secret
    assert secret not in repr(endpoint)


def test_the_client_refuses_plain_http() -> None:
    with pytest.raises(ValueError, match="https"):
        Icodrip(api_key="unused", base_url="http://keys.example.com")


def test_the_client_reads_its_key_and_address_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICODRIP_API_KEY", "from-the-environment")
    monkeypatch.setenv("ICODRIP_BASE_URL", "https://keys.example.com/")

    with Icodrip() as client:
        assert client.base_url == "https://keys.example.com"
        assert "from-the-environment" not in repr(client)


def test_the_client_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICODRIP_API_KEY", raising=False)

    with pytest.raises(ValueError, match="api_key"):
        Icodrip(base_url="https://keys.example.com")
