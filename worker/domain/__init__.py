"""The domain, pure: a grant and its rules (``grant``, ``amounts``, ``currencies``), the job
record and its states (``job``, ``states``), and the backoff arithmetic. No I/O: nothing here
talks to Redis, Celery or a provider, so all of it is tested without servers."""
