"""The Redis job store: every key name (``keys``), every Lua script (``lua/``, one per file),
and the Python that runs them: ``jobs`` for jobs and their indexes, ``moves`` for a move's
request and answer, ``dlq`` for dead letters; plus what makes Redis safe to trust
(``durability``) and the private redis-server the demo and tests start (``embedded``)."""
