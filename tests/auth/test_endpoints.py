from __future__ import annotations

import time

import httpx
import jwt

from tests.support import register, unique_email


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    email = unique_email()
    r = await client.post(
        "/api/auth/register", json={"email": email, "password": "s3cret-pass", "username": "ann"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert data["tokenType"] == "Bearer" and data["expiresIn"] == 7 * 86400
    assert data["user"]["email"] == email and data["user"]["username"] == "ann"
    assert "passwordHash" not in data["user"]

    r = await client.post("/api/auth/login", json={"email": email.upper(), "password": "s3cret-pass"})
    assert r.status_code == 200
    token = r.json()["data"]["accessToken"]
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["data"]["credits"] == 20  # the sign-up grant

    r = await client.get("/api/credits", headers={"Authorization": f"Bearer {token}"})
    tx = r.json()["data"]["transactions"]
    assert [(t["type"], t["amount"], t["balanceBefore"], t["balanceAfter"]) for t in tx] == [
        ("grant", 20, 0, 20)
    ]


async def test_email_unique_case_insensitively(client: httpx.AsyncClient) -> None:
    email = unique_email("Case")
    await register(client, email)
    r = await client.post("/api/auth/register", json={"email": email.upper(), "password": "another-pass"})
    assert r.status_code == 409
    assert r.json() == {"success": False, "code": "email_taken", "message": r.json()["message"]}


async def test_wrong_password_and_unknown_email_look_the_same(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await register(client, email)
    wrong = await client.post("/api/auth/login", json={"email": email, "password": "not-the-password"})
    unknown = await client.post(
        "/api/auth/login", json={"email": unique_email(), "password": "not-the-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"


async def test_register_validation(client: httpx.AsyncClient) -> None:
    for body in (
        {"email": "not-an-email", "password": "long-enough"},
        {"email": unique_email(), "password": "short"},
        {},
    ):
        r = await client.post("/api/auth/register", json=body)
        assert r.status_code == 422, body
        assert r.json()["success"] is False and r.json()["code"] == "validation_error"
    r = await client.post(
        "/api/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_tokens_missing_expired_forged(client: httpx.AsyncClient) -> None:
    headers = await register(client)
    token = headers["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] and claims["exp"] > time.time()

    assert (await client.get("/api/me")).json()["code"] == "unauthorized"
    forged = jwt.encode(
        {**claims, "sub": claims["sub"]}, "a-different-secret-of-enough-length", algorithm="HS256"
    )
    expired = jwt.encode(
        {**claims, "exp": int(time.time()) - 10}, "test-secret-" + "x" * 40, algorithm="HS256"
    )
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    for bad, code in (
        (forged, "invalid_token"),
        (expired, "token_expired"),
        (unsigned, "invalid_token"),
        ("garbage", "invalid_token"),
    ):
        r = await client.get("/api/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["code"] == code, (bad, r.text)


async def test_logout_revokes_every_token_of_the_account(client: httpx.AsyncClient) -> None:
    email = unique_email("logout")
    first = (await register(client, email, "s3cret-pass"))["Authorization"].removeprefix("Bearer ")
    r = await client.post("/api/auth/login", json={"email": email, "password": "s3cret-pass"})
    second = r.json()["data"]["accessToken"]
    for token in (first, second):
        assert (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    r = await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {first}"})
    assert r.status_code == 200 and r.json()["success"] is True

    for token in (first, second):  # both stop working, on reads and on writes
        for method, path in (("GET", "/api/me"), ("GET", "/api/tasks"), ("POST", "/api/auth/logout")):
            r = await client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (method, path)
            assert r.json()["code"] == "token_revoked"
    r = await client.post("/api/auth/login", json={"email": email, "password": "s3cret-pass"})
    fresh = r.json()["data"]["accessToken"]
    assert (await client.get("/api/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200


async def test_a_token_from_before_versions_counts_as_version_zero(client: httpx.AsyncClient) -> None:
    from darkroom.auth.security import ALGORITHM

    token = (await register(client, unique_email("oldtoken")))["Authorization"].removeprefix("Bearer ")
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["ver"]
    old = jwt.encode(claims, ctx.settings.secret_key, algorithm=ALGORITHM)
    assert (await client.get("/api/me", headers={"Authorization": f"Bearer {old}"})).status_code == 200
    await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {old}"})
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"
