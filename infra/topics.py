"""`python -m infra.topics`: create the registry's topics on the configured cluster."""

from __future__ import annotations

import asyncio

from core.config import get_settings
from infra.kafka import ensure_topics

if __name__ == "__main__":
    created = asyncio.run(ensure_topics(get_settings().bootstrap_servers))
    print("created:", ", ".join(created) if created else "nothing (all topics exist)")
