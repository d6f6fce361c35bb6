"""Find PHI in report text by allow-list, the approach of UCSF Philter (docs/reports.md).

A pattern list names the PHI shapes it expects and misses the rest. This engine turns the question around: a
token stays only when it is known to be safe, and everything else is redacted:
- words: the chest-imaging vocabulary (tasks/phi_clinical_words.txt) and common English words (pyspellchecker's
  English frequency list, words seen at least COMMON_MIN times) are safe; any other word is redacted. A safe word
  is still redacted where it is used as a name: after a title (`Dr`, `Drs.`, `nurse`, ...) or a name cue
  (`Patient:`), capitalised in mid-sentence, or next to another name (`Rose Hill`);
- numbers: kept only as clinical numbers (a measurement with its unit, `2.5 x 3.1 cm`; a count of clinical
  things, `2 views`; a rib, level or grade, `left 4th rib`, `T8`, `C5/6`, `grade 2`; a list marker); every
  other number, and every token mixing letters and digits that is not a spine level or a unit, is redacted;
- a few shapes whose words are each safe on their own: e-mail addresses and URLs, street addresses
  (`12 main street`), US state + ZIP, a month next to a day or year (`14 March`), ages of 90 and over written
  out (`ninety-two-year-old`).

Every redacted span carries a category. `name`, `date`, `contact`, `id`, `address` and `age` are what the
validation backstop (tasks/validate.py) flags; `word` (an unknown word) and `number` (a bare number) are the
allow-list's remainder: redacted at ingest, but not a reason to quarantine a row of a public release that its
publisher already de-identified.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REDACTED = "___"
NAME, DATE, CONTACT, ID, ADDRESS, AGE = "name", "date", "contact", "id", "address", "age"
WORD, NUMBER = "word", "number"
FLAGGED = (NAME, DATE, CONTACT, ID, ADDRESS, AGE)  # the categories validation quarantines a row for

# A word counts as common English when pyspellchecker's list has seen it at least this often (its floor is 50;
# below a few hundred the list is mostly surnames, places and rare forms).
COMMON_MIN = 300
_CLINICAL_FILE = Path(__file__).with_name("phi_clinical_words.txt")
_SECTIONS_FILE = Path(__file__).parent / "reports" / "mimic_cxr_sections.json"

# Words that never read as a name on their own, capitalised or not (a name chain stops at them).
_MODALS = {"may", "will", "can", "could", "should", "would", "must", "might", "shall"}
_FUNCTION_WORDS = (
    set(
        """a an the and or but nor of to in on at by for from with without into onto over under above below between
    within after before during since until as than then there here this that these those it its is are was were
    be been being has have had do does did not no nor yes any all each both either neither some such same other
    per via who whom whose which what when where why how i we you he she they him her them his hers their our
    your my me us also again still only very more most less least further now please see seen compared""".split()
    )
    | _MODALS
)
# Titles: the word after an abbreviated title is a name whatever its case ("dr fairbanks", "Dr. Young"); after a
# spelled-out one ("the nurse reported"), only a capitalised or unknown word is.
_TITLES_ABBREV = {"dr", "drs", "mr", "mrs", "ms", "mx", "prof", "messrs", "mssrs"}
# "St. Mary's", "Mt. Sinai": the dot does not end a sentence, so the name after it reads as mid-sentence.
_PLACE_ABBREV = {"st", "mt", "ft"}
_TITLES_WORD = {"doctor", "doctors", "nurse", "nurses", "professor", "technologist", "rn", "np", "midwife"}
_ROLES = {"physician", "radiologist", "attending", "resident", "fellow", "referring", "ordering", "provider",
          "reader", "technologist", "surgeon", "clinician", "consultant", "pcp", "by", "to", "cc"}  # fmt: skip
_COMMUNICATION = {"spoke", "discussed", "communicated", "called", "paged", "notified", "informed", "relayed",
                  "conveyed", "telephoned", "phoned", "messaged", "emailed", "d/w", "reviewed"}  # fmt: skip
_PERSON_PREPOSITIONS = {"by", "per", "cc"}
_NAME_CUES = {"patient", "pt", "name", "mother", "father", "wife", "husband", "daughter", "son", "spouse",
              "sister", "brother", "guardian", "signed", "dictated", "transcribed", "electronically"}  # fmt: skip

_ABBREV_CUES = {"pt"}  # a cue written with a dot ("Pt. Garcia")
_MONTHS = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
    "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip
_ORDINAL_WORDS = {
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
    "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
    "twentieth", "thirtieth", "twenty", "thirty",
}  # fmt: skip
_UNITS = {"cm", "mm", "m", "ml", "cc", "l", "mmhg", "hu", "%", "degree", "degrees", "deg", "°", "fr", "french",
          "kv", "kvp", "mas", "mg", "mcg", "g", "kg", "lb", "lbs", "cmh2o", "units", "hours", "hrs", "hr", "days",
          "weeks", "wks", "months", "minutes", "min", "mins", "seconds", "sec"}  # fmt: skip
_YEARS = {"year", "years", "yr", "yrs", "y", "yo", "yof", "yom", "old"}
_NUMBER_ANCHORS = {"rib", "ribs", "level", "levels", "grade", "zone", "zones", "type", "stage", "segment",
                   "segments", "lobe", "class", "x", "by", "times", "to", "and", "or", "through"}  # fmt: skip
_EPONYM_NOUNS = {"catheter", "catheters", "tube", "tubes", "filter", "filters", "drain", "drains", "valve", "valves",
                 "stent", "stents", "pump", "device", "devices", "clip", "clips", "port", "shunt", "sheath", "line",
                 "lines", "lead", "leads", "pacemaker", "reservoir", "fundoplication", "procedure", "repair",
                 "operation", "resection", "sign", "signs", "hump", "syndrome", "disease", "hernia", "tumor",
                 "tumour", "sarcoma", "lymphoma", "diverticulum", "fracture", "deformity", "ring"}  # fmt: skip
_ORDINAL_ANCHORS = {"rib", "ribs", "intercostal", "ics", "level", "levels", "digit", "finger", "toe"}
_DAY_ANCHORS = {"day", "pod", "week"}  # "post-op day 2", "hospital day 5": a course of care, not a date
_LEVEL_ANCHORS = _NUMBER_ANCHORS - {"x", "by", "times", "to", "and", "or", "through"}
_ID_CUES = {"mrn", "id", "acc", "accession", "ssn", "unit", "number", "no", "record", "#", "account", "acct",
            "case", "medicare", "medicaid", "insurance", "policy", "member", "encounter", "visit", "fin", "csn",
            "order", "license", "licence", "nhs", "hospital"}  # fmt: skip
_AGE_CUES = {"age", "aged", "ages"}
# Labels and titles are not PHI themselves (the value after them is): kept even when capitalised in mid-sentence.
_CREDENTIALS = {"md", "do", "phd", "mbbs", "mbchb", "frcr", "frcp", "facr", "dds", "rn", "np", "lpn", "crna", "pa-c",
                "mph", "msc", "bsc", "rt", "rrt", "jr", "sr", "ii", "iii"}  # fmt: skip
_CONTACT_LABELS = {"phone", "tel", "telephone", "cell", "mobile", "pager", "fax", "email", "e-mail", "dob",
                   "address", "ext", "am", "pm"}  # fmt: skip
_LABELS = (
    _FUNCTION_WORDS
    | _TITLES_ABBREV
    | _TITLES_WORD
    | _NAME_CUES
    | _ID_CUES
    | _AGE_CUES
    | _CONTACT_LABELS
    | _CREDENTIALS
)
_FRENCH_NOUNS = {"catheter", "catheters", "tube", "tubes", "drain", "drains", "sheath", "pigtail", "chest",
                 "enteric", "feeding", "nasogastric", "orogastric", "dobhoff", "foley", "line"}  # fmt: skip
# Street suffixes (the common ones of USPS Publication 28, and a few of other countries).
_STREET_SUFFIXES = set(
    """street st streets avenue ave av road rd roads boulevard blvd lane ln drive dr drives court ct courts way ways
    place pl terrace ter square sq squares highway hwy parkway pkwy circle cir crescent close row mews gardens
    garden grove hill hills park parks plaza trail trl alley route rte rue strasse straße via calle avenida apt
    apartment suite ste unit floor box bypass causeway center centers cliff cliffs club common commons corner
    corners creek crossing crossroad cove coves dale dam divide estate estates expressway extension extensions
    falls fall ferry field fields flat flats ford fords forest forge forges fork forks fort freeway gateway glen
    glens green greens harbor harbors haven heights island islands isle junction junctions key keys knoll knolls
    lake lakes landing light lights loaf lock locks lodge loop mall manor manors meadow meadows mill mills mission
    motorway mount mountain mountains neck orchard oval overpass pass passage path pike pine pines plain plains
    point points port ports prairie radial ranch rapid rapids rest ridge ridges river shoal shoals shore shores
    skyway spring springs spur station stravenue stream summit throughway trace track trafficway tunnel turnpike
    underpass union unions valley valleys viaduct view views village villages ville vista walk walks wall well
    wells brook brooks burg burgs bluff bluffs bottom branch bridge bridges canyon cape camp crest curve inlet run
    spurs""".split()
)
_US_STATES = set(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
    "OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR AS GU MP VI FM MH PW AA AE AP".split()
)
# Lower-case particles inside a name ("Morris van Dongen", "Dr. de la Cruz").
PARTICLES = {"van", "von", "de", "da", "del", "della", "di", "du", "le", "la", "der", "den", "ten", "ter", "dos",
             "das", "do", "bin", "ibn", "al", "el", "y", "mac", "ben", "bint", "abu"}  # fmt: skip
_FRACTION_NOUNS = {"of", "views", "view", "projections", "ribs", "levels"}
_UNIT_DESIGNATORS = {"flat", "studio", "apt", "apartment", "suite", "ste", "bldg", "building", "po", "p.o."}
_NUMBER_WORDS_OLD = {"ninety", "hundred"}  # ages of 90 and over, written out
_NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                 "ninety", "hundred", "a", "and"}  # fmt: skip

# Letters/digits together ("92F", "MRN4471923", "T8") are one token; so are letters with their combining marks
# (Devanagari, Thai vowel signs are not \w).
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)+[^\W_]*|(?:[^\W_]|[\u0300-\u036F\u0900-\u0DFF\u0E00-\u0EFF])+|_+|\S")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
# A bare domain needs a lower-case top-level domain that is no word ("effusion.No", "clear.In" are typos, not
# links).
_URL = re.compile(
    r"(?i:\b(?:https?://|ftp://|www\.)\S+)|\b[\w-]{2,}(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|mil|biz|info|uk|au|"
    r"fr|nl|ch|dk|fi|nz|jp|cn|br|mx)\b(?:/\S*)?"
)
_UNIT_SUFFIX = re.compile(r"(?i)^(\d+(?:[.,]\d+)?)(cm|mm|ml|cc|mmhg|hu|kv|kvp|mas|mg|mcg|g|kg|fr|f|%)$")
_AGE_SUFFIX = re.compile(r"(?i)^(\d{1,3})(?:y|yo|yr|yrs|yof|yom|years?)$")
_DEID_MARK = re.compile(r"x{2,}")  # Open-I's de-identification mark, "XXXX"
_SPINE_LEVEL = re.compile(r"(?i)^(?:c[1-8]|t[1-9]|t1[0-2]|l[1-6]|s[1-5])$")  # "S78", "L0" are postcodes
_ORDINAL = re.compile(r"(?i)^\d{1,2}(?:st|nd|rd|th)$")
_PLAIN_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
_TIME = re.compile(r"^(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?$")


@dataclass(frozen=True)
class PhiSpan:
    start: int
    end: int
    category: str


@dataclass(slots=True)
class _Tok:
    start: int
    end: int
    text: str
    low: str
    sentence_start: bool
    category: str | None = None  # set when redacted


def vocabulary() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(clinical, common English, census names), lower case. Loaded once per process."""
    return _word_lists()[:3]


