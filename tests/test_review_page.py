"""The review page (`/`) in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright; nothing is
downloaded) against the real API with the shipped models in this process, the case store on and API keys on.

A clinician pastes a key, scores a phantom film, sees the overlay and the ten joints with the model's scores,
corrects one joint with a comment and saves; after a reload the case opens again from the URL's `#case=` with the
correction in its select and the history, and the API holds the same review. A second film shows up in the list
of unreviewed cases (the reviewed one does not), the Similar button lists the first film's joints, and an empty
token field or a film that is no hand shows the service's own sentence.

`DEEPXRAY_SCREENSHOTS=docs pytest tests/test_review_page.py` writes the page after scoring the second film to
docs/review-page.png (otherwise the screenshot goes to the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from deepxray.api.keys import add_key
from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.settings import Settings
from loadtests.harness import served_in_thread
from loadtests.monolith import LocalBackend

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
SCORING_TIMEOUT_MS = 120_000
NOTICE = "Research use only — demo models trained on synthetic radiographs"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The API over the shipped models in this process, keeping cases in SQLite, with API keys on; its URL and
    the key of dr-meyer (scopes score, read, review)."""
    folder = tmp_path_factory.mktemp("review-page")
    backend = LocalBackend(ROOT / "models", threads=2)
    backend.load()
    key = add_key(folder / "keys.txt", "dr-meyer", frozenset({"score", "read", "review"}))
    settings = Settings(
        store_cases=True, data_dir=folder / "data", auth_mode="api_key", api_keys_file=folder / "keys.txt"
    )
    app = create_app(ScoringService(backend, settings))
    with served_in_thread(app) as url:
        yield url, key


@pytest.fixture(scope="module")
def films(radiographs, tmp_path_factory) -> dict[str, Path]:
    """Two left hands and a chest film (no hand) as PNG files to choose in the page."""
    folder = tmp_path_factory.mktemp("films")
    files = {
        "first": radiographs.file("left_hand", "png", index=0),
        "second": radiographs.file("left_hand", "png", index=1),
        "chest": radiographs.file("chest", "png", index=0, shape=(1280, 1024)),
    }
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    return {name: folder / f"{name}.png" for name in files}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian's chromium is needed (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{url}/")
    return page


def score_film(page, film: Path) -> dict:
    """Chooses `film`, presses Score, waits for the overlay and the ten joint rows; the JSON answer of /score."""
    from playwright.sync_api import expect

    page.get_by_label("Radiograph").set_input_files(film)
    is_score = lambda r: r.request.method == "POST" and "/score" in r.url  # noqa: E731
    with page.expect_response(is_score, timeout=SCORING_TIMEOUT_MS) as response:
        page.get_by_role("button", name="Score", exact=True).click()
    assert response.value.status == 200, response.value.text()
    answer = response.value.json()
    expect(page.locator("#progress")).to_contain_text("Scored in")
    expect(page.locator("#joint-rows tr")).to_have_count(10)
    wait_for_overlay(page)
    return answer


def wait_for_overlay(page) -> None:
    page.wait_for_function(
        "() => { const img = document.getElementById('overlay');"
        " return img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0; }"
    )


def joint_row(page, hand: int, joint: str):
    return page.locator(f'#joint-rows tr[data-hand="{hand}"][data-joint="{joint}"]')


