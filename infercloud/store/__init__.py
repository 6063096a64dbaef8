"""The SQL database infercloud keeps what must survive a restart in: its schema and how to open it."""
