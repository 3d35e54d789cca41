"""Access rules: for each route, another tenant's key and a lower scope are refused and
nothing of theirs changes."""
