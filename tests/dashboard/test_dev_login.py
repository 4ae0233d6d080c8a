"""`icodrip dev` prints a dashboard login on first start, and it signs in (granian, real TLS)."""

from __future__ import annotations

import re
from pathlib import Path

from dashboard.harness import Browsing, chromium, sign_in
from e2e.harness import Children, child_env, client, trusting, wait_ready
from support.servers import free_port

LOGIN_LINE = re.compile(r"Dashboard login \(password shown once\): (\S+) / (\S+)")


async def test_icodrip_dev_prints_a_dashboard_login_that_signs_in(
    children: Children, tmp_path: Path, artifacts: Path
) -> None:
    data_dir, port = tmp_path / "icodrip", free_port()
    dev = children.start(
        "dev", child_env(), "--data-dir", str(data_dir), "dev", "--port", str(port)
    )
    announced = dev.wait_for_output("  Try: curl", timeout=45)
    base = f"https://127.0.0.1:{port}"
    assert f"Dashboard: {base}/dashboard/" in announced
    found = LOGIN_LINE.search(announced)
    assert found, dev.describe()
    email, password = found.groups()
    with client(base, trusting(data_dir / "tls" / "cert.pem")) as https:
        wait_ready(https, dev)

    browsing: Browsing
    async with chromium(base, artifacts) as browsing:
        page = await browsing.page()
        await sign_in(page, email, password)
        assert await page.text_content("h1") == "API Keys"
        assert "Getting started" in (await page.text_content("#keys-body") or "")
    assert password not in (data_dir / "bootstrap.json").read_text()
