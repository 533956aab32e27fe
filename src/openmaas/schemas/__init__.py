"""Wire schemas: the request and response shapes of the HTTP API (`*Create`, `*Update`,
`*Public`), shared by the server and the SDK.

Only pydantic and the standard library here (and the shared vocabulary in `openmaas.units`): no
table classes, no database, no torch, so that a client installs and imports without the server.
Services turn their rows into these shapes themselves.
"""
