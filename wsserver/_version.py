"""The one place the versions live: the package's (read by pyproject and
`wsserver version`), and the format of the durable state, which the core
(migrating an older one at start-up) and the storage (writing it into each
snapshot, reading it back) must agree on."""

__version__ = "0.1.0"

STATE_VERSION = 2
"""The format of the durable state written now (a snapshot's `"version"`)."""

OLDEST_STATE_VERSION = 1
"""The oldest format still read (migrated by `core.migrate`)."""
