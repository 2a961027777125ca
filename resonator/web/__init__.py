"""resonator-web: the live promise tree, the processes and a kill button for each, in a browser.

- ``app.py``: the command line, and the aiohttp application: one page, its
  static files, two Server-Sent Events streams, and the requests that change
  something, each checked for its ``Host`` and ``Origin``;
- ``live.py``: what the page shows, kept as its latest state: the
  computations, and the tree of each one somebody watches, read from the
  Resonate server as ``:watch`` reads it, and only while somebody watches;
- ``stage.py``: the processes the page started, their latest lines, the
  operators' runs, and the article's failure modes played on them;
- ``static/``: the page (HTML, CSS, JavaScript, an icon), with nothing to
  build and nothing fetched from anywhere else.
"""
