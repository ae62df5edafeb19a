"""The provider contract every AI backend implements.

Error tree (mapped to stable task error codes)::

    ProviderError                 provider_error
    ├── InvalidInput              invalid_input        (terminal, not retried)
    ├── ContentFiltered           content_filtered     (terminal, not retried, not charged)
    ├── RateLimited               rate_limited         (carries retry_after seconds)
    ├── ProviderUnavailable       provider_unavailable
    └── ProviderTimeout           timeout
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ProviderError(Exception):
    code = "provider_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(ProviderError):
    code = "invalid_input"


class ContentFiltered(ProviderError):
    code = "content_filtered"


class RateLimited(ProviderError):
    code = "rate_limited"


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"


class ProviderTimeout(ProviderError):
    code = "timeout"


@dataclass(frozen=True)
class ParameterSpec:
    """One task parameter as ``/api/task-types`` shows it: ``{type, allowed, default}``."""

    type: str  # "string" | "number" | "integer" | "boolean"
    default: Any = None
    allowed: Sequence[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    required: bool = False
    max_length: int | None = None  # strings


@dataclass(frozen=True)
class TaskTypeSpec:
    """What a provider can do for one task type."""

    task_type: str
    parameters: Mapping[str, ParameterSpec]
    min_inputs: int = 1
    max_inputs: int = 5
    description: str = ""
    # What the provider accepts as inputs (uploads are sniffed, so these are real types).
    input_formats: Sequence[str] = ("image/jpeg", "image/png", "image/webp")
    max_input_bytes: int | None = None
    # True when the task takes a mask (with ``mask: true`` the last uploaded file is the mask).
    supports_mask: bool = False
    # The provider's documented limits per input image (None: no limit of its own). Checked at
    # submit against every provider of the routed chain (``providers.limits``).
    max_pixels: int | None = None
    min_side: int | None = None
    max_aspect: float | None = None  # longer side / shorter side


@dataclass(frozen=True)
class InputImage:
    data: bytes
    content_type: str  # sniffed from the bytes: image/jpeg | image/png | image/webp
    name: str = ""
    # The same bytes as a file on this machine (local-disk storage), or None. A provider that hands
    # the input to another process on this machine may send the path instead of the bytes: the
    # local provider's model processes read the file (the 2.3 MB photo of bench figure 7 took
    # ~6 ms through the process pool's pipe; bench/FINDINGS.md, eleventh pass).
    path: Path | None = None


@dataclass(frozen=True)
class ProviderRequest:
    task_id: str
    task_type: str
    inputs: Sequence[InputImage]
    parameters: Mapping[str, Any]  # already validated and defaulted against the TaskTypeSpec
    prompt: str | None = None
    # A request id this provider stored earlier for this attempt (the worker crashed while it
    # waited): resume polling it instead of creating (and paying for) a new one.
    resume_id: str | None = None
    # Persist the provider's request id before waiting for it (the runner writes it on the task
    # row under the lease-holder condition). Raises when the lease is lost.
    remember: Callable[[str], Awaitable[None]] | None = None
    mask: InputImage | None = None
    # Where a provider that makes its outputs on this machine may write them as files
    # (:class:`StagedOutput`) instead of returning their bytes: the storage's staging folder, so
    # storing an output is a move. None: return bytes. Remote providers ignore it.
    output_dir: Path | None = None

    async def checkpoint(self, request_id: str) -> None:
        if self.remember is not None:
            await self.remember(request_id)


@dataclass(frozen=True)
class OutputImage:
    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class StagedOutput:
    """An output a provider wrote itself: a complete, fsync'd file in the request's
    ``output_dir``, which the runner stores by moving it (``Storage.put_file``) or removes. Its
    bytes never pass through the runner's memory (the local provider's model processes write
    their results this way: a 12 MP cut-out no longer crosses the process pool's pipe; bench
    figure 7)."""

    path: Path
    content_type: str
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class ProviderResult:
    outputs: Sequence[OutputImage | StagedOutput]
    request_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None  # the provider's model that produced the outputs (task.ai_model)


# Progress callback: a number 0..100 for this run. Awaiting it persists the progress.
ProgressCallback = Callable[[float], Awaitable[None]]


class Provider(Protocol):
    name: str

    def capabilities(self) -> Mapping[str, TaskTypeSpec]:
        """Task types this provider serves, with their parameters."""
        ...

    async def run(self, request: ProviderRequest, progress: ProgressCallback) -> ProviderResult:
        """Do the work. Raise a ProviderError subclass on failure. Must not block the event loop."""
        ...

    async def aclose(self) -> None:
        """Release resources (process pools, HTTP clients)."""
        ...


class CancelableProvider(Provider, Protocol):
    """A provider that can stop work it started (Replicate cancel, ComfyUI /interrupt)."""

    async def cancel(self, request_id: str) -> None:
        """Best effort: ask the provider to stop ``request_id``. Never raises."""
        ...


# Failures after which the next provider of the fallback chain may serve the task.
FAILOVER_CODES = frozenset({"rate_limited", "provider_unavailable", "timeout"})
