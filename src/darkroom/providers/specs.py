"""Task types served by the external providers, with one parameter set per type.

Every external provider serving a type uses the same *parameters*, so a task validated for the
first provider of its fallback chain is valid for the next one too. Each provider narrows the
input limits to its own documented ones (``dataclasses.replace``: count, bytes, pixels …), which
``providers.limits`` checks at submit and before a provider runs.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from darkroom.providers.base import ParameterSpec, TaskTypeSpec

TEXT_TO_IMAGE: Final = "text_to_image"
CUSTOM: Final = "custom"
BACKGROUND_REMOVAL: Final = "background_removal"

SIZES: Final = ("1024x1024", "1536x1024", "1024x1536")
# The same sizes as aspect ratios, for providers that take a ratio instead of pixels.
ASPECT_RATIOS: Final = {"1024x1024": "1:1", "1536x1024": "3:2", "1024x1536": "2:3"}
MAX_PROMPT: Final = 4000

_PROMPT = ParameterSpec(
    type="string", required=True, max_length=MAX_PROMPT, description="What to draw, or how to edit."
)
_SIZE = ParameterSpec(
    type="string", default="1024x1024", allowed=SIZES, description="Output size (width x height)."
)
_COUNT = ParameterSpec(type="integer", default=1, minimum=1, maximum=4, description="Images to make.")
_SEED = ParameterSpec(
    type="integer", default=None, minimum=0, maximum=4294967294, description="Seed, where supported."
)

TEXT_TO_IMAGE_SPEC: Final = TaskTypeSpec(
    task_type=TEXT_TO_IMAGE,
    description="Generate images from a text prompt. No upload.",
    min_inputs=0,
    max_inputs=0,
    parameters=MappingProxyType(
        {
            "prompt": _PROMPT,
            "negative_prompt": ParameterSpec(
                type="string", default=None, max_length=MAX_PROMPT, description="What to avoid."
            ),
            "size": _SIZE,
            "count": _COUNT,
            "seed": _SEED,
        }
    ),
)

CUSTOM_SPEC: Final = TaskTypeSpec(
    task_type=CUSTOM,
    description=(
        "Edit the uploaded images as the prompt describes. With mask=true the last uploaded file is "
        "a PNG mask (transparent where the image may change) and is not an input image."
    ),
    min_inputs=1,
    max_inputs=5,
    supports_mask=True,
    parameters=MappingProxyType(
        {
            "prompt": _PROMPT,
            "mask": ParameterSpec(
                type="boolean", default=False, description="The last uploaded file is the edit mask."
            ),
            "size": _SIZE,
            "count": _COUNT,
            "seed": _SEED,
        }
    ),
)

BACKGROUND_REMOVAL_SPEC: Final = TaskTypeSpec(
    task_type=BACKGROUND_REMOVAL,
    description="Cut out the main subject; PNG with a transparent background.",
    min_inputs=1,
    max_inputs=5,
    parameters=MappingProxyType(
        {
            "background": ParameterSpec(
                type="string", default="transparent", allowed=("transparent", "white")
            ),
            "post_process": ParameterSpec(type="boolean", default=False),
        }
    ),
)


def size_of(value: object) -> tuple[int, int]:
    width, height = str(value or SIZES[0]).split("x")
    return int(width), int(height)
