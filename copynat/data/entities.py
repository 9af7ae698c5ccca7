"""Entities for the echo task: what a user types where a reply must echo it.

Names and places in Latin script (1 to 24 letters, mixed case, apostrophes, hyphens, diacritics, several words) and
in CJK, kana, Hangul, Cyrillic, Greek and Arabic script; digit strings of 1 to 16 digits, leading zeros included;
clock times, codes, e-mail addresses and URLs.  Each generator is one *family*; an entity's category is
``"<kind>/<family>"`` (``"name/cjk"``, ``"number/digits"``), and copy rates are reported per category.

The out-of-distribution families (:data:`OOD_FAMILIES`) never occur in training: whole scripts (Hebrew, Devanagari,
Georgian), a longer length range (single-word names of 30-40 letters, numbers of 17-30 digits), shapes the training families do
not have (international phone numbers, slashed reference codes), and hand-written lists of real-world names and
places (:data:`REAL_NAMES_LATIN`, :data:`REAL_NAMES_OTHER_SCRIPTS`, :data:`REAL_PLACES`).  They measure copying as a
skill rather than a vocabulary.

Every generator takes a ``random.Random`` and returns a string; nothing here depends on global state.
"""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "Family",
    "STRUCTURAL_WORDS",
    "TRAIN_FAMILIES",
    "OOD_FAMILIES",
    "REAL_NAMES_LATIN",
    "REAL_NAMES_OTHER_SCRIPTS",
    "REAL_PLACES",
    "REAL_ENTITIES",
]


class Family(NamedTuple):
    """One entity generator: ``kind`` is the template slot it fills, ``weight`` its share among that kind's
    families in training (0 for out-of-distribution families)."""

    kind: str
    name: str
    make: Callable[[random.Random], str]
    weight: float = 1.0
    #: another entity written like a given one (the same alphabet), where `make` picks among several
    make_like: Callable[[random.Random, str], str] | None = None

    @property
    def category(self) -> str:
        return f"{self.kind}/{self.name}"

    def sibling(self, rng: random.Random, entity: str) -> str:
        """An entity of this family in the same alphabet as `entity` (Иван beside Мария, not a Greek name)."""
        return self.make(rng) if self.make_like is None else self.make_like(rng, entity)


def _chars(first: int, last: int, skip: str = "") -> str:
    return "".join(chr(c) for c in range(first, last + 1) if chr(c) not in skip)


def _with_repeats(rng: random.Random, text: str, share: float = 0.15) -> str:
    """Sometimes a unit of 1-3 characters said again ("Kuroro", "Lulu", "洛洛", "0000"): where a name repeats itself,
    only a copy that knows how far it has got stops at the right place."""
    if len(text) < 2 or rng.random() >= share:
        return text
    start = rng.randrange(1, len(text))  # not the first character: it may be a capital
    unit = text[start:start + rng.randint(1, 3)]
    return text[:start] + unit * rng.randint(2, 3) + text[start + len(unit):]


def _pick_length(rng: random.Random, bands: tuple[tuple[int, int, float], ...]) -> int:
    low, high, _ = rng.choices(bands, weights=[w for _, _, w in bands])[0]
    return rng.randint(low, high)


# ------------------------------------------------------------------------------------------------ Latin script

_ONSETS = ("", "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "w", "x",
           "y", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "kr", "pl", "pr", "sh", "sk", "sl",
           "sm", "sp", "st", "str", "sw", "th", "tr", "wr", "zb", "zh", "sz", "cz", "ph", "kh", "gh", "rh", "ts", "dz")
_NUCLEI = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "y", "ai", "au", "ea", "ee", "ei", "ia", "ie", "io", "oa",
           "oi", "oo", "ou", "ue")
_CODAS = ("", "", "", "", "n", "m", "r", "l", "s", "t", "k", "x", "ng", "nd", "rt", "st", "sk", "ck", "ff", "ll",
          "ss", "tz", "sz", "rz", "th", "sh", "ch", "gh", "rd", "lm", "ns", "w")
_MARKED = {"a": "áàâäãåą", "e": "éèêëęě", "i": "íìîï", "o": "óòôöõøő", "u": "úùûüůű", "c": "çčć", "n": "ñńň",
           "s": "šśş", "z": "žźż", "l": "ł", "y": "ýÿ", "r": "ř", "d": "ď", "t": "ť", "g": "ğ"}
