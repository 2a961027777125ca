"""Resonator: a distributed calculator on durable promises, and a tutorial.

Start with ``resonator.py``: the four durable functions, the names they are
registered under, and the role each process plays. The rest of the lesson
stands beside it: ``parser.py`` (text to nested tuples), ``trace.py``
(what the functions say as they run) and ``worker.py`` (a worker's loop).

The plumbing has folders of its own:

- ``connections/``: how a process reaches its server, and the workarounds
  for defects of the SDK and its Postgres connector, a file each;
- ``servers/``: the servers you start yourself, the stand-in and a local
  Resonate on Postgres;
- ``client/``: what the two faces share: the settings, starting and
  attaching to computations, reading their promise trees, the article's
  failure modes;
- ``terminal/``: the terminal's face: the ❯ prompt, batches, the tree drawn
  as text, and the demo;
- ``web/``: the page's face, ``resonator-web``: the same in a browser,
  with a kill button for each process;
- ``harness/``: real processes, for the tests, the demo, the page and the
  benchmark.
"""
