"""``creditq``, the operator's command line: ``main`` (the commands), ``dlq`` (``creditq dlq``),
``common`` (what they share)."""
