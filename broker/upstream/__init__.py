"""Bubblehouse: the calls and the translation of every answer (``client``), the HTTP seam
(``transport``, aiohttp), and the circuit breaker with its back-off (``circuit``)."""
