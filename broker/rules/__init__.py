"""The rules: what a read and a send do, input validation, customer and upstream tokens, issuer
keys, and the record of each Bubblehouse function the broker serves. No framework, no sockets."""
