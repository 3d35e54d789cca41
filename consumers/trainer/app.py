"""The trainer service. Its subscribers are wired here as its issue lands."""

from consumers.service import create_app, create_broker

broker, registry = create_broker("trainer")
app = create_app("trainer", broker, registry)