# The rarer part of the English list also holds foreign given names and surnames ("gustav", "pavarotti": ~1% of
# Faker's name parts across 15 locales); with an English derivational ending it is ordinary English (0.07%).
_ENGLISH_SUFFIX = re.compile(
    r"(?:ing|ings|ed|ion|ions|ity|ities|ive|ment|ments|ness|ous|ular|ic|ical|ally|ly|ance|ence|ancy|ency|ant|ent"
    r"|ism|able|ible|ize|ized|ise|ised|ary|ory|ure|ures|ated|ates|ative|al|osis|itis|ies|ses)$"
)


def rare_lower_words() -> frozenset[str]:
    """Words of the English list below COMMON_MIN with an English ending that are no census name: safe only in
    lower case, where they are rarer clinical English ("accentuating", "aerated", "tortuous"); capitalised, they
    stay suspect."""
    return _word_lists()[3]


@lru_cache(maxsize=1)
def _word_lists() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    import names
    import spellchecker

    clinical = {
        w
        for line in _CLINICAL_FILE.read_text().splitlines()
        if not line.startswith("#")
        for w in line.lower().split()
    }
    # the section parser's header names, misspellings included ("IMPRESSON", "COMPARISION")
    sections = json.loads(_SECTIONS_FILE.read_text())
    clinical |= {
        w
        for h in [*sections["header_names"], *sections["main_sections"], *sections["findings_like"]]
        for w in re.findall(r"[a-z]+", h.lower())
    }
    freq = json.loads(
        gzip.decompress((Path(spellchecker.__file__).parent / "resources" / "en.json.gz").read_bytes())
    )
    common = {w for w, n in freq.items() if n >= COMMON_MIN and w.isalpha()}
    census = set()
    for f in ("dist.all.last", "dist.female.first", "dist.male.first"):
        for line in (Path(names.__file__).parent / f).read_text().splitlines():
            if line.strip():
                census.add(line.split()[0].lower())
    rare = {
        w
        for w, n in freq.items()
        if n < COMMON_MIN and w.isalpha() and w not in census and len(w) >= 5 and _ENGLISH_SUFFIX.search(w)
    }
    return frozenset(clinical), frozenset(common), frozenset(census), frozenset(rare)


