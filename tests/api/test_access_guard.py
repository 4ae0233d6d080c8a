"""The API's guard asks the access policy, and fails closed for a route that names no rule."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.testing import TestClient

from api.auth import access_guard
from api.errors import EXCEPTION_HANDLERS


@get("/v1/forgotten", sync_to_thread=False)
def forgotten() -> dict[str, str]:
    return {"secret": "data"}


@get("/v1/open", opt={"command": None}, sync_to_thread=False)
def open_to_any_key() -> dict[str, str]:
    return {"ok": "yes"}


def app() -> Litestar:
    return Litestar(
        route_handlers=[forgotten, open_to_any_key],
        guards=[access_guard],
        exception_handlers=EXCEPTION_HANDLERS,
    )


def test_a_v1_route_that_declares_no_command_is_refused_not_served() -> None:
    with TestClient(app()) as client:
        response = client.get("/v1/forgotten")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "data" not in response.text


def test_a_route_that_declares_command_none_is_open_to_any_authenticated_key() -> None:
    with TestClient(app()) as client:
        response = client.get("/v1/open")
    assert response.status_code == 200
