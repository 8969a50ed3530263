"""``dyncreds ui``: the local web console - the seed's pages (Configure AWS, Create
role from a policy JSON, Generate) and the agent's state, in a browser.

A client of the agent's socket with the rights of the user who runs it, like the
CLI, and never part of the agent. Starlette + Jinja2 served by Hypercorn's trio
worker; htmx (static/htmx.min.js, 2.0.11, 0BSD) for the few in-page actions;
charts are server-rendered SVG.

- ``serve``: the command - bind loopback, print the address with its token.
- ``guard``: who may ask (same uid, exact Host, session cookie) and the headers.
- ``app``: the routes; ``web``: what every page uses (agent requests, CSRF, render);
  ``writers``: the one seam to the CLI's configuration writers.
- ``pages``, ``roles``, ``configure``: the pages; ``forms`` and ``charts``: pure.
"""
