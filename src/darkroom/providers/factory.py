"""Build the configured providers from Settings: the built-in one always, each external one
when its key (or URL) is set."""

from __future__ import annotations

from darkroom.config import Settings
from darkroom.providers.base import Provider
from darkroom.providers.comfyui import ComfyUIProvider
from darkroom.providers.openai import OpenAIProvider
from darkroom.providers.replicate import ReplicateProvider
from darkroom.providers.stability import StabilityProvider


def external_providers(settings: Settings) -> list[Provider]:
    providers: list[Provider] = []
    if settings.openai_api_key:
        providers.append(OpenAIProvider(settings))
    if settings.stability_api_key:
        providers.append(StabilityProvider(settings))
    if settings.replicate_api_token:
        providers.append(ReplicateProvider(settings))
    if settings.comfyui_url:
        providers.append(ComfyUIProvider(settings))
    return providers
