"""The docs page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright; nothing is
downloaded) opens /docs of a service with API keys on, authorizes with a key through Swagger UI's Authorize
button, and calls GET /v1/models from the page: 401 before, 200 after, and the service saw the key's id."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from test_auth import CardsOnly

from deepxray.api.keys import add_key
from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.logs import LOGGER_NAME
from deepxray.settings import Settings
from loadtests.harness import served_in_thread

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)", allow_module_level=True)


@pytest.fixture
def service(tmp_path):
    """The API with auth_mode api_key under uvicorn on a free port (a thread of this process); its URL and key."""
    keys_file = tmp_path / "api_keys.txt"
    key = add_key(keys_file, "lab-a", frozenset({"read"}))
    app = create_app(ScoringService(CardsOnly(), Settings(auth_mode="api_key", api_keys_file=keys_file)))
    with served_in_thread(app) as url:
        yield url, key


def call_model_cards(page) -> tuple[int, str | None]:
    """Try it out → Execute on GET /v1/models in Swagger UI: the status the browser got, the Authorization header
    it sent, and the page showing that status."""
    operation = page.locator("#operations-default-model_cards_v1_models_get")
    if not operation.locator("button.execute").is_visible():
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
    with page.expect_response(lambda response: response.url.endswith("/v1/models")) as answer:
        operation.locator("button.execute").click()
    response = answer.value
    shown = operation.locator(".live-responses-table tr.response .response-col_status")
    shown.filter(has_text=str(response.status)).wait_for(timeout=10_000)
    return response.status, response.request.headers.get("authorization")


def test_the_authorize_button_of_the_docs_page_works(service, caplog):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian's chromium is needed (apt-get install chromium)"
    url, key = service
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/docs")
            page.locator("button.authorize").first.wait_for(timeout=15_000)
            assert call_model_cards(page) == (401, None)

            page.locator("button.authorize").first.click()
            page.locator(".modal-ux input").first.fill(key)
            page.locator(".modal-ux button.authorize").click()
            page.locator(".modal-ux button.btn-done").click()
            assert call_model_cards(page) == (200, f"Bearer {key}")
        finally:
            browser.close()
    audit = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("audit ") and "/v1/models" in r.getMessage()
    ]
    assert audit[0].endswith("subject=- method=GET route=/v1/models status=401")
    assert audit[-1].endswith("subject=lab-a method=GET route=/v1/models status=200")