# Prefixes of clinical English: a lower-case word is safe when its stem is ("reexpanded", "underinflated",
# "hyperlucency", "nonobstructive").
_PREFIXES = ("re", "un", "non", "under", "over", "hyper", "hypo", "sub", "intra", "inter", "peri", "para", "post",
             "pre", "retro", "trans", "supra", "infra", "pseudo", "semi", "multi", "bi", "mid")  # fmt: skip


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """The census given names (a lower-case one joins a name next to it)."""
    import names

    return frozenset(
        line.split()[0].lower()
        for f in ("dist.female.first", "dist.male.first")
        for line in (Path(names.__file__).parent / f).read_text().splitlines()
        if line.strip()
    )


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    prev_end, boundary = 0, True
    for m in _TOKEN.finditer(text):
        t = m.group()
        if "\n" in text[prev_end : m.start()]:
            boundary = True
        out.append(_Tok(m.start(), m.end(), t, t.lower(), boundary))
        before = out[-2].text if len(out) > 1 else ""
        initial = len(before) == 1 and _is_capital(before)
        abbreviation = t == "." and (initial or before.lower() in _TITLES_ABBREV | _PLACE_ABBREV)
        boundary = (t in {".", ":", ";", "!", "?", "(", "[", "*"} and not abbreviation) or (
            boundary and t in {'"', "'"}
        )
        prev_end = m.end()
    return out


def _is_title(t: str) -> bool:
    return t[:1].isupper() and any(c.islower() for c in t[1:])


def _same_case(a: str, b: str) -> bool:
    """Both all capitals, or both capitalised words."""
    return (a.isupper() and b.isupper()) or (_is_title(a) and _is_title(b))


def _is_capital(t: str) -> bool:
    """Capitalised, or in a script without case (a Hebrew, Devanagari or Han name reads as capitalised)."""
    return t[:1].isupper() or (t[:1].isalpha() and t[:1].lower() == t[:1].upper())


