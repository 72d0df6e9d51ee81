"""``broker check`` (spec 7): is this configuration going to work where it runs?

An operator's diagnostic, shipped in the product (and so in the image), so that it can be run
beside ``broker serve`` with the same environment: :mod:`broker.check.checks` validates the
configuration, pings Redis and calls Bubblehouse's ``Status2`` for every shop, version and key;
:mod:`broker.check.customer` reads one customer's referrals as the broker would. Both talk to
Bubblehouse through the broker's own transport (:mod:`broker.upstream.transport`).
"""
