"""The referral broker: Bubblehouse customer tokens and referrals for storefronts."""

__version__ = "1.0.0"
