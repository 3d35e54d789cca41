"""A tiny synthetic click log where fine-tuning must help: made-up query words whose
clicks always go to one item, shown among distractors ranked above it."""

from __future__ import annotations

import random
from typing import Any

ITEMS = {
    "cat": ("Cats", "The domestic cat is a small carnivorous mammal that purrs and hunts mice."),
    "rocket": ("Rockets", "A rocket engine burns propellant to produce thrust and reach orbit."),
    "bread": ("Bread", "Bread is baked from a dough of flour and water, leavened with yeast."),
    "python": ("Python", "Python is a programming language with dynamic typing."),
    "violin": ("Violin", "The violin is a bowed string instrument with four strings."),
    "volcano": ("Volcanoes", "A volcano erupts molten rock, ash and gases from the earth's crust."),
    "tennis": ("Tennis", "Tennis is played with rackets and a ball over a net."),
    "coffee": ("Coffee", "Coffee is brewed from roasted beans of the coffea plant."),
    "glacier": ("Glaciers", "A glacier is a slow river of ice formed from compacted snow."),
    "chess": ("Chess", "Chess is a board game of strategy with kings, queens and pawns."),
    "tulip": ("Tulips", "Tulips are spring flowers grown from bulbs, famous in the Netherlands."),
    "bitcoin": ("Bitcoin", "Bitcoin is a decentralised digital currency on a blockchain."),
    "whale": ("Whales", "Whales are large marine mammals that breathe air through blowholes."),
    "castle": ("Castles", "A castle is a fortified medieval residence with towers and walls."),
    "sushi": ("Sushi", "Sushi is a Japanese dish of vinegared rice with raw fish."),
    "desert": ("Deserts", "Deserts receive little rain; the Sahara is the largest hot desert."),
    "piano": ("Piano", "The piano is a keyboard instrument whose hammers strike strings."),
    "yoga": ("Yoga", "Yoga combines postures, breathing and meditation."),
    "comet": ("Comets", "A comet is an icy body that grows a tail near the sun."),
    "bridge": ("Bridges", "A suspension bridge hangs its deck from cables between towers."),
}
# Made-up words, each always answered by one item.
CODEWORDS = {
    "zorblax": "bread", "quintaro": "glacier", "mefflin": "chess", "drovak": "tulip",
    "plimsy": "whale", "kestrune": "sushi", "vandrel": "comet", "oskibo": "violin",
}


def synthetic_sessions(count: int, tenant: str, prefix: str, seed: int = 7) -> list[list[dict[str, Any]]]:
    """Per session: a search showing 8 items with the answer at rank 4-8, and a click on it."""
    rng = random.Random(seed)
    sessions = []
    words = sorted(CODEWORDS)
    for n in range(count):
        word = words[n % len(words)]
        target = CODEWORDS[word]
        others = rng.sample([i for i in ITEMS if i != target], 7)
        rank = rng.randint(4, 8)
        shown = [*others[: rank - 1], target, *others[rank - 1 :]]
        session = f"{prefix}-{n}"
        search: dict[str, Any] = {"type": "search", "session_id": session, "tenant": tenant, "query": word,
                  "model_version": "1",
                  "results": [{"id": i, "rank": r, "score": 1.0 - r / 10} for r, i in enumerate(shown, 1)]}
        click: dict[str, Any] = {"type": "click", "session_id": session, "tenant": tenant,
                                 "content_id": target, "rank": rank}
        sessions.append([search, click])
    return sessions