_NAME_LENGTHS = ((1, 3, 0.08), (4, 8, 0.47), (9, 14, 0.3), (15, 24, 0.15))


def _latin_letters(rng: random.Random, length: int) -> str:
    """`length` lower-case letters: mostly pronounceable syllables, sometimes any letters at all."""
    if rng.random() < 0.15:
        vowels = "aeiouy"
        return "".join(rng.choice(vowels if rng.random() < 0.35 else string.ascii_lowercase) for _ in range(length))
    text = ""
    while len(text) < length:
        text += rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
    return text[:length]


def _latin_name(rng: random.Random, lengths=_NAME_LENGTHS) -> str:
    return _with_repeats(rng, _latin_letters(rng, _pick_length(rng, lengths)).capitalize())


def _mark(rng: random.Random, text: str) -> str:
    """Diacritics on one to three letters (José, Łukasz, Dvořák)."""
    letters = [i for i, c in enumerate(text) if c.lower() in _MARKED]
    out = list(text)
    for i in rng.sample(letters, min(len(letters), rng.randint(1, 3))):
        marked = rng.choice(_MARKED[out[i].lower()])
        out[i] = marked.upper() if out[i].isupper() else marked
    return "".join(out)


def _styled_latin(rng: random.Random, core: Callable[[random.Random], str]) -> str:
    """A Latin name as people write theirs: McDonald, O'Brien, Jean-Luc, DeShawn, ALL CAPS, lower case, José."""
    style = rng.choices(("prefix", "apostrophe", "hyphen", "upper", "lower", "camel", "marked"),
                        weights=(0.16, 0.14, 0.16, 0.1, 0.08, 0.08, 0.28))[0]
    name = core(rng)
    if style == "prefix":
        name = rng.choice(("Mc", "Mac", "De", "Di", "La", "Le", "Van", "Von", "Du", "St")) + name
    elif style == "apostrophe":
        if rng.random() < 0.6:
            name = rng.choice(("O'", "D'", "L'", "N'")) + name
        else:
            cut = rng.randint(1, max(1, len(name) - 1))
            name = name[:cut] + "'" + name[cut:]
    elif style == "hyphen":
        name = name + "-" + core(rng)
    elif style == "upper":
        name = name.upper()
    elif style == "lower":
        name = name.lower()
    elif style == "camel" and len(name) > 3:
        cut = rng.randint(2, len(name) - 1)
        name = name[:cut] + name[cut].upper() + name[cut + 1:]
    if style == "marked" or rng.random() < 0.12:
        name = _mark(rng, name)
    return name


_PLACE_SUFFIXES = ("ville", "burg", "berg", "ton", "polis", "grad", "stad", "ford", "mouth", "haven", "field", "dale",
                   "port", "wick", "shire", "abad", "pur", "ia", "ova", "sk")
_PLACE_PREFIXES = ("San", "Santa", "Port", "New", "Lake", "Mount", "Saint", "El", "Los", "Bad", "Nova", "Fort", "Upper")
_PLACE_LENGTHS = ((2, 4, 0.15), (5, 9, 0.55), (10, 16, 0.3))


def _latin_place_word(rng: random.Random) -> str:
    core = _latin_letters(rng, _pick_length(rng, _PLACE_LENGTHS))
    if rng.random() < 0.45:
        core += rng.choice(_PLACE_SUFFIXES)
    return core.capitalize()


