"""The indexer service. Its subscribers are wired here as its issue lands."""

from consumers.service import create_app, create_broker

broker, registry = create_broker("indexer")
app = create_app("indexer", broker, registry)
