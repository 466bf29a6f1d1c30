"""The command modules: each parses its flags, builds library objects by keyword, runs them and writes files.

``omgm <command>`` (:mod:`omgm.cli`) and ``python -m omgm.<name>`` (the official script names, kept as thin
modules beside the package) both run ``main(argv)`` of a module here. The work itself is in the library:
:mod:`omgm.pipeline` (the stages as objects), :mod:`omgm.retrieval`, :mod:`omgm.rerank`, :mod:`omgm.generate`,
:mod:`omgm.metrics`, :mod:`omgm.data`.
"""
