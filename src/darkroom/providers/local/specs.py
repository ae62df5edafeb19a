"""Task types and parameters of the local provider (what ``/api/task-types`` shows)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from darkroom.providers.base import ParameterSpec, TaskTypeSpec
from darkroom.providers.local.enhance import DEFAULT_ENHANCEMENT, ENHANCEMENTS
from darkroom.providers.local.enhance import DESCRIPTION as ENHANCEMENT_DESCRIPTION
from darkroom.providers.local.styles import DEFAULT_STYLE, STYLE_NAMES

BACKGROUND_REMOVAL: Final = "background_removal"
STYLE_TRANSFER: Final = "style_transfer"
COLOR_ENHANCEMENT: Final = "color_enhancement"

_STRENGTH_DOC = "How much of the effect to apply: 0 keeps the original, 1 is the full effect."

CAPABILITIES: Final[MappingProxyType[str, TaskTypeSpec]] = MappingProxyType(
    {
        BACKGROUND_REMOVAL: TaskTypeSpec(
            task_type=BACKGROUND_REMOVAL,
            description=(
                "Cut out the main subject with the u2netp salient-object model. One PNG per input, "
                "same size as the input, the background transparent (or white)."
            ),
            min_inputs=1,
            max_inputs=5,
            parameters=MappingProxyType(
                {
                    "background": ParameterSpec(
                        type="string",
                        default="transparent",
                        allowed=("transparent", "white"),
                        description="Replace the background with transparency (RGBA PNG) or white (RGB PNG).",
                    ),
                    "post_process": ParameterSpec(
                        type="boolean",
                        default=False,
                        description="Clean the mask (remove specks, hard edges) instead of soft edges.",
                    ),
                }
            ),
        ),
        STYLE_TRANSFER: TaskTypeSpec(
            task_type=STYLE_TRANSFER,
            description=(
                "Repaint a photo in one of 26 built-in styles, or in the style of a second image. "
                "Input 1 is the photo; an optional input 2 is used as the style image (then 'style' is "
                "ignored). One output with the photo's size."
            ),
            min_inputs=1,
            max_inputs=2,
            parameters=MappingProxyType(
                {
                    "style": ParameterSpec(
                        type="string",
                        default=DEFAULT_STYLE,
                        allowed=STYLE_NAMES,
                        description="Built-in style (ignored when a style image is given as input 2).",
                    ),
                    "strength": ParameterSpec(
                        type="number", default=1.0, minimum=0.0, maximum=1.0, description=_STRENGTH_DOC
                    ),
                    "preserve_color": ParameterSpec(
                        type="boolean",
                        default=False,
                        description="Keep the photo's colours; take only texture and light from the style.",
                    ),
                }
            ),
        ),
        COLOR_ENHANCEMENT: TaskTypeSpec(
            task_type=COLOR_ENHANCEMENT,
            description=(
                "Colour and tone adjustments. One output per input, same size; JPEG stays JPEG, "
                "PNG and WebP become PNG (transparency kept)."
            ),
            min_inputs=1,
            max_inputs=5,
            parameters=MappingProxyType(
                {
                    "enhancement": ParameterSpec(
                        type="string",
                        default=DEFAULT_ENHANCEMENT,
                        allowed=tuple(ENHANCEMENTS),
                        description=ENHANCEMENT_DESCRIPTION,
                    ),
                    "strength": ParameterSpec(
                        type="number", default=1.0, minimum=0.0, maximum=1.0, description=_STRENGTH_DOC
                    ),
                }
            ),
        ),
    }
)
