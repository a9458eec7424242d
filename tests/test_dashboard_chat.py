"""The assistant's chat panel in a real browser (Chromium through Playwright) against a real server.

A technician asks about a machine, follows up, and closes its work order with the Yes button; a
viewer is refused; the panel opens on every page and keeps its conversation across pages; an
answer carrying markup shows as text; conversations are resumed and deleted; errors read plainly;
axe finds no serious or critical violation with the panel open.
"""

from __future__ import annotations

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
from tests import test_dashboard as dash
from tests.conftest import free_port, make_settings
from tests.test_processor import publish

pytestmark = pytest.mark.browser

# the browser and the login helper are the dashboard tests' own; the server is this module's
browser = dash.browser
page_for = dash.page_for
ANSWERS = "#chat-log .from-assistant:not(.chat-wait)"
PAGES = ["/", "/machines/eng-031", "/work-orders", "/models", "/data", "/audit"]


@pytest.fixture(scope="module")
def server(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Platform]]:
    """A trained platform with three machines streamed (eng-031 and eng-034 with open work
    orders), a user per role and a chatty viewer, served by uvicorn on a free port."""
    data_dir = tmp_path_factory.mktemp("dashboard-chat") / "data"
    shutil.copytree(trained_dir, data_dir)
    platform = Platform.open(make_settings(data_dir))
    platform.scorer.reload()
    proc = Processor(platform)
    proc.bootstrap()
    for machine, unit in {"eng-031": 31, "eng-034": 34, "eng-003": 3}.items():
        publish(platform, machine, unit, 0, 400)
    while proc.run_once().readings:
        pass
    users = Users(platform.db)
    for name, role in [("viewer", "viewer"), ("technician", "technician"), ("engineer", "engineer")]:
        users.add(name, role, dash.PASSWORD)
    users.add("chatty", "viewer", dash.PASSWORD)
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


def open_order(platform: Platform, machine: str) -> int:
    with platform.db.session() as s:
        order = s.query(WorkOrder).filter(WorkOrder.machine_id == machine, WorkOrder.status != "done").one()
        return int(order.id)


def work_order(platform: Platform, order_id: int) -> tuple[str, str | None, str | None]:
    with platform.db.session() as s:
        row = s.get(WorkOrder, order_id)
        assert row is not None
        return row.status, row.finding, row.technician


def open_panel(page: Any) -> None:
    page.locator("#chat-toggle").click()
    page.locator("#chat-panel").wait_for(state="visible")


def say(page: Any, text: str) -> Any:
    """Type ``text`` in the panel, press Enter, and return the assistant's answer to it."""
    n = page.locator(ANSWERS).count()
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")
    answer = page.locator(ANSWERS).nth(n)
    answer.wait_for(timeout=15_000)
    return answer


def stored_conversation(page: Any) -> str | None:
    found: str | None = page.evaluate("() => JSON.parse(sessionStorage.getItem('pitstop.chat') || '{}').id")
    return found


