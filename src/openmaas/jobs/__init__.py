"""Jobs: one durable queue in the database for every kind of long work, the workers that claim
and run jobs (each in its own subprocess), and the events jobs append as they go.

The bottom of the services: nothing here knows about HTTP or any kind of job. Each kind comes in
as a `JobHandler` (its parameters' model and its run function) in the `{kind: handler}` map the
composition root builds; the API and CLI call `service` and `queue`.
"""
