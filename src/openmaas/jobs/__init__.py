"""Jobs: one durable queue in the database for every kind of long work, the workers that claim
and run jobs (each in its own subprocess), and the events jobs append as they go.

Nothing here knows about HTTP; the API and CLI call `service` and `queue`.
"""
