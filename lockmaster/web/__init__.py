"""lockmaster's web service: the public, read-only status page and its JSON API (docs/web.md).

app.py builds the aiohttp application from ROUTE_MODULES; context.py holds what every handler
needs (the config, the Temporal client, the results database).
"""
