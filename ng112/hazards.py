"""What a responder acts on first: the hazard and, for gas and CBRNE, the substance (code tables).

A CAP alert names its hazard in free text (``event``), in ``eventCode`` pairs, in parameters and in
its categories; the first LoRa frame carries one byte of :class:`Hazard` and one of
:class:`Substance` so the command post knows which crew to send before the rest arrives.
:func:`classify` reads, in order: an ``eventCode``/parameter named ``hazard`` or ``substance`` with a
table name, known SAME/CAP event codes, keywords in the event (English and Czech), then the
headline's keywords, then the CAP category. Nothing it finds replaces the event text: the record
keeps the event as written (see :mod:`ng112.record`).

Codes are wire values: append, never renumber.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum


class Hazard(IntEnum):
    OTHER = 0
    FIRE = 1
    SMOKE = 2
    GAS = 3
    CBRNE = 4
    INTRUSION = 5
    HOLD_UP = 6  # hold-up, panic, duress
    MEDICAL = 7
    LIFT_ENTRAPMENT = 8
    WATER = 9  # flooding, leak, sprinkler waterflow
    STRUCTURAL = 10
    TECHNICAL_FAULT = 11
    TEST = 12


class Substance(IntEnum):
    NONE = 0
    AMMONIA = 1
    CHLORINE = 2
    CARBON_MONOXIDE = 3
    NATURAL_GAS = 4
    LPG = 5
    HYDROGEN = 6
    HYDROGEN_SULFIDE = 7
    CARBON_DIOXIDE = 8
    REFRIGERANT = 9
    OTHER = 255  # a gas the table does not name; the event text says which


@dataclass(frozen=True, slots=True)
class HazardEntry:
    event: str  # the CAP event written when an alert names no event of its own
    category: str  # CAP category
    keywords: tuple[str, ...]  # lower-case words or phrases (``stem*``), English and Czech


# Checked in this order: the more specific hazards first (smoke before fire, gas before fire).
HAZARDS: dict[Hazard, HazardEntry] = {
    Hazard.TEST: HazardEntry("Test alarm", "Other", ("test", "zkoušk*", "zkušebn*")),
    Hazard.CBRNE: HazardEntry(
        "CBRNE alarm",
        "CBRNE",
        (
            "cbrne",
            "chemical",
            "biological",
            "radiological",
            "radiation",
            "nuclear",
            "hazmat",
            "toxic",
            "chemick*",
            "nebezpečn* látk*",
        ),
    ),
    Hazard.GAS: HazardEntry("Gas alarm", "Safety", ("gas", "leak of gas", "plyn*")),
    Hazard.SMOKE: HazardEntry("Smoke alarm", "Fire", ("smoke", "kouř*", "zakouř*")),
    Hazard.FIRE: HazardEntry(
        "Fire alarm",
        "Fire",
        ("fire", "heat", "flame", "manual call point", "pull station", "požár*", "oheň", "ohn*"),
    ),
    Hazard.HOLD_UP: HazardEntry(
        "Hold-up alarm",
        "Security",
        ("hold-up", "holdup", "panic", "duress", "přepaden*", "tíseň", "tísňov*"),
    ),
    Hazard.INTRUSION: HazardEntry(
        "Intrusion alarm",
        "Security",
        ("intrusion", "intruder", "burglary", "break-in", "vniknut*", "vloupán*"),
    ),
    Hazard.LIFT_ENTRAPMENT: HazardEntry(
        "Persons trapped in lift",
        "Rescue",
        ("lift", "elevator", "entrapment", "trapped", "výtah*"),
    ),
    Hazard.MEDICAL: HazardEntry(
        "Medical emergency",
        "Health",
        ("medical", "defibrillator", "aed", "cardiac", "zdravotn*"),
    ),
    Hazard.WATER: HazardEntry(
        "Water alarm",
        "Safety",
        ("flood", "flooding", "water leak", "waterflow", "sprinkler", "zaplaven*", "povodeň", "povodn*"),
    ),
    Hazard.STRUCTURAL: HazardEntry(
        "Structural alarm",
        "Safety",
        ("structural", "collapse", "subsidence", "zřícen*", "statik*"),
    ),
    Hazard.TECHNICAL_FAULT: HazardEntry(
        "Technical fault",
        "Infra",
        ("fault", "trouble", "power loss", "power failure", "poruch*", "závad*"),
    ),
    Hazard.OTHER: HazardEntry("Building alarm", "Other", ()),
}

SUBSTANCES: dict[Substance, tuple[str, tuple[str, ...]]] = {
    Substance.AMMONIA: ("ammonia", ("ammonia", "nh3", "čpav*", "amoniak*")),
    Substance.CHLORINE: ("chlorine", ("chlorine", "cl2", "chlor*")),
    Substance.CARBON_MONOXIDE: (
        "carbon monoxide",
        ("carbon monoxide", "co alarm", "co detector", "co-alarm", "uhelnat*"),
    ),
    Substance.NATURAL_GAS: (
        "natural gas",
        ("natural gas", "methane", "ch4", "zemní plyn", "zemního plynu", "metan*"),
    ),
    Substance.LPG: ("LPG", ("lpg", "propane", "butane", "propan*", "butan*")),
    Substance.HYDROGEN: ("hydrogen", ("hydrogen", "h2", "vodík*")),
    Substance.HYDROGEN_SULFIDE: ("hydrogen sulfide", ("hydrogen sulfide", "h2s", "sulfan*", "sirovodík*")),
    Substance.CARBON_DIOXIDE: ("carbon dioxide", ("carbon dioxide", "co2", "uhličit*")),
    Substance.REFRIGERANT: ("refrigerant", ("refrigerant", "freon", "chladiv*")),
    Substance.OTHER: ("other gas", ()),
}

# CAP/SAME event codes (valueName SAME, or any valueName) that name a hazard outright.
EVENT_CODES: dict[str, Hazard] = {
    "FRW": Hazard.FIRE,
    "HMW": Hazard.CBRNE,
    "RHW": Hazard.CBRNE,
    "NUW": Hazard.CBRNE,
    "FFW": Hazard.WATER,
    "FLW": Hazard.WATER,
    "CDW": Hazard.HOLD_UP,
    "LAE": Hazard.OTHER,
    "RMT": Hazard.TEST,
    "RWT": Hazard.TEST,
    "DMO": Hazard.TEST,
}

_BY_CATEGORY = {
    "Fire": Hazard.FIRE,
    "CBRNE": Hazard.CBRNE,
    "Security": Hazard.INTRUSION,
    "Health": Hazard.MEDICAL,
    "Infra": Hazard.TECHNICAL_FAULT,
    "Rescue": Hazard.OTHER,
}


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[\w-]+", text.lower())) + " "


def _has(text: str, keyword: str) -> bool:
    """Whole word or phrase; a keyword ending in ``*`` is a stem (Czech inflects: čpavek, čpavku)."""
    if keyword.endswith("*"):
        return f" {keyword[:-1]}" in text
    return f" {keyword} " in text


def _by_name(value: str, names: dict[str, int]) -> int | None:
    key = value.strip().lower().replace(" ", "_").replace("-", "_")
    return names.get(key)


_HAZARD_NAMES = {h.name.lower(): int(h) for h in Hazard}
_SUBSTANCE_NAMES = {s.name.lower(): int(s) for s in Substance}


def substance_in(text: str) -> Substance:
    words = _words(text)
    for substance, (_, keywords) in SUBSTANCES.items():
        if any(_has(words, k) for k in keywords):
            return substance
    return Substance.NONE


def classify(
    event: str,
    categories: tuple[str, ...],
    event_codes: tuple[tuple[str, str], ...] = (),
    parameters: tuple[tuple[str, str], ...] = (),
    headline: str = "",
) -> tuple[Hazard, Substance]:
    """The hazard and substance of a CAP ``<info>`` (see the module docstring for the order)."""
    named = {k.strip().lower(): v for k, v in (*event_codes, *parameters)}
    hazard: Hazard | None = None
    if "hazard" in named and (code := _by_name(named["hazard"], _HAZARD_NAMES)) is not None:
        hazard = Hazard(code)
    for _, value in event_codes:
        if hazard is None and value.strip().upper() in EVENT_CODES:
            hazard = EVENT_CODES[value.strip().upper()]
    for text in (event, headline):
        words = _words(text)
        for candidate, entry in HAZARDS.items():
            if hazard is None and any(_has(words, k) for k in entry.keywords):
                hazard = candidate
    substance = Substance.NONE
    if "substance" in named:
        code = _by_name(named["substance"], _SUBSTANCE_NAMES)
        substance = Substance(code) if code is not None else substance_in(named["substance"])
    if substance is Substance.NONE:
        substance = substance_in(f"{event} {headline}")
    if hazard is None and substance is not Substance.NONE:
        hazard = Hazard.GAS
    if hazard is None:
        hazard = next((_BY_CATEGORY[c] for c in categories if c in _BY_CATEGORY), Hazard.OTHER)
    if hazard not in (Hazard.GAS, Hazard.CBRNE):
        substance = Substance.NONE
    elif substance is Substance.NONE and hazard is Hazard.GAS:
        substance = Substance.OTHER
    return hazard, substance
