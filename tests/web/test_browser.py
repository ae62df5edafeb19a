"""The web app in a real browser (Debian's Chromium through Playwright) against a real
``darkroom serve``: sign up, upload by the file input and by a drop, live progress to done,
results and download, a failing task and its retry, cancel, both languages, refusals.

Screenshots of the main states go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.server import Server
from tests.support import photo, unique_email

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LONG = 90_000  # ms: a loaded 2-core machine runs the models slowly; this is a ceiling, not a measure


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("web"), DARKROOM_WORKERS="2").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API node with no workers (as in the scaled deployment when no worker runs): tasks stay
    pending, so canceling one is deterministic. Small upload limit for the refusal checks."""
    s = Server(
        tmp_path_factory.mktemp("web-idle"),
        DARKROOM_RUN_WORKERS="false",
        DARKROOM_MAX_FILE_MB="0.2",
        DARKROOM_MAX_FILES="3",
    ).start()
    yield s
    s.stop()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_up(page: Page, base: str) -> str:
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.locator("main a[href='/signup']").click()
    email = unique_email("web")
    page.fill("#email", email)
    page.fill("#password", "browser-pass-1")
    page.locator("main button[type=submit]").click()
    expect(page).to_have_url(base + "/")
    return email


def drop_file(page: Page, name: str, data: bytes, mime: str) -> None:
    """What a user's drag and drop does: a DragEvent carrying the file in a DataTransfer."""
    page.evaluate(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            const zone = document.getElementById("dropzone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { bubbles: true, cancelable: true, dataTransfer: dt };
                zone.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )


def choose_type(page: Page, task_type: str) -> None:
    page.locator(f"input[name=taskType][value={task_type}]").check()


def newest_card(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#task-list .task").first


def run_to_completion(page: Page, source: Path, data: bytes, task_type: str):  # type: ignore[no-untyped-def]
    """Upload ``data`` as ``source`` by the file input, start ``task_type``, wait until its card
    shows it completed; the card."""
    source.write_bytes(data)
    page.set_input_files("#file-input", str(source))
    choose_type(page, task_type)
    page.locator("#submit").click()
    card = newest_card(page)
    expect(card).to_have_attribute("data-status", "completed", timeout=LONG)
    return card


def test_sign_up_upload_progress_download_fail_retry(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(
        locale="en-US", accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(server.url + "/")
        shot(page, "01-login-en")
        sign_up(page, server.url)
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator("#empty")).to_contain_text("No tasks yet")
        expect(page.locator("#balance")).to_contain_text("20")
        expect(page.locator("input[name=taskType][value=background_removal]")).to_be_visible()
        shot(page, "02-studio-empty-en")

        # 1. By the file input: colour enhancement, to done, result visible, download.
        source = tmp_path / "beach.jpg"
        source.write_bytes(photo(640, 480))
        page.set_input_files("#file-input", str(source))
        expect(page.locator("#file-list li")).to_have_count(1)
        choose_type(page, "color_enhancement")
        expect(page.locator("#price")).to_have_text("Price: 1 credit")
        page.locator("#submit").click()
        card = newest_card(page)
        expect(card).to_be_visible()
        expect(page.locator("#empty")).to_be_hidden()
        expect(card).to_have_attribute("data-status", "completed", timeout=LONG)
        result = card.locator(".gallery img").first
        expect(result).to_be_visible()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=result.element_handle())
        assert "/thumbs/320/" in (result.get_attribute("src") or "")
        expect(page.locator("#live-state")).to_have_text("Live updates")
        shot(page, "03-studio-completed-en")
        with page.expect_download() as info:
            card.locator("a[download]").first.click()
        saved = tmp_path / "download.jpg"
        info.value.save_as(saved)
        with Image.open(saved) as img:
            assert img.size == (640, 480)

        # 2. By a drop: style transfer with a style chosen on its preview tile.
        drop_file(page, "dropped.png", photo(320, 240, "PNG"), "image/png")
        expect(page.locator("#file-list li")).to_have_count(1)
        expect(page.locator("#file-list")).to_contain_text("dropped.png")
        choose_type(page, "style_transfer")
        tile = page.locator(".tile:has(input[value=stained_glass])")
        expect(tile.locator("img")).to_be_visible()
        tile.click()
        expect(page.locator("input[name=style][value=stained_glass]")).to_be_checked()
        shot(page, "04-studio-style-tiles-en")
        page.locator("#submit").click()
        expect(page.locator("#task-list .task")).to_have_count(2)
        card = newest_card(page)
        expect(card).to_have_attribute("data-status", "completed", timeout=LONG)
        expect(card.locator(".task-title")).to_have_text("Style transfer")

        # The task page: before/after slider and details.
        card.locator("a.task-no").click()
        expect(page.locator("#compare")).to_be_visible()
        page.wait_for_load_state()  # the slider's script runs once the page has loaded
        page.locator("#compare-range").fill("20")
        page.wait_for_function("document.getElementById('after-wrap').style.clipPath.includes('20%')")
        expect(page.locator(".details")).to_contain_text("Style: Stained glass")
        shot(page, "05-task-compare-en")
        page.go_back()

        # 3. A task that fails in the model (too small for style transfer), shown with its error; retry.
        drop_file(page, "tiny.jpg", photo(40, 30), "image/jpeg")
        choose_type(page, "style_transfer")
        page.locator("#submit").click()
        expect(page.locator("#task-list .task")).to_have_count(3)
        card = newest_card(page)
        expect(card).to_have_attribute("data-status", "failed", timeout=LONG)
        expect(card.locator(".task-error")).to_contain_text("at least 32px")
        shot(page, "06-studio-failed-en")
        task_id = card.get_attribute("data-id")
        seq = int(card.get_attribute("data-seq") or 0)
        card.locator("button[data-action=retry]").click()
        # The retried attempt runs and fails again the same way (a later change than the first failure).
        page.wait_for_function(
            """([id, seq]) => {
                const el = document.getElementById("task-" + id);
                return el && el.dataset.status === "failed" && Number(el.dataset.seq) > seq
                    && el.querySelector("button[data-action=retry]:not([disabled])");
            }""",
            arg=[task_id, seq],
            timeout=LONG,
        )
        page.goto(f"{server.url}/tasks/{task_id}")
        expect(page.locator(".attempts li")).to_have_count(2)
        expect(page.locator(".attempts")).to_contain_text("invalid_input")

        # Credits: the ledger shows the reservations, captures and the refunds of the failures.
        page.goto(server.url + "/credits")
        expect(page.locator(".ledger tbody tr").first).to_be_visible()
        expect(page.locator("#credits-balance")).to_have_text("17")  # 20 - 1 - 2, failures refunded
        shot(page, "07-credits-en")

        # Phone width.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(server.url + "/")
        shot(page, "08-studio-phone-en")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        context.close()
    assert not errors, errors


def test_chinese_cancel_and_refusals(browser: Browser, idle_server: Server, tmp_path: Path) -> None:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(idle_server.url + "/login")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator("h1")).to_have_text("登录")
        sign_up(page, idle_server.url)
        expect(page.locator("#empty")).to_contain_text("暂无任务")
        expect(page.locator("#upload-title")).to_have_text("上传图片")
        shot(page, "11-studio-empty-zh")

        # Refused on the page: wrong type, too large (limit 0.2 MB here), too many files.
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        noise = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
        big = tmp_path / "big.png"
        noise.save(big)
        assert big.stat().st_size > 0.2 * 1024 * 1024
        page.set_input_files("#file-input", [str(bad), str(big)])
        errors_box = page.locator("#file-errors")
        expect(errors_box).to_be_visible()
        expect(errors_box).to_contain_text("notes.txt")
        expect(errors_box).to_contain_text("不支持的文件类型")
        expect(errors_box).to_contain_text("big.png")
        expect(errors_box).to_contain_text("0.2MB")
        expect(page.locator("#file-list li")).to_have_count(0)
        shot(page, "12-refused-zh")

        # Remove a file before submitting.
        one, two = tmp_path / "one.jpg", tmp_path / "two.jpg"
        one.write_bytes(photo(200, 150))
        two.write_bytes(photo(210, 150))
        page.set_input_files("#file-input", [str(one), str(two)])
        expect(page.locator("#file-list li")).to_have_count(2)
        # Parameter values are named in Chinese (the API keeps the identifiers).
        choose_type(page, "style_transfer")
        expect(page.locator(".tile:has(input[value=stained_glass])")).to_contain_text("彩绘玻璃")
        choose_type(page, "color_enhancement")
        expect(page.locator("#param-enhancement option[value=vintage]")).to_have_text("复古")
        page.locator("input[name=taskType]").first.check()  # back to the default type
        page.locator("#file-list button.remove").first.click()
        expect(page.locator("#file-list li")).to_have_count(1)
        expect(page.locator("#file-list")).to_contain_text("two.jpg")

        # A server refusal is shown too: bytes that claim to be a JPEG but are not an image.
        page.locator("#file-list button.remove").first.click()
        drop_file(page, "fake.jpg", b"this is not really a jpeg" * 10, "image/jpeg")
        choose_type(page, "color_enhancement")
        page.locator("#submit").click()
        expect(page.locator("#submit-error")).to_be_visible()
        expect(page.locator("#submit-error")).to_contain_text("unsupported_image_type")

        # No worker runs here, so a task stays pending: cancel it.
        page.locator("#file-list button.remove").first.click()
        page.set_input_files("#file-input", str(one))
        page.locator("#submit").click()
        card = newest_card(page)
        expect(card).to_have_attribute("data-status", "pending")
        expect(card.locator(".status-text")).to_have_text("等待处理")
        shot(page, "13-pending-zh")
        card.locator("button[data-action=cancel]").click()
        expect(card.locator(".status-text")).to_have_text("已取消")
        canceled = page.locator(f"#task-{card.get_attribute('data-id')}")
        expect(canceled).to_have_attribute("data-status", "canceled")
        expect(page.locator("#balance")).to_contain_text("20")  # released
        shot(page, "14-canceled-zh")

        # Switch to English: remembered across pages.
        page.locator("#lang-switch").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#upload-title")).to_have_text("Upload photos")
        page.goto(idle_server.url + "/credits")
        expect(page.locator("h1")).to_have_text("Credits")
        expect(page.locator(".ledger")).to_contain_text("Refunded")
        page.locator("#lang-switch").click()
        expect(page.locator("h1")).to_have_text("积分")
        expect(page.locator(".ledger")).to_contain_text("退还（第 1 次尝试）：已取消")
        shot(page, "15-credits-zh")

        # Log out: the studio asks for a login again.
        page.locator("#logout").click()
        expect(page).to_have_url(re.compile(r"/login$"))
    finally:
        context.close()
    assert not errors, errors


def test_without_event_streams_the_page_polls(browser: Browser, server: Server, tmp_path: Path) -> None:
    context = browser.new_context(locale="en-US")
    context.add_init_script("delete window.EventSource;")
    page = context.new_page()
    try:
        sign_up(page, server.url)
        expect(page.locator("#live-state")).to_have_text("Updating every 2 s")
        card = run_to_completion(page, tmp_path / "poll.jpg", photo(300, 200), "background_removal")
        expect(card.locator(".gallery img")).to_have_count(1)
    finally:
        context.close()


def test_the_compare_slider_shows_a_cut_out_on_the_checkerboard(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    """Where the result is transparent, the "after" side shows the checkerboard, not the photo
    beneath it (it once showed the photo: a background removal looked like it had done nothing)."""
    context = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 900})
    page = context.new_page()
    try:
        sign_up(page, server.url)
        card = run_to_completion(page, tmp_path / "cut.jpg", photo(640, 480), "background_removal")
        card.locator("a.task-no").click()
        expect(page.locator("#compare")).to_be_visible()
        page.wait_for_load_state()
        page.locator("#compare-range").fill("0")  # the result across the whole width
        clip = "document.getElementById('after-wrap').style.clipPath"
        page.wait_for_function(f"{clip} === 'inset(0px 0px 0px 0%)'")
        after = page.locator("#compare img.after")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=after.element_handle())
        shown = page.request.get(after.evaluate("(img) => img.currentSrc"))
        with Image.open(io.BytesIO(shown.body())) as img:
            result = img.convert("RGBA")
        with Image.open(io.BytesIO(page.locator("#compare").screenshot())) as img:
            screen = img.convert("RGB")
        scale = screen.width / result.width
        alpha = result.getchannel("A")
        frame = page.locator("#compare").bounding_box()
        tags = [page.locator(sel).bounding_box() for sel in (".tag-before", ".tag-after")]
        assert frame is not None and all(tags)

        def under_a_tag(px: float, py: float) -> bool:
            return any(
                t["x"] - 2 <= frame["x"] + px <= t["x"] + t["width"] + 2
                and t["y"] - 2 <= frame["y"] + py <= t["y"] + t["height"] + 2
                for t in tags
                if t is not None
            )

        checked = 0
        for y in range(4, result.height - 4, 8):
            for x in range(4, result.width - 4, 8):
                if alpha.crop((x - 4, y - 4, x + 5, y + 5)).getextrema()[1] != 0:
                    continue  # not well inside a transparent area
                if under_a_tag(x * scale, y * scale):
                    continue
                r, g, b = screen.getpixel((int(x * scale), int(y * scale)))
                assert min(r, g, b) >= 200 and max(r, g, b) - min(r, g, b) <= 16, (x, y, (r, g, b))
                checked += 1
        assert checked >= 20, "the model removed too little of the photo to check"
    finally:
        context.close()