def test_score_review_reload_and_similar_joints(service, films, browser, tmp_path):
    from playwright.sync_api import expect

    url, key = service
    page = new_page(browser, url)
    expect(page.get_by_text(NOTICE)).to_be_visible()
    page.get_by_label("Bearer token or API key").fill(key)

    # Score: the overlay, the ten rows with the answer's scores, the case in the URL.
    answer = score_film(page, films["first"])
    case_id = answer["case_id"]
    assert page.url.endswith(f"#case={case_id}")
    expect(page.get_by_role("img", name="The film with each joint's box and score")).to_be_visible()
    expect(page.locator("#body-part")).to_contain_text("Left hand")
    shown = {
        (int(row.get_attribute("data-hand")), row.get_attribute("data-joint")): (
            int(row.locator(".model-score").inner_text()),
            int(row.get_by_role("combobox").input_value()),
        )
        for row in page.locator("#joint-rows tr").all()
    }
    expected = {
        (index, name): (joint["score"], joint["score"])
        for index, hand in enumerate(answer["hands"])
        for name, joint in hand["joints"].items()
    }
    assert shown == expected

    # Correct mcp2 with a comment and save.
    model_score = answer["hands"][0]["joints"]["mcp2"]["score"]
    corrected = 3 if model_score != 3 else 1
    row = joint_row(page, 0, "mcp2")
    row.get_by_role("combobox").select_option(str(corrected))
    row.get_by_role("textbox").fill("erosion at the radial margin")
    with page.expect_response(lambda r: r.request.method == "PUT" and r.url.endswith(f"/v1/cases/{case_id}/review")):
        page.get_by_role("button", name="Save review").click()
    expect(page.locator("#save-status")).to_contain_text("Review saved")

    # A reload opens the same case from the URL, with the correction and its history.
    page.reload()
    expect(page.locator("#joint-rows tr")).to_have_count(10)
    wait_for_overlay(page)
    expect(joint_row(page, 0, "mcp2").get_by_role("combobox")).to_have_value(str(corrected))
    expect(joint_row(page, 0, "mcp2").get_by_role("textbox")).to_have_value("erosion at the radial margin")
    expect(joint_row(page, 0, "mcp3").get_by_role("combobox")).to_have_value(
        str(answer["hands"][0]["joints"]["mcp3"]["score"])
    )
    history = page.locator("#history li").filter(has_text="MCP2 corrected")
    expect(history).to_contain_text(
        f"dr-meyer: MCP2 corrected {model_score}→{corrected} — erosion at the radial margin"
    )

    # The API holds the same review.
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        case = client.get(f"/v1/cases/{case_id}").json()
    reviews = {(j["hand"], j["joint"]): j["review"] for j in case["joints"]}
    assert reviews[(0, "mcp2")]["decision"] == "corrected"
    assert reviews[(0, "mcp2")]["score"] == corrected
    assert reviews[(0, "mcp2")]["comment"] == "erosion at the radial margin"
    assert {r["decision"] for key_, r in reviews.items() if key_ != (0, "mcp2")} == {"accepted"}
    assert case["reviewed"] and case["reviewer"] == "dr-meyer"

    # A second film: in the unreviewed list, the reviewed one is not (until "Show all cases").
    second = score_film(page, films["second"])
    assert page.url.endswith(f"#case={second['case_id']}")
    folder = Path(os.environ["DEEPXRAY_SCREENSHOTS"]) if os.environ.get("DEEPXRAY_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / "review-page.png", full_page=True)  # the docs' picture of the page
    cases = page.get_by_role("navigation", name="Unreviewed cases")
    expect(cases.locator(f'a[data-case="{second["case_id"]}"]')).to_have_count(1)
    expect(cases.locator(f'a[data-case="{case_id}"]')).to_have_count(0)
    page.get_by_label("Show all cases").check()
    expect(page.locator(f'#case-list a[data-case="{case_id}"]')).to_contain_text("reviewed by dr-meyer")
    page.get_by_label("Show all cases").uncheck()

    # Similar joints of the second film's mcp2: the first film's joints, with a link that opens its case.
    with page.expect_response(lambda r: "/similar?" in r.url) as response:
        joint_row(page, 0, "mcp2").get_by_role("button", name="Similar").click()
    similar = response.value.json()["similar"]
    assert similar and {n["case_id"] for n in similar} == {case_id}
    panel = page.get_by_role("complementary")
    expect(panel.locator("#similar-list li")).to_have_count(len(similar))
    expect(panel.locator("#similar-list li").first).to_contain_text(f"{similar[0]['similarity']:.2f}")
    expect(panel.locator("#similar-share")).to_contain_text(f"of {len(similar)}")
    expect(panel.locator("#similar-share")).to_contain_text("within ±1")
    panel.get_by_role("link").first.click()
    expect(page).to_have_url(f"{url}/#case={case_id}")
    expect(joint_row(page, 0, "mcp2").get_by_role("combobox")).to_have_value(str(corrected))


def test_the_service_s_sentence_shows_on_401_and_422(service, films, browser):
    from playwright.sync_api import expect

    url, key = service
    page = new_page(browser, url)
    # No token: the case list and Score answer 401, and the page says why next to the token field.
    auth = page.locator("#auth-message")
    expect(auth).to_contain_text("401")
    page.get_by_label("Radiograph").set_input_files(films["first"])
    with page.expect_response(lambda r: "/score" in r.url) as response:
        page.get_by_role("button", name="Score", exact=True).click()
    assert response.value.status == 401
    expect(auth).to_be_visible()
    expect(auth).to_contain_text(response.value.json()["detail"])
    expect(page.locator("#message")).to_contain_text("401")

    # With the key, a chest film: 422, and its detail readable in the message area.
    page.get_by_label("Bearer token or API key").fill(key)
    expect(auth).to_be_hidden()
    page.get_by_label("Radiograph").set_input_files(films["chest"])
    with page.expect_response(lambda r: "/score" in r.url, timeout=SCORING_TIMEOUT_MS) as response:
        page.get_by_role("button", name="Score", exact=True).click()
    assert response.value.status == 422
    message = page.get_by_role("alert").filter(has_text="422")
    expect(message).to_be_visible()
    expect(message).to_contain_text(response.value.json()["detail"])
    assert "#case=" not in page.url
