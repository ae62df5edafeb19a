"""Routes each task type to the providers that serve it, in fallback order.

Built-in and external providers register the same way; tests register their own doubles.
The chain of a task type is its configured route (``DARKROOM_ROUTES``) when there is one, else
the default provider followed by every other provider that serves the type, in registration order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from darkroom.providers.base import Provider, TaskTypeSpec

log = logging.getLogger(__name__)

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
    def __init__(
        self,
        providers: Iterable[Provider],
        default: str,
        routes: Mapping[str, Sequence[str]] | None = None,
        fallback: bool = True,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self.default = default
        self.routes = {k: list(v) for k, v in (routes or {}).items()}
        self.fallback = fallback
        for task_type, names in self.routes.items():
            missing = [n for n in names if n not in self._providers]
            if missing:
                log.warning(
                    "DARKROOM_ROUTES[%s] names providers that are not configured: %s", task_type, missing
                )

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def chain(self, task_type: str) -> list[Route]:
        """Every provider that may serve the type, first choice first (one if fallback is off)."""
        if task_type in self.routes:
            ordered = [self._providers[n] for n in self.routes[task_type] if n in self._providers]
        else:
            ordered = sorted(self._providers.values(), key=lambda p: p.name != self.default)
        out = []
        for provider in ordered:
            spec = provider.capabilities().get(task_type)
            if spec is not None:
                out.append(Route(provider, spec))
        return out if self.fallback else out[:1]

    def route(self, task_type: str) -> Route | None:
        """The first choice for the type: see :meth:`chain`."""
        chain = self.chain(task_type)
        return chain[0] if chain else None

    def serving(self, task_type: str) -> list[str]:
        """The providers that would serve the type here, in fallback order."""
        return [r.provider.name for r in self.chain(task_type)]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
