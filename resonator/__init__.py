"""Resonator: a distributed calculator on durable promises, and a tutorial.

Start with ``resonator.py``: the four durable functions, the names they are
registered under, and the role each process plays. The rest of the lesson
stands beside it: ``parser.py`` (text to a tree of tuples), ``trace.py``
(what the functions say as they run) and ``worker.py`` (a worker's loop).

The plumbing has folders of its own:

- ``connections/``: how a process reaches its server, and the workarounds
  for defects of the SDK and its Postgres connector, a file each;
- ``servers/``: the servers you start yourself, the stand-in and a local
  Resonate on Postgres;
- ``terminal/``: the ❯ prompt, batches, the promise tree, the demo and the
  article's failure modes it plays;
- ``web/``: ``resonator-web``, the same in a browser, with a kill button
  for each process;
- ``harness/``: real processes, for the tests, the demo, the page and the
  benchmark.
"""