def _latin_place(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.14:
        return rng.choice(_PLACE_PREFIXES) + " " + _latin_place_word(rng)
    if roll < 0.2:
        return _latin_place_word(rng) + " " + rng.choice(("City", "Falls", "Springs", "Bay", "Heights", "Town"))
    return _latin_place_word(rng)


def _styled_place(rng: random.Random) -> str:
    style = rng.choices(("hyphen", "apostrophe", "marked", "upper"), weights=(0.3, 0.15, 0.45, 0.1))[0]
    if style == "hyphen":
        return _latin_place_word(rng) + rng.choice(("-", "-sur-", "-on-", "-am-", "-de-")) + _latin_place_word(rng)
    if style == "apostrophe":
        return rng.choice(("L'", "D'", "Sant'")) + _latin_place_word(rng)
    if style == "upper":
        return _latin_place(rng).upper()
    return _mark(rng, _latin_place(rng))


# ----------------------------------------------------------------------------------------------- other scripts

_HAN = _chars(0x4E00, 0x9FFF)
_HIRAGANA = _chars(0x3041, 0x3096)
_KATAKANA = _chars(0x30A1, 0x30FA) + "ー"
_HANGUL = _chars(0xAC00, 0xD7A3)
_CYRILLIC_UPPER = _chars(0x0410, 0x042F, skip="ЪЬЫ")
_CYRILLIC_LOWER = _chars(0x0430, 0x044F) + "ёіїєґ"
_GREEK_UPPER = _chars(0x0391, 0x03A9, skip="\u03a2")
_GREEK_LOWER = _chars(0x03B1, 0x03C9, skip="ς") + "άέήίόύώ"
_ARABIC = _chars(0x0621, 0x064A, skip="\u0640")
# Scripts the tokenizer has hardly any pieces for (each character stays two to four byte pieces): they teach the
# model to copy byte sequences whose pieces repeat, as an unseen script's do. Letters only (no unassigned points).
_BYTE_SCRIPTS = tuple("".join(c for c in _chars(low, high) if unicodedata.category(c)[0] in "LS") for low, high in (
    (0x0561, 0x0586),  # Armenian
    (0x0E01, 0x0E2E),  # Thai
    (0x0B85, 0x0BB9),  # Tamil
    (0x0985, 0x09B9),  # Bengali
    (0x0A85, 0x0AB9),  # Gujarati
    (0x1200, 0x1248),  # Ethiopic
    (0x1780, 0x17A2),  # Khmer
    (0x13A0, 0x13F4),  # Cherokee
    (0x16A0, 0x16EA),  # Runic
    (0x0F40, 0x0F69),  # Tibetan
    (0x0710, 0x072F),  # Syriac
    (0x0780, 0x07A5),  # Thaana
    (0x1820, 0x1877),  # Mongolian
    (0x1F600, 0x1F64F),  # emoji
))
# out-of-distribution scripts: never in training
_HEBREW = _chars(0x05D0, 0x05EA)
_GEORGIAN = _chars(0x10D0, 0x10F0)
_DEVANAGARI_CONSONANTS = _chars(0x0915, 0x0939)
_DEVANAGARI_SIGNS = _chars(0x093E, 0x094C) + "\u0902"
_DEVANAGARI_VOWELS = _chars(0x0905, 0x0914)


def _han(rng: random.Random, low: int, high: int) -> str:
    return _with_repeats(rng, "".join(rng.choice(_HAN) for _ in range(rng.randint(low, high))))


def _kana(rng: random.Random, low: int, high: int, like: str | None = None) -> str:
    alphabet = (_HIRAGANA if rng.random() < 0.5 else _KATAKANA) if like is None else (
        _HIRAGANA if like[0] in _HIRAGANA else _KATAKANA)
    text = _with_repeats(rng, "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high))))
    return text if text[0] != "ー" else "ア" + text[1:]


def _hangul(rng: random.Random, low: int, high: int) -> str:
    return _with_repeats(rng, "".join(rng.choice(_HANGUL) for _ in range(rng.randint(low, high))))


def _cased(rng: random.Random, upper: str, lower: str, low: int, high: int, final: dict[str, str] | None = None) -> str:
    text = rng.choice(upper) + "".join(rng.choice(lower) for _ in range(rng.randint(low, high) - 1))
    text = _with_repeats(rng, text)
    if final and text[-1] in final:
        text = text[:-1] + final[text[-1]]
    return text


def _cyrillic(rng: random.Random, low: int, high: int) -> str:
    return _cased(rng, _CYRILLIC_UPPER, _CYRILLIC_LOWER, low, high)


def _greek(rng: random.Random, low: int, high: int) -> str:
    return _cased(rng, _GREEK_UPPER, _GREEK_LOWER, low, high, final={"σ": "ς"})


def _arabic(rng: random.Random, low: int, high: int) -> str:
    return _with_repeats(rng, "".join(rng.choice(_ARABIC) for _ in range(rng.randint(low, high))))


def _byte_script(rng: random.Random, low: int, high: int, like: str | None = None) -> str:
    alphabet = rng.choice(_BYTE_SCRIPTS) if like is None else next(a for a in _BYTE_SCRIPTS if like[0] in a)
    return _with_repeats(rng, "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high))))


def _hebrew(rng: random.Random) -> str:
    return "".join(rng.choice(_HEBREW) for _ in range(rng.randint(2, 8)))


def _georgian(rng: random.Random) -> str:
    return "".join(rng.choice(_GEORGIAN) for _ in range(rng.randint(3, 10)))


def _devanagari(rng: random.Random) -> str:
    """Syllables: a consonant with an optional vowel sign (प्रिया-like strings); sometimes a leading vowel."""
    text = rng.choice(_DEVANAGARI_VOWELS) if rng.random() < 0.2 else ""
    for _ in range(rng.randint(2, 4)):
        text += rng.choice(_DEVANAGARI_CONSONANTS)
        if rng.random() < 0.7:
            text += rng.choice(_DEVANAGARI_SIGNS)
    return text


# ------------------------------------------------------------------------------------ numbers, times, codes, ...


def _digits(rng: random.Random, low: int = 1, high: int = 16) -> str:
    length = rng.randint(low, high)
    text = "".join(rng.choice(string.digits) for _ in range(length))
    if length > 1 and rng.random() < 0.3:  # leading zeros: a user's "0031206" must not become "31206"
        zeros = rng.randint(1, min(3, length - 1))
        text = "0" * zeros + text[zeros:]
    return _with_repeats(rng, text)[:high] if length > 1 else text


def _time(rng: random.Random) -> str:
    hour, minute = rng.randint(0, 23), rng.randrange(0, 60, rng.choice((1, 5, 15)))
    style = rng.choices(("h:mm", "hh:mm", "hh:mm:ss", "ampm", "ampm-space"), weights=(0.3, 0.3, 0.1, 0.15, 0.15))[0]
    if style == "h:mm":
        return f"{hour % 12 or 12}:{minute:02d}"
    if style == "hh:mm":
        return f"{hour:02d}:{minute:02d}"
    if style == "hh:mm:ss":
        return f"{hour:02d}:{minute:02d}:{rng.randint(0, 59):02d}"
    suffix = rng.choice(("am", "pm", "AM", "PM"))
    return f"{hour % 12 or 12}:{minute:02d}" + (" " if style == "ampm-space" else "") + suffix


_CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def _alnum(rng: random.Random, length: int, letters: str = _CODE_LETTERS, digit_share: float = 0.5) -> str:
    return "".join(rng.choice(string.digits) if rng.random() < digit_share else rng.choice(letters)
                   for _ in range(length))


def _code(rng: random.Random) -> str:
    shape = rng.choices(("flight", "dashed", "alnum", "hex"), weights=(0.3, 0.3, 0.25, 0.15))[0]
    if shape == "flight":  # LH4021, U2123
        return _alnum(rng, 2, digit_share=0.15) + str(rng.randint(1, 9)) + _digits(rng, 0, 3)
    if shape == "dashed":  # XK-42, A7-3392-KQ
        return "-".join(_alnum(rng, rng.randint(2, 4)) for _ in range(rng.randint(2, 3)))
    if shape == "alnum":  # QX7Z9P
        return _alnum(rng, rng.randint(4, 10))
    return _alnum(rng, rng.randint(6, 12), letters="abcdef", digit_share=0.6)


_TLDS = ("com", "org", "net", "de", "fr", "io", "co.uk", "jp", "cn", "ru", "edu", "info", "nl", "com.br", "ch")


def _lower_word(rng: random.Random, low: int, high: int) -> str:
    return _latin_letters(rng, rng.randint(low, high))


def _email(rng: random.Random) -> str:
    local = _lower_word(rng, 1, 10)
    if rng.random() < 0.5:
        local += rng.choice("._-") + _lower_word(rng, 1, 10)
    if rng.random() < 0.3:
        local += _digits(rng, 1, 4)
    domain = _lower_word(rng, 2, 12) + (("-" + _lower_word(rng, 2, 8)) if rng.random() < 0.15 else "")
    return f"{local}@{domain}.{rng.choice(_TLDS)}"


def _url(rng: random.Random) -> str:
    url = rng.choice(("https://", "https://", "http://")) + ("www." if rng.random() < 0.4 else "")
    url += _lower_word(rng, 2, 12) + "." + rng.choice(_TLDS)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        url += "/" + _lower_word(rng, 2, 9) + (("-" + _lower_word(rng, 2, 6)) if rng.random() < 0.2 else "")
    if rng.random() < 0.2:
        url += f"?{_lower_word(rng, 1, 5)}={_digits(rng, 1, 5)}"
    return url


def _phone(rng: random.Random) -> str:
    """+44 20 7946 0958: a plus, a country code and space-separated groups (training numbers have no spaces)."""
    groups = [_digits(rng, 2, 4) for _ in range(rng.randint(2, 4))]
    return f"+{rng.randint(1, 999)} " + " ".join(groups)


def _slashed_code(rng: random.Random) -> str:
    """REF/2024/00871: slash-separated groups (training codes use hyphens)."""
    return "/".join(_alnum(rng, rng.randint(2, 5)) for _ in range(rng.randint(3, 4)))


#: Words that give an entity its shape rather than its identity ("https", "www", "com", "pm", "San", "City"): they
#: are shared by entities of every split.
STRUCTURAL_WORDS: frozenset[str] = frozenset(
    {"http", "https", "www", "am", "pm"} | {part for tld in _TLDS for part in tld.split(".")}
    | {w.lower() for w in _PLACE_PREFIXES} | {"city", "falls", "springs", "bay", "heights", "town", "sur", "on", "de"}
)

# ------------------------------------------------------------------------------------------- the family tables

TRAIN_FAMILIES: tuple[Family, ...] = (
    Family("name", "latin", _latin_name, 0.34),
    Family("name", "latin-styled", lambda rng: _styled_latin(rng, _latin_name), 0.18),
    Family("name", "cjk", lambda rng: _han(rng, 1, 4), 0.08),
    Family("name", "kana", lambda rng: _kana(rng, 2, 7), 0.08, lambda rng, like: _kana(rng, 2, 7, like)),
    Family("name", "hangul", lambda rng: _hangul(rng, 2, 4), 0.08),
    Family("name", "cyrillic", lambda rng: _cyrillic(rng, 2, 12), 0.08),
    Family("name", "greek", lambda rng: _greek(rng, 2, 12), 0.08),
    Family("name", "arabic", lambda rng: _arabic(rng, 2, 10), 0.08),
    Family("name", "byte-scripts", lambda rng: _byte_script(rng, 2, 8), 0.08,
           lambda rng, like: _byte_script(rng, 2, 8, like)),
    Family("place", "latin", _latin_place, 0.36),
    Family("place", "latin-styled", _styled_place, 0.16),
    Family("place", "cjk", lambda rng: _han(rng, 2, 4), 0.08),
    Family("place", "kana", lambda rng: _kana(rng, 2, 6), 0.08, lambda rng, like: _kana(rng, 2, 6, like)),
    Family("place", "hangul", lambda rng: _hangul(rng, 2, 3), 0.08),
    Family("place", "cyrillic", lambda rng: _cyrillic(rng, 3, 14), 0.08),
    Family("place", "greek", lambda rng: _greek(rng, 3, 12), 0.08),
    Family("place", "arabic", lambda rng: _arabic(rng, 3, 10), 0.08),
    Family("place", "byte-scripts", lambda rng: _byte_script(rng, 2, 8), 0.08,
           lambda rng, like: _byte_script(rng, 2, 8, like)),
    Family("number", "digits", _digits),
    Family("time", "clock", _time),
    Family("code", "mixed", _code),
    Family("email", "address", _email),
    Family("url", "web", _url),
)

# ---------------------------------------------------------------------------------- hand-written real entities

#: Real first names and surnames in Latin script (not generated: none of them is built like a training name).
REAL_NAMES_LATIN: tuple[str, ...] = (
    "Bartholomew", "Zbigniew", "Krzysztof", "Thelonious", "Anastasiadou", "McDonald", "O'Brien", "D'Angelo",
    "Siobhan", "Nguyen", "Oluwaseun", "Chiamaka", "Bjørn", "Søren", "Małgorzata", "Wojciech", "Przemysław", "Dvořák",
    "Jürgen", "Françoise", "Hélène", "José", "Iñaki", "Joaquín", "Zoë", "Anaïs", "Björk", "Guðrún", "Tom", "Anna",
    "Li", "Wei", "Giuseppe", "Caoimhe", "Niamh", "Saoirse", "Aoife", "Tadhg", "Leopold", "Maximilian", "Wolfgang",
    "Schwarzenegger", "Kowalczyk", "Szczepański", "Ekaterina", "Svetlana", "Aleksandr", "Yevgeny", "Olusegun", "Ngozi",
    "Kwame", "Abimbola", "Nnamdi", "Tshepo", "Thandiwe", "Nomvula", "Priyanka", "Siddharth", "Lakshmi", "Venkatesh",
    "Subramanian", "Raghunathan", "Hiroshi", "Takahashi", "Nakamura", "Haruto", "Jae-won", "Seo-yeon", "Nguyễn",
    "Trần", "Hoàng", "Mohammed", "Abdulrahman", "Fatima", "Aisha", "Mustafa", "Mehmet", "Ayşe", "Çağlar", "Gökhan",
    "Øystein", "Ólafur", "Jean-Baptiste", "Marie-Claire", "Anne-Sophie", "MacAllister", "McKenzie", "DiCaprio",
    "LaToya", "DeShawn", "VanderMeer", "O'Sullivan", "D'Arcy", "N'Golo", "Ng", "Wu", "Xu", "Eilidh", "Ruaidhrí",
    "Dobromił", "Hrvoje", "Tiberiu", "Ștefan", "Aurélie", "Bérénice", "Kofi", "Amara", "Zhenya", "Joaquim",
)

#: Real names in other scripts, the lecture's 庫洛洛 first.
REAL_NAMES_OTHER_SCRIPTS: tuple[str, ...] = (
    "庫洛洛", "王小明", "李娜", "张伟", "陈静", "刘洋", "山田太郎", "佐藤", "鈴木一郎", "さくら", "ゆうき", "ハルト",
    "アンナ", "김민준", "이서연", "박지훈", "최수아", "정우성", "Мария", "Иван", "Дмитрий", "Светлана", "Александр",
    "Ольга", "Наталья", "Володимир", "Олена", "Γιάννης", "Μαρία", "Νίκος", "Ελένη", "Δημήτρης", "محمد", "فاطمة",
    "أحمد", "علي", "يوسف", "خديجة", "孫悟空", "林黛玉", "ナルト", "すずき", "민지", "Татьяна", "Σοφία", "ليلى",
)

#: Real places, in Latin script and others.
REAL_PLACES: tuple[str, ...] = (
    "Vladivostok", "Reykjavik", "Saskatoon", "Paris", "London", "Tokyo", "Ouagadougou", "Timbuktu",
    "Llanfairpwllgwyngyll", "Kraków", "Zürich", "São Paulo", "Bogotá", "Düsseldorf", "Göteborg", "Montréal", "Québec",
    "Kyiv", "Tbilisi", "Yerevan", "Ulaanbaatar", "Antananarivo", "Buenos Aires", "Rio de Janeiro", "New York",
    "Los Angeles", "Kuala Lumpur", "Chattanooga", "Albuquerque", "Mississauga", "Wagga Wagga", "Baden-Baden",
    "Stratford-upon-Avon", "Thiruvananthapuram", "Xi'an", "Hạ Long", "Łódź", "Århus", "Ísafjörður", "Tromsø",
    "Eyjafjallajökull", "Kathmandu", "Ouarzazate", "Nuuk", "Yellowknife", "Walla Walla", "Sault Ste. Marie",
    "東京", "北京", "上海", "大阪", "京都", "香港", "台北", "서울", "부산", "Москва", "Санкт-Петербург",
    "Новосибирск", "Київ", "Αθήνα", "Θεσσαλονίκη", "القاهرة", "الرياض", "دبي", "بغداد", "名古屋", "札幌",
    "ソウル", "Владивосток", "Ηράκλειο", "مراكش",
)

REAL_ENTITIES: frozenset[str] = frozenset(REAL_NAMES_LATIN + REAL_NAMES_OTHER_SCRIPTS + REAL_PLACES)


def _real(entities: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(entities)


#: Families held out of training. The "real/places" family fills place slots, the others name / number / code slots.
OOD_FAMILIES: tuple[Family, ...] = (
    Family("name", "script-hebrew", _hebrew, 0.0),
    Family("name", "script-devanagari", _devanagari, 0.0),
    Family("place", "script-georgian", _georgian, 0.0),
    Family("name", "long-latin", lambda rng: _latin_name(rng, ((30, 40, 1.0),)), 0.0),
    Family("number", "long-digits", lambda rng: _digits(rng, 17, 30), 0.0),
    Family("number", "shape-phone", _phone, 0.0),
    Family("code", "shape-slashed", _slashed_code, 0.0),
    Family("name", "real-latin", _real(REAL_NAMES_LATIN), 0.0),
    Family("name", "real-other-scripts", _real(REAL_NAMES_OTHER_SCRIPTS), 0.0),
    Family("place", "real-places", _real(REAL_PLACES), 0.0),
)
