"""Swagger UI at /schema renders in Chromium under its CSP, with nothing from other origins."""

from __future__ import annotations

from dashboard.harness import Browsing, DashboardServer

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


async def test_swagger_ui_renders_under_its_csp_with_nothing_from_other_origins(
    dashboard_server: DashboardServer, browsing: Browsing
) -> None:
    page = await browsing.page()
    requested: list[str] = []
    complaints: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "console",
        lambda message: complaints.append(message.text) if message.type == "error" else None,
    )
    await page.add_init_script(RECORD_VIOLATIONS)
    await page.goto("/schema")
    await page.wait_for_selector(".opblock", timeout=15_000)  # the operations are listed
    await page.click(".opblock-summary")  # one operation opened: its details render too
    await page.wait_for_selector(".opblock-body")

    assert await page.locator(".opblock").count() > 5
    assert [url for url in requested if not url.startswith(dashboard_server.url)] == []
    assert await page.evaluate("window.cspViolations") == []
    assert complaints == []
