"""The engine: load, validate, compile and decide. Pure and embeddable.

It imports nothing else of aegis (a test checks this), does no I/O while deciding, and pulls in no
server, SDK or database. Everything else in aegis (audit, runtime, serve, wrap, hooks, the CLI) is a
layer over it.

    models.py     Action, Decision, Approval, RiskLevel, RuleCheck
    errors.py     AegisError, PolicyError (located issues), InputError
    yamlload.py   hostile-input-proof YAML reading, with the location of every value
    schemas.py    the bundled JSON Schemas and validation with located messages
    loader.py     files -> validated document -> compiled Policy
    policy.py     Policy and Rule: compiled evaluation, merging, explanation
    conditions.py condition operators compiled to predicates
    matching.py   globs and Unicode normalisation
    toolcalls.py  the one mapping from a tool call to an action
"""
