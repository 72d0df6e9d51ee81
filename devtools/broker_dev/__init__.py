"""The broker's development tools, outside the product: the sandbox Bubblehouse, the demo
storefront and the generator of ``.env.example`` and the docs' variable tables (``broker check``,
an operator's command, is the product's: :mod:`broker.check`).

Installed beside the broker by ``bash scripts/setup`` (``pip install -e devtools``); the
production wheel and the container image hold none of it.
"""
