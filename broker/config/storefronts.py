"""The variables of the storefront platforms' routes, ``GET /shopify/token`` (spec 3.6) and
``POST /bigcommerce/token`` (spec 3.8), spliced into :data:`broker.config.table.TABLE`.

The route is enabled only when all three are set; one or two of them is refused at start
(:func:`broker.config.settings.parse`), naming the missing ones. With several shops (spec 2.1)
these move into each shop's ``bigcommerce`` table and the JWT's ``store_hash`` selects the shop.
"""

from __future__ import annotations

from typing import Any

from broker.config import values as read
from broker.config.values import Variable

SHOPIFY = (
    'Shopify (optional): GET /shopify/token for a Shopify app proxy (deploy/README.md, "Shopify")'
)
BIGCOMMERCE = (
    "BigCommerce (optional): POST /bigcommerce/token for the Current Customer API "
    '(docs/recipes.md, "BigCommerce")'
)
BIGCOMMERCE_VARIABLES = (
    "BROKER_BIGCOMMERCE_CLIENT_ID",
    "BROKER_BIGCOMMERCE_CLIENT_SECRET",
    "BROKER_BIGCOMMERCE_STORE_HASH",
)

SHOPIFY_TABLE: tuple[Variable[Any], ...] = (
    Variable(
        "BROKER_SHOPIFY_SECRET",
        "shopify_secret",
        read.shopify_secret,
        SHOPIFY,
        "the Shopify app's shared secret, which signs app proxy requests; with "
        "`BROKER_SHOPIFY_SHOP`, enables `GET /shopify/token`",
        'The Shopify app\'s shared secret ("API secret key"), which signs every app proxy '
        "request. Set it together with BROKER_SHOPIFY_SHOP. Unset: /shopify/token answers 404.",
        example="change-me-shopify-app-secret",
        secret=True,
    ),
    Variable(
        "BROKER_SHOPIFY_SHOP",
        "shopify_shop",
        read.shopify_shop,
        SHOPIFY,
        "the one store accepted on `GET /shopify/token`: `<name>.myshopify.com`",
        "The one store whose proxy requests are accepted: its <name>.myshopify.com domain.",
        example="your-store.myshopify.com",
    ),
)
BIGCOMMERCE_TABLE: tuple[Variable[Any], ...] = (
    Variable(
        "BROKER_BIGCOMMERCE_CLIENT_ID",
        "bigcommerce_client_id",
        read.bigcommerce_client_id,
        BIGCOMMERCE,
        "the client id of the BigCommerce app-level API account the storefront names in "
        "`/customer/current.jwt?app_client_id=`; with the two below, enables "
        "`POST /bigcommerce/token`",
        "The client id of the app-level API account (BigCommerce Developer Portal) whose id the "
        "storefront script sends to /customer/current.jwt. Set all three BROKER_BIGCOMMERCE_ "
        "variables, or none. Unset: /bigcommerce/token answers 404.",
        example="your-bigcommerce-app-client-id",
    ),
    Variable(
        "BROKER_BIGCOMMERCE_CLIENT_SECRET",
        "bigcommerce_client_secret",
        read.bigcommerce_client_secret,
        BIGCOMMERCE,
        "that API account's client secret, which signs the current-customer JWT (HS256)",
        "That API account's client secret: BigCommerce signs each current-customer JWT with it "
        "(HS256), and the broker checks the signature with it.",
        example="change-me-bigcommerce-client-secret",
        secret=True,
    ),
    Variable(
        "BROKER_BIGCOMMERCE_STORE_HASH",
        "bigcommerce_store_hash",
        read.bigcommerce_store_hash,
        BIGCOMMERCE,
        "the one store accepted on `POST /bigcommerce/token`: its store hash",
        "The one store whose customers are accepted: its store hash (the <hash> of "
        "store-<hash>.mybigcommerce.com and of api.bigcommerce.com/stores/<hash>/).",
        example="abc123",
    ),
)
