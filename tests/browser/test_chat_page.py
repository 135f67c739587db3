"""The chat page in headless Chromium: sign in, stream, stop, and no HTML from the model."""

from __future__ import annotations

import time

import pytest

from apps.providers.services import deployment_create, model_create
from tests.conftest import settle
from tests.tenants.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.live, pytest.mark.browser]

LAST_ANSWER = "#messages .msg.assistant:last-child"
WORDS = " ".join(f"word{i}" for i in range(12))


@pytest.fixture
def mock_models(gw):
    """Mock-provider models: one paced (10 tokens a second), one as fast as it goes."""
    for name, options in (("mock-slow", {"tokens_per_second": 10}), ("mock-fast", {})):
        model = model_create(
            name=name, input_price_per_million="1.00", output_price_per_million="2.00"
        )
        deployment_create(model=model, provider=gw.mock, upstream_model=name, options=options)
    settle()
    return gw


def sign_in_with_key(page, gw) -> None:
    page.goto(gw.url + "/chat/")
    page.fill("#key-input", gw.key.secret)
    page.click("#key-submit")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('Signed in as key')"
    )
    page.wait_for_selector("#model-select option[value='mock-fast']", state="attached")


def ask(page, model: str, text: str) -> None:
    page.select_option("#model-select", model)
    page.fill("#composer", text)
    page.click("#send")
    page.wait_for_selector(LAST_ANSWER, state="attached")


def answer_state(page) -> dict:
    return page.evaluate(
        """() => {
            const all = document.querySelectorAll('#messages .msg.assistant');
            const el = all[all.length - 1];
            return el ? {state: el.dataset.state, text: el.querySelector('.content').textContent} : null;
        }"""
    )


def test_answer_streams_in_steps_with_token_and_cost_counters(page, mock_models):
    gw = mock_models
    sign_in_with_key(page, gw)
    ask(page, "mock-slow", "echo: " + WORDS)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        current = answer_state(page)
        if current["state"] != "streaming":
            break
        if current["text"] and (not seen or seen[-1] != current["text"]):
            seen.append(current["text"])
        time.sleep(0.05)
    final = answer_state(page)
    assert final["state"] == "done", final
    assert final["text"] == WORDS
    # the answer grew in at least three visible steps before it completed
    assert len(seen) >= 3, seen
    assert all(WORDS.startswith(step) for step in seen)
    assert page.text_content("#counter-tokens") != "0 in · 0 out tokens"
    assert "out" in page.text_content("#last-usage")
    assert float(page.text_content("#counter-cost").lstrip("$")) > 0

    # the conversation is kept in the browser
    page.reload()
    page.wait_for_selector("#messages .msg.assistant")
    assert page.text_content(LAST_ANSWER + " >> .content") == WORDS
    assert page.text_content("#conversation-list").startswith("echo: word0")


def test_stop_button_ends_the_stream(page, mock_models):
    gw = mock_models
    sign_in_with_key(page, gw)
    long_text = " ".join(f"token{i}" for i in range(200))  # about 20 s at 10 tokens a second
    ask(page, "mock-slow", "echo: " + long_text)
    page.wait_for_function(
        """() => {
            const all = document.querySelectorAll('#messages .msg.assistant');
            return all[all.length - 1].querySelector('.content').textContent.length > 20;
        }"""
    )
    assert page.is_enabled("#stop")
    page.click("#stop")
    page.wait_for_selector(f"{LAST_ANSWER}[data-state='cancelled']", state="attached", timeout=5000)
    stopped = answer_state(page)["text"]
    time.sleep(1.0)
    assert answer_state(page)["text"] == stopped
    assert 20 < len(stopped) < len(long_text)
    assert long_text.startswith(stopped)
    assert "stopped" in page.text_content(LAST_ANSWER + " >> .meta")
    assert page.is_disabled("#stop")
    assert page.is_enabled("#send")


@pytest.fixture
def page_without_csp(browser):
    """The page's CSP would stop an injected script anyway: without it, this test is about
    the renderer alone."""
    context = browser.new_context(bypass_csp=True)
    yield context.new_page()
    context.close()


def test_model_output_with_html_is_shown_as_text(page_without_csp, mock_models):
    gw, page = mock_models, page_without_csp
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in_with_key(page, gw)
    hostile = (
        '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> '
        "**bold** and `<b>code</b>` [click](javascript:alert(3)) [ok](https://example.com)\n"
        "```html\n<script>window.__pwned = 4</script>\n```"
    )
    ask(page, "mock-fast", "echo: " + hostile)
    page.wait_for_selector(f"{LAST_ANSWER}[data-state='done']", state="attached")
    answer = page.locator(LAST_ANSWER + " >> .content")
    text = answer.text_content()
    assert "<script>window.__pwned = 1</script>" in text
    assert '<img src=x onerror="window.__pwned = 2">' in text
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    # nothing the model sent became markup: no script, img or b element anywhere in the chat
    assert page.locator("#messages script, #messages img, #messages b").count() == 0
    # while the safe Markdown subset did render
    assert answer.locator("strong").text_content() == "bold"
    assert answer.locator("p code").text_content() == "<b>code</b>"
    assert answer.locator("pre code").text_content() == "<script>window.__pwned = 4</script>"
    links = answer.locator("a")
    assert links.count() == 1
    assert links.get_attribute("href") == "https://example.com"
    assert "[click](javascript:alert(3))" in text


def test_session_sign_in_and_chat(page, mock_models):
    gw = mock_models
    user = MembershipFactory(tenant=gw.tenant, user=UserFactory(is_staff=False)).user
    page.goto(gw.url + "/chat/")
    page.click("text=Sign in")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/chat/")
    page.wait_for_function(
        "(name) => document.querySelector('#status').textContent === "
        "`Signed in as ${name} · tenant acme`",
        arg=user.username,
    )
    page.wait_for_selector("#model-select option[value='mock-fast']", state="attached")
    ask(page, "mock-fast", "echo: hello from the session")
    page.wait_for_selector(f"{LAST_ANSWER}[data-state='done']", state="attached")
    assert page.text_content(LAST_ANSWER + " >> .content") == "hello from the session"
