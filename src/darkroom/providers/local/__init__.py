"""The built-in offline provider: background removal, style transfer and colour enhancement.

Importing this package loads no model; see :mod:`.provider` for the execution model.
"""

from darkroom.providers.local.provider import LocalProvider
from darkroom.providers.local.specs import CAPABILITIES
from darkroom.providers.local.styles import STYLE_INDEX, STYLE_NAMES

__all__ = ["CAPABILITIES", "STYLE_INDEX", "STYLE_NAMES", "LocalProvider"]
