"""Pages, cookie sessions, CSRF, languages and security headers, in-process (real SQLite)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from darkroom.web import i18n
from tests.support import open_image, photo, unique_email, wait_for


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def sign_up(client: httpx.AsyncClient, email: str | None = None) -> str:
    page = await client.get("/signup")
    assert page.status_code == 200
    token = csrf_of(page.text)
    r = await client.post(
        "/signup",
        data={"email": email or unique_email("page"), "password": "page-pass-1", "csrf_token": token},
    )
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    cookie = r.headers["set-cookie"]
    assert "darkroom_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    return token


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR,zh;q=0.5", "zh-CN"),
        ("de", None),
        ("en;q=0, zh;q=0.1", "zh-CN"),
        ("", None),
    ],
)
def test_accept_language(header: str, expected: str | None) -> None:
    assert i18n.from_accept_language(header) == expected


def test_every_ui_string_exists_in_both_languages() -> None:
    def base_keys(table: dict[str, str]) -> set[str]:  # ".one" variants: per language (Chinese has none)
        return {k for k in table if not k.endswith(".one")}

    assert base_keys(i18n.UI["en"]) == base_keys(i18n.UI["zh-CN"])
    for locale, table in i18n.UI.items():
        assert all(k.removesuffix(".one") in table for k in table), locale


def test_a_count_of_one_takes_the_singular_where_the_language_has_one() -> None:
    assert i18n.translate("en", "studio.price", price=1, count=1) == "Price: 1 credit"
    assert i18n.translate("en", "studio.price", price=2, count=2) == "Price: 2 credits"
    assert i18n.translate("en", "studio.price", price=0, count=0) == "Price: 0 credits"
    zh = i18n.UI["zh-CN"]["studio.price"].format(price=1)
    assert i18n.translate("zh-CN", "studio.price", price=1, count=1) == zh


async def test_login_needs_the_csrf_token_and_the_cookie_session_works(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    email = unique_email("page")
    token = await sign_up(client, email)
    studio = await client.get("/")
    assert studio.status_code == 200 and "task-form" in studio.text
    # Security headers on pages.
    csp = studio.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert studio.headers["x-frame-options"] == "DENY"
    assert studio.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in studio.text and " style=" not in studio.text and "onclick" not in studio.text

    # The API accepts the cookie: reads freely, writes only with the CSRF header.
    me = await client.get("/api/me")
    assert me.status_code == 200 and me.json()["data"]["user"]["email"] == email
    files = [("files", ("p.jpg", photo(), "image/jpeg"))]
    refused = await client.post("/api/tasks", data={"taskType": "color_enhancement"}, files=files)
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    forged = await client.post(
        "/api/tasks", data={"taskType": "color_enhancement"}, files=files, headers={"X-CSRF-Token": "x" * 43}
    )
    assert forged.status_code == 403 and forged.json()["code"] == "csrf_failed"
    created = await client.post(
        "/api/tasks", data={"taskType": "color_enhancement"}, files=files, headers={"X-CSRF-Token": token}
    )
    assert created.status_code == 201, created.text
    task = created.json()["data"]
    await wait_for(client, {}, task["id"])  # let the worker finish before the app shuts down
    assert task["inputs"][0]["thumbnailUrl"].startswith("http://testserver/thumbs/320/")

    # The task card and the task page render for the owner.
    card = await client.get(f"/ui/tasks/{task['id']}/card")
    assert card.status_code == 200 and task["taskNo"] in card.text
    page = await client.get(f"/tasks/{task['id']}")
    assert page.status_code == 200 and task["taskNo"] in page.text

    # Log out needs the token too; afterwards the studio asks for a login again.
    assert (await client.post("/logout", data={})).status_code == 403
    session_token = client.cookies["darkroom_session"]
    out = await client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await client.get("/")).status_code == 303
    # The session's token is revoked, not only forgotten: replayed, it is refused.
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {session_token}"})
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"


async def test_login_form_errors_and_csrf(client: httpx.AsyncClient) -> None:
    email = unique_email("page")
    await sign_up(client, email)
    client.cookies.delete("darkroom_session")
    page = await client.get("/login")
    token = csrf_of(page.text)
    r = await client.post("/login", data={"email": email, "password": "page-pass-1"})
    assert r.status_code == 403 and "csrf_failed" in r.text
    r = await client.post("/login", data={"email": email, "password": "wrong-pass", "csrf_token": token})
    assert r.status_code == 401 and "invalid_credentials" in r.text and "E-mail or password" in r.text
    r = await client.post(
        "/login",
        data={"email": email, "password": "wrong-pass", "csrf_token": token},
        headers={"Accept-Language": "zh-CN"},
    )
    assert "邮箱或密码不正确" in r.text
    r = await client.post("/login", data={"email": email, "password": "page-pass-1", "csrf_token": token})
    assert r.status_code == 303
    r = await client.post("/signup", data={"email": email, "password": "page-pass-1", "csrf_token": token})
    assert r.status_code == 409 and "email_taken" in r.text
    r = await client.post(
        "/signup", data={"email": "x@example.com", "password": "short", "csrf_token": token}
    )
    assert r.status_code == 422 and "8" in r.text


async def test_language_choice_is_remembered_and_api_errors_follow_it(client: httpx.AsyncClient) -> None:
    zh = {"Accept-Language": "zh-CN,zh;q=0.9"}
    page = await client.get("/login", headers=zh)
    assert '<html lang="zh-CN">' in page.text and "登录" in page.text
    token = await sign_up(client)
    # The API's messages follow Accept-Language; the codes never change.
    r = await client.get("/api/tasks/missing", headers=zh)
    assert r.json() == {"success": False, "code": "task_not_found", "message": "任务不存在或无权访问。"}
    r = await client.get("/api/tasks/missing", headers={"Accept-Language": "en"})
    assert r.json()["code"] == "task_not_found" and "任务" not in r.json()["message"]

    # Switch to Chinese: cookie + stored on the account; an open redirect is refused.
    r = await client.post(
        "/locale", data={"locale": "zh-CN", "next": "https://evil.example/", "csrf_token": token}
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "darkroom_lang=zh-CN" in r.headers["set-cookie"]
    studio = await client.get("/", headers={"Accept-Language": "en"})
    assert '<html lang="zh-CN">' in studio.text and "上传图片" in studio.text
    # Stored on the user: a fresh browser (no language cookie) gets Chinese after logging in.
    client.cookies.delete("darkroom_lang")
    studio = await client.get("/", headers={"Accept-Language": "en"})
    assert '<html lang="zh-CN">' in studio.text
    r = await client.post("/locale", data={"locale": "en", "next": "/credits?page=1", "csrf_token": token})
    assert r.headers["location"] == "/credits?page=1"
    credits = await client.get("/credits?page=1")
    assert '<html lang="en">' in credits.text and "Grant" in credits.text


async def test_thumbnails_are_signed_small_and_cached(client: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await sign_up(client)
    files = [("files", ("big.jpg", photo(1600, 1200), "image/jpeg"))]
    created = await client.post(
        "/api/tasks", data={"taskType": "color_enhancement"}, files=files, headers={"X-CSRF-Token": token}
    )
    await wait_for(client, {}, created.json()["data"]["id"])
    url = created.json()["data"]["inputs"][0]["thumbnailUrl"]
    r = await client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(open_image(r.content).size) == 320
    assert list((tmp_path / "cache" / "thumbs").rglob("*.jpg"))
    assert (await client.get(url.replace("sig=", "sig=0"))).status_code == 404
    assert (await client.get(url.replace("/thumbs/320/", "/thumbs/640/"))).status_code == 404


async def test_credits_page_paginates_the_ledger(client: httpx.AsyncClient) -> None:
    from darkroom.credits import service as credits_service

    email = unique_email("ledger")
    await sign_up(client, email)
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    me = (await client.get("/api/me")).json()["data"]
    async with ctx.db.transaction() as session:
        for n in range(25):
            await credits_service.grant(session, me["user"]["id"], 1, f"bonus {n}")
    first = await client.get("/credits")
    assert "Page 1 of 2" in first.text and 'rel="next"' in first.text and ">45<" in first.text
    assert "bonus 24" in first.text and "bonus 0<" not in first.text
    second = await client.get("/credits?page=2")
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text and "bonus 0" in second.text


async def test_chinese_error_messages_keep_their_details(app_client) -> None:  # type: ignore[no-untyped-def]
    async with app_client(signup_credits=1) as client:
        token = await sign_up(client)
        files = [("files", ("p.jpg", photo(), "image/jpeg"))]
        r = await client.post(
            "/api/tasks",
            data={"taskType": "style_transfer"},
            files=files,
            headers={"X-CSRF-Token": token, "Accept-Language": "zh-CN"},
        )
    assert r.status_code == 402
    assert r.json()["code"] == "insufficient_credits"
    assert r.json()["message"] == "积分不足，需要 2 积分，当前只有 1 积分。"


async def test_credits_page_shows_the_services_ledger_texts_in_chinese(client: httpx.AsyncClient) -> None:
    from darkroom.credits import service as credits_service

    token = await sign_up(client)
    created = await client.post(
        "/api/tasks",
        data={"taskType": "color_enhancement"},
        files=[("files", ("p.jpg", photo(), "image/jpeg"))],
        headers={"X-CSRF-Token": token},
    )
    assert created.status_code == 201, created.text
    task = created.json()["data"]
    await wait_for(client, {}, task["id"])
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    me = (await client.get("/api/me")).json()["data"]["user"]
    async with ctx.db.transaction() as session:  # a second attempt that failed, as the runner writes it
        await credits_service.reserve(session, me["id"], task["id"], 2, 1, task["taskNo"])
        await credits_service.release(session, me["id"], task["id"], 2, 1, task["taskNo"], "provider_error")
        await credits_service.grant(session, me["id"], 3, "Welcome bonus from the operator")
    r = await client.post("/locale", data={"locale": "zh-CN", "next": "/credits", "csrf_token": token})
    assert r.status_code == 303
    zh = (await client.get("/credits")).text
    no = task["taskNo"]
    assert f"为任务 {no} 预扣（第 1 次尝试）" in zh
    assert f"任务 {no} 扣除 1 积分（第 1 次尝试）" in zh
    assert f"任务 {no} 退还（第 2 次尝试）：AI 处理失败。" in zh
    assert "注册赠送" in zh
    assert "Welcome bonus from the operator" in zh  # an operator's own text is shown as written
    assert "Reserved for task" not in zh and "Refunded for task" not in zh
    # the capture moves nothing (the reservation did): no bare "0" beside "扣除 1 积分"
    capture_row = next(row for row in zh.split("<tr") if f"任务 {no} 扣除 1 积分" in row)
    assert 'title="余额未变：这些积分在创建任务时已预扣" aria-hidden="true">—<' in capture_row
    # what a screen reader says instead of the dash
    assert '<span class="visually-hidden">余额未变：这些积分在创建任务时已预扣</span>' in capture_row
    assert '<td class="num">0</td>' not in zh
    await client.post("/locale", data={"locale": "en", "next": "/credits", "csrf_token": token})
    en = (await client.get("/credits")).text
    assert f"Refunded for task {no} (attempt 2): provider_error" in en
    assert (
        'title="Balance unchanged: the credits were set aside when the task was submitted" aria-hidden' in en
    )


def test_every_built_in_parameter_value_has_a_name_in_both_languages() -> None:
    from darkroom.providers.local.specs import CAPABILITIES

    for spec in CAPABILITIES.values():
        for name, param in spec.parameters.items():
            for value in param.allowed or ():
                for locale in i18n.LOCALES:
                    assert f"value.{name}.{value}" in i18n.UI[locale], (locale, name, value)
    assert i18n.value_name("zh-CN", "style", "blue_impasto") == "蓝色厚涂"
    assert i18n.value_name("en", "enhancement", "black_and_white") == "Black and white"
    assert i18n.parameter_text("zh-CN", "preserve_color", True) == "保留原图颜色: 是"
    assert i18n.parameter_text("en", "unknown_thing", "a_b") == "unknown thing: a b"
