"""English for what a detector found: counts as words, plurals, a/an, and captions of objects.

    describe_objects([("dog", 2), ("cat", 1)])                 -> "two dogs and a cat"
    describe_relation(("person", 3), "left of", ("bus", 2))    -> "three people to the left of two buses"
    describe_objects([("scissors", 2), ("ukulele", 1)])        -> "two pairs of scissors and a ukulele"

Nouns are object names as a detector is asked for them ("dog", "traffic light"); in a name of
several words the last one is the noun that takes the plural ("traffic lights"). IPR's relabelled
prompts are training text, so the English comes from a maintained inflection library (`inflect`:
plurals, and a/an by sound: "a ukulele", "an hour", "an MRI") with small tested tables on top for
what it gets wrong or cannot know: names that are a pair ("a pair of scissors", "two pairs of
skis"), a few plurals, lower-case acronyms and leading digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import inflect

_ENGINE = inflect.engine()

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")

RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

# Plurals inflect gets wrong or that read better the classical way (it says 'thiefs', 'waltzzes',
# 'cactuses'); these win over it.
IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice", "goose": "geese",
    "foot": "feet", "tooth": "teeth", "ox": "oxen", "louse": "lice", "die": "dice",
    "knife": "knives", "wife": "wives", "life": "lives", "leaf": "leaves", "loaf": "loaves", "wolf": "wolves",
    "shelf": "shelves", "calf": "calves", "half": "halves", "thief": "thieves", "scarf": "scarves",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "mango": "mangoes", "volcano": "volcanoes",
    "cactus": "cacti", "fungus": "fungi", "waltz": "waltzes", "human": "humans", "german": "germans",
    "doberman": "dobermans", "talisman": "talismans", "shrimp": "shrimp", "bison": "bison",
}
# Nouns whose plural is the noun itself.
UNCHANGED_PLURALS = {"sheep", "fish", "deer", "moose", "bison", "salmon", "trout", "aircraft", "spacecraft", "hovercraft",
                     "series", "species", "shrimp", "cod"}

# Names that are plural and mean one thing, or one pair of things: counted in pairs ("a pair of
# scissors", "two pairs of skis"), their plural is the name itself. COCO's 'skis' and 'scissors'
# first among them; LVIS's singular 'ski', 'sock', 'glove' are ordinary nouns.
PAIRS = {
    "scissors", "shears", "clippers", "pliers", "tongs", "tweezers", "chopsticks",
    "glasses", "eyeglasses", "sunglasses", "spectacles", "goggles", "binoculars",
    "headphones", "earphones", "earbuds", "earmuffs", "earrings",
    "jeans", "pants", "trousers", "shorts", "leggings", "tights", "pajamas", "pyjamas", "overalls", "briefs",
    "skis", "skates", "socks", "stockings", "gloves", "mittens", "shoes", "boots", "sneakers", "sandals", "slippers",
    "flip-flops", "handcuffs", "crutches",
}

# Letters read out one by one, written in lower case as detector vocabularies do: the article
# goes by the first letter's name ("an suv", "an atm", "a tv"). Capitals are left to inflect.
_ACRONYMS = {"atm", "bmx", "cd", "cctv", "dvd", "dj", "f1", "gps", "hdmi", "hvac", "lcd", "led", "mp3", "mri", "nba",
             "nfl", "pc", "rv", "sd", "suv", "tv", "ufo", "usb", "vcr", "vr"}
# Words inflect gives the wrong article.
_AN_WORDS = {"usher", "umami"}


def number_word(n: int) -> str:
    """'two' for 2; numbers past twenty as digits."""
    if n < 0:
        raise ValueError(f"a count cannot be negative: {n}")
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _split(name: str) -> tuple[str, str]:
    """(the words before the noun, the noun): 'traffic light' -> ('traffic', 'light')."""
    head, _, noun = " ".join(name.split()).rpartition(" ")
    return head, noun


def _is_pair(name: str) -> bool:
    return _split(name)[1].lower() in PAIRS


@lru_cache(maxsize=4096)
def plural(name: str) -> str:
    """English plural of an object name: 'dogs', 'people', 'buses', 'knives', 'sheep', 'snowmen',
    'traffic lights'; a name that is already plural ('scissors', 'skis') stays as it is."""
    head, noun = _split(name)
    lower = noun.lower()
    if lower in PAIRS or lower in UNCHANGED_PLURALS:
        many = noun
    elif lower in IRREGULAR_PLURALS:
        many = IRREGULAR_PLURALS[lower]
    elif noun.isupper() or lower in _ACRONYMS:
        many = noun + "s"  # MRIs, tvs
    else:
        many = _ENGINE.plural_noun(noun) or noun + "s"
    return f"{head} {many}" if head else many


@lru_cache(maxsize=4096)
def indefinite_article(name: str) -> str:
    """'a' or 'an' for a name by its first sound: 'an apple', 'a unicorn', 'a ukulele', 'an hour',
    'a one-way sign', 'an MRI', 'an 8-ball'. A pair takes 'a' ('a pair of scissors')."""
    if _is_pair(name):
        return "a"
    first, _, rest = " ".join(name.split()).partition(" ")
    lower = first.lower()
    if lower in _AN_WORDS:
        return "an"
    if lower.split("-")[0] in _ACRONYMS:  # spelled out: the first letter's name ('an suv', 'a tv')
        return "an" if lower[0] in "aefhilmnorsx" else "a"
    if digits := re.match(r"\d+", first):  # '8-ball', '11 ball': said as number words
        first = _ENGINE.number_to_words(digits.group()) + first[digits.end():]
    return _ENGINE.a(f"{first} {rest}".strip()).split(" ", 1)[0].lower()


def count_phrase(name: str, count: int) -> str:
    """'a giraffe', 'an apple', 'two dogs', 'three people', 'a pair of scissors', 'two pairs of skis'."""
    if count < 1:
        raise ValueError(f"nothing to say of {count} {name!r}")
    if _is_pair(name):
        return f"a pair of {name}" if count == 1 else f"{number_word(count)} pairs of {name}"
    if count == 1:
        return f"{indefinite_article(name)} {name}"
    return f"{number_word(count)} {plural(name)}"


def describe_objects(counts: Sequence[tuple[str, int]]) -> str:
    """Objects and their counts as one caption, in the given order: 'two dogs, a cat and an apple'."""
    phrases = [count_phrase(name, count) for name, count in counts]
    if not phrases:
        raise ValueError("no objects to describe")
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe_relation(first: tuple[str, int], relation: str, second: tuple[str, int]) -> str:
    """'a dog to the left of two cats' (relation one of left of, right of, above, below)."""
    if relation not in RELATION_PHRASES:
        raise ValueError(f"unknown relation {relation!r}; relations are {', '.join(RELATION_PHRASES)}")
    return f"{count_phrase(*first)} {RELATION_PHRASES[relation]} {count_phrase(*second)}"
