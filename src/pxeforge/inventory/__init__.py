"""inventory: nodes, ports and history in a database, and Ironic's provision state machine.

states.py     Ironic's state, event and verb names, and their groups (constants only)
machine.py    the transition table; advance(); the diagram generator
errors.py     inventory errors, each with its HTTP status
models.py     SQLAlchemy tables;  migrations/  Alembic revisions
db.py         engines (SQLite WAL / PostgreSQL) and programmatic upgrade
records.py    frozen records the store returns
store.py      the only module touching the database: CRUD, locks, recovery, timeouts
lifecycle.py  process_event(): lock → transition → driver work → save → history
"""
