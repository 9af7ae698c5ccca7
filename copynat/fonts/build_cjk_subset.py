"""Rebuild ``CopyNatCJKSans-Regular.ttf``, the CJK font subset shipped with copynat.

This script is *not* imported by copynat; it documents (and reproduces) how the
shipped font file was made, as the SIL Open Font License asks for derivative fonts.

Source font: Noto Sans CJK SC Regular (face 2 of ``NotoSansCJK-Regular.ttc``),
Copyright 2014-2021 Adobe, licensed under the SIL Open Font License 1.1.  On Debian
it comes from the ``fonts-noto-cjk`` package, so it can be fetched without installing::

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb noto
    python copynat/fonts/build_cjk_subset.py \
        noto/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

What it does:

* keeps every character of GB 2312 (all 6,763 simplified hanzi plus its symbols,
  Greek, Cyrillic, kana and full-width forms), CJK punctuation, hiragana/katakana and
  the half-/full-width forms block -- enough for lecture examples such as "我是大木博士";
* drops hinting and OpenType layout features (matplotlib's Agg renderer uses neither);
* converts the cubic CFF outlines to quadratic TrueType (``glyf``) outlines, so the file
  also works with matplotlib's PDF/PS "Type 42" embedding;
* renames the family to "CopyNat CJK Sans" (a modified font must not pretend to be
  the original; see the OFL, conditions 3 and 4).

The result is about 2 MB (about 1.3 MB compressed in a wheel).
"""

from __future__ import annotations

import argparse
from pathlib import Path

FAMILY = "CopyNat CJK Sans"
POSTSCRIPT = "CopyNatCJKSans-Regular"
OUTPUT = Path(__file__).with_name("CopyNatCJKSans-Regular.ttf")


def gb2312_chars() -> set[str]:
    """Every character encodable in GB 2312 (rows 0xA1-0xF7)."""
    chars = set()
    for b1 in range(0xA1, 0xF8):
        for b2 in range(0xA1, 0xFF):
            try:
                chars.add(bytes([b1, b2]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


def wanted_codepoints() -> list[int]:
    chars = gb2312_chars()
    chars |= {chr(c) for c in range(0x3000, 0x3100)}  # CJK punctuation, hiragana, katakana
    chars |= {chr(c) for c in range(0xFF00, 0xFFF0)}  # half-width and full-width forms
    return sorted(ord(c) for c in chars)


def build(source: str, face_index: int = 2, output: Path = OUTPUT, max_err: float = 2.0) -> Path:
    from fontTools import subset
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTCollection, TTFont, newTable

    if source.lower().endswith((".ttc", ".otc")):
        font = TTCollection(source).fonts[face_index]
    else:
        font = TTFont(source)

    options = subset.Options()
    options.hinting = False
    options.layout_features = []
    options.name_IDs = [0, 13, 14]
    options.name_languages = [0x409]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted_codepoints())
    subsetter.subset(font)

    # CFF (cubic) -> glyf (quadratic)
    glyph_order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = glyph_order
    glyf.glyphs = {}
    for name in glyph_order:
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, max_err=max_err, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = newTable("loca")
    maxp = font["maxp"]
    maxp.tableVersion = 0x00010000
    for attr in (
        "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
        "maxStackElements", "maxSizeOfInstructions", "maxComponentElements",
    ):
        setattr(maxp, attr, 0)
    maxp.maxZones = 1
    font["head"].glyphDataFormat = 0
    post = font["post"]
    post.formatType = 3.0
    post.extraNames = []
    post.mapping = {}
    for tag in ("CFF ", "VORG"):
        if tag in font:
            del font[tag]
    font.sfntVersion = "\x00\x01\x00\x00"

    # Rename (OFL: modified versions must not use the original name).
    name = font["name"]
    copyright_ = "Copyright 2014-2021 Adobe (http://www.adobe.com/). Subset by the copynat developers."
    for name_id, value in (
        (0, copyright_),
        (1, FAMILY),
        (2, "Regular"),
        (3, f"{POSTSCRIPT};copynat-subset-of-NotoSansCJKsc"),
        (4, f"{FAMILY} Regular"),
        (5, "Version 1.0; subset of Noto Sans CJK SC 2.004"),
        (6, POSTSCRIPT),
        (10, "GB 2312 + kana subset of Noto Sans CJK SC, made for copynat's plots."),
    ):
        name.setName(value, name_id, 3, 1, 0x409)
    font["OS/2"].fsType = 0  # installable embedding, as in the original
    font.save(str(output))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="NotoSansCJK-Regular.ttc or NotoSansCJKsc-Regular.otf")
    parser.add_argument("--face-index", type=int, default=2, help="face in a .ttc (2 = SC)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    out = build(args.source, args.face_index, args.output)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
