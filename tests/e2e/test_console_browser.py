"""The operator console in a real headless Chromium against ``python -m launcher`` in REHEARSAL.

Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run`` when missing) driven by
Playwright for Python with ``executable_path`` (Playwright never downloads a browser here). The
engine runs configs/rehearsal.yaml sped up (tests/e2e/test_live_runbooks.py), with a short
LIVE_CONFIRMATION_TTL_S so that the confirmation expires during the test.

By clicking only, the test signs in (a wrong admin token first), walks the Go-LIVE wizard to
ARMED (a premature arm and a wrong LIVE_ENABLE_TOKEN first), pauses, flattens, activates the
kill switch, runs a pre-live check that fails, waits for the confirmation to expire, tries to
arm again, resets the kill switch and resumes. After each step the page is checked against
``GET /execution/status`` and ``GET /status``; every refusal must show the server's own
sentence. It writes a screenshot of each page at 1366x768 to docs/console/ (shown in the
README). No sleeps: Playwright's auto-waiting and ``wait_until`` with deadlines.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO_ROOT, Launcher, free_port
from tests.e2e.test_live_runbooks import (
    ACCOUNT_ID,
    ADMIN_TOKEN,
    AUTH,
    LIVE_TOKEN,
    PRELIVE_CHECKS,
    live_environment,
    rehearsal_config,
)
from tests.helpers import wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}
SCREENSHOTS = REPO_ROOT / "docs" / "console"
# Long enough to click from the confirmation to ARMED and see orders, short enough to expire
# while the test pauses, flattens and trips the kill switch.
CONFIRMATION_TTL_S = 30
STEP_TIMEOUT_S = 15.0
# The status fields a mismatch message shows.
STATUS_SHOWN = ("mode", "armed", "trading_state", "halt_reason", "pause_causes")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, rehearsal_config(tmp_path), free_port())
    launcher.start(live_environment(LIVE_CONFIRMATION_TTL_S=str(CONFIRMATION_TTL_S)))
    yield launcher
    launcher.close()


@pytest.fixture
def page(engine: Launcher) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    profile = tempfile.mkdtemp(prefix="vigil-chromium-")
    with sync_api.sync_playwright() as playwright:
        # A fresh profile each run; the machine's network is closed, so nothing phones home.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(STEP_TIMEOUT_S * 1000)
        browser_page = context.new_page()
        browser_page.problems = []  # type: ignore[attr-defined]
        browser_page.on(
            "console",
            lambda message: message.type == "error" and browser_page.problems.append(message.text),  # type: ignore[attr-defined]
        )
        browser_page.on(
            "pageerror",
            lambda error: browser_page.problems.append(str(error)),  # type: ignore[attr-defined]
        )
        try:
            yield browser_page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# HELPERS
# ---------------------------------------------------------------------------------------------


def server(engine: Launcher, path: str) -> dict[str, Any]:
    response = engine.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).text_content() or "").strip()


def items(page: Any, selector: str) -> list[str]:
    return [str(item).strip() for item in page.locator(f"{selector} li").all_text_contents()]


def page_state(page: Any) -> dict[str, Any]:
    return {
        "mode": text(page, "#hdr-mode"),
        "armed": text(page, "#hdr-armed") == "ARMED",
        "trading_state": text(page, "#hdr-state"),
        "overview": (text(page, "#ov-mode"), text(page, "#ov-armed"), text(page, "#ov-state")),
        "halt": text(page, "#ov-halt"),
        "causes": items(page, "#ov-causes"),
        "leader": text(page, "#ov-leader"),
        "epoch": text(page, "#ov-epoch"),
    }


def assert_page_matches_status(page: Any, engine: Launcher, **expected: Any) -> dict[str, Any]:
    """Wait until the page shows what /execution/status (and /status, the same handler) say,
    and what the step should have led to (``expected``: status fields). Returns the status."""
    seen: dict[str, Any] = {}

    def matches() -> bool:
        status = server(engine, "/execution/status")
        aitrapp = server(engine, "/status")
        shown = page_state(page)
        seen.update(status=status, shown=shown)
        armed_text = "ARMED" if status["armed"] else "DISARMED"
        causes = [f"{cause['cause']}: {cause['detail']} (for" for cause in status["pause_causes"]]
        halt = status["halt_reason"]
        return (
            all(status[name] == value for name, value in expected.items())
            and all(aitrapp[name] == status[name] for name in ("mode", "armed", "trading_state"))
            and shown["mode"] == status["mode"]
            and shown["armed"] == status["armed"]
            and shown["trading_state"] == status["trading_state"]
            and shown["overview"] == (status["mode"], armed_text, status["trading_state"])
            and (shown["halt"] == "none" if halt is None else shown["halt"].startswith(halt))
            and len(shown["causes"]) == max(1, len(causes))
            and all(any(item.startswith(c) for item in shown["causes"]) for c in causes)
            and shown["leader"] == ("leader" if status["is_leader"] else "NOT leader")
            and shown["epoch"] == str(status["epoch"])
        )

    try:
        wait_until(matches, timeout_s=STEP_TIMEOUT_S, message="the page to match the status")
    except AssertionError as error:
        raise AssertionError(
            f"{error}; page {seen.get('shown')}, expected {expected}, status "
            f"{ {name: seen.get('status', {}).get(name) for name in STATUS_SHOWN} }"
        ) from None
    return seen["status"]


def assert_blockers_match_gates(page: Any, engine: Launcher, must_contain: str) -> list[str]:
    """Wait until the wizard's blocker list is /execution/gates' list, word for word, and holds
    a sentence starting with ``must_contain``."""
    seen: dict[str, Any] = {}

    def matches() -> bool:
        blockers = server(engine, "/execution/gates")["blockers"]
        shown = items(page, "#gates-blockers")
        seen.update(blockers=blockers, shown=shown)
        return shown == blockers and any(b.startswith(must_contain) for b in blockers)

    try:
        wait_until(matches, timeout_s=STEP_TIMEOUT_S + CONFIRMATION_TTL_S, message="blockers")
    except AssertionError as error:
        raise AssertionError(
            f"{error}; page {seen.get('shown')}, gates {seen.get('blockers')}"
        ) from None
    return list(seen["blockers"])


def answer_number(page: Any, selector: str) -> int:
    return int(page.locator(selector).get_attribute("data-answer") or 0)


def confirm_dialog(page: Any, *, reason: str | None = None) -> None:
    """The console's confirmation step: optionally type the reason, then Confirm."""
    dialog = page.locator("#confirm-dialog")
    sync_api.expect(dialog).to_be_visible()
    if reason is not None:
        page.get_by_label("Reason").fill(reason)
    dialog.get_by_role("button", name="Confirm", exact=True).click()
    sync_api.expect(dialog).to_be_hidden()


