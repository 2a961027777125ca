"""What the two faces, the terminal's and the page's, share: the client side of a computation.

- ``settings.py``: what the command line and the environment say a process is;
- ``calculator.py``: ``Calculator``, text in and values out: it waits for the
  server, starts computations or attaches to them, and reads their trees;
- ``trees.py``: a computation's promise tree, read back from the server, and
  followed as it changes;
- ``scenarios.py``: the article's three failure modes, played on real processes;
- ``text.py``: text as a terminal shows it, a caret under a syntax error, and why
  an expression too large is not computed.

Neither face is imported here: ``terminal/`` and ``web/`` import this.
"""
