"""The edge: the ASGI app, its routes and middleware, and the production server.

Everything HTTP lives here (Starlette, uvicorn, headers, bodies); the layers below see plain
Python values and domain errors.
"""