_DIGIT = re.compile(r"\d").search
_LETTER = re.compile(r"[^\W\d_]").search


def _is_word(t: str) -> bool:
    return t.isalpha() or (_LETTER(t) is not None and _DIGIT(t) is None)


def _has_digit(t: str) -> bool:
    return _DIGIT(t) is not None


def _int(t: str) -> int | None:
    return int(t) if t.isdigit() and len(t) <= 4 else None


class _Scan:
    """One pass over a text's tokens; `mark` redacts a token with a category (first category wins)."""

    def __init__(self, text: str, shielded: list[tuple[int, int]]):
        self.clinical, self.common, self.census = vocabulary()
        self.given = given_names()
        self.rare = rare_lower_words()
        self.text = text
        self.toks = [t for t in _tokens(text) if not any(s <= t.start < e for s, e in shielded)]
        self.kept: set[int] = set()  # clinical numbers already judged (the second half of a fraction)

    def mark(self, i: int, category: str) -> None:
        if 0 <= i < len(self.toks) and self.toks[i].category is None:
            self.toks[i].category = category

    def low(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) else ""

    def safe_word(self, low: str) -> bool:
        return (
            low in self.clinical
            or low in self.common
            or low in _LABELS
            or (len(low) == 1 and low.isascii())
            or _DEID_MARK.fullmatch(low) is not None
        )

    def safe_lower(self, low: str) -> bool:
        """Safe when written in lower case: a safe word, a rarer English word that is no census name, or a
        clinical prefix on a safe stem."""
        return self.safe_word(low) or low in self.rare or self.prefixed(low)

    def prefixed(self, low: str) -> bool:
        """A clinical prefix on a safe stem ("biapical", "midlung"); never a census name ("Underwood")."""
        return low not in self.census and any(
            low.startswith(p) and len(low) - len(p) >= 4 and self.safe_word(low[len(p) :]) for p in _PREFIXES
        )

    def _ordinary(self, low: str) -> bool:
        """A common word that is no census name (after a cue such as "Patient" it is no name either)."""
        return low in self.common and low not in self.census

    # ---------------------------------------------------------------------------------------------- words

    def names_after_communication(self) -> None:
        """The person a finding was communicated to ("spoke with alan shaffer", "paged bud bright"): census
        names after the verb are names even in lower case (radiology reports document who was told)."""
        toks = self.toks
        for i, t in enumerate(toks):
            if t.low in _PERSON_PREPOSITIONS and i + 2 < len(toks):
                # "read by JAMES WU", "per john smith": a census given name and surname written alike, where the
                # case cue is missing (an all-capitals report, a lower-case note)
                a, b = toks[i + 1], toks[i + 2]
                if (
                    _is_word(a.text)
                    and _is_word(b.text)
                    and a.low in self.given
                    and b.low in self.census
                    and not {a.low, b.low} & (self.clinical | _LABELS)
                    and (a.text.isupper() == b.text.isupper() and a.text.islower() == b.text.islower())
                ):
                    self.mark(i + 1, NAME)
                    self.mark(i + 2, NAME)
                continue
            if t.low not in _COMMUNICATION:
                continue
            j = i + 1
            if self.low(j) in {"with", "to", "by"}:
                j += 1
            taken = 0
            while j < len(toks) and taken < 3 and _is_word(toks[j].text):
                w = toks[j]
                if w.low in self.clinical or w.low in _LABELS or w.low not in self.census:
                    break
                self.mark(j, NAME)
                taken += 1
                j += 1

    def names_after_titles(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            role_label = t.low in _ROLES and self.low(i + 1) == ":"  # "Referring physician: Hope Mass"
            if not (t.low in _TITLES_ABBREV or t.low in _TITLES_WORD or t.low in _NAME_CUES or role_label):
                continue
            if t.low == "dr" and i > 0 and _has_digit(toks[i - 1].text):
                continue  # "12 Oak Dr" is a street; the address pass takes it
            j = i + 1
            # an abbreviation's dot ("Dr."), a label's colon ("Patient:"); a sentence's end stops the chain
            abbrev = t.low in _TITLES_ABBREV or t.low in _ABBREV_CUES
            while j < len(toks) and toks[j].text in ({".", ":"} if abbrev else {":", ","}):
                j += 1
            taken, last = 0, ""
            while j < len(toks) and taken < 6:
                w = toks[j]
                if not _is_word(w.text) or (
                    w.low in _FUNCTION_WORDS - {"and"} and not (_is_capital(w.text) and w.low in _MODALS)
                ):
                    break  # a capitalised modal is a name here: "PATIENT: WILL MOODY", "Dr. May"
                if w.low == "and":  # "Dr. X and Y": go on only when a name follows
                    if j + 1 < len(toks) and _is_capital(toks[j + 1].text) and not toks[j + 1].sentence_start:
                        j += 1
                        continue
                    break
                if (
                    w.low in PARTICLES
                    and j + 1 < len(toks)
                    and (_is_capital(toks[j + 1].text) or toks[j + 1].low in PARTICLES)
                ):
                    self.mark(j, NAME)  # "Dr. van der Berg"
                    j += 1
                    continue
                first = taken == 0
                capital = _is_capital(w.text)
                if t.low in _TITLES_ABBREV and first and w.low not in _TITLES_WORD:
                    pass  # whatever its case
                elif not capital and (self.safe_word(w.low)):
                    break
                elif capital and w.low in self.clinical and not first and not _same_case(w.text, last):
                    break  # "PATIENT: RUSTY HEART" goes on; "Dr. Smith. Heart size" does not
                elif t.low in _NAME_CUES and (
                    not capital or (first and (w.low in self.clinical or self._ordinary(w.low)))
                ):
                    break  # "Patient: WILL MOODY" is a name; "Patient positioning", "Patient Rotated" are not
                elif role_label and not capital:
                    break
                if w.low in _TITLES_ABBREV or w.low in _TITLES_WORD:
                    j += 1
                    continue  # "Dr. Prof. X"
                self.mark(j, NAME)
                last = w.text
                taken += 1
                j += 1
                while (
                    j < len(toks)
                    and toks[j].text in {".", "'", "-"}
                    and j + 1 < len(toks)
                    and _is_word(toks[j + 1].text)
                    and (toks[j].text != "." or len(w.text) == 1)
                    and (_is_capital(toks[j + 1].text) or toks[j].text == "-" or len(w.text) == 1)
                ):
                    j += 1  # "J. Smith", "O'Brien", "Garcia-Lopez", "o'neil"
                    if (
                        toks[j - 1].text in {"'", "-"}
                        and toks[j - 1].start == toks[j - 2].end == toks[j].start - 1
                    ):
                        self.mark(j, NAME)  # the rest of a joined name, whatever its case
                        last = toks[j].text
                        j += 1

    def words(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            if t.category is not None or not _is_word(t.text):
                continue
            low = t.low
            capital = _is_capital(t.text)
            if not (
                self.safe_word(low)
                or (not capital and self.safe_lower(low))
                or (t.sentence_start and self.prefixed(low))  # "Biapical pleural thickening"
            ):
                # a name (validation flags it) when capitalised in mid-sentence; otherwise an unknown word (a rare
                # term, a typo, an acronym, a sentence's first word): redacted, not flagged
                proper = _is_capital(t.text) and not t.sentence_start and not t.text.isupper()
                self.mark(i, NAME if proper and not self._eponym(i) else WORD)
            elif (
                _is_title(t.text)
                and not t.sentence_start
                and low not in self.clinical
                and low not in _LABELS
                and low not in _MONTHS
            ):
                # a capitalised word in mid-sentence
                self.mark(i, NAME if low in self.census and not self._eponym(i) else WORD)
        # A word next to a name is part of it: "Rose Hill", "Port Karen", an initial ("J. Smith"), a particle
        # ("van Dongen"), a lower-case given name ("alan shaffer"), an all-capitals name ("MEI-CHEN WANG").
        mixed_case = sum(t.text.isupper() and len(t.text) > 1 for t in toks) < 0.3 * max(1, len(toks))
        changed = True
        while changed:
            changed = False
            for i, t in enumerate(toks):
                if t.category is None and _is_word(t.text) and self._joins_name(i, mixed_case):
                    self.mark(i, NAME)
                    changed = True

    def _eponym(self, i: int) -> bool:
        """A capitalised word right before a device, procedure or sign noun ("Foley catheter", "Nissen
        fundoplication", "Sengstaken-Blakemore tube"): an eponym or brand. Still redacted when unknown, but as a
        word, not a name: public reports write such eponyms and validation should not quarantine them."""
        j = i + 1
        while self.low(j) == "-" and j + 1 < len(self.toks) and _is_word(self.toks[j + 1].text):
            j += 2
        return self.low(j) in _EPONYM_NOUNS

    def _neighbours(self, i: int) -> list[_Tok]:
        """The tokens either side, looking past an initial's dot ("J. Swan") and a hyphen ("MEI-CHEN")."""
        toks, out = self.toks, []
        for step in (-1, 1):
            k = i + step
            if 0 <= k < len(toks) and toks[k].text in {".", "-", "'"} and 0 <= k + step < len(toks):
                k2 = k + step
                initial = toks[min(k2, i)] if toks[k].text in {".", "'"} else None
                if toks[k].text == "-" or (
                    initial is not None and len(initial.text) == 1 and initial.text.isupper()
                ):
                    k = k2
            if 0 <= k < len(toks):
                out.append(toks[k])
        return out

    def _joins_name(self, i: int, mixed_case: bool) -> bool:
        t = self.toks[i]
        initial = len(t.text) == 1 and t.text.isupper() and self.low(i + 1) in {".", "'", "-"}
        if (t.low in _LABELS - PARTICLES and not initial) or t.low in _MONTHS:
            return False
        near = [n for n in self._neighbours(i) if n.category in (NAME, WORD) and _is_word(n.text)]
        if (
            _is_title(t.text)
            and t.low in self.census
            and t.low not in self.clinical
            and self.low(i + 1) == ","
            and i + 2 < len(self.toks)
            and self.toks[i + 2].category == NAME
            and _is_title(self.toks[i + 2].text)
        ):
            return True  # a surname before its given name: "Smith, John"
        if not near:
            return False
        if len(t.text) == 1 and t.text.isupper():  # an initial, or the first letter of "O'Brien", "S'fiso"
            if t.text in {"A", "I"} and t.sentence_start and self.low(i + 1) not in {".", "'"}:
                # the article or pronoun opening a sentence, unless a name (not an unknown word) follows
                return any(n.category == NAME and _is_capital(n.text) for n in near)
            return self.low(i + 1) == "'" or any(_is_capital(n.text) for n in near)
        if t.low in PARTICLES:
            return len(near) == 2 or any(n.category == NAME for n in near)
        # all capitals in mixed-case text: a census name next to a name
        if t.text.isupper() and len(t.text) > 1:
            return (
                mixed_case
                and t.low in self.census
                and t.low not in self.clinical
                and any(n.text.isupper() for n in near)
            )
        if _is_title(t.text):
            # a clinical word joins only a capitalised name (or initial) in mid-sentence
            if t.low in self.clinical:
                # before a device noun an unknown word is not enough: "Sengstaken-Blakemore tube" (see _eponym)
                eponym = self._eponym(i)
                return not t.sentence_start and any(
                    (n.category == NAME or not eponym) and (_is_title(n.text) or n.text.isupper())
                    for n in near
                )
            return any(_is_capital(n.text) for n in near)
        # lower case: a census given name next to a lower-case name ("spoke with alan shaffer")
        if t.low in self.clinical:
            return False
        if t.low in self.given and any(not _is_capital(n.text) for n in near):
            return True
        # a rarer word that is safe only in lower case ("marian baa") is part of a lower-case name next to it
        return not self.safe_word(t.low) and any(n.category == NAME and not _is_capital(n.text) for n in near)

    # -------------------------------------------------------------------------------------------- numbers

    def _next_word(self, i: int, skip: set[str] | None = None) -> int:
        j = i + 1
        skip = skip or set()
        while j < len(self.toks) and (self.toks[j].text in skip):
            j += 1
        return j

    def _unit_after(self, i: int) -> bool:
        """Token i (a number) is followed by a unit, through a range or a product: `2-3 cm`, `2.5 x 3.1 cm`."""
        j = i + 1
        while j < len(self.toks):
            t = self.toks[j]
            if t.low in {"fr", "french"}:  # a catheter size (3-40 Fr); "44 French Street" is an address
                value = _int(self.toks[i].text)
                return value is not None and value <= 40
            if t.low in _UNITS or t.text == "%" or _UNIT_SUFFIX.match(t.text):
                return True
            if t.low in {"-", "x", "×", "to", "by", "/"} or _PLAIN_NUMBER.match(t.text):
                j += 1
                continue
            return False
        return False

    def _clinical_number(self, i: int) -> bool:
        toks = self.toks
        t = toks[i]
        prev = self.low(i - 1)
        prev2 = self.low(i - 2)
        value = _int(t.text)
        if prev in _AGE_CUES or (prev in {":", "="} and prev2 in _AGE_CUES):
            return False
        if prev in _ID_CUES or prev2 in _ID_CUES and prev in {":", "#", "."}:
            return False
        if self._month_near(i):
            return False  # "December 5 shows", "Jan. 12"
        nxt = self.low(i + 1)
        if nxt in _YEARS or (nxt == "-" and self.low(i + 2) in _YEARS):
            return value is not None and value < 90  # an age under 90 is not PHI
        if self._unit_after(i):
            return True
        if prev in _LEVEL_ANCHORS:
            return True
        if prev in _DAY_ANCHORS and value is not None and value <= 60 and prev2 not in _MONTHS:
            return True
        if prev in {"x", "×", "-", "/", "to", "and", "or", "through"}:
            k = i - 2
            if 0 <= k and (_SPINE_LEVEL.match(toks[k].text) or self.low(k - 1) in _NUMBER_ANCHORS):
                return True  # C5/6, T11-12, ribs 4 and 5
        if nxt == "/" and i + 2 < len(toks) and _PLAIN_NUMBER.match(toks[i + 2].text):
            # a fraction or pair: "3/4 views", "1/2 of the left lung", "ribs 4/5"; else a date ("23/11")
            if self.low(i + 3) in _FRACTION_NOUNS or prev in _LEVEL_ANCHORS:
                self.kept.add(i + 2)
                return True
            return False
        if _PLAIN_NUMBER.match(t.text) and value is not None and value <= 20:
            j = self._next_word(i, {"-"})
            if j < len(toks) and toks[j].low in self.clinical and toks[j].low not in _YEARS:
                return True  # a count of clinical things: "2 views", "3 nodules"
            if nxt in {".", ")"} and (t.sentence_start or i == 0) and not t.text.startswith("0"):
                return True  # a list marker
        return False

    def numbers(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            if t.category is not None or not _has_digit(t.text) or i in self.kept:
                continue
            text = t.text
            if _SPINE_LEVEL.match(text) or _TIME.match(text):
                continue  # a level (T8), a time of day (10:15: not an identifier; a date next to it is)
            if _ORDINAL.match(text):
                j = self._next_word(i, {"-", ",", "and", "through", "to"} | {
                    x.text for x in toks[i + 1 : i + 6] if _ORDINAL.match(x.text)})  # fmt: skip
                if j < len(toks) and toks[j].low in self.clinical and toks[j].low not in _MONTHS:
                    continue  # "left 4th rib", "4th-6th ribs"
                if not self._month_near(i) and any(
                    x.low in _ORDINAL_ANCHORS for x in toks[max(0, i - 6) : i]
                ):
                    continue  # "rib fractures, 5th through 8th", "ribs 4th and 5th"
                self.mark(i, DATE if self._month_near(i) else NUMBER)
                continue
            age = _AGE_SUFFIX.match(text)
            if age:  # "97yo", "92y": an age (PHI at 90 and over; any age here is no clinical number)
                self.mark(i, AGE if int(age.group(1)) >= 90 else NUMBER)
                continue
            unit = _UNIT_SUFFIX.match(text)
            if unit:
                if unit.group(2).lower() == "f":  # 14F is a catheter size; 92F an age and sex
                    j = self._next_word(i, {"-"})
                    if j < len(toks) and toks[j].low in _FRENCH_NOUNS:
                        continue
                    value = _int(unit.group(1))
                    self.mark(i, AGE if value is not None and value >= 90 else NUMBER)
                    continue
                continue
            if _PLAIN_NUMBER.match(text) and self._clinical_number(i):
                continue
            self._mark_number_group(i)

    def _month_near(self, i: int) -> bool:
        for k in (i - 3, i - 2, i - 1, i + 1, i + 2, i + 3):
            if 0 <= k < len(self.toks) and self.toks[k].low in _MONTHS:
                between = self.toks[min(i, k) + 1 : max(i, k)]
                if all(b.text in {"-", "/", ".", ",", "of", "the"} for b in between):
                    return True
        return False

    def _mark_number_group(self, i: int) -> None:
        """Redact the run of digit tokens joined by separators around token i, categorised by its shape."""
        toks = self.toks
        lo = hi = i
        seps = {"-", "/", ".", "(", ")", "+", ":"}

        def joined(a: _Tok, sep: _Tok, b: _Tok) -> bool:  # "03/14", "555-0143", "(617) 555": not "12. 3"
            return (
                sep.text in seps
                and _has_digit(a.text)
                and _has_digit(b.text)
                and (a.end == sep.start and sep.end == b.start or sep.text == ")" and a.end == sep.start)
            )

        while lo - 2 >= 0 and joined(toks[lo - 2], toks[lo - 1], toks[lo]) and toks[lo - 2].category is None:
            lo -= 2
        while hi + 2 < len(toks) and joined(toks[hi], toks[hi + 1], toks[hi + 2]):
            hi += 2
        # spaced groups of a phone or SSN ("+44 20 7946 0958", "078 05 1120"): digits-only tokens in a row
        while (
            hi + 1 < len(toks)
            and toks[hi + 1].text.isdigit()
            and len(toks[hi + 1].text) >= 2
            and (toks[hi + 1].start - toks[hi].end <= 1)
        ):
            hi += 1
        if (
            lo >= 2
            and toks[lo - 1].text == "-"
            and toks[lo - 2].text.isupper()
            and toks[lo - 2].end == toks[lo - 1].start
        ):
            lo -= 2  # a letter prefix of the id ("PT-22817")
        group = toks[lo : hi + 1]
        raw = self.text[group[0].start : group[-1].end]
        digits = sum(c.isdigit() for c in raw)
        has_alpha = any(c.isalpha() for c in raw)
        prev = self.low(lo - 1)
        prev2 = self.low(lo - 2)
        plus = lo > 0 and toks[lo - 1].text == "+"
        if prev in _AGE_CUES or (prev in {":", "="} and prev2 in _AGE_CUES):
            category = AGE
        elif prev in _ID_CUES or (prev in {":", "#"} and prev2 in _ID_CUES):
            category = ID
        elif self._month_near(lo) or self._month_near(hi):
            category = DATE
        elif re.fullmatch(r"(?:19|20)\d{6}(?:[tT]\d{2,6})?", raw) or re.fullmatch(
            r"\d{1,4}[-/.]\d{1,2}(?:[-/.]\d{2,4})?(?:[tT ]\d{1,2}:\d{2}(?::\d{2})?)?", raw
        ):
            category = DATE
        elif plus or (not has_alpha and digits >= 7 and re.search(r"[-. ()]", raw)):
            category = CONTACT
        elif digits >= 5 or (has_alpha and digits >= 3):
            category = ID
        elif self.low(hi + 1) in _YEARS or (self.low(hi + 1) == "-" and self.low(hi + 2) in _YEARS):
            category = AGE
        elif re.fullmatch(r"(?:19|20)\d{2}", raw):
            category = DATE
        else:
            category = NUMBER
        for k in range(lo, hi + 1):
            self.mark(k, category)
        if plus:
            self.mark(lo - 1, CONTACT)

    # ----------------------------------------------------------------------------------- composite shapes

    def dates_and_ages(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            if t.low in _MONTHS and t.category is None:
                for k in (i - 3, i - 2, i - 1, i + 1, i + 2, i + 3):
                    if not 0 <= k < len(toks):
                        continue
                    other = toks[k]
                    between = toks[min(i, k) + 1 : max(i, k)]
                    if not all(b.text in {"-", "/", ".", ",", "of", "the"} for b in between):
                        continue
                    if (
                        (other.category is not None and _has_digit(other.text))
                        or other.low in _ORDINAL_WORDS
                        or (_ORDINAL.match(other.text))
                    ):
                        self.mark(i, DATE)
                        if other.low in _ORDINAL_WORDS:
                            self.mark(k, DATE)
                            if self.low(k - 1) == "-" and self.low(k - 2) in {"twenty", "thirty"}:
                                self.mark(k - 2, DATE)  # "twenty-first"
                        if _has_digit(other.text):
                            toks[k].category = DATE
                        break
            if t.low in _NUMBER_WORDS_OLD:  # "ninety-two-year-old", "one hundred and one years"
                j, span = i, []
                k = i
                while k >= 0 and toks[k].low in _NUMBER_WORDS | {"-"}:
                    k -= 1
                j = k + 1
                k = i
                while k < len(toks) and toks[k].low in _NUMBER_WORDS | {"-"}:
                    span.append(k)
                    k += 1
                if (
                    any(toks[m].low in _YEARS for m in range(k, min(k + 3, len(toks))))
                    or self.low(j - 1) in _AGE_CUES
                ):
                    for m in range(j, k):
                        if toks[m].text != "-" and toks[m].low not in {"a", "and"}:
                            self.mark(m, AGE)

    def addresses(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            if _has_digit(t.text) and not _UNIT_SUFFIX.match(t.text) and not self._unit_after(i):
                words = []
                for j in range(i + 1, min(i + 6, len(toks))):
                    w = toks[j]
                    if not _is_word(w.text) or (
                        w.low not in _STREET_SUFFIXES and (w.low in self.clinical or w.low in _FUNCTION_WORDS)
                    ):
                        break  # "4 cm beyond the GE junction" is no address
                    words.append(j)
                    if (
                        toks[j].low in _STREET_SUFFIXES or toks[j].low.removesuffix("s") in _STREET_SUFFIXES
                    ) and len(words) >= 2:
                        for k in [i, *words]:
                            toks[k].category = toks[k].category if toks[k].category in {NAME} else ADDRESS
                        break
            if (
                t.low == "box"
                and self.low(i - 1) == "po"
                and i + 1 < len(toks)
                and _has_digit(toks[i + 1].text)
            ):
                toks[i - 1].category = ADDRESS  # "PO Box 856"
            if (
                (t.low in _UNIT_DESIGNATORS or t.low in {"unit", "box"})
                and i + 1 < len(toks)
                and _has_digit(toks[i + 1].text)
            ):
                toks[i].category = ADDRESS  # "Flat 41u", "Studio 10", "Apt 3"
                toks[i + 1].category = ADDRESS
            # a labelled address: to the end of its sentence
            if t.low == "address" and self.low(i + 1) == ":":
                j = i + 2
                while j < len(toks) and not (
                    toks[j].text in {".", ";"} and (j + 1 == len(toks) or toks[j + 1].start > toks[j].end)
                ):
                    if toks[j].text not in {",", "-", "/", "#"} and not toks[j].text.startswith("_"):
                        toks[j].category = ADDRESS
                    j += 1
            if t.text in _US_STATES and i + 1 < len(toks) and re.fullmatch(r"\d{5}", toks[i + 1].text):
                toks[i].category = ADDRESS
                toks[i + 1].category = ADDRESS
                k = i - 1 if self.low(i - 1) == "," else i  # the city before ", ST 12345"
                for c in range(k - 1, max(k - 4, -1), -1):
                    if not (_is_word(toks[c].text) and _is_capital(toks[c].text)) or toks[c].low in _LABELS:
                        break
                    toks[c].category = ADDRESS
                if i + 3 < len(toks) and toks[i + 2].text == "-" and re.fullmatch(r"\d{4}", toks[i + 3].text):
                    toks[i + 3].category = ADDRESS
                    toks[i + 2].category = ADDRESS


def find_phi(text: str, english: bool = True) -> list[PhiSpan]:
    """Spans of `text` to redact, in order, with their categories (adjacent tokens of one category merged).

    The word lists are English. For text in another language (`english=False`: PadChest's Spanish reports)
    only what does not depend on them runs: titles, numbers, dates, contacts, addresses, ages."""
    shielded: list[PhiSpan] = []
    for pattern in (_EMAIL, _URL):
        for m in pattern.finditer(text):
            end = m.start() + len(m.group().rstrip(".,;:)!?'\""))  # a URL at a sentence's end
            if not any(s.start <= m.start() < s.end for s in shielded):
                shielded.append(PhiSpan(m.start(), end, CONTACT))
    scan = _Scan(text, [(s.start, s.end) for s in shielded])
    scan.names_after_titles()
    if english:
        scan.names_after_communication()
    scan.addresses()
    scan.numbers()
    scan.dates_and_ages()
    if english:
        scan.words()
    spans = shielded + [PhiSpan(t.start, t.end, t.category) for t in scan.toks if t.category is not None]
    return _merge(text, sorted(spans, key=lambda s: s.start))


_JOIN = re.compile(r"[ \t\-/,:.()+']*")


def _merge(text: str, spans: list[PhiSpan]) -> list[PhiSpan]:
    out: list[PhiSpan] = []
    for s in spans:
        if out and s.start <= out[-1].end:
            last = out[-1]
            out[-1] = PhiSpan(last.start, max(last.end, s.end), last.category)
            continue
        if out and out[-1].category == s.category:
            gap = text[out[-1].end : s.start]
            if _JOIN.fullmatch(gap) and not re.search(r"\.\s", gap):
                out[-1] = PhiSpan(out[-1].start, s.end, out[-1].category)
                continue
        out.append(s)
    return out


def redact(text: str, spans: list[PhiSpan]) -> str:
    parts, last = [], 0
    for s in spans:
        parts.append(text[last : s.start])
        parts.append(REDACTED)
        last = s.end
    parts.append(text[last:])
    return "".join(parts)


def scrub_text(text: str) -> str:
    return redact(text, find_phi(text))


@lru_cache(maxsize=4096)  # the images of one study share its report text, and sit next to each other
def flagged_categories(text: str, english: bool = True) -> frozenset[str]:
    """The categories validation quarantines a row for (tasks/validate.py's PHI backstop)."""
    return frozenset(s.category for s in find_phi(text, english) if s.category in FLAGGED)
