"""The referral-list cache: one script per read, leases and generations (``cache``), its steps on
Redis and memory (``_backends``, ``_scripts``), and the process-local tier (``near``)."""
