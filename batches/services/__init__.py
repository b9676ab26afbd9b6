"""Where upstream calls and the database meet: one module per capability.

Views, commands and the API import a service module and call through it, never a name out of
it: `from ..services import submissions`, then `submissions.submission_submit(...)` (a module
whose name is taken in the caller gets `as <name>_services`: `batches`, `connections`,
`webhooks`, `spend`). A reader sees in every call which module holds the behaviour.

Every function takes keyword arguments and an optional `client`, so tests can hand in one that
talks to a fake server. A refusal is raised as one of the web side's `batches.errors.Failure`s.
"""
