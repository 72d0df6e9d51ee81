"""The OpenAPI document, built from the routes, the input declarations, the error classes and the
settings (``document``); what each named route adds (``_operations``), and the shared schemas
(``_schemas``)."""
