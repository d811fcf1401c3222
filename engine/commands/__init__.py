"""The commands of the command line, one module per family; ``engine/cli.py`` wires them.

Every command imports what it runs (the worker, Kafka and Redis clients, the rules) only
when it runs, so that ``segengine --help`` stays fast.
"""
