"""``creditq demo``: the whole pipeline on one machine with nothing configured.

``run`` drives it; ``scenario`` holds the grants and their faults, ``parts`` starts and stops
Redis, the sandbox and a worker, ``report`` prints and checks the ends.
"""
