from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, EmailStr, Field

from darkroom.schemas import CamelModel


class RegisterRequest(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=256)
    username: str | None = Field(default=None, min_length=2, max_length=64, pattern=r"^[\w.\-]+$")


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=256)


class UserRead(CamelModel):
    id: str
    email: str
    username: str | None
    is_admin: bool
    created_at: datetime


class TokenRead(CamelModel):
    user: UserRead
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class MeRead(CamelModel):
    user: UserRead
    credits: int
