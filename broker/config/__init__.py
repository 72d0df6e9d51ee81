"""Configuration: every variable declared once (``table``), its readers and value types
(``values``), the frozen ``Settings`` (``settings``) and the refusals of unsafe production
settings (``refusals``)."""