def test_the_api_docs_render_without_a_network(browser: Browser, server: Server) -> None:
    """Swagger UI on /docs with every request to another host refused (a laptop offline)."""
    context = browser.new_context(locale="en-US")
    elsewhere: list[str] = []

    def only_here(route, request) -> None:  # type: ignore[no-untyped-def]
        if request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    context.route("**/*", only_here)
    page = context.new_page()
    try:
        page.goto(server.url + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Darkroom", timeout=LONG)
        expect(page.locator(".opblock-summary-path", has_text="/api/tasks/{task_id}/status")).to_be_visible()
        assert not elsewhere, elsewhere
    finally:
        context.close()


def test_keyboard_reaches_the_upload(browser: Browser, server: Server) -> None:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        sign_up(page, server.url)
        page.wait_for_load_state()
        expect(page.locator("input[name=taskType]").first).to_be_visible()  # the studio's script ran
        for _ in range(12):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "file-input":
                break
        assert page.evaluate("document.activeElement.id") == "file-input"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        chooser.value.set_files(files=[{"name": "k.jpg", "mimeType": "image/jpeg", "buffer": photo(100, 80)}])
        expect(page.locator("#file-list li")).to_have_count(1)
        outline = page.evaluate("getComputedStyle(document.querySelector('#dropzone .button')).outlineStyle")
        assert outline != "none"
    finally:
        context.close()