def test_a_technician_asks_follows_up_and_closes_a_work_order_with_the_yes_button(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    _, platform = server
    order = open_order(platform, "eng-031")
    page = page_for("technician")
    open_panel(page)
    assert page.evaluate("() => document.activeElement.id") == "chat-input"

    answer = say(page, "how is eng-031 doing?")
    assert "predicted remaining useful life" in answer.inner_text()
    machine = answer.locator("[data-kind='machine'] a")
    assert machine.get_attribute("href") == "/machines/eng-031"  # the machine, cited as a link
    live = "() => document.getElementById('chat-live').textContent"
    page.wait_for_function(f"{live}.includes('predicted remaining useful life')", timeout=5_000)  # announced
    conversation = stored_conversation(page)
    assert conversation

    answer = say(page, "and its work order?")  # the follow-up resolves "its" in the same conversation
    assert f"WO-{order} on eng-031" in answer.inner_text()
    link = answer.locator("[data-kind='work_order'] a")
    assert link.get_attribute("href") == "/machines/eng-031"  # a work order links to its machine's page
    assert stored_conversation(page) == conversation

    answer = say(page, "close it as fault confirmed")
    assert "yes/no" in answer.inner_text()
    yes = answer.locator("button[data-chat-reply='yes']")
    assert answer.locator("button[data-chat-reply='no']").count() == 1
    dash.shot(page, "chat-proposal")
    yes.click()
    done = page.locator(ANSWERS).nth(3)
    done.wait_for(timeout=15_000)
    assert f"WO-{order} on eng-031 is now done" in done.inner_text()
    assert page.locator("#chat-log .from-user").nth(3).inner_text().endswith("yes")  # the button said yes
    assert page.locator("button[data-chat-reply]").count() == 0  # answered: no more buttons
    assert page.evaluate("() => document.activeElement.id") == "chat-input"
    assert work_order(platform, order) == ("done", "fault_confirmed", "technician")

    # typing yes confirms too
    other = open_order(platform, "eng-034")
    assert "yes/no" in say(page, f"acknowledge WO-{other}").inner_text()
    assert f"WO-{other} on eng-034 is now acknowledged" in say(page, "yes").inner_text()
    assert work_order(platform, other)[0] == "acknowledged"

    # the machine page shows the order done, and the panel comes back open with the conversation
    page.goto("/machines/eng-031")
    page.locator("#chat-panel").wait_for(state="visible")
    page.locator(ANSWERS).nth(5).wait_for()
    assert stored_conversation(page) == conversation
    assert page.locator("#chat-log .chat-msg").count() == 12
    assert page.locator("#chat-toggle").get_attribute("aria-expanded") == "true"
    page.wait_for_selector("#open-order-body")
    assert page.locator("button[data-action='done']").count() == 0


def test_a_viewer_is_refused_and_logging_out_forgets_the_conversation(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    _, platform = server
    order = open_order(platform, "eng-034")
    page = page_for("viewer")
    open_panel(page)
    answer = say(page, f"close WO-{order} as fault confirmed")
    assert "Your role (viewer) cannot change work orders" in answer.inner_text()
    assert answer.locator(".chat-action[data-state='refused']").count() == 1
    assert page.locator("button[data-chat-reply]").count() == 0
    assert "nothing waiting" in say(page, "yes").inner_text()
    assert work_order(platform, order)[0] != "done"
    # logging out forgets the conversation in this tab
    assert stored_conversation(page)
    page.locator("#logout-form button[type=submit]").click()
    page.wait_for_url("**/login**")
    assert page.evaluate("() => sessionStorage.getItem('pitstop.chat')") is None


def test_the_panel_opens_on_every_page_by_keyboard_and_escape_closes_it(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    page = page_for("engineer")
    for path in PAGES:
        page.goto(path)
        toggle = page.locator("#chat-toggle")
        toggle.wait_for()
        assert page.locator("#chat-panel").is_hidden(), path
        toggle.focus()
        page.keyboard.press("Enter")
        page.locator("#chat-panel").wait_for(state="visible")
        assert page.evaluate("() => document.activeElement.id") == "chat-input", path
        assert toggle.get_attribute("aria-expanded") == "true"
        page.keyboard.press("Escape")
        page.locator("#chat-panel").wait_for(state="hidden", timeout=5_000)
        assert page.evaluate("() => document.activeElement.id") == "chat-toggle", path
        assert toggle.get_attribute("aria-expanded") == "false"


def test_markup_shows_as_text_and_conversations_are_resumed_and_deleted(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    page = page_for("engineer")
    open_panel(page)
    markup = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    answer = say(page, f"record an inspection of eng-003, note: {markup}")
    assert markup in answer.inner_text()  # the note, echoed in the question, as text
    assert page.locator("#chat-log script, #chat-log img").count() == 0
    assert page.evaluate("() => window.pwned") is None
    answer.locator("button[data-chat-reply='no']").click()
    assert "Cancelled" in page.locator(ANSWERS).nth(1).inner_text(timeout=15_000)
    marked = stored_conversation(page)

    page.locator("#chat-new").click()
    assert page.locator("#chat-log .chat-msg").count() == 0
    answer = say(page, "which machines are at risk?")
    assert answer.locator("[data-kind='machine'] a[href='/machines/eng-034']").count() == 1
    latest = stored_conversation(page)
    assert latest and latest != marked

    # across a page: the latest conversation is back, with the list open axe finds nothing serious
    page.goto("/work-orders")
    page.locator(ANSWERS).first.wait_for()
    assert "at risk" in page.locator(ANSWERS).first.inner_text()
    page.locator("#chat-history-toggle").click()
    rows = page.locator("#chat-list li[data-conversation-id]")
    rows.nth(1).wait_for()
    assert rows.count() == 2
    assert "<script>window.pwned = 1</script>" in rows.nth(1).inner_text()  # the title, as text
    page.wait_for_load_state("networkidle")
    dash.shot(page, "chat-open")
    assert dash.serious_violations(page) == []

    # resume the older one, then delete it: it leaves the list, the API, and the panel
    page.locator(f"[data-chat-resume='{marked}']").click()
    page.locator("#chat-log .chat-action[data-state='cancelled']").wait_for()
    assert stored_conversation(page) == marked
    assert page.locator("#chat-history").is_hidden()
    page.locator("#chat-history-toggle").click()
    page.locator(f"[data-chat-delete='{marked}']").click()
    page.locator(f"#chat-list li[data-conversation-id='{marked}']").wait_for(state="detached")
    assert stored_conversation(page) is None
    assert page.locator("#chat-log .chat-msg").count() == 0
    assert dash.api(page, "GET", f"/api/v1/assistant/conversations/{marked}")["status"] == 404
    assert page.evaluate("() => document.activeElement.dataset.chatResume") == latest


def test_a_too_long_message_and_too_many_messages_read_plainly(
    page_for: Any, server: tuple[str, Platform]
) -> None:
    page = page_for("chatty")
    open_panel(page)
    too_long = "x" * 2001
    page.fill("#chat-input", too_long)
    page.press("#chat-input", "Enter")
    error = page.locator("#chat-error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("Your message is too long")
    assert page.input_value("#chat-input") == too_long  # kept, to shorten
    assert page.locator("#chat-log .chat-msg").count() == 0
    for _ in range(30):  # the rest of this minute's allowance
        assert dash.api(page, "POST", "/api/v1/assistant/chat", {"message": "hello"})["status"] == 200
    page.fill("#chat-input", "one more")
    page.locator("#chat-send").click()
    page.wait_for_function("() => document.getElementById('chat-error').textContent.startsWith('Too many')")
    assert "try again in" in error.inner_text()