def click_for_answer(
    page: Any,
    name: str,
    selector: str,
    expected_status: int,
    *,
    confirm: bool = True,
    reason: str | None = None,
) -> dict[str, Any]:
    """Click a button (and its confirmation), wait for the NEW answer in ``selector`` and
    return the server's body as the page shows it (raw), after checking its status line."""
    before = answer_number(page, selector)
    page.get_by_role("button", name=name, exact=True).click()
    if confirm:
        confirm_dialog(page, reason=reason)
    wait_until(
        lambda: answer_number(page, selector) > before,
        timeout_s=STEP_TIMEOUT_S,
        message=f"the answer to {name!r}",
    )
    head = text(page, f"{selector} .answer-head")
    assert head.split(": HTTP ")[1].startswith(str(expected_status)), head
    body: dict[str, Any] = json.loads(text(page, f"{selector} .answer-raw"))
    return body


def open_view(page: Any, name: str) -> None:
    page.get_by_role("navigation").get_by_role("button", name=name, exact=True).click()
    sync_api.expect(page.get_by_role("heading", level=2, name=name)).to_be_visible()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


# ---------------------------------------------------------------------------------------------
# THE WALK
# ---------------------------------------------------------------------------------------------


def test_console_walks_go_live_and_every_control_against_the_engine(
    engine: Launcher, page: Any
) -> None:
    engine.wait_ready(timeout_s=30)
    base = f"http://127.0.0.1:{engine.port}"

    # The page needs no token and says so with its headers; it holds no data.
    served = httpx.get(f"{base}/")
    assert served.status_code == 200
    assert "script-src 'self'" in served.headers["content-security-policy"]
    assert served.headers["x-content-type-options"] == "nosniff"
    page.goto(f"{base}/")
    sync_api.expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "sign-in")

    # A wrong admin token: the server's sentence, and the console stays closed.
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.locator("#signin-answer .answer-message")).to_have_text(
        "bearer token was not accepted"
    )
    sync_api.expect(page.locator("#signin-answer")).to_contain_text("HTTP 401")
    assert page.locator("#tabs").is_hidden()
    assert page.get_by_label("Admin token").input_value() == ""

    # The right one, by keyboard (the field has the focus; Enter signs in): the Overview
    # matches the engine.
    assert page.evaluate("document.activeElement.id") == "signin-token"
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    sync_api.expect(page.get_by_role("heading", level=2, name="Overview")).to_be_visible()
    assert page.get_by_label("Admin token").input_value() == ""
    sync_api.expect(page.locator("#hdr-rehearsal")).to_be_visible()
    assert_page_matches_status(page, engine, mode="PAPER", armed=False)

    # ---- Go LIVE: the SOLAT steps in order ------------------------------------------------
    open_view(page, "Go LIVE")
    # 2. Connect to the broker.
    connect = click_for_answer(page, "Connect", "#wz-connect-answer", 200, confirm=False)
    assert connect["ok"] is True and connect["account_id"] == ACCOUNT_ID
    sync_api.expect(page.locator("#wz-broker-account")).to_have_text(ACCOUNT_ID)
    # 3. The gates: the runbook's blockers, as the server's sentences.
    blockers = assert_blockers_match_gates(page, engine, "Pre-live check has never passed")
    assert "UI LIVE confirmation not completed" in blockers
    # Arming now is refused; the page shows the 409 and its blockers verbatim.
    refused = click_for_answer(page, "Arm LIVE", "#wz-arm-answer", 409)
    assert refused["error"] == "LIVE_GATES_BLOCKED"
    assert items(page, "#wz-arm-answer .answer-blockers") == refused["blockers"]
    assert "UI LIVE confirmation not completed" in refused["blockers"]

    # 5a. Acknowledge, type the phrase, paste a WRONG token, run the pre-live check, confirm
    # the account: the server refuses the token, and the page says so in its words.
    sync_api.expect(page.get_by_role("button", name="Confirm LIVE")).to_be_disabled()
    page.get_by_label("I have read the gates").check()
    page.get_by_label("Type ENABLE LIVE TRADING").fill("ENABLE LIVE TRADING")
    page.get_by_label("LIVE_ENABLE_TOKEN").fill("not-the-live-token")
    prelive = click_for_answer(page, "Run pre-live check", "#wz-prelive-answer", 200, confirm=False)
    assert prelive["passed"] is True
    rows = page.locator("#wz-prelive-answer table.checks tbody tr")
    assert [str(name) for name in rows.locator("th").all_text_contents()] == PRELIVE_CHECKS
    assert rows.locator("td:nth-child(2)").all_text_contents() == ["passed"] * 7
    page.get_by_label("Account ID").fill(ACCOUNT_ID)
    bad_token = click_for_answer(page, "Confirm LIVE", "#wz-confirm-answer", 403)
    assert bad_token["error"] == "BAD_TOKEN"
    sync_api.expect(page.locator("#wz-confirm-answer .answer-message")).to_have_text(
        bad_token["message"]
    )
    assert "the token does not match LIVE_ENABLE_TOKEN" in bad_token["message"]
    assert page.get_by_label("LIVE_ENABLE_TOKEN").input_value() == ""

    # 5b. The right token: confirmed, and the remaining time counts down.
    page.get_by_label("LIVE_ENABLE_TOKEN").fill(LIVE_TOKEN)
    confirmed = click_for_answer(page, "Confirm LIVE", "#wz-confirm-answer", 200)
    assert 0 < confirmed["expires_in_seconds"] <= CONFIRMATION_TTL_S
    assert confirmed["message"].startswith("REHEARSAL: ")
    countdown = page.locator("#gates-countdown")
    sync_api.expect(countdown).to_contain_text("expires in 0:")
    first = text(page, "#gates-countdown")
    # "expires in 0:27" < "expires in 0:28": the text counts down by itself, between polls too.
    wait_until(lambda: text(page, "#gates-countdown") < first, timeout_s=5, message="countdown")

    # 6. Arm for LIVE trading.
    armed = click_for_answer(page, "Arm LIVE", "#wz-arm-answer", 200)
    assert {k: armed[k] for k in ("ok", "armed", "mode", "live")} == {
        "ok": True,
        "armed": True,
        "mode": "LIVE",
        "live": True,
    }
    assert_page_matches_status(page, engine, mode="LIVE", armed=True, trading_state="ACTIVE")
    screenshot(page, "go-live")

    # ---- Book: orders flow once armed ------------------------------------------------------
    wait_until(
        lambda: server(engine, "/orders")["count"] > 0,
        timeout_s=CONFIRMATION_TTL_S,
        message="orders once armed",
    )
    open_view(page, "Book")
    book_rows = page.locator("#book-working tbody tr:not(.none), #book-fills tbody tr:not(.none)")
    sync_api.expect(book_rows.first).to_be_visible()
    page.get_by_label("Instrument or strategy contains").fill("no-such-instrument")
    sync_api.expect(page.locator("#book-working tbody tr.none")).to_be_visible()
    sync_api.expect(page.locator("#book-fills tbody tr.none")).to_be_visible()
    page.get_by_label("Instrument or strategy contains").fill("")
    screenshot(page, "book")

    open_view(page, "Overview")
    sync_api.expect(page.locator("#sig-heat")).to_contain_text("of ₹")
    sync_api.expect(page.locator("#sig-kill")).to_contain_text("since start")
    screenshot(page, "overview")

    # ---- Controls: each with a confirmation step and the server's answer -------------------
    open_view(page, "Controls")
    paused = click_for_answer(page, "Pause entries", "#controls-answer", 200, reason="console walk")
    assert paused["trading_state"] == "REDUCING"
    assert_page_matches_status(page, engine, trading_state="REDUCING")

    # A cancelled confirmation sends nothing.
    before = answer_number(page, "#controls-answer")
    page.get_by_role("button", name="Flatten all", exact=True).click()
    page.keyboard.press("Escape")  # the dialog's cancel, from the keyboard
    sync_api.expect(page.locator("#controls-answer")).to_contain_text("cancelled")
    assert answer_number(page, "#controls-answer") == before + 1

    flattened = click_for_answer(page, "Flatten all", "#controls-answer", 200, reason="rollback")
    assert flattened["remaining_positions"] == 0 and flattened["reason"] == "rollback"
    status = assert_page_matches_status(page, engine, trading_state="REDUCING")
    assert status["positions_open"] == 0

    killed = click_for_answer(
        page, "Activate kill switch", "#controls-answer", 200, reason="incident response"
    )
    assert killed["active"] is True
    status = assert_page_matches_status(page, engine, trading_state="HALTED")
    assert status["halt_reason"] is not None
    sync_api.expect(page.locator("#ks-state")).to_contain_text("ACTIVE")
    screenshot(page, "controls")

    # ---- A failed pre-live check and an expired confirmation: the server's sentences -------
    open_view(page, "Go LIVE")
    failed = click_for_answer(page, "Run pre-live check", "#wz-prelive-answer", 200, confirm=False)
    assert failed["passed"] is False
    failed_rows = page.locator("#wz-prelive-answer table.checks tbody tr.failed th")
    failed_names = [c["name"] for c in failed["checks"] if not c["passed"]]
    assert "Kill switch" in failed_names
    sync_api.expect(failed_rows).to_have_text(failed_names)
    assert_blockers_match_gates(page, engine, "Pre-live check failed: ")

    # The confirmation's TTL runs out while the engine is halted: the countdown says so and the
    # gates' sentence is on the page; arming again is refused with it.
    sync_api.expect(countdown).to_have_text("expired", timeout=(CONFIRMATION_TTL_S + 15) * 1000)
    blockers = assert_blockers_match_gates(page, engine, "LIVE confirmation expired ")
    refused = click_for_answer(page, "Arm LIVE", "#wz-arm-answer", 409)
    assert any(b.startswith("LIVE confirmation expired ") for b in refused["blockers"])
    assert items(page, "#wz-arm-answer .answer-blockers") == refused["blockers"]
    assert any(b.startswith("Kill switch is active") for b in blockers)
    screenshot(page, "go-live-blocked")

    # ---- Reset the kill switch, resume --------------------------------------------------
    open_view(page, "Controls")
    reset = click_for_answer(
        page, "Reset kill switch", "#controls-answer", 200, reason="incident closed"
    )
    assert reset["active"] is False and reset["armed"] is False
    assert_page_matches_status(page, engine, armed=False, halt_reason=None)
    sync_api.expect(page.locator("#ks-state")).to_contain_text("Inactive")
    click_for_answer(page, "Resume entries", "#controls-answer", 200)
    assert_page_matches_status(page, engine, armed=False, halt_reason=None, pause_causes=[])

    # Neither secret anywhere in the page, its URL or its storage; no script or CSP error.
    html = page.content()
    assert ADMIN_TOKEN not in html and LIVE_TOKEN not in html
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    # (The browser logs each refused request, 4xx, as a failed load: those were expected.)
    refusals = re.compile(r"^Failed to load resource: .* status of (401|403|409) ")
    problems = [p for p in page.problems if not refusals.match(p)]  # type: ignore[attr-defined]
    assert problems == []
