"""Routes each task type to the provider that serves it.

Built-in and external providers register the same way; tests register their own doubles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from darkroom.providers.base import Provider, TaskTypeSpec

# Task types Darkroom knows about, whether or not a configured provider can serve them now.
KNOWN_TASK_TYPES: Mapping[str, str] = {
    "background_removal": "Remove the background; PNG with transparency.",
    "style_transfer": "Repaint a photo in an artistic style (or in the style of a second image).",
    "color_enhancement": "Improve or restyle colours: auto, vivid, warm, cool, black and white…",
    "text_to_image": "Generate images from a text prompt (needs an external provider).",
    "custom": "Edit the uploaded images as a prompt describes (needs an external provider).",
}


@dataclass(frozen=True)
class Route:
    provider: Provider
    spec: TaskTypeSpec


class ProviderRegistry:
    def __init__(self, providers: Iterable[Provider], default: str) -> None:
        self._providers = {p.name: p for p in providers}
        self.default = default

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def route(self, task_type: str) -> Route | None:
        """The default provider when it serves the type, otherwise the first one that does."""
        ordered = sorted(self._providers.values(), key=lambda p: p.name != self.default)
        for provider in ordered:
            spec = provider.capabilities().get(task_type)
            if spec is not None:
                return Route(provider, spec)
        return None

    def serving(self, task_type: str) -> list[str]:
        return [p.name for p in self._providers.values() if task_type in p.capabilities()]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
