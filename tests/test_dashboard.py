"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server.

A technician finds the riskiest machine and works its order; a viewer finds no action buttons and
gets 403 from the API; an engineer promotes a challenger; logout ends the session. Every page is
screenshotted into ``test-artifacts/dashboard/`` and checked with axe-core (shipped in the
``axe-playwright-python`` package): no serious or critical violations.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import WorkOrder
from pitstop.web import create_app
from pitstop.web.users import Users
from tests.conftest import REPO, free_port, make_settings
from tests.test_deploy import second_version
from tests.test_processor import publish

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("PITSTOP_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
PASSWORD = "dashboard test password"
# FD001 test units replayed whole: 31 and 34 end close to failure (work orders), 3 and 4 healthy
MACHINES = {"eng-031": 31, "eng-034": 34, "eng-003": 3, "eng-004": 4}

if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Platform]]:
    """A trained platform with four machines streamed (two with open work orders), a challenger,
    a user per role, served by uvicorn on a free port."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    shutil.copytree(trained_dir, data_dir)
    platform = Platform.open(make_settings(data_dir, serving_poll_s=0.2))
    platform.scorer.reload()
    proc = Processor(platform)
    proc.bootstrap()
    for machine, unit in MACHINES.items():
        publish(platform, machine, unit, 0, 400)
    while proc.run_once().readings:
        pass
    second_version(platform)
    users = Users(platform.db)
    for role in ("viewer", "technician", "engineer"):
        users.add(role, role, PASSWORD)
    port = free_port()
    app = create_app(platform, processor=proc)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", platform
    uv.should_exit = True
    thread.join(10)
    platform.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page_for(browser: Any, server: tuple[str, Platform]) -> Iterator[Any]:
    """``page_for(role)``: a fresh browser context logged in as that role through the login form."""
    url, _ = server
    contexts = []

    def log_in(role: str) -> Any:
        context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        assert "/login" in page.url  # no session: the login page
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        return page

    yield log_in
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def serious_violations(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def api(page: Any, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fetch from the page, with the session's CSRF token, as the dashboard's own code does."""
    result: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
            const me = await (await fetch('/api/v1/me')).json();
            const r = await fetch(path, {method, headers: {'Content-Type': 'application/json',
                'X-CSRF-Token': me.csrf_token || ''}, body: body ? JSON.stringify(body) : undefined});
            return {status: r.status, body: await r.json()};
        }""",
        [method, path, body],
    )
    return result


def test_a_technician_finds_the_riskiest_machine_and_closes_its_work_order(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    _, platform = server
    page = page_for("technician")
    page.wait_for_selector("tr[data-machine-id]")
    shot(page, "fleet")
    riskiest = page.locator("tr[data-machine-id]").first.get_attribute("data-machine-id")
    with platform.db.session() as s:
        orders = {o.machine_id: o for o in s.query(WorkOrder).filter(WorkOrder.status == "open")}
    assert riskiest in orders, f"the first row ({riskiest}) is not a machine with an open order"
    page.locator(f"tr[data-machine-id='{riskiest}'] a").first.click()
    page.wait_for_url(f"**/machines/{riskiest}")
    page.locator("button[data-action='acknowledged']").click()
    page.locator("button[data-action='in_progress']").click()  # the lifecycle: start, then close
    page.wait_for_selector("button[data-action='done']")
    shot(page, "machine")
    page.select_option("#finding", "fault_confirmed")
    page.locator("button[data-action='done']").click()
    page.wait_for_function("() => !document.querySelector(\"button[data-action='done']\")", timeout=10_000)
    with platform.db.session() as s:
        order = s.get(WorkOrder, orders[riskiest].id)
        assert order is not None
        assert (order.status, order.finding, order.technician) == ("done", "fault_confirmed", "technician")
    actors = {(e["actor"], e["role"]) for e in platform.db.audit_entries(action="work_order_done")}
    assert ("technician", "technician") in actors


def test_a_viewer_sees_no_actions_and_the_api_refuses_them(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    _, platform = server
    page = page_for("viewer")
    page.wait_for_selector("tr[data-machine-id]")
    with platform.db.session() as s:
        order = s.query(WorkOrder).filter(WorkOrder.status == "open").first()
        assert order is not None
        order_id, machine = order.id, order.machine_id
    page.goto(f"/machines/{machine}")
    page.wait_for_selector("main h1")
    page.wait_for_load_state("networkidle")
    assert page.locator("button[data-action]").count() == 0
    page.goto("/work-orders")
    page.wait_for_selector(f"[data-work-order-id='{order_id}']")
    assert page.locator("button[data-action]").count() == 0
    refused = api(page, "POST", f"/api/v1/work-orders/{order_id}/transition", {"status": "acknowledged"})
    assert refused["status"] == 403 and refused["body"]["error"]["code"] == "forbidden"
    page.goto("/audit")
    assert "Not allowed" in page.content()  # the audit page is for engineers


def test_an_engineer_promotes_the_challenger_from_the_models_page(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    _, platform = server
    registry = platform.registry
    challenger = registry.alias_version("challenger")
    assert challenger is not None and registry.alias_version("champion") != challenger
    page = page_for("engineer")
    page.goto("/models")
    button = page.locator("button[data-action='promote'][data-machine-type='turbofan']")
    button.wait_for()
    shot(page, "models")
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    deadline = time.monotonic() + 15
    while registry.alias_version("champion") != challenger:
        assert time.monotonic() < deadline, "the champion did not move"
        time.sleep(0.2)
    promoted = platform.db.audit_entries(action="model_promoted")[0]
    assert (promoted["actor"], promoted["role"]) == ("engineer", "engineer")


def test_every_page_is_accessible_and_logout_ends_the_session(
    page_for: Any, server: tuple[str, Platform], browser: Any
) -> None:
    url, _ = server
    login_page = browser.new_page(base_url=url)
    login_page.goto("/login")
    shot(login_page, "login")
    problems = {"login": serious_violations(login_page)}
    login_page.close()
    page = page_for("engineer")
    for name, path in [
        ("fleet", "/"),
        ("machine", "/machines/eng-031"),
        ("work-orders", "/work-orders"),
        ("models", "/models"),
        ("data", "/data"),
        ("audit", "/audit"),
    ]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(300)  # the first poll's render
        shot(page, f"{name}-engineer")
        problems[name] = serious_violations(page)
    assert not any(problems.values()), problems
    # logout: back at the login page, and the old session opens nothing
    page.locator("#logout-form button[type=submit]").click()
    page.wait_for_url("**/login**")
    page.goto("/")
    assert "/login" in page.url
    status = page.evaluate("async () => (await fetch('/api/v1/me')).status")
    assert status == 401
